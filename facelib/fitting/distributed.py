"""Training one network on several processes at once (data parallel, ``torch.distributed``).

Every process holds a full copy of the network and draws the same plan of *global* mini-batches (same seed, same
permutation or person groups or C-Net sets). Each process computes the loss on its own part of every global batch
(:func:`shard`; whole people with the identity term, :func:`shard_people`; whole sets for C-Net), and
:class:`torch.nn.parallel.DistributedDataParallel` averages the gradients over the processes before each optimiser
step, so every copy takes the same step and the copies stay identical. Each process weights its loss so that the
averaged gradient is the gradient of the global batch's loss (:class:`Share`, used by
:func:`facelib.fitting.rnet_train.train_rnet` and :func:`~facelib.fitting.rnet_train.train_cnet`), and the
training history records the global batch's loss (summed over the processes), so a run on W processes reads like
a run on one process with the same batches and gives the same network up to floating-point rounding.

Backends: gloo on the CPU, nccl on CUDA (one GPU per process). Apple's MPS has no ``torch.distributed`` backend:
more than one process there is an error (:func:`backend_for`).

Two ways in: :func:`launch` starts the processes itself (spawn, so it also works from a notebook kernel; the
function it runs must be defined at module level in an importable module), or a script started by ``torchrun``
calls the training functions directly: :func:`world` finds the group (or starts it from ``RANK`` /
``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT``; on CUDA such a script first selects its GPU,
``torch.cuda.set_device(LOCAL_RANK)``, and builds its Composer there).

Agreement with one process, measured on the CPU (tests/test_distributed.py, one torch thread everywhere): step
gradient ~1e-6 relative, loss curve over 8 Adam steps ~4e-6, C-Net curve ~1e-7 — the size of float32 summation
order; a different torch thread count alone moves them more (~4e-5 in the gradient). Over a whole training these
rounding differences grow (Adam moves a weight whose gradient is rounding noise by about the learning rate, in the
noise's sign): on the dev data's ci cross-fit (35 R-Net steps, 40 C-Net steps per part) two processes and one
process on another thread count both end at the same loss (0.563 and 0.564 against 0.571) with coefficients that
differ from the one-process run's by up to 10–20 % of their range. Neither is the "right" one: the processes, like
the thread count, are left out of the cache key, and a network is reproducible bit for bit only on the same
process and thread counts.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import socket
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..errors import FacelibError
from ..io import atomic_path

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
# DDP's notice that a depthwise convolution's gradient (C, 1, 3, 3) has another stride in its size-1 axis than its
# bucket view: the same memory order, no copy of consequence
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


def _device_type(device) -> str:
    return torch.device(device).type if device is not None else "cpu"


def backend_for(device, processes: int = 2, local: int | None = None) -> str | None:
    """The ``torch.distributed`` backend for training on ``processes`` processes on ``device``: gloo (cpu),
    nccl (cuda, at most one process per GPU: ``local``, the processes on this machine, default all); None for one
    process. Any other device (mps) with more than one process is a :class:`FacelibError`."""
    if int(processes) < 1:
        raise FacelibError(f"processes must be at least 1, got {processes}")
    if int(processes) == 1:
        return None
    kind = _device_type(device)
    if kind not in BACKENDS:
        raise FacelibError(f"processes > 1 needs device cpu (gloo) or cuda (nccl); device {kind!r} has no "
                           "torch.distributed backend",
                           hint="set processes: 1 on this device, or train on the cpu with several processes")
    local = int(processes if local is None else local)
    if kind == "cuda" and local > torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise FacelibError(f"{local} processes on cuda need {local} GPUs (nccl runs one process per GPU); {n} "
                           "visible", hint=f"set processes to at most {n}")
    return BACKENDS[kind]


def world(device=None) -> tuple[int, int]:
    """(rank, world size) of this process: from an initialised process group, else (0, 1). Without a group but
    with ``WORLD_SIZE`` > 1, ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment (a script started by
    ``torchrun``), the group is started here with the backend of ``device`` (:func:`backend_for`)."""
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        env = os.environ
        size = int(env.get("WORLD_SIZE", "1") or 1)
        if size <= 1 or not all(env.get(k) for k in ("RANK", "MASTER_ADDR", "MASTER_PORT")):
            return 0, 1
        local = int(env.get("LOCAL_WORLD_SIZE") or size)
        dist.init_process_group(backend_for(device, size, local), rank=int(env["RANK"]), world_size=size)
    return dist.get_rank(), dist.get_world_size()


def shard(idx, rank: int, world: int) -> np.ndarray:
    """This rank's contiguous part of a global batch's rows ``idx`` (``np.array_split`` order): the parts of
    ranks 0…world−1, concatenated, are ``idx``; sizes differ by at most one (a rank may get none)."""
    return np.array_split(np.asarray(idx), int(world))[int(rank)]


def shard_people(idx, subject, rank: int, world: int) -> np.ndarray:
    """Like :func:`shard`, but a person's rows of ``idx`` all go to one rank: people in order of their first row,
    each to the rank whose equal share of the rows holds the middle of that person's rows."""
    idx = np.asarray(idx)
    if not len(idx):
        return idx
    who = np.asarray(subject)[idx].astype(str)
    _, first, inv, counts = np.unique(who, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first)
    start = np.cumsum(counts[order]) - counts[order]
    owner = np.empty(len(counts), np.int64)
    owner[order] = np.minimum((world * (start + counts[order] / 2.0) / len(idx)).astype(np.int64), world - 1)
    return idx[owner[inv.reshape(-1)] == int(rank)]


def _people(subject) -> int:
    """People with ≥ 2 of these pictures (those the identity term averages over)."""
    return int((np.unique(np.asarray(subject).astype(str), return_counts=True)[1] >= 2).sum()) if len(subject) else 0


@dataclass
class Share:
    """This process's part of a global batch. ``rows``: the rows it computes — its shard, or, when the shard is
    empty (a global batch smaller than the world), the global batch's first row at weight 0, so that every
    process still runs the network once per step (the gradient averaging needs every process). ``people``: people
    with ≥ 2 pictures in the shard / in the global batch (the identity term's denominator)."""

    rows: np.ndarray
    n: int
    total: int
    world: int
    people: int = 0
    people_total: int = 0

    @property
    def weight(self) -> float:
        """The shard's share of the global batch's pictures."""
        return self.n / self.total if self.total else 0.0

    @staticmethod
    def of(idx, rank: int, world: int, subject=None) -> "Share":
        """The share of ``rank`` in the global batch ``idx``; with ``subject`` (the identity term), whole people
        (:func:`shard_people`)."""
        idx = np.asarray(idx)
        rows = shard(idx, rank, world) if subject is None else shard_people(idx, subject, rank, world)
        people = (lambda r: _people(np.asarray(subject)[r])) if subject is not None else (lambda r: 0)
        return Share(rows if len(rows) else idx[:1], len(rows), len(idx), int(world),
                     people(rows) if len(rows) else 0, people(idx))


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values) -> np.ndarray:
    """Element-wise sum over the processes of a float vector (float64)."""
    t = torch.as_tensor(np.asarray(values, np.float64), device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().numpy()


def agree(flag: bool, world: int) -> bool:
    """Rank 0's ``flag`` on every process (one process: ``flag``) — e.g. rank 0's clock deciding to stop."""
    if world <= 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=_comm_device())
    dist.broadcast(t, 0)
    return bool(t.item())


def data_parallel(module: torch.nn.Module, device, example: torch.Tensor):
    """(DistributedDataParallel wrapper of ``module``, parameters set aside). Parameters that no output of
    ``module(example)`` depends on (the mobilenet trunk's landmark head ``fc_lm``, which R-Net never uses) get
    ``requires_grad`` False for the training, so DDP needs no per-step search for unused parameters
    (``find_unused_parameters`` off); :func:`release` gives it back. BatchNorm statistics are frozen in R-Net, so
    buffers are not broadcast."""
    from torch.nn.parallel import DistributedDataParallel

    params = [p for p in module.parameters() if p.requires_grad]
    with torch.enable_grad():
        out = module(example)
        outs = list(out.values()) if isinstance(out, dict) else [out] if torch.is_tensor(out) else list(out)
        probe = sum(o.float().sum() for o in outs if torch.is_tensor(o) and o.requires_grad)
        grads = torch.autograd.grad(probe, params, allow_unused=True)
    idle = [p for p, g in zip(params, grads) if g is None]
    for p in idle:
        p.requires_grad_(False)
    dev = torch.device(device)
    ids = None
    if dev.type == "cuda":
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()]
    # buffers (frozen BatchNorm statistics, 3DDFA's parameter mean/std) never change: no broadcast each forward
    quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(
        DistributedDataParallel.__init__).parameters else {"broadcast_buffers": False})
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False, **quiet), idle


def release(idle) -> None:
    """Undo :func:`data_parallel`'s setting aside of unused parameters."""
    for p in idle:
        p.requires_grad_(True)


# ----------------------------------------------------------------------------------------------- launching
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_startable(fn) -> None:
    name = getattr(fn, "__qualname__", "")
    if "<locals>" in name or "<lambda>" in name:
        raise FacelibError(f"launch needs a module-level function (spawned processes import it), got {name}")
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" and not getattr(main, "__file__", None):
        raise FacelibError(f"launch cannot start {name} defined in a notebook or interactive session: spawned "
                           "processes import the function", hint="define it in a .py module and import it")


def launch(fn, processes: int, *args, device="cpu"):
    """``fn(*args)`` on ``processes`` processes that form one process group (gloo on the cpu, nccl on cuda with
    rank r on GPU r); returns rank 0's return value. One process: ``fn(*args)`` here, no group.

    The processes are spawned (``torch.multiprocessing``, the spawn start method, so a notebook kernel can launch
    them): ``fn`` must be a module-level function of an importable module and ``args`` picklable. Each process
    uses ``cpu_count // processes`` torch threads. A failure in any process stops all of them and raises one
    :class:`FacelibError` naming the first rank that failed and its error (the full traceback is the exception's
    ``traceback`` attribute)."""
    processes = int(processes)
    backend = backend_for(device, processes)
    if backend is None:
        return fn(*args)
    _check_startable(fn)
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    with tempfile.TemporaryDirectory(prefix="facelib-dp-") as folder:
        ctx = mp.start_processes(_worker, args=(fn, args, processes, backend, free_port(), folder),
                                 nprocs=processes, join=False, start_method="spawn")
        spawn_log = logging.getLogger("torch.multiprocessing.spawn")  # "Terminating process …" when one fails
        level = spawn_log.level
        spawn_log.setLevel(logging.ERROR)
        try:
            while not ctx.join():
                pass
        except ProcessException as exc:
            raise _failure(Path(folder), exc) from None
        except BaseException:  # an interrupt: stop the processes before going on
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            raise
        finally:
            spawn_log.setLevel(level)
        return torch.load(Path(folder) / "result.pt", map_location="cpu", weights_only=False)


def _worker(rank: int, fn, args, world_size: int, backend: str, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        out = fn(*args)
        dist.destroy_process_group()
        if rank == 0:
            with atomic_path(Path(folder) / "result.pt") as tmp:
                torch.save(out, tmp)
    except Exception as exc:
        record = {"rank": rank, "time": time.time(), "type": type(exc).__name__, "message": str(exc).strip(),
                  "traceback": traceback.format_exc()}
        with atomic_path(Path(folder) / f"error-{rank}.json") as tmp:
            Path(tmp).write_text(json.dumps(record))
        raise


def _failure(folder: Path, exc) -> FacelibError:
    """One error for a failed launch: the earliest error a process recorded, else how the process ended."""
    records = sorted((json.loads(p.read_text()) for p in folder.glob("error-*.json")), key=lambda r: r["time"])
    if records:
        r = records[0]
        first = (r["message"].splitlines() or [""])[0]
        err = FacelibError(f"training process rank {r['rank']} failed: {r['type']}: {first}",
                           hint="the exception's traceback attribute has the full traceback; processes: 1 runs "
                                "the same training in this process")
        err.traceback = r["traceback"]
        err.rank = r["rank"]
        return err
    rank = getattr(exc, "error_index", "?")
    how = (f"was killed by signal {exc.signal_name}" if getattr(exc, "signal_name", None)
           else f"exited with code {getattr(exc, 'exit_code', '?')}")
    err = FacelibError(f"training process rank {rank} {how} before reporting an error (out of memory, or the "
                       "function or its arguments could not be loaded in the new process)",
                       hint="processes: 1 runs the same training in this process")
    err.traceback = str(exc)
    err.rank = rank
    return err
