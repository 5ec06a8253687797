"""R-Net: a trainable regressor of every coefficient the hybrid loss needs (Deng et al. 2019, section 5.1).

One interface, two backbones (``RNet(backbone=...)``):

``mobilenet`` (CPU default)
    3DDFA_V2's MobileNetV1 ×0.5 (:class:`facelib.face3d.tddfa.MobileNetV1`), initialised from the released
    ``mb05_120x120.pth``: trunk and ``fc_param`` (62 = pose 12 | α 40 | β 10, normalised by
    ``param_mean_std_62d_120x120.pkl``) as released, plus two added linear heads on the same pooled 512 features:
    ``fc_tex`` (texture δ, one per column of the model's texture basis; 3 = a per-picture RGB albedo gain
    exp(g)·grey when the model has none) and ``fc_gamma`` (27 SH lighting coefficients, Deep3D layout). The added
    heads start at zero weights and bias, so an untrained R-Net is exactly 3DDFA_V2 with the mean texture under
    ambient light. Input: 3DDFA_V2's crop (``cameras.crop_box``), 120×120 BGR, (x − 127.5)/128.

``resnet50`` (GPU users)
    The paper's R-Net layout (:class:`facelib.face3d.deep3d.ReconNet`: a torchvision ResNet-50 trunk, 1×1-conv heads on
    the pooled 2048 features). Heads: the same 62 (+ texture, + lighting) in the 3DDFA space, starting at
    zero, so the untrained output is 3DDFA's mean parameters. ``load_deep3d_trunk`` copies the trunk of an official
    ``epoch_20.pth`` (fine-tuning; the checkpoint's own heads regress the BFM09 front model, another coefficient
    space, and are not used). Input: the same 3DDFA crop, 224×224 RGB in [0, 1] (Deep3D's input range).

Whatever the backbone, :meth:`RNet.forward` returns the raw head outputs and the last feature map (which C-Net
reuses, :mod:`facelib.fitting.cnet`); :meth:`RNet.decode` turns them into 3DDFA-space coefficients: ``pose`` (B, 12)
[sR|t] in the 120 crop frame, ``alpha`` (B, 40) and ``beta`` (B, 10) in BFM raw units (as the ``tddfa`` backend),
``texture`` (B, n_tex) or ``gain`` (B, 3), ``gamma`` (B, 27).
"""
from __future__ import annotations

import hashlib
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import assets
from ..io import atomic_path
from .cameras import crop_box, crop_image
from .deep3d import load_rnet
from .detect import FaceBoxesDetector, load_state_strict, pick_face
from .tddfa import N_EXP, N_POSE, N_SHP, NORM_MEAN, NORM_STD, MobileNetV1

BACKBONES = ("mobilenet", "resnet50")
INPUT_SIZE = {"mobilenet": 120, "resnet50": 224}
N_PARAM = N_POSE + N_SHP + N_EXP  # 62
N_GAMMA = 27
RNET_VERSION = 1  # bump when the network or its decoding changes in a way no setting captures


class RNet(nn.Module):
    """Backbone + heads → {``param`` (B, 62) normalised, ``texture`` (B, n_tex or 3), ``gamma`` (B, 27),
    ``features`` (B, C, h, w) last feature map}. ``n_tex`` = 0 → a 3-value albedo gain head."""

    def __init__(self, backbone: str = "mobilenet", n_tex: int = 0):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        self.backbone_name = backbone
        self.n_tex = int(n_tex)
        self.input_size = INPUT_SIZE[backbone]
        n_t = self.n_tex if self.n_tex > 0 else 3
        if backbone == "mobilenet":
            self.trunk = MobileNetV1(0.5)
            width = 512
        else:
            import torchvision  # torchvision (seconds to import): only the ResNet-50 R-Net

            trunk = torchvision.models.resnet50(weights=None)
            trunk.fc = nn.Identity()
            self.trunk = trunk
            width = 2048
        self.feature_channels = width
        if backbone == "resnet50":
            self.fc_param = nn.Linear(width, N_PARAM)
        self.fc_tex = nn.Linear(width, n_t)
        self.fc_gamma = nn.Linear(width, N_GAMMA)
        for head in (self.fc_tex, self.fc_gamma) + ((self.fc_param,) if backbone == "resnet50" else ()):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.freeze_bn = True
        self.register_buffer("param_mean", torch.zeros(N_PARAM))
        self.register_buffer("param_std", torch.ones(N_PARAM))

    def train(self, mode: bool = True) -> "RNet":
        """``train()`` keeps BatchNorm in eval mode when ``freeze_bn`` is set (fine-tuning on small batches of
        one study's pictures must not re-estimate the released statistics)."""
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # -------------------------------------------------------------- forward
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        if self.backbone_name == "mobilenet":
            x = F.relu(t.bn1(t.conv1(x)))
            for name, block in t.named_children():  # dw2_1 … dw6 in the order MobileNetV1 registers them
                if name.startswith("dw"):
                    x = block(x)
            return x
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        return t.layer4(t.layer3(t.layer2(t.layer1(x))))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.feature_map(x)
        pooled = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        fc_param = self.trunk.fc_param if self.backbone_name == "mobilenet" else self.fc_param
        return {"param": fc_param(pooled), "texture": self.fc_tex(pooled), "gamma": self.fc_gamma(pooled),
                "features": fmap}

    def decode(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw outputs → 3DDFA-space coefficients (differentiable)."""
        p = out["param"] * self.param_std + self.param_mean
        res = {"pose": p[:, :N_POSE], "alpha": p[:, N_POSE:N_POSE + N_SHP], "beta": p[:, N_POSE + N_SHP:],
               "gamma": out["gamma"]}
        res["texture" if self.n_tex > 0 else "gain"] = out["texture"]
        return res

    # -------------------------------------------------------------- input
    def preprocess(self, crops_bgr: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 BGR crops (3DDFA crop rule, any S) → the backbone's input tensor (B, 3, s, s)."""
        x = torch.as_tensor(np.asarray(crops_bgr)).permute(0, 3, 1, 2).float()
        s = self.input_size
        if x.shape[-1] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=x.shape[-1] > s)
        if self.backbone_name == "mobilenet":
            return (x - NORM_MEAN) / NORM_STD
        return x.flip(1) / 255.0  # RGB in [0, 1], Deep3D's input range


# ------------------------------------------------------------------------------------------------ construction
def _load_mean_std(model: RNet, assets_dir=None) -> None:
    with open(assets.resolve("param_mean_std", assets_dir), "rb") as fh:
        ms = pickle.load(fh)
    model.param_mean.copy_(torch.as_tensor(np.asarray(ms["mean"], np.float32).reshape(-1)))
    model.param_std.copy_(torch.as_tensor(np.asarray(ms["std"], np.float32).reshape(-1)))


def build_rnet(backbone: str = "mobilenet", n_tex: int = 0, assets_dir=None, init: str | Path | None = "released",
               allow_pickle: bool = False) -> RNet:
    """A fresh R-Net. ``init``: ``"released"`` (mobilenet: 3DDFA_V2's mb05 weights; resnet50: ``None``), None
    (random trunk), or a path to ``epoch_20.pth`` (resnet50: its trunk, :func:`load_deep3d_trunk`)."""
    net = RNet(backbone, n_tex)
    _load_mean_std(net, assets_dir)
    if backbone == "mobilenet" and init == "released":
        load_state_strict(net.trunk, assets.resolve("mb05", assets_dir), "3DDFA_V2 mb05")
    elif backbone == "resnet50" and init not in (None, "released"):
        load_deep3d_trunk(net, init, allow_pickle=allow_pickle)
    elif backbone == "mobilenet" and init not in (None, "released"):
        raise ValueError("a mobilenet R-Net starts from the released mb05 weights ('released') or at random (None)")
    return net


def load_deep3d_trunk(net: RNet, checkpoint, allow_pickle: bool = False) -> RNet:
    """Copy the ResNet-50 trunk (``backbone.*``) of Deep3DFaceRecon's ``epoch_20.pth`` into a resnet50 R-Net."""
    if net.backbone_name != "resnet50":
        raise ValueError("only a resnet50 R-Net takes Deep3DFaceRecon's trunk")
    official = load_rnet(checkpoint, "cpu", allow_pickle=allow_pickle)  # strict layout check, clear errors
    net.trunk.load_state_dict(official.backbone.state_dict(), strict=True)
    return net


def weights_checksum(net: nn.Module) -> str:
    """sha256 of a network's parameters and buffers (stable across save/load)."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_rnet(net: RNet, path: str | Path, meta: dict | None = None) -> Path:
    """Save an R-Net (weights + what rebuilds it) atomically."""
    path = Path(path)
    payload = {"backbone": net.backbone_name, "n_tex": net.n_tex, "state_dict": net.state_dict(),
               "version": RNET_VERSION, "meta": dict(meta or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_saved_rnet(path: str | Path, device: str = "cpu") -> tuple[RNet, dict]:
    """(R-Net in eval mode, its saved ``meta``) from :func:`save_rnet`'s file."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "state_dict" not in payload or "backbone" not in payload:
        raise ValueError(f"{path} is not a saved R-Net (expected backbone, n_tex, state_dict)")
    net = RNet(payload["backbone"], payload["n_tex"])
    net.load_state_dict(payload["state_dict"], strict=True)
    return net.eval().to(device), payload.get("meta", {})


@torch.inference_mode()
def predict(net: RNet, crops_bgr: np.ndarray, batch_size: int = 64, device: str = "cpu",
            features: bool = False) -> dict[str, np.ndarray]:
    """Code crops (B, S, S, 3) uint8 BGR → numpy coefficients (``decode``'s keys; ``features`` adds the
    feature maps). The network is put in eval mode."""
    net.eval()
    outs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(crops_bgr), batch_size):
        x = net.preprocess(crops_bgr[start:start + batch_size]).to(device)
        raw = net(x)
        dec = net.decode(raw)
        if features:
            dec["features"] = raw["features"]
        for k, v in dec.items():
            outs.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


# ------------------------------------------------------------------------------------------------ fast coding
class RNetCoder:
    """Pictures (paths) → R-Net coefficients, batched, detection included: JPEG decoded at 1/``reduce`` resolution
    (``cv2.IMREAD_REDUCED_COLOR_*``, DCT-domain scaling, for pictures whose short side is at least ``reduce``·240),
    FaceBoxes at ``max_side``, 3DDFA_V2's crop rule, the crop resized (area) to the network's input. Boxes and
    ROIs are returned in the original pictures' pixels. Decoding runs in a thread pool of ``threads``."""

    def __init__(self, net: RNet, device: str = "cpu", assets_dir=None, max_side: int = 192, reduce: int = 2,
                 batch_size: int = 64, threads: int = 2):
        self.net = net.eval().to(device)
        self.device = device
        self.detector = FaceBoxesDetector(device=device, assets_dir=assets_dir, max_side=max_side,
                                          batch_size=batch_size)
        self.reduce = int(reduce)
        self.batch_size = int(batch_size)
        self.threads = int(threads)

    def _read(self, path) -> tuple[np.ndarray | None, float]:
        flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}.get(self.reduce)
        if flag is not None:
            img = cv2.imread(str(path), flag)
            if img is not None and min(img.shape[:2]) >= 240:
                return img, float(self.reduce)
        return cv2.imread(str(path), cv2.IMREAD_COLOR), 1.0

    def __call__(self, paths) -> dict[str, np.ndarray]:
        """{coefficient: (n, d)} for every path (NaN rows where no face), ``box`` (n, 5), ``roi`` (n, 4),
        ``found`` (n,) bool."""
        paths = list(paths)
        s = self.net.input_size
        res: dict[str, list] = {"box": [], "roi": [], "found": []}
        coded: list[dict] = []
        with ThreadPoolExecutor(self.threads) as pool:
            for start in range(0, len(paths), self.batch_size):
                loaded = list(pool.map(self._read, paths[start:start + self.batch_size]))
                imgs = [im if im is not None else np.zeros((8, 8, 3), np.uint8) for im, _ in loaded]
                picks = [pick_face(d, im.shape) for d, im in zip(self.detector(imgs), imgs)]
                crops, idx = [], []
                for i, ((box, _), im, (_, f)) in enumerate(zip(picks, imgs, loaded)):
                    ok = box is not None and loaded[i][0] is not None
                    res["found"].append(ok)
                    b = np.asarray(box, np.float64)[:5] * np.array([f, f, f, f, 1.0]) if ok else np.full(5, np.nan)
                    roi = crop_box(b) if ok else np.full(4, np.nan)
                    res["box"].append(b)
                    res["roi"].append(roi)
                    if ok:
                        c = crop_image(im, roi / f)
                        crops.append(cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA if c.shape[0] > s
                                                else cv2.INTER_LINEAR))
                        idx.append(start + i)
                out = predict(self.net, np.stack(crops), self.batch_size, self.device) if crops else {}
                coded.append({"idx": idx, **out})
        n = len(paths)
        found = np.asarray(res["found"], bool)
        full: dict[str, np.ndarray] = {"box": np.asarray(res["box"]), "roi": np.asarray(res["roi"]), "found": found}
        for chunk in coded:
            for k, v in chunk.items():
                if k == "idx" or not len(chunk["idx"]):
                    continue
                full.setdefault(k, np.full((n,) + v.shape[1:], np.nan, np.float32))[chunk["idx"]] = v
        return full
