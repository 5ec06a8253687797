"""Precision chosen by the device (facelib.classify.precision), its use in training, and Table 2's column."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from facelib.classify import images as I
from facelib.classify import precision as PR
from facelib.classify import trainer as T


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_choice_by_input_and_size(monkeypatch, native):
    monkeypatch.setattr(PR, "cpu_has_native_bf16", lambda: native)
    assert PR.choose_precision("cpu", "vector").name == "fp32"  # the 1-D ResNet is slower in bf16
    assert PR.choose_precision("cpu", "image", image_size=48).name == "fp32"  # bf16 does not pay at 48 px
    big = PR.choose_precision("cpu", "image", image_size=224)
    assert (big.name, big.channels_last) == (("bf16", True) if native else ("fp32", False))
    assert big.memory_format(4) == (torch.channels_last if native else torch.contiguous_format)
    assert big.memory_format(2) == torch.contiguous_format  # vectors never channels_last
    assert big.scaler() is None  # bf16 has fp32's range: no gradient scaler


def test_override_and_errors(monkeypatch):
    monkeypatch.setattr(PR, "cpu_has_native_bf16", lambda: False)
    p = PR.choose_precision("cpu", "vector", precision="bf16")
    assert (p.name, p.dtype, p.reason) == ("bf16", torch.bfloat16, "requested")
    assert PR.choose_precision("cpu", "image", image_size=224, precision="FP32").name == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        PR.choose_precision("cpu", "image", precision="fp64")


def test_accelerator_choices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    p = PR.choose_precision("cuda:0", "image", image_size=64)
    assert (p.name, p.device_type, p.channels_last) == ("fp16", "cuda", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert PR.choose_precision("cuda", "vector").name == "bf16"
    monkeypatch.setattr(PR, "_mps_autocast_ok", lambda: True)
    assert PR.choose_precision("mps", "image", image_size=64).name == "fp16"
    assert PR.choose_precision("mps", "vector").name == "fp32"  # never float64 anywhere: only these three
    assert {PR.choose_precision(d, k, 224).name for d in ("cpu", "cuda", "mps") for k in ("image", "vector")} \
        <= {"fp32", "bf16", "fp16"}


def test_bf16_training_records_precision_and_returns_float32_scores():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    X = (3 * rng.normal(size=(3, 6))[y] + rng.normal(size=(120, 6))).astype(np.float32)
    r = T.train_vector_model(X[:90], y[:90], X[90:], y[90:], model="mlp", epochs=4, precision="bf16")
    assert r["precision"] == "bf16" and r["scores"].dtype == np.float32
    assert np.allclose(r["scores"].sum(1), 1, atol=1e-5) and r["accuracy"] > 0.8
    assert all(isinstance(h["val_loss"], float) for h in r["history"])
    r32 = T.train_vector_model(X[:90], y[:90], X[90:], y[90:], model="mlp", epochs=4)
    assert r32["precision"] == "fp32" and r32["channels_last"] is False


def test_augment_unit_matches_augment_batch_on_normalised_pictures():
    """The loop augments [0, 1] batches; the old path augmented normalised ones: the same pictures come out."""
    x01 = torch.rand(5, 3, 20, 20)
    a = I.augment_unit(x01.clone(), torch.Generator().manual_seed(3))
    b = I.augment_batch(I.normalize(x01.clone()), torch.Generator().manual_seed(3))
    assert torch.allclose(I.normalize(a), b, atol=1e-4)
    assert not torch.allclose(a, x01)  # it did something
    u8 = (x01 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert torch.allclose(I.unit_tensor(u8), (x01 * 255).round() / 255, atol=1e-6)
    assert torch.equal(I.unit_tensor(u8, as_float=False).float() / 255, I.unit_tensor(u8))
    assert torch.allclose(I.to_tensor(u8), I.normalize(I.unit_tensor(u8)))
    assert torch.allclose(I.normalize(I.unit_tensor(u8, as_float=False)), I.to_tensor(u8))


def test_image_bank_float_or_uint8():
    X = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    f = T.image_bank(X, "cpu")
    q = T.image_bank(X, "cpu", float_bytes=0)
    assert f.dtype == torch.float32 and q.dtype == torch.uint8 and f.shape == q.shape == (4, 3, 8, 8)
    train_in, eval_in = T.image_inputs(PR.Precision("fp32", "cpu"), augment=False)
    assert torch.allclose(eval_in(q), eval_in(f)) and torch.allclose(train_in(q, None), I.to_tensor(X))


def test_table2_has_the_precision_column():
    from facelib.report import tables

    row = {"task": "expression", "protocol": "paper", "input": "image", "model": "resnet34", "backend": None,
           "device": "cpu", "kind": "images", "precision": "bf16", "seconds_per_input": 0.01,
           "seconds_per_epoch": 1.0}
    t2 = tables.table2([row, dict(row, input="beta", kind="coefficients", precision=None, device="cuda")])
    assert "precision" in tables.TABLE2_COLUMNS and list(t2.columns) == tables.TABLE2_COLUMNS
    assert t2.set_index("input").loc["image", "precision"] == "bf16"
    assert pd.isna(t2.set_index("input").loc["beta", "precision"])  # recorded before precision was
