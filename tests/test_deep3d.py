"""Deep3D R-Net loading (official key layout, strict), its output split, and the 5-point alignment on a real KDEF
image. The licence-gated checkpoint is replaced by one with random weights written here in the official layout."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from facelib.face3d import deep3d
from facelib.assets import AssetMissingError
from facelib.face3d.morphable import load_lm3d_std

# measured by hand on KDEF AF01NES.JPG (562×762): pupils, nose tip, mouth corners (x right, y down)
AF01NES_LM5 = np.array([[202, 385], [352, 387], [280, 468], [219, 540], [342, 542]], dtype=np.float64)


def _random_state(seed=0):
    torch.manual_seed(seed)
    net = deep3d.ReconNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode BN matters in the comparison
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
    return net.state_dict()


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory):
    state = _random_state()
    path = tmp_path_factory.mktemp("deep3d") / "epoch_20.pth"
    torch.save({"net_recon": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 20,
                "scheduler": {"step_size": 5, "gamma": 0.2}}, path)
    return path, state


def test_state_dict_key_layout():
    keys = list(deep3d.ReconNet().state_dict())
    assert "backbone.conv1.weight" in keys and "backbone.layer4.2.bn3.running_var" in keys
    assert not any(k.startswith("backbone.fc") for k in keys)
    heads = [k for k in keys if k.startswith("final_layers")]
    assert heads == [f"final_layers.{i}.{p}" for i in range(7) for p in ("weight", "bias")]


def test_load_strict_split_and_manual_forward(official_ckpt):
    path, state = official_ckpt
    net = deep3d.load_rnet(path, "cpu")
    assert not net.training
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
        # manual: plain torchvision ResNet-50 with the backbone weights, then the 1×1 heads as matrix products
        tv = torchvision.models.resnet50(weights=None)
        res = tv.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")},
                                 strict=False)
        assert set(res.missing_keys) == {"fc.weight", "fc.bias"} and not res.unexpected_keys
        tv.fc = nn.Identity()
        feat = tv.eval()(x)
        heads = [feat @ state[f"final_layers.{i}.weight"][:, :, 0, 0].T + state[f"final_layers.{i}.bias"]
                 for i in range(7)]
        ref = torch.cat(heads, dim=1)
    assert out.shape == (2, 257)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    parts = deep3d.split_output(out)
    assert {k: v.shape[1] for k, v in parts.items()} == {"alpha": 80, "beta": 64, "texture": 80, "angles": 3,
                                                          "gamma": 27, "translation": 3}
    torch.testing.assert_close(parts["translation"], torch.cat([heads[5], heads[6]], 1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(parts["gamma"], heads[4], rtol=1e-4, atol=1e-4)


def test_wrong_layout_is_rejected_with_key_names(official_ckpt, tmp_path):
    _, state = official_ckpt
    bad = dict(state)
    bad["final_layers.7.bias"] = bad.pop("final_layers.6.bias")      # renamed
    del bad["backbone.layer4.2.conv3.weight"]                         # missing
    p = tmp_path / "bad.pth"
    torch.save({"net_recon": bad}, p)
    with pytest.raises(ValueError) as err:
        deep3d.load_rnet(p)
    msg = str(err.value)
    assert "final_layers.6.bias" in msg and "backbone.layer4.2.conv3.weight" in msg and "final_layers.7.bias" in msg
    torch.save({"state_dict": state}, p)
    with pytest.raises(ValueError, match="net_recon"):
        deep3d.load_rnet(p)
    torch.save({"net_recon": {**state, "final_layers.1.bias": torch.zeros(65)}}, p)
    with pytest.raises(ValueError, match="final_layers.1.bias"):
        deep3d.load_rnet(p)


def test_module_prefix_and_missing_bn_counters_are_tolerated(official_ckpt, tmp_path):
    _, state = official_ckpt
    sd = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    p = tmp_path / "dp.pth"
    torch.save({"net_recon": sd}, p)
    net = deep3d.load_rnet(p)
    torch.testing.assert_close(net.final_layers[3].weight, state["final_layers.3.weight"])


def test_missing_checkpoint_names_the_asset(tmp_path):
    with pytest.raises(AssetMissingError, match="deep3d_epoch20"):
        deep3d.Deep3DRegressor(checkpoint=None, assets_dir=tmp_path)


def test_five_points_from_68():
    lm = np.stack([np.arange(68.0), 100 + np.arange(68.0)], axis=1)
    p = deep3d.five_points_from_68(lm)
    np.testing.assert_allclose(p[:, 0], [(36 + 39) / 2, (42 + 45) / 2, 30, 48, 54])
    assert deep3d.five_points_from_68(np.stack([lm, lm])).shape == (2, 5, 2)


def test_alignment_synthetic_exact(assets_dir):
    """Points that are an exact similarity image of the standard landmarks land on the standard positions."""
    lm3d = load_lm3d_std(assets_dir)
    k, c = 180.0, np.array([260.0, 330.0])
    pts = c + k * np.stack([lm3d[:, 0], -lm3d[:, 1]], axis=1)
    img = np.full((700, 520, 3), 128, np.uint8)
    crop, par = deep3d.align_deep3d(img, pts, lm3d)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.float32
    assert par["scale"] == pytest.approx(102 / k, rel=1e-6)
    np.testing.assert_allclose(deep3d.image_to_crop(pts, par), deep3d.standard_five_points_in_crop(lm3d), atol=2.0)


def test_alignment_on_kdef(kdef_root, assets_dir):
    bgr = cv2.imread(str(kdef_root / "AF01" / "AF01NES.JPG"))
    assert bgr is not None
    lm3d = load_lm3d_std(assets_dir)
    crop, par = deep3d.align_deep3d(bgr[:, :, ::-1], AF01NES_LM5, lm3d)
    assert crop.shape == (224, 224, 3) and 0.0 <= crop.min() and crop.max() <= 1.0
    got = deep3d.image_to_crop(AF01NES_LM5, par)
    std = deep3d.standard_five_points_in_crop(lm3d)
    assert np.abs(got - std).max() < 6.0, (got, std)
    # the pixels at the eyes in the crop are the pixels at the eyes in the image (pupils are dark)
    for (x, y) in got[:2]:
        patch = crop[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3]
        assert patch.mean() < 0.35
    assert crop[100:130, 100:124].mean() > 0.3  # nose / cheeks: skin, not padding


def test_regressor_end_to_end(official_ckpt, kdef_root, assets_dir):
    path, _ = official_ckpt
    reg = deep3d.Deep3DRegressor(checkpoint=path, device="cpu", assets_dir=assets_dir)
    bgr = cv2.imread(str(kdef_root / "AF01" / "AF01NES.JPG"))
    lm68 = np.zeros((68, 2))
    lm68[[36, 39]] = AF01NES_LM5[0]
    lm68[[42, 45]] = AF01NES_LM5[1]
    lm68[30], lm68[48], lm68[54] = AF01NES_LM5[2], AF01NES_LM5[3], AF01NES_LM5[4]
    out = reg([bgr, bgr], [lm68, AF01NES_LM5])  # 68 points, or the 5 points directly
    assert {k: v.shape for k, v in out.items()} == {"alpha": (2, 80), "beta": (2, 64), "texture": (2, 80),
                                                    "angles": (2, 3), "gamma": (2, 27), "translation": (2, 3)}
    assert all(v.dtype == np.float32 for v in out.values())
    crop, _ = deep3d.align_deep3d(bgr[:, :, ::-1], lm68, reg.lm3d_std)
    with torch.no_grad():
        ref = reg.net(torch.from_numpy(crop).permute(2, 0, 1)[None]).numpy()
    np.testing.assert_allclose(out["alpha"][0], ref[0, :80], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["translation"][0], ref[0, 254:], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["gamma"][1], ref[0, 227:254], rtol=1e-4, atol=1e-4)


def test_mean_face_projects_onto_alignment_targets(assets_dir):
    """Camera and alignment agree: the recentred BFM mean face (front vertices, decimetres) at zero pose, seen by
    Deep3D's camera (f 1015, c 112, distance 10), puts its 5 points where the alignment puts a face's 5 points."""
    from scipy.io import loadmat

    from facelib.face3d.morphable import MorphableModel, five_points

    m = MorphableModel.from_3ddfa(assets_dir)
    front = loadmat(assets_dir / "deep3d_bfm_aux" / "BFM_front_idx.mat")["idx"].astype(np.int64).ravel() - 1
    v = m.shape()[0].double() / 1e5
    centre = v[torch.from_numpy(front)].mean(0)
    lm = m.landmarks((v - centre)[None])
    uv = MorphableModel.perspective_project(lm)[0].numpy()
    target = deep3d.standard_five_points_in_crop(load_lm3d_std(assets_dir))
    np.testing.assert_allclose(five_points(uv), target, atol=2.5)
