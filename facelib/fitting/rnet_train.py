"""Label-free training of R-Net and C-Net with the hybrid-level loss through the differentiable renderer.

Data (:class:`TrainData`, :func:`prepare_data`): for every ok picture of a tddfa coefficient table, the 3DDFA_V2
crop (``tddfa.crop_box`` of the detector box) at the render size S (uint8 BGR), the target landmarks in crop
pixels, the skin attention of the crop and (perceptual term on) the face embedding of the photo. Targets come from
a landmarker that never changes while the networks train: ``"table"`` (the frozen pretrained 3DDFA_V2
landmarks of the table) or ``"dlib"`` (dlib's 68 points, :class:`facelib.fitting.DlibTargets`; the table's
landmarks where dlib finds no face or the face turns more than 60°).

Composer (:class:`Composer`): the network's coefficients go through :class:`facelib.fitting.fitter.Fitter`'s own
``forward(params, batch) → rendered`` and ``losses(rendered, batch)`` — the per-picture fit's rendering and
:class:`facelib.fitting.losses.HybridLoss` (the paper's weights; whitened α/β for the regulariser, landmarks in
pixels of a 224 crop, skin-vertex texture flattening) — with the coefficients as the batch's start values
(``alpha0``, ``beta0``, ``pose0``, differentiable) and zero offsets, so gradients reach the network. For speed the
fitter renders a coarse copy of its mesh (:func:`coarse_fitter`, vertex clustering to about 8000 vertices).

R-Net (:func:`train_rnet`): Adam on every weight (BatchNorm statistics frozen: small batches of one study's
pictures must not re-estimate them), mini-batches of pictures, the loss above on each picture; with
``identity_weight`` > 0, person-grouped mini-batches and the within-person α spread term of
:mod:`facelib.fitting.identity` (the training people's labels only), recorded as the term ``identity``.
C-Net (:func:`train_cnet`): R-Net frozen; sets of k pictures of one person; every picture of the set is rendered
with α_agg (C-Net's confidence-weighted mean) plus its own β, pose, texture and lighting; the hybrid loss over
the set trains C-Net only (gradients flow through the aggregation).

Several processes (:mod:`facelib.fitting.distributed`; inside a process group of W > 1 processes, e.g. from
:func:`~facelib.fitting.distributed.launch` or ``torchrun``): the network is wrapped in DistributedDataParallel;
every process draws the same global batches (same seed), computes the loss on its part of each (contiguous rows;
whole people with the identity term; whole sets for C-Net) and weights each loss term by its part of the global
batch's term (:func:`_descend_share`), so the gradient DDP averages is the global batch's. Most terms are means
over pictures (landmark, perceptual, reg, texture, lighting, sparsity: weight W·n_r/N for n_r of N pictures).
Two are not, and are weighted exactly instead: the photometric term is a ratio of sums over the batch
(Σ d·m / Σ m), so a process's part is its own Σ d·m over the global Σ m (one extra all-reduce of Σ m per step);
the identity term is a mean over the batch's *people* with ≥ 2 pictures, so its weight is the process's share of
those people (a person is never split between processes). The loss is thus the global batch's up to
floating-point rounding (summation order), which training amplifies slowly (the tests bound it). The history holds
the global batch's loss and terms (summed over the processes), the same on every process; ``max_seconds`` is
rank 0's clock (broadcast); the progress bar is rank 0's. One process: exactly the single-process code.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..face3d.cameras import crop_box, crop_image, image_to_crop
from ..face3d.reconstruct import read_image
from ..io import atomic_path
from . import distributed as D
from .cnet import aggregate_torch
from .fitter import FitBatch, Fitter, restrict_model
from .identity import PER_PERSON, identity_spread, person_batches
from .losses import photometric_weights
from .table import DlibTargets, landmark_targets

TARGETS = ("table", "dlib")
SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, warmup: int, total: int, schedule: str = "constant") -> float:
    """Learning-rate multiplier at ``step`` (0-based) of ``total``: linear warm-up over ``warmup`` steps, then 1
    ("constant") or a cosine from 1 to 0 at the last step ("cosine")."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    if schedule == "constant" or total <= warmup:
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + float(np.cos(np.pi * t)))


# ----------------------------------------------------------------------------------------------- data
@dataclass
class TrainData:
    """Per-picture training inputs (numpy, aligned rows)."""

    crops: np.ndarray        # (n, S, S, 3) uint8 BGR: the 3DDFA crop at the render size
    rois: np.ndarray         # (n, 4) crop boxes in image pixels
    target_lm: np.ndarray    # (n, 68, 2) target landmarks in crop pixels (size S)
    attention: np.ndarray | None  # (n, S, S) uint8, skin attention × 255
    subject: np.ndarray      # (n,) person labels
    sha256: np.ndarray       # (n,)
    target_source: list = field(default_factory=list)
    emb_target: np.ndarray | None = None  # (n, D) embedding of the photo (perceptual term)

    def __len__(self) -> int:
        return len(self.sha256)

    @property
    def size(self) -> int:
        return int(self.crops.shape[1])

    def subset(self, idx) -> "TrainData":
        idx = np.asarray(idx, np.int64)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return TrainData(self.crops[idx], self.rois[idx], self.target_lm[idx], pick(self.attention),
                         self.subject[idx], self.sha256[idx], [self.target_source[i] for i in idx]
                         if self.target_source else [], pick(self.emb_target))

    def with_attention(self, skin_model) -> "TrainData":
        """A copy whose skin attention comes from ``skin_model`` (None: no attention)."""
        out = copy.copy(self)
        out.attention = None if skin_model is None else skin_attention(skin_model, self.crops)
        return out

    def save(self, path) -> None:
        """One .npz (written atomically)."""
        arrays = {k: v for k, v in (("crops", self.crops), ("rois", self.rois), ("target_lm", self.target_lm),
                                    ("attention", self.attention), ("subject", self.subject.astype(str)),
                                    ("sha256", self.sha256.astype(str)),
                                    ("target_source", np.asarray(self.target_source, dtype=str)),
                                    ("emb_target", self.emb_target)) if v is not None}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    @staticmethod
    def load(path) -> "TrainData":
        with np.load(path, allow_pickle=False) as z:
            get = lambda k: z[k] if k in z.files else None  # noqa: E731
            return TrainData(z["crops"], z["rois"], z["target_lm"], get("attention"), z["subject"], z["sha256"],
                             list(z["target_source"]), get("emb_target"))


def skin_attention(skin_model, crops: np.ndarray) -> np.ndarray:
    """(n, S, S) uint8 skin attention × 255 of (n, S, S, 3) uint8 BGR crops."""
    return np.stack([np.round(skin_model.attention(c[:, :, ::-1]) * 255).astype(np.uint8) for c in crops]) \
        if len(crops) else np.zeros(crops.shape[:3], np.uint8)


def prepare_data(table: pd.DataFrame, image_size: int = 120, targets: str = "table", skin_model=None,
                 embedder=None, batch_size: int = 32, progress: bool = False) -> TrainData:
    """:class:`TrainData` for the ok rows of a tddfa coefficient table (one row per distinct sha256)."""
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    ok = table[table["status"] == "ok"].drop_duplicates("sha256")
    landmarker = None
    if targets == "dlib":
        landmarker = DlibTargets()
    S = int(image_size)
    crops, rois, lms, att, src, embs = [], [], [], [], [], []
    for start in tqdm(range(0, len(ok), batch_size), disable=not progress, desc="R-Net data"):
        rows = ok.iloc[start:start + batch_size]
        images = [read_image(p) for p in rows["path"]]
        r = np.stack([crop_box(b) for b in rows["box"]])
        lm_img, sources = landmark_targets(rows, images, targets, landmarker, r)
        for img, roi in zip(images, r):
            c = crop_image(img, roi)
            interp = cv2.INTER_AREA if c.shape[0] > S else cv2.INTER_LINEAR
            crops.append(cv2.resize(c, (S, S), interpolation=interp))
        lm = image_to_crop(lm_img, r, S).astype(np.float32)
        rois.append(r)
        lms.append(lm)
        src += list(sources)
        if skin_model is not None:
            att.append(skin_attention(skin_model, np.stack(crops[-len(r):])))
        if embedder is not None:
            x = torch.from_numpy(np.stack([c[:, :, ::-1] for c in crops[-len(r):]]).astype(np.float32) / 255.0)
            with torch.no_grad():
                embs.append(embedder(x.permute(0, 3, 1, 2).contiguous(), torch.from_numpy(lm)).numpy())
    n = len(crops)
    return TrainData(np.stack(crops) if n else np.zeros((0, S, S, 3), np.uint8),
                     np.concatenate(rois) if n else np.zeros((0, 4)),
                     np.concatenate(lms) if n else np.zeros((0, 68, 2), np.float32),
                     np.concatenate(att) if att else None, ok["subject"].astype(str).to_numpy(),
                     ok["sha256"].astype(str).to_numpy(), src, np.concatenate(embs) if embs else None)


# ----------------------------------------------------------------------------------------------- composer
def coarse_fitter(fitter: Fitter, n_vertices: int | None = 8000) -> Fitter:
    """A shallow copy of ``fitter`` rendering a vertex-clustered copy of its mesh (:func:`decimate_mesh`, the 68
    keypoints kept) with the skin mask restricted alike; None or 0 → ``fitter`` itself."""
    if not n_vertices:
        return fitter
    ids, tri = decimate_mesh(fitter.mesh, n_vertices, keep=fitter.mesh.keypoint_ids.cpu().numpy())
    coarse = copy.copy(fitter)
    coarse.mesh = restrict_model(fitter.mesh, ids, tri)
    coarse.skin_vertices = fitter.skin_vertices[torch.as_tensor(ids, device=fitter.skin_vertices.device)]
    return coarse


class Composer:
    """Network coefficients → :class:`Fitter` ``forward`` → ``losses`` (the hybrid loss)."""

    def __init__(self, fitter: Fitter, weights: dict | None = None, embedder=None, mesh_vertices: int | None = 8000):
        if embedder is not None:
            fitter = copy.copy(fitter)
            fitter.embedder = embedder
        self.f = coarse_fitter(fitter, mesh_vertices)
        self.hybrid = self.f.loss("full", weights, has_target_landmarks=True)

    @property
    def size(self) -> int:
        return self.f.image_size

    def fit_batch(self, coeffs: dict[str, torch.Tensor], batch: dict) -> FitBatch:
        """The fitter's batch with the network's coefficients as start values (gradients flow through them)."""
        return FitBatch(mode="full", size=coeffs["alpha"].shape[0], alpha0=coeffs["alpha"], beta0=coeffs["beta"],
                        pose0=coeffs["pose"].reshape(-1, 3, 4), rois=batch["rois"], target_lm=batch.get("lm"),
                        init={}, perceptual="perceptual" in self.hybrid.active, target=batch.get("image"),
                        attention=batch.get("attention"), emb_lm=batch.get("lm"), emb_target=batch.get("emb"))

    def forward(self, coeffs: dict[str, torch.Tensor], batch: dict) -> tuple[dict, FitBatch]:
        """(rendered, fit batch): zero offsets on top of the coefficients; γ and texture (or gain) as given."""
        fb = self.fit_batch(coeffs, batch)
        z = coeffs["alpha"].new_zeros
        B = fb.size
        params = {"alpha": z(B, self.f.mesh.n_id), "beta": z(B, self.f.mesh.n_exp), "ds": z(B), "omega": z(B, 3),
                  "dt": z(B, 2), "gamma": coeffs["gamma"]}
        params["texture" if "texture" in coeffs else "gain"] = coeffs["texture" if "texture" in coeffs else "gain"]
        return self.f.forward(params, fb), fb

    def losses(self, rendered: dict, fb: FitBatch):
        total, terms, _ = self.f.losses(self.hybrid, rendered, fb)
        return total, terms

    def batch(self, data: TrainData, idx) -> dict[str, torch.Tensor | None]:
        """Tensors of rows ``idx`` of ``data`` on the device: ``image`` (B, 3, S, S) RGB 0–1, ``lm`` (B, 68, 2) crop
        pixels, ``rois``, ``attention`` (B, 1, S, S) or None, ``emb`` (B, D) or None."""
        dev = self.f.device
        img = torch.from_numpy(np.ascontiguousarray(data.crops[idx][..., ::-1])).to(dev).float() / 255.0
        out = {"image": img.permute(0, 3, 1, 2).contiguous(),
               "lm": torch.from_numpy(np.asarray(data.target_lm[idx], np.float32)).to(dev),  # float32 before it moves
               "rois": torch.from_numpy(np.asarray(data.rois[idx], np.float32)).to(dev),
               "attention": None, "emb": None}
        if data.attention is not None:
            out["attention"] = (torch.from_numpy(data.attention[idx]).to(dev).float() / 255.0).unsqueeze(1)
        if data.emb_target is not None:
            out["emb"] = torch.from_numpy(np.asarray(data.emb_target[idx], np.float32)).to(dev)
        return out


# ----------------------------------------------------------------------------------------------- R-Net
def rnet_step(net, composer: Composer, data: TrainData, idx, opt=None, identity_weight: float = 0.0,
              share: D.Share | None = None) -> tuple[float, dict[str, float]]:
    """One training step on rows ``idx`` (no update when ``opt`` is None); returns (total, weighted terms).
    ``identity_weight`` > 0 adds that weight × :func:`facelib.fitting.identity.identity_spread` of the batch's
    whitened α over ``data.subject`` (term ``identity``). ``share`` (several processes, ``net`` DDP-wrapped):
    ``idx`` is the global batch, this process computes ``share.rows``; returns the global batch's loss."""
    rows = idx if share is None else share.rows
    module = _module(net)
    b = composer.batch(data, rows)
    x = module.preprocess(data.crops[rows]).to(composer.f.device)
    coeffs = module.decode(net(x))
    rendered, fb = composer.forward(coeffs, b)
    total, terms = composer.losses(rendered, fb)
    if identity_weight:
        term = identity_weight * identity_spread(rendered["alpha_z"], data.subject[rows])
        total, terms = total + term, {**terms, "identity": term}
    if share is not None:
        return _descend_share(terms, opt, share, rendered, fb)
    return _descend(total, terms, opt)


@torch.no_grad()
def evaluate_loss(net, composer: Composer, data: TrainData, batch_size: int = 32) -> dict[str, float]:
    """Mean weighted hybrid-loss terms of ``net`` over ``data`` (eval mode)."""
    was = net.training
    net.eval()
    sums: dict[str, float] = {}
    n = 0
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        total, terms = rnet_step(net, composer, data, idx)
        for k, v in {**terms, "total": total}.items():
            sums[k] = sums.get(k, 0.0) + v * len(idx)
        n += len(idx)
    net.train(was)
    return {k: v / max(n, 1) for k, v in sums.items()}


def train_rnet(net, composer: Composer, data: TrainData, epochs: int = 4, batch_size: int = 16, lr: float = 1e-4,
               head_lr: float = 1e-3, seed: int = 0, max_seconds: float | None = None, warmup: int = 50,
               schedule: str = "constant", identity_weight: float = 0.0, per_person: int = PER_PERSON,
               progress: bool = False) -> dict:
    """Train ``net`` in place on ``data``. New heads (texture, lighting) learn at ``head_lr``, the rest at ``lr``,
    both after a linear warm-up over the first ``warmup`` steps (Adam's first steps move every weight by about the
    learning rate, which a pretrained network does not survive at full rate); then ``schedule`` "constant" keeps
    the rates, "cosine" lowers them to zero by the last step. ``max_seconds`` stops after the step that passes
    it. ``identity_weight`` > 0: each epoch's batches come from :func:`facelib.fitting.identity.person_batches`
    (``per_person`` pictures of one person per group, drawn with ``seed``) and the loss adds the identity term.
    Returns a history: per-step total/terms, epochs done, seconds.

    In a process group of W > 1 processes (:mod:`facelib.fitting.distributed`): ``batch_size`` is the global
    batch, every process trains its part of it (see the module docstring); the history and the weights are the
    same on every process."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    dev = composer.f.device
    rank, W = D.world(dev)
    net.to(dev).train()  # BatchNorm statistics stay frozen (RNet.freeze_bn)
    heads = [p for n, p in net.named_parameters() if n.startswith(("fc_tex", "fc_gamma"))]
    rest = [p for n, p in net.named_parameters() if not n.startswith(("fc_tex", "fc_gamma"))]
    opt = torch.optim.Adam([{"params": rest, "lr": lr}, {"params": heads, "lr": head_lr}])
    rng = np.random.default_rng(seed)
    plans = [person_batches(data.subject, batch_size, per_person, rng) for _ in range(epochs)] \
        if identity_weight else None
    n_steps = sum(map(len, plans)) if plans else epochs * -(-len(data) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warmup, n_steps, schedule))
    torch.manual_seed(seed)
    hist = {"total": [], "terms": [], "epoch": []}
    t0 = time.perf_counter()
    done = 0
    stop = False
    model, idle = (net, []) if W == 1 else D.data_parallel(net, dev, net.preprocess(data.crops[:1]).to(dev))
    bar = tqdm(total=epochs * len(data), disable=not progress or rank != 0, desc="R-Net", unit="img")
    try:
        for ep in range(epochs):
            if plans:
                batches = plans[ep]
            else:
                order = rng.permutation(len(data))
                batches = [np.sort(order[start:start + batch_size]) for start in range(0, len(order), batch_size)]
            for idx in batches:
                share = None if W == 1 else D.Share.of(idx, rank, W, data.subject if identity_weight else None)
                total, terms = rnet_step(model, composer, data, idx, opt, identity_weight, share)
                sched.step()
                hist["total"].append(total)
                hist["terms"].append(terms)
                hist["epoch"].append(ep)
                bar.update(len(idx))
                if max_seconds is not None and D.agree(time.perf_counter() - t0 > max_seconds, W):
                    stop = True
                    break
            done = ep + 1
            if stop:
                break
    finally:
        D.release(idle)
    bar.close()
    net.eval()
    hist.update(epochs_done=done, seconds=time.perf_counter() - t0, steps=len(hist["total"]),
                stopped_early=stop)
    return hist


# ----------------------------------------------------------------------------------------------- C-Net
def sample_sets(subject: np.ndarray, k: int, n_sets: int, seed: int = 0) -> np.ndarray:
    """(n_sets, k) row indices, each row k distinct pictures of one person (people with ≥ k pictures, drawn in
    proportion to their number of pictures)."""
    subject = np.asarray(subject)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(subject == s) for s in np.unique(subject)]
    groups = [g for g in groups if len(g) >= k]
    if not groups:
        raise ValueError(f"no person has {k} pictures to build C-Net training sets")
    w = np.array([len(g) for g in groups], np.float64)
    who = rng.choice(len(groups), size=n_sets, p=w / w.sum())
    return np.stack([np.sort(rng.choice(groups[g], size=k, replace=False)) for g in who])


def cnet_step(cnet, composer: Composer, data: TrainData, coeffs: dict[str, np.ndarray], features: np.ndarray,
              sets: np.ndarray, opt=None, share: D.Share | None = None) -> tuple[float, dict[str, float]]:
    """One C-Net step on ``sets`` (S, k): every picture of a set rendered with the set's α_agg and its own other
    coefficients (``coeffs`` from the frozen R-Net); hybrid loss over all S·k renderings. ``share`` (several
    processes, ``cnet`` DDP-wrapped): rows of ``sets`` this process computes; returns the global loss."""
    dev = composer.f.device
    if share is not None:
        sets = sets[share.rows]
    S, k = sets.shape
    flat = sets.reshape(-1)
    t = {n: torch.from_numpy(np.asarray(v[flat], np.float32)).to(dev) for n, v in coeffs.items()}
    conf = cnet(torch.from_numpy(np.asarray(features[flat], np.float32)).to(dev))  # (S·k, d)
    agg = aggregate_torch(t["alpha"].reshape(S, k, -1), conf.reshape(S, k, -1))  # (S, d)
    t["alpha"] = agg.repeat_interleave(k, dim=0)
    b = composer.batch(data, flat)
    rendered, fb = composer.forward(t, b)
    if share is not None:
        return _descend_share(composer.losses(rendered, fb)[1], opt, share, rendered, fb)
    return _descend(*composer.losses(rendered, fb), opt)


def train_cnet(cnet, composer: Composer, data: TrainData, coeffs: dict[str, np.ndarray], features: np.ndarray,
               k: int = 3, steps: int = 100, sets_per_step: int = 4, lr: float = 1e-3, seed: int = 0,
               max_seconds: float | None = None, progress: bool = False) -> dict:
    """Train C-Net in place (R-Net frozen: ``coeffs``/``features`` are its outputs on ``data``). In a process
    group of W > 1 processes each step's ``sets_per_step`` sets are split between the processes (whole sets)."""
    dev = composer.f.device
    rank, W = D.world(dev)
    cnet.to(dev).train()
    opt = torch.optim.Adam(cnet.parameters(), lr=lr)
    sets = sample_sets(data.subject, k, steps * sets_per_step, seed)
    torch.manual_seed(seed)
    hist = {"total": [], "terms": []}
    t0 = time.perf_counter()
    model, idle = (cnet, []) if W == 1 else D.data_parallel(
        cnet, dev, torch.from_numpy(np.asarray(features[:1], np.float32)).to(dev))
    try:
        for s in tqdm(range(steps), disable=not progress or rank != 0, desc="C-Net"):
            step_sets = sets[s * sets_per_step:(s + 1) * sets_per_step]
            share = None if W == 1 else D.Share.of(np.arange(len(step_sets)), rank, W)
            total, terms = cnet_step(model, composer, data, coeffs, features, step_sets, opt, share)
            hist["total"].append(total)
            hist["terms"].append(terms)
            if max_seconds is not None and D.agree(time.perf_counter() - t0 > max_seconds, W):
                break
    finally:
        D.release(idle)
    cnet.eval()
    hist.update(steps=len(hist["total"]), seconds=time.perf_counter() - t0)
    return hist


# ----------------------------------------------------------------------------------------------- coarse mesh
def decimate_mesh(mesh, target_vertices: int = 8000, keep=None) -> tuple[np.ndarray, np.ndarray]:
    """Vertex-clustering simplification (Rossignac & Borrel) of a restricted model's mean shape: vertices are
    binned on a 3-D grid whose cell is chosen to leave about ``target_vertices`` cells; each cell is represented by
    its vertex nearest the cell's centroid (``keep``, e.g. the 68 keypoints, always represent their cell);
    triangles are re-indexed to representatives, and degenerate and duplicate ones dropped (winding kept).
    Returns (vertex ids into ``mesh``, triangles (F, 3) indexing that id list)."""
    v = mesh.mean_shape.cpu().numpy().astype(np.float64)
    tri = mesh.triangles.cpu().numpy()
    keep = np.unique(np.asarray([] if keep is None else keep, np.int64))
    extent = v.max(0) - v.min(0)
    lo, hi = 1e-6 * extent.max(), extent.max()
    for _ in range(40):  # bisection on the cell size for the vertex count
        cell = (lo * hi) ** 0.5
        n = len(np.unique(np.floor((v - v.min(0)) / cell).astype(np.int64), axis=0))
        lo, hi = (cell, hi) if n > target_vertices else (lo, cell)
        if abs(n - target_vertices) < 0.02 * target_vertices:
            break
    grid = np.floor((v - v.min(0)) / cell).astype(np.int64)
    _, inv = np.unique(grid, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n_cells = inv.max() + 1
    cent = np.stack([np.bincount(inv, v[:, i], n_cells) for i in range(3)], 1) / np.bincount(inv, None,
                                                                                            n_cells)[:, None]
    d = ((v - cent[inv]) ** 2).sum(1)
    order = np.lexsort((d, inv))
    first = np.ones(len(order), bool)
    first[1:] = inv[order][1:] != inv[order][:-1]
    rep = np.empty(n_cells, np.int64)
    rep[inv[order][first]] = order[first]
    rep[inv[keep]] = keep
    t = rep[inv[tri]]
    t = t[(t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])]
    _, uniq = np.unique(np.sort(t, 1), axis=0, return_index=True)
    t = t[np.sort(uniq)]
    ids = np.union1d(np.unique(t), keep)
    remap = -np.ones(len(v), np.int64)
    remap[ids] = np.arange(len(ids))
    return ids, remap[t]


def _module(net):
    """The network inside a DistributedDataParallel wrapper (else ``net``)."""
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


def _descend_share(terms: dict, opt, share: D.Share, rendered: dict, fb: FitBatch) -> tuple[float, dict[str, float]]:
    """One optimiser step of one of W processes on its ``share`` of a global batch. Each weighted term is scaled
    to this process's part of the global batch's term — n_r/N for the means over pictures; Σ_r d·m / Σ_all m
    for the photometric ratio of sums (Σ m all-reduced); its share of the people for ``identity`` — so the parts
    sum over the processes to the global batch's loss; the objective is W × the parts, whose gradient DDP
    averages into the global batch's gradient. Returns the global batch's loss and terms (all-reduced)."""
    scale = {name: share.weight for name in terms}
    if "photo" in terms:
        own = float(photometric_weights(rendered["mask"], fb.attention).sum()) if share.n else 0.0
        every = float(D.all_sum([own])[0])
        scale["photo"] = max(own, 1.0) / max(every, 1.0) if share.n else 0.0
    if "identity" in terms:
        scale["identity"] = share.people / share.people_total if share.people_total and share.n else 0.0
    parts = {name: value * scale[name] for name, value in terms.items()}
    if opt is not None:
        opt.zero_grad(set_to_none=True)
        (torch.stack(list(parts.values())).sum() * share.world).backward()
        opt.step()
    glob = D.all_sum([float(v.detach()) for v in parts.values()])
    return float(glob.sum()), {name: float(v) for name, v in zip(parts, glob)}


def _descend(total, terms, opt) -> tuple[float, dict[str, float]]:
    """One optimiser step on ``total`` (none when ``opt`` is None); the loss and its weighted terms as floats."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return float(total.detach()), {k: float(v.detach()) for k, v in terms.items()}
