"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) read from its .dat file into PyTorch.

The network is the 29-convolution ResNet of dlib's ``dnn_face_recognition_ex.cpp`` (input: a 150×150 RGB face chip,
:mod:`facelib.fitting.face_chip`; output: a 128-d descriptor; same person ⇔ Euclidean distance < 0.6). Its weights
are read straight from the ``.dat`` file — dlib's own binary serialisation, parsed here in Python (no dlib needed to
load or run it):

- integers: a control byte (bit 7 = negative, low 4 bits = number of bytes) then the magnitude, little endian;
- floating point (double/float fields): an integer mantissa then an integer exponent, value = mantissa·2^exponent;
- bool: the ASCII byte ``'1'``/``'0'``; string: its length (integer) then the bytes;
- tensors (``resizable_tensor``): version 2, num_samples, k, nr, nc, then raw little-endian float32 values;
  ``alias_tensor``: version 1 and the four dimensions only.
- the net: ``add_loss_layer`` (version 1, ``loss_metric_2`` margin, dist_thresh) then its sub-network. Every
  ``add_layer`` writes its version, then its *sub-network*, then its own layer details and bookkeeping (3 bools,
  x_grad, cached_output, params_grad tensors); ``add_tag_layer``/``add_skip_layer`` write version 1 and their
  sub-network only; the bottom ``add_layer`` holds the input layer (``input_rgb_image_sized``: avg_red, avg_green,
  avg_blue, 150, 150). So the file lists the wrapper versions from the loss down to the input, then the layer
  details from the input up to the fc layer.

Layers found in the file and how they map to PyTorch (all reproduced exactly):
``con_4`` → ``Conv2d`` (params = filters (F,C,kh,kw) then F biases; padding 0 for strided convs, 1 for 3×3/1),
``affine_`` (batch norm frozen at training end: y = γ·x + β per channel; ``bn_con2`` would be folded the same way),
``relu_``, ``max_pool_2`` (3×3/2, pad 0), ``avg_pool_2`` (2×2/2 in the downsampling shortcuts; 0×0 = average over
everything), tag/skip/``add_prev_`` residuals, ``fc_2`` without bias (weights stored (inputs, outputs)).
dlib's ``add_prev`` adds tensors of different sizes by zero-padding the smaller at the bottom/right (the shortcut
of the third downsampling block is 4×4 while its residual branch is 3×3); that is reproduced. The descriptor is the
raw fc output (``loss_metric`` adds no normalisation). Input normalisation: (pixel − avg)/256 per channel, with the
averages stored in the file (122.782, 117.001, 104.298).

Entry points: :func:`load_dlib_resnet`, :func:`parse_dlib_dat`, :class:`DlibFaceResNet`. A line-by-line port of
dlib's serialised network: the .dat parser mirrors dlib's format and layer order, so it stays with the layers it
builds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import FacelibError
from ..face3d.landmarks import face_recognition_models_dir
from .face_chip import CHIP_SIZE

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class DlibModelFormatError(FacelibError, ValueError):
    """The .dat file is not (or no longer) a valid serialised dlib face-recognition network."""


# ---------------------------------------------------------------------------------------------------------------
# dlib serialisation reader


class _Reader:
    def __init__(self, data: bytes, name: str = "<bytes>"):
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> DlibModelFormatError:
        return DlibModelFormatError(f"{self.name}: {what} (at byte {self.pos} of {len(self.data)})")

    def _take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"file truncated while reading {what}: needed {n} bytes, "
                            f"{len(self.data) - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self, what: str = "an integer") -> int:
        ctrl = self._take(1, what)[0]
        n = ctrl & 0x0F
        if n == 0 or n > 8 or (ctrl & 0x70):
            raise self.fail(f"bad integer control byte 0x{ctrl:02x} while reading {what}")
        value = int.from_bytes(self._take(n, what), "little")
        return -value if ctrl & 0x80 else value

    def float(self, what: str = "a float") -> float:
        mantissa = self.int(what + " (mantissa)")
        exponent = self.int(what + " (exponent)")
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def bool(self, what: str = "a bool") -> bool:
        b = self._take(1, what)
        if b not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {b!r} while reading {what}")
        return b == b"1"

    def string(self, what: str = "a string") -> str:
        n = self.int(what + " (length)")
        if n < 0 or n > 1 << 20:
            raise self.fail(f"implausible string length {n} while reading {what}")
        raw = self._take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-ASCII bytes where {what} was expected") from None

    def peek_string(self) -> str | None:
        """The string at the current position if one plausibly starts there (position unchanged)."""
        pos = self.pos
        try:
            n = self.int()
            if not 1 <= n <= 64 or self.pos + n > len(self.data):
                return None
            raw = self.data[self.pos:self.pos + n]
            return raw.decode("ascii") if all(32 < c < 127 for c in raw) else None
        except DlibModelFormatError:
            return None
        finally:
            self.pos = pos

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        version = self.int(what + " (version)")
        if version != 2:
            raise self.fail(f"unexpected tensor version {version} while reading {what}")
        shape = tuple(self.int(what + " (dims)") for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative tensor dimensions {shape} in {what}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self._take(4 * count, what + f" data {shape}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self, what: str = "an alias_tensor") -> tuple[int, int, int, int]:
        version = self.int(what + " (version)")
        if version != 1:
            raise self.fail(f"unexpected alias_tensor version {version} while reading {what}")
        return tuple(self.int(what + " (dims)") for _ in range(4))


@dataclass
class Layer:
    kind: str                       # con, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip
    version: str = ""               # dlib's version string ("con_4", …), "" for tag/skip
    attrs: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


@dataclass
class DlibNet:
    """Parsed network, layers from the input up (as computed)."""
    input_avg: tuple[float, float, float]
    input_size: tuple[int, int]
    loss: dict
    layers: list[Layer]


def _read_details(r: _Reader) -> Layer:
    name = r.string("a layer's version string")
    if name.startswith("con_"):
        if name not in ("con_4", "con_5", "con_6"):
            raise r.fail(f"unsupported conv layer version {name!r}")
        params = r.tensor("con params")
        a = dict(num_filters=r.int(), nr=r.int(), nc=r.int(), stride_y=r.int(), stride_x=r.int(),
                 padding_y=r.int(), padding_x=r.int())
        filt = r.alias_tensor("con filters")
        bias = r.alias_tensor("con biases")
        for _ in range(4):
            r.float("con learning-rate multipliers")
        use_bias = r.bool() if name in ("con_5", "con_6") else True
        use_relu = r.bool() if name == "con_6" else False
        nf = int(np.prod(filt))
        nb = int(np.prod(bias)) if use_bias else 0
        flat = params.reshape(-1)
        if flat.size != nf + nb:
            raise r.fail(f"conv params hold {flat.size} values, filters {filt} + biases {bias} need {nf + nb}")
        arrays = {"weight": flat[:nf].reshape(filt)}
        if nb:
            arrays["bias"] = flat[nf:nf + nb].reshape(-1)
        if use_relu:
            raise r.fail("con_ with a fused relu (con_6 use_relu) is not supported")
        return Layer("con", name, a, arrays)
    if name in ("affine_", "affine_2"):
        params = r.tensor("affine params")
        gshape = r.alias_tensor("affine gamma")
        r.alias_tensor("affine beta")
        mode = r.int("affine mode")
        disabled = r.bool() if name == "affine_2" else False
        k = int(np.prod(gshape))
        flat = params.reshape(-1)
        if not disabled and flat.size != 2 * k:
            raise r.fail(f"affine params hold {flat.size} values, expected 2×{k}")
        arrays = {} if disabled else {"gamma": flat[:k].copy(), "beta": flat[k:].copy()}
        return Layer("affine", name, {"mode": mode, "disabled": disabled, "shape": gshape}, arrays)
    if name in ("bn_con2", "bn_fc2"):
        params = r.tensor("bn params")
        gshape = r.alias_tensor("bn gamma")
        r.alias_tensor("bn beta")
        r.tensor("bn means")
        r.tensor("bn invstds")
        rmean = r.tensor("bn running means").reshape(-1)
        rvar = r.tensor("bn running variances").reshape(-1)
        r.int("bn num_updates")
        r.int("bn running_stats_window_size")
        for _ in range(4):
            r.float("bn learning-rate multipliers")
        eps = r.float("bn eps")
        k = int(np.prod(gshape))
        flat = params.reshape(-1)
        g = flat[:k] / np.sqrt(rvar + eps)
        b = flat[k:2 * k] - g * rmean
        return Layer("affine", name, {"mode": 0 if name == "bn_con2" else 1, "disabled": False, "shape": gshape},
                     {"gamma": g.astype(np.float32), "beta": b.astype(np.float32)})
    if name in ("relu_", "relu_2"):
        disabled = r.bool() if name == "relu_2" else False
        return Layer("relu", name, {"disabled": disabled})
    if name in ("max_pool_2", "avg_pool_2"):
        a = dict(nr=r.int(), nc=r.int(), stride_y=r.int(), stride_x=r.int(), padding_y=r.int(), padding_x=r.int())
        return Layer(name[:-2], name, a)
    if name == "add_prev_":
        return Layer("add_prev", name)
    if name in ("fc_2", "fc_3"):
        a = dict(num_outputs=r.int(), num_inputs=r.int())
        params = r.tensor("fc params")
        r.alias_tensor("fc weights")
        r.alias_tensor("fc biases")
        a["bias_mode"] = r.int("fc bias mode")
        for _ in range(4):
            r.float("fc learning-rate multipliers")
        use_bias = r.bool() if name == "fc_3" else True
        has_bias = a["bias_mode"] == 0 and use_bias
        flat = params.reshape(-1)
        nw = a["num_inputs"] * a["num_outputs"]
        if flat.size != nw + (a["num_outputs"] if has_bias else 0):
            raise r.fail(f"fc params hold {flat.size} values, expected {nw} weights (+ biases: {has_bias})")
        arrays = {"weight": flat[:nw].reshape(a["num_inputs"], a["num_outputs"])}  # (in, out): y = x·W
        if has_bias:
            arrays["bias"] = flat[nw:].copy()
        return Layer("fc", name, a, arrays)
    raise r.fail(f"unsupported dlib layer type {name!r}")


def _read_layer_tail(r: _Reader, version: int, input_layer: bool) -> None:
    """The bookkeeping an add_layer writes after its details (nothing we need)."""
    for _ in range(3):
        r.bool("add_layer flags")
    r.tensor("add_layer x_grad")
    r.tensor("add_layer cached_output")
    if input_layer:
        r.tensor("add_layer grad_final")
        if version >= 3:
            r.int("add_layer sample_expansion_factor")
    elif version >= 2:
        r.tensor("add_layer params_grad")


def parse_dlib_dat(data: bytes, name: str = "<bytes>") -> DlibNet:
    """Parse a serialised ``loss_metric`` network (the face-recognition ResNet) into layers, input first."""
    r = _Reader(data, name)
    if len(data) < 16:
        raise r.fail("file too small to be a dlib network")
    if r.int("add_loss_layer version") != 1:
        raise r.fail("not a dlib add_loss_layer (version != 1)")
    loss_name = r.string("loss layer version")
    if loss_name == "loss_metric_2":
        loss = {"type": "loss_metric", "margin": r.float(), "dist_thresh": r.float()}
    elif loss_name == "loss_metric_":
        loss = {"type": "loss_metric", "margin": 0.1, "dist_thresh": 0.75}
    else:
        raise r.fail(f"expected a loss_metric network, found loss {loss_name!r}")

    # Wrapper versions from the loss down to the input layer: add_layer = 1/2, tag/skip = 1.
    versions: list[int] = []
    while True:
        s = r.peek_string()
        if s is not None and s.startswith("input"):
            break
        if len(versions) > 10000:
            raise r.fail("no input layer found")
        versions.append(r.int("layer version"))
    if not versions:
        raise r.fail("no layers before the input layer")
    input_version = versions.pop()   # the bottom add_layer's version (precedes its input layer)
    inp = r.string("input layer version")
    if inp != "input_rgb_image_sized":
        raise r.fail(f"unsupported input layer {inp!r} (expected input_rgb_image_sized)")
    avg = (r.float("avg_red"), r.float("avg_green"), r.float("avg_blue"))
    size = (r.int("input rows"), r.int("input cols"))
    layers = [_read_details(r)]
    _read_layer_tail(r, input_version, input_layer=True)
    for v in reversed(versions):
        # add_layer is version 2 in every dlib since 2016 (version 1 had no params_grad and cannot be told apart
        # from a tag/skip wrapper without the C++ type; the shipped model uses 2).
        if v == 2:
            layers.append(_read_details(r))
            _read_layer_tail(r, v, input_layer=False)
        elif v == 1:
            layers.append(Layer("tag"))   # tag or skip: resolved by _resolve_tags
        else:
            raise r.fail(f"unexpected layer wrapper version {v}")
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected trailing bytes after the network")
    return DlibNet(avg, size, loss, _resolve_tags(layers))


def _resolve_tags(layers: list[Layer]) -> list[Layer]:
    """Give tags/skips their ids. dlib stores no tag ids; the ResNet of dnn_face_recognition_ex uses
    ``residual = add_prev1<block<tag1<x>>>`` and ``residual_down = add_prev2<avg_pool<skip1<tag2<block<tag1<x>>>>>>``:
    a lone tag is tag1, two consecutive ones are tag2 then skip1, and add_prev adds tag2 after a skip, else tag1."""
    out: list[Layer] = []
    i = 0
    skipped = False
    while i < len(layers):
        L = layers[i]
        if L.kind == "tag":
            if i + 1 < len(layers) and layers[i + 1].kind == "tag":
                out += [Layer("tag", attrs={"id": 2}), Layer("skip", attrs={"id": 1})]
                skipped = True
                i += 2
                continue
            out.append(Layer("tag", attrs={"id": 1}))
            skipped = False
        elif L.kind == "add_prev":
            L.attrs["id"] = 2 if skipped else 1
            skipped = False
            out.append(L)
        else:
            out.append(L)
        i += 1
    return out


# ---------------------------------------------------------------------------------------------------------------
# PyTorch module


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's tt::add for tensors of different sizes: the missing elements count as 0 (bottom/right padding)."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def pad(t):
        if list(t.shape) == shape:
            return t
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))
    return pad(a) + pad(b)


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet. ``forward(chips)``: (B,3,150,150) RGB float in 0..255 → (B,128) descriptor,
    equal to ``dlib.face_recognition_model_v1.compute_face_descriptor`` on the same chip."""

    def __init__(self, net: DlibNet):
        super().__init__()
        self.input_size = net.input_size
        self.loss = net.loss
        self.register_buffer("avg", torch.tensor(net.input_avg, dtype=torch.float32).view(1, 3, 1, 1))
        self.convs = nn.ModuleList()
        self.fcs = nn.ModuleList()
        self.ops: list[tuple] = []
        n_aff = 0
        for L in net.layers:
            a = L.attrs
            if L.kind == "con":
                w = torch.from_numpy(L.arrays["weight"].copy())
                conv = nn.Conv2d(w.shape[1], w.shape[0], (w.shape[2], w.shape[3]),
                                 stride=(a["stride_y"], a["stride_x"]), padding=(a["padding_y"], a["padding_x"]),
                                 bias="bias" in L.arrays)
                conv.weight.data.copy_(w)
                if "bias" in L.arrays:
                    conv.bias.data.copy_(torch.from_numpy(L.arrays["bias"]))
                self.convs.append(conv)
                self.ops.append(("con", len(self.convs) - 1))
            elif L.kind == "affine":
                if L.attrs.get("disabled"):
                    continue
                if a["mode"] != 0:   # dlib CONV_MODE = 0 (per channel); FC_MODE = 1 would be per element
                    raise NotImplementedError("affine/bn layers in FC mode are not supported")
                self.register_buffer(f"gamma{n_aff}", torch.from_numpy(L.arrays["gamma"].copy()).view(1, -1, 1, 1))
                self.register_buffer(f"beta{n_aff}", torch.from_numpy(L.arrays["beta"].copy()).view(1, -1, 1, 1))
                self.ops.append(("affine", n_aff))
                n_aff += 1
            elif L.kind == "relu":
                if not a.get("disabled"):
                    self.ops.append(("relu",))
            elif L.kind in ("max_pool", "avg_pool"):
                if L.kind == "avg_pool" and (a["padding_y"] or a["padding_x"]):
                    raise NotImplementedError("padded avg_pool (dlib's edge normalisation) is not implemented")
                self.ops.append((L.kind, (a["nr"], a["nc"]), (a["stride_y"], a["stride_x"]),
                                 (a["padding_y"], a["padding_x"])))
            elif L.kind in ("tag", "skip", "add_prev"):
                self.ops.append((L.kind, a["id"]))
            elif L.kind == "fc":
                fc = nn.Linear(a["num_inputs"], a["num_outputs"], bias="bias" in L.arrays)
                fc.weight.data.copy_(torch.from_numpy(L.arrays["weight"].T.copy()))
                if "bias" in L.arrays:
                    fc.bias.data.copy_(torch.from_numpy(L.arrays["bias"]))
                self.fcs.append(fc)
                self.ops.append(("fc", len(self.fcs) - 1))
            else:  # pragma: no cover
                raise NotImplementedError(L.kind)
        self.requires_grad_(False)   # a fixed feature extractor; gradients flow to the input only
        self.eval()

    @property
    def num_conv(self) -> int:
        return len(self.convs)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        if chips.dim() != 4 or chips.shape[1] != 3:
            raise ValueError(f"chips must be (B,3,H,W) RGB, got {tuple(chips.shape)}")
        if tuple(chips.shape[2:]) != tuple(self.input_size):
            raise ValueError(f"chips must be {self.input_size[0]}×{self.input_size[1]} (dlib.get_face_chip "
                             f"size=150, padding=0.25), got {tuple(chips.shape[2:])}")
        x = (chips.to(self.avg.dtype) - self.avg) / 256.0
        tags: dict[int, torch.Tensor] = {}
        for op in self.ops:
            kind = op[0]
            if kind == "con":
                x = self.convs[op[1]](x)
            elif kind == "affine":
                x = x * getattr(self, f"gamma{op[1]}") + getattr(self, f"beta{op[1]}")
            elif kind == "relu":
                x = F.relu(x)
            elif kind == "max_pool":
                x = F.max_pool2d(x, op[1], op[2], op[3])
            elif kind == "avg_pool":
                if op[1][0] == 0 or op[1][1] == 0:
                    x = x.mean(dim=(2, 3), keepdim=True)
                else:
                    x = F.avg_pool2d(x, op[1], op[2], 0)
            elif kind == "tag":
                tags[op[1]] = x
            elif kind == "skip":
                x = tags[op[1]]
            elif kind == "add_prev":
                x = _add_padded(x, tags[op[1]])
            elif kind == "fc":
                x = self.fcs[op[1]](x.flatten(1))
        return x


def default_model_path() -> Path:
    return face_recognition_models_dir() / MODEL_FILE


def load_dlib_resnet(path: str | Path | None = None) -> DlibFaceResNet:
    """Load ``dlib_face_recognition_resnet_model_v1.dat`` (default: from the face_recognition_models package)."""
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"dlib face-recognition model not found: {path} "
                                "(pip install face-recognition-models, or pass its path)")
    net = parse_dlib_dat(path.read_bytes(), str(path))
    n_con = sum(L.kind == "con" for L in net.layers)
    n_fc = sum(L.kind == "fc" for L in net.layers)
    if n_fc != 1 or net.layers[-1].kind != "fc":
        raise DlibModelFormatError(f"{path}: expected a network ending in one fc layer, found {n_fc}")
    if net.input_size != (CHIP_SIZE, CHIP_SIZE):
        raise DlibModelFormatError(f"{path}: input size {net.input_size}, expected 150×150")
    model = DlibFaceResNet(net)
    model.source = str(path)
    model.num_conv_layers = n_con
    return model

