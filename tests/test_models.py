"""ResNet34Vector / image ResNet-34 / baselines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet34

from facelib.classify.models import (ResNet34Vector, baseline, conv_plan, count_basic_blocks, image_resnet34, n_parameters,
                            vector_model)


@pytest.mark.parametrize("d", [10, 40, 80])
def test_vector_resnet_shapes(d):
    m = ResNet34Vector(d, 7).eval()
    assert m(torch.randn(4, d)).shape == (4, 7)
    assert m(torch.randn(4, 1, d)).shape == (4, 7)
    with pytest.raises(ValueError):
        m(torch.randn(4, 2, d))


def test_vector_resnet_follows_resnet34_structure():
    ours, ref = ResNet34Vector(80, 10), resnet34(weights=None)
    assert count_basic_blocks(ours) == count_basic_blocks(ref) == 16
    assert [len(s) for s in (ours.layer1, ours.layer2, ours.layer3, ours.layer4)] == [3, 4, 6, 3]
    ours_plan, ref_plan = conv_plan(ours), conv_plan(ref)
    assert len(ours_plan) == len(ref_plan) == 36
    # identical channel plan and strides except the stem (1 input channel, stride 1 instead of 3 channels, stride 2)
    assert ours_plan[0] == (1, 64, 1) and ref_plan[0] == (3, 64, 2)
    assert ours_plan[1:] == ref_plan[1:]
    # every k=3 1-D kernel has a third of the weights of its 3×3 twin; 1×1 shortcuts are equal
    ours_w = [m.weight.numel() for m in ours.modules() if isinstance(m, nn.Conv1d)][1:]
    ref_w = [m.weight.numel() for m in ref.modules() if isinstance(m, nn.Conv2d)][1:]
    for a, b, m in zip(ours_w, ref_w, [m for m in ref.modules() if isinstance(m, nn.Conv2d)][1:]):
        assert a * m.kernel_size[0] == b
    conv_ratio = sum(ours_w) / sum(ref_w)
    assert 0.33 < conv_ratio < 0.35
    assert 7.0e6 < n_parameters(ours) < 7.5e6  # ~ (21.8 M − fc) / 3 + BN + fc


def test_vector_resnet_keeps_length_through_stem():
    m = ResNet34Vector(10, 3)
    x = m.stem(torch.randn(2, 1, 10))
    assert x.shape == (2, 64, 10)
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    assert x.shape == (2, 512, 2)  # 10 → 10, 5, 3, 2


def test_image_resnet34_head_and_no_download(tmp_path, monkeypatch):
    m = image_resnet34(5).eval()
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        image_resnet34(5, pretrained=True)


def test_vector_model_names_and_baselines():
    assert isinstance(vector_model("resnet34", 10, 3), ResNet34Vector)
    assert vector_model("mlp", 10, 3)(torch.randn(4, 10)).shape == (4, 3)
    with pytest.raises(ValueError):
        vector_model("vgg", 10, 3)
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (40, 5)), rng.normal(4, 1, (40, 5))])
    y = np.repeat([0, 1], 40)
    for name in ("logreg", "svm"):
        pipe = baseline(name).fit(X, y)
        assert pipe.score(X, y) > 0.95
        assert type(pipe.steps[0][1]).__name__ == "StandardScaler"
