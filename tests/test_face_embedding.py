"""facelib.fitting.face_embedding: dlib's face-recognition ResNet parsed from its .dat file and run in PyTorch.

Real-face tests use KDEF (FACELIB_KDEF, default ../shared/data/kdef_dev/KDEF) and compare with dlib's own
``face_recognition_model_v1.compute_face_descriptor``; they skip with the reason when KDEF is absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

fe = pytest.importorskip("facelib.fitting.face_embedding")

STEMS = ["AF01NES", "AF02NES", "AF03NES", "AM01NES", "AM02NES", "AF01HAS", "AF02HAS", "AM01HAS"]


@pytest.fixture(scope="module")
def model_path() -> Path:
    try:
        path = fe.default_model_path()
    except ImportError as e:
        pytest.skip(str(e))
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return fe.load_dlib_resnet(model_path)


@pytest.fixture(scope="module")
def faces(kdef_root, model_path):
    """stem → (RGB image, dlib 5-point shape, dlib chip, dlib descriptor)."""
    dlib = pytest.importorskip("dlib")
    import cv2

    rec = dlib.face_recognition_model_v1(str(model_path))
    out = {}
    for stem in STEMS:
        path = kdef_root / stem[:4] / f"{stem}.JPG"
        if not path.is_file():
            pytest.skip(f"KDEF image {path} absent")
        img = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        shape = fe.detect_shape_5pt(img)
        assert shape is not None, f"dlib found no face in {stem}"
        chip = fe.chip_from_image(img, shape)
        desc = np.array(rec.compute_face_descriptor(img, shape))
        out[stem] = (img, shape, chip, desc)
    return out


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_parsed_architecture(model):
    assert model.num_conv_layers == 29
    assert model.fcs[0].out_features == 128 and model.fcs[0].bias is None     # fc_no_bias<128>
    assert torch.allclose(model.avg.flatten(), torch.tensor([122.782, 117.001, 104.298]), atol=1e-3)
    assert model.loss["type"] == "loss_metric"
    assert sum(op[0] == "add_prev" for op in model.ops) == 14
    assert model(torch.full((2, 3, 150, 150), 128.0)).shape == (2, 128)
    with pytest.raises(ValueError, match="150"):
        model(torch.zeros(1, 3, 112, 112))


def test_matches_dlib_descriptor(model, faces):
    chips = fe.chips_to_tensor([f[2] for f in faces.values()])
    with torch.no_grad():
        ours = model(chips).double().numpy()
    ref = np.stack([f[3] for f in faces.values()])
    max_abs = float(np.abs(ours - ref).max())
    cos = [_cos(a, b) for a, b in zip(ours, ref)]
    print(f"\nagreement with dlib over {len(ref)} KDEF faces: max |Δ| = {max_abs:.2e}, min cosine = {min(cos):.9f}")
    assert max_abs < 1e-3
    assert min(cos) > 0.9999
    # dlib's descriptor is not L2-normalised (norms ≈ 1.4–1.6); neither is ours
    assert np.allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(ref, axis=1), atol=1e-5)


def test_differentiable_crop_close_to_dlib(model, faces):
    """embed(): the torch crop (dlib's geometry + pyramid) from the full photo gives nearly dlib's descriptor."""
    for stem in STEMS[:4]:
        img, shape, chip, desc = faces[stem]
        imgt = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
        lm = torch.from_numpy(fe.shape_to_array(shape))[None]
        ours_chip = fe.extract_chips(imgt, lm)[0].permute(1, 2, 0).numpy()
        assert np.abs(ours_chip - chip.astype(np.float32)).mean() < 2.0, stem   # dlib truncates to uint8
        with torch.no_grad():
            e = fe.embed(imgt, lm, model)[0].double().numpy()
        assert _cos(e, desc) > 0.999, stem


def test_same_person_closer_than_different(faces):
    d = {s: f[3] for s, f in faces.items()}
    dist = lambda a, b: float(np.linalg.norm(d[a] - d[b]))  # noqa: E731
    for person in ("AF01", "AF02", "AM01"):
        same = dist(f"{person}NES", f"{person}HAS")
        others = [dist(f"{person}NES", s) for s in STEMS if s[:4] != person]
        assert same < min(others), (person, same, others)
        assert same < 0.6   # dlib's same-person threshold


def test_gradients_reach_input(model, faces):
    img, shape, chip, desc = faces["AF01NES"]
    x = fe.chips_to_tensor(chip).requires_grad_(True)
    target = torch.from_numpy(faces["AF02NES"][3]).float()[None]
    loss = fe.perceptual_distance(model(x), target).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # and through the differentiable crop to the full image
    imgt = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None].requires_grad_(True)
    lm = torch.from_numpy(fe.shape_to_array(shape))[None]
    fe.perceptual_distance(fe.embed(imgt, lm, model), target).sum().backward()
    g = imgt.grad[0].abs().sum(0)
    assert torch.isfinite(g).all() and g.sum() > 0
    ys, xs = torch.nonzero(g).T
    box = shape.rect
    assert box.left() - 80 < xs.float().mean() < box.right() + 80   # gradient lands on the face


def test_gradients_reach_input_synthetic(model):
    x = (torch.rand(1, 3, 150, 150) * 255).requires_grad_(True)
    model(x).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and not any(p.requires_grad for p in model.parameters())


def test_corrupt_or_truncated_file(model_path, tmp_path):
    data = model_path.read_bytes()
    trunc = tmp_path / "truncated.dat"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(fe.DlibModelFormatError, match="truncated"):
        fe.load_dlib_resnet(trunc)
    bad = bytearray(data)
    bad[3:16] = b"not_a_loss___"            # the loss layer's name
    (tmp_path / "bad.dat").write_bytes(bytes(bad))
    with pytest.raises(fe.DlibModelFormatError, match="loss"):
        fe.load_dlib_resnet(tmp_path / "bad.dat")
    (tmp_path / "junk.dat").write_bytes(b"\x00" * 64)
    with pytest.raises(fe.DlibModelFormatError):
        fe.load_dlib_resnet(tmp_path / "junk.dat")
    other = model_path.parent / "shape_predictor_5_face_landmarks.dat"   # a dlib file, but not this network
    if other.is_file():
        with pytest.raises(fe.DlibModelFormatError):
            fe.load_dlib_resnet(other)
    with pytest.raises(FileNotFoundError):
        fe.load_dlib_resnet(tmp_path / "missing.dat")
