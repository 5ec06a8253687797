"""A guard that SIMULATES an Apple-GPU (MPS) device's rules on the CPU, for tests. It is never a run on MPS.

Apple GPUs have no float64 and no complex dtypes (complex64 is partial; the study needs none), and some ops
have no MPS kernel. Code that runs fine on the CPU or CUDA can therefore fail on a Mac. :class:`SimulatedMPS` runs
a device path on the CPU with ``device="cpu"`` standing in for the accelerator and fails at the first tensor or
op that MPS would refuse. Numbers, speed and kernels are the CPU's; only dtype and op *rules* are checked.

Which tensors count as on the device
    Every tensor is either a *device tensor* or a *CPU-side tensor*; the guard tracks which as the path runs
    (a ``torch.overrides.TorchFunctionMode``: it sees each torch function and tensor method the Python code calls):

    - ``x.to(device)`` / ``x.to(device=…)`` / ``x.cuda()`` with the simulated device, a factory or conversion
      called with ``device=`` the simulated device (``torch.zeros(…, device=dev)``, ``torch.as_tensor(a,
      device=dev)``, ``t.new_zeros(…, device=dev)``) and ``module.to(device)`` (its parameters and buffers) make
      **device tensors**;
    - the result of any other op is a device tensor when one of its tensor inputs is one (``zeros_like``,
      ``x.float()``, ``x + 1``, slices, ``.grad``, …); ``x.to(other)`` follows ``other``;
    - ``x.cpu()``, and tensors made without a device (``torch.from_numpy``, ``torch.tensor(…)`` without
      ``device=``, tensors that existed before the guard) are **CPU-side**. Their dtype is free: float64 numpy
      work and CPU tensors are fine as long as they are converted (``.float()``) *before* they go to the device.

    Because the simulated device *is* the CPU, ``x.to("cpu")`` of a CPU tensor returns ``x`` itself, which is then
    counted as a device tensor from then on (conservative). CPU-side code therefore says ``.cpu()`` (or uses numpy),
    never ``.to("cpu")``; under the guard ``.cpu()`` returns an alias so the device tensor keeps its status.

Rules checked (each raises :class:`DeviceRuleError` naming the op, the dtype and the caller's ``file:line``)
    1. no device tensor of a dtype in :data:`MPS_FORBIDDEN_DTYPES` (float64, complex32/64/128) is created or moved
       to the device (``torch.from_numpy(float64).to(dev)`` fails; ``.float().to(dev)`` is fine);
    2. no op of :data:`MPS_LACKING_OPS` on a device tensor (linear-algebra decompositions that MPS lacks or runs
       through the CPU fallback), nor an int64 ``scatter_reduce`` with ``amin``/``amax`` (the renderer's packed
       z-buffer; MPS takes its float z-buffer);
    3. no ``.numpy()`` / ``np.asarray`` of a device tensor (a real device needs ``.cpu()`` first);
    4. no op that mixes a device tensor with a CPU-side tensor of one or more dimensions (0-d CPU scalars are
       allowed, as on real devices; copies, transfers, indexing and shape-only ops are exempt).

Limits: only what the Python code calls is seen (the inside of a C++ op or of autograd's backward is not; their
dtypes follow their inputs'), and the list of lacking ops is the project's, not a copy of PyTorch's kernel
table. A path that passes here can still fail on a real Mac for reasons this guard does not model.

Use (tests): ``with SimulatedMPS(): run_the_path(device="cpu")`` — the path's tensors must be made inside
the ``with`` (a model moved to the device before it would be CPU-side to the guard).
"""
from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["SimulatedMPS", "DeviceRuleError", "MPS_FORBIDDEN_DTYPES", "MPS_LACKING_OPS", "is_device_tensor"]

MPS_FORBIDDEN_DTYPES = frozenset({torch.float64, torch.complex32, torch.complex64, torch.complex128})

# ops a device path must not use on MPS (no kernel, or the CPU fallback with PYTORCH_ENABLE_MPS_FALLBACK)
MPS_LACKING_OPS = frozenset({
    "linalg_svd", "svd", "linalg_svdvals", "linalg_eig", "linalg_eigvals", "linalg_eigh", "linalg_eigvalsh",
    "linalg_qr", "qr", "linalg_lstsq", "linalg_pinv", "pinverse", "linalg_matrix_rank",
})

_TAG = "_facelib_simulated_device"
_HERE = str(Path(__file__).resolve())
_LIB = str(Path(__file__).resolve().parent)


class DeviceRuleError(AssertionError):
    """A device path broke a rule of the simulated device (see :mod:`facelib.device_guard`)."""


def is_device_tensor(t) -> bool:
    """True when the guard counts ``t`` as on the simulated device."""
    return isinstance(t, torch.Tensor) and bool(getattr(t, _TAG, False))


def _mark(t: torch.Tensor, on: bool) -> None:
    try:
        setattr(t, _TAG, on)
    except (AttributeError, RuntimeError):  # pragma: no cover - a tensor type without a __dict__
        pass


def _name(func) -> str:
    self = getattr(func, "__self__", None)
    if getattr(func, "__name__", "") in ("__get__", "__set__") and self is not None:
        return f"Tensor.{getattr(self, '__name__', '?')}.{func.__name__}"
    return getattr(func, "__name__", repr(func))


def _caller() -> str:
    """The innermost facelib frame outside this module (else the innermost frame outside torch)."""
    frames = traceback.extract_stack()[:-3]
    for fr in reversed(frames):
        f = str(Path(fr.filename).resolve()) if fr.filename and not fr.filename.startswith("<") else fr.filename
        if f != _HERE and f.startswith(_LIB):
            return f"{fr.filename}:{fr.lineno} ({fr.name}: {fr.line})"
    for fr in reversed(frames):
        if "/torch/" not in fr.filename and fr.filename != _HERE:
            return f"{fr.filename}:{fr.lineno} ({fr.name})"
    return "?"


_T = torch.Tensor
_TO = {_T.to, _T.cuda}
_TO_CPU = {_T.cpu}
_NUMPY = {_T.numpy, _T.__array__}
# ops where a CPU-side tensor may legally meet a device tensor (transfers, copies, indexing, shapes only)
_MIX_OK = {_T.to, _T.copy_, _T.__getitem__, _T.__setitem__, _T.expand_as, _T.view_as, _T.reshape_as, _T.type_as,
           _T.new_tensor, torch.as_tensor, torch.tensor, _T.__deepcopy__,
           torch._has_compatible_shallow_copy_type}
_MIX_OK_NAMES = {"Tensor.grad.__set__", "__deepcopy__"}
CPU_SIDE = torch.device("cpu", 0)  # what ``x.device`` reports for a CPU-side x under the guard


class SimulatedMPS(TorchFunctionMode):
    """Run a device path on the CPU under MPS's dtype and op rules (a simulation, never a run on MPS).

    The path is given ``device="cpu"``, which stands for the accelerator. ``raise_on_violation=False`` records
    every violation in ``violations`` instead of raising at the first (to survey a path).
    """

    def __init__(self, raise_on_violation: bool = True):
        super().__init__()
        self.raise_on_violation = raise_on_violation
        self.violations: list[str] = []
        self.ops = 0          # torch calls seen
        self.device_ops = 0   # ... of them on device tensors (0 means the path never reached the device)

    # ------------------------------------------------------------------------------------------------ helpers
    def _fail(self, what: str) -> None:
        msg = f"{what} at {_caller()} [simulated MPS rules on the CPU]"
        if msg not in self.violations:
            self.violations.append(msg)
        if self.raise_on_violation:
            raise DeviceRuleError(msg)

    @staticmethod
    def _is_sim_device(d) -> bool:
        """``"cpu"`` (and any accelerator name) is the simulated device; ``cpu:0`` (:data:`CPU_SIDE`) is the CPU."""
        if d is None or isinstance(d, int):
            return False
        try:
            d = torch.device(d)
        except (RuntimeError, TypeError):
            return False
        return d != CPU_SIDE

    def _target(self, func, args, kwargs, dev_in: bool):
        """(result is a device tensor, the op is a transfer)."""
        if func in _TO_CPU:
            return False, True
        if func in _TO:
            if func is _T.cuda:
                return True, True
            other = [a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            if other:
                return is_device_tensor(other[0]), True
            dev = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
            return (dev_in, False) if dev is None else (self._is_sim_device(dev), True)
        if kwargs.get("device") is not None:
            return self._is_sim_device(kwargs["device"]), True
        return dev_in, False

    # -------------------------------------------------------------------------------------------- the mode
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        dev_in = any(is_device_tensor(t) for t in tensors)
        name = _name(func)

        if name == "Tensor.device.__get__" and not is_device_tensor(args[0]):
            return CPU_SIDE   # so that ``.to(x.device)`` / ``device=x.device`` of a CPU-side x stays on the CPU
        if name == "Tensor.data.__set__":
            out = func(*args, **kwargs)
            _mark(args[0], is_device_tensor(args[1]))   # module.to(dev) sets param.data = param.to(dev)
            return out
        if dev_in:
            self.device_ops += 1
            if name in MPS_LACKING_OPS:
                self._fail(f"op {name} (no MPS kernel; CPU fallback) on a device tensor")
            if name in ("scatter_reduce", "scatter_reduce_") and tensors[0].dtype == torch.int64 and \
                    (kwargs.get("reduce") or (args[4] if len(args) > 4 else None)) in ("amin", "amax"):
                self._fail(f"op {name}(reduce=amin/amax) on int64 device tensors (MPS lacks it)")
            if func in _NUMPY and is_device_tensor(args[0]):
                self._fail(f"{name} of a device tensor (a device needs .cpu() first)")
            if func not in _MIX_OK and name not in _MIX_OK_NAMES:
                cpu = [t for t in tensors if not is_device_tensor(t) and t.dim() > 0]
                if cpu:
                    self._fail(f"op {name} mixes a device tensor with a CPU-side tensor of shape "
                               f"{tuple(cpu[0].shape)}")

        out = func(*args, **kwargs)

        on_device, transfer = self._target(func, args, kwargs, dev_in)
        if transfer and isinstance(out, torch.Tensor) and is_device_tensor(out) != on_device and \
                any(out is t for t in tensors):
            out = out.view_as(out)   # a no-op transfer on the CPU returns its input: give the copy its own status
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            if on_device:
                _mark(t, True)
                if t.dtype in MPS_FORBIDDEN_DTYPES:
                    self._fail(f"{name} makes a {t.dtype} device tensor of shape {tuple(t.shape)} "
                               "(MPS has no float64/complex)")
            elif transfer:
                _mark(t, False)
        return out
