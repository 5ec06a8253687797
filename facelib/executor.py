"""Where the study's independent work runs: the ``executor`` parameter (profiles, ``--set executor=…``).

* ``local`` (the default): in the notebook's own process, one task after another — the study as it always ran.
* ``dask``: a Dask ``LocalCluster`` on this machine, one single-threaded worker process per core (``dask:N``: N
  workers); nothing to set up.
* ``dask://host:port`` (or a scheduler address, ``tcp://host:port``): an existing Dask cluster. Every worker needs
  this environment (facelib importable, the same versions) and the run's files at the same paths — the dataset
  folders, ``FACELIB_ASSETS``, ``FACELIB_CACHE``: a shared filesystem (docs/cluster.md).

What is distributed: notebook 02's per-picture stages — reconstruction, the landmark and full fits (BFM and ICT),
the dlib targets and the person-consistent refit — one task per batch of pictures (:func:`run_batches`: each
worker builds its model once from a :class:`Recipe`, the notebook writes each finished batch atomically into the
stage's cache, so an interrupted run resumes where it stopped); and notebook 04's splits — each repeat / fold of
each Table-1 cell is one task (:func:`facelib.classify.experiment.run_split`). Each split is seeded by its split. What is tested: for the
scikit-learn models (logistic regression, SVM) a 2-worker run gives the serial run's Table 1 bit for bit
(tests/test_executor.py). The torch networks are seeded the same way but run on a 1-thread worker, where the
reduction order of a multi-threaded serial run need not be repeated: expect the same results within float
rounding, not bit for bit (no test compares them).
A worker that dies mid-task loses nothing: the scheduler runs its tasks again on another worker (and a task that
raises is retried ``RETRIES`` times); results reach the run folder only through the client (atomic writes).
An unreachable scheduler is one ``error:`` line (:class:`ExecutorUnavailable`), not a traceback.

:func:`make_executor` → :class:`Executor`: ``put`` (an argument shared by many tasks), ``submit``, ``tracker`` (the
tasks' progress, done / total with an ETA, gathered as they finish) and ``map`` (results in the items' order).
"""
from __future__ import annotations

import logging
import os
import re
from collections import deque

from tqdm.auto import tqdm

from .errors import FacelibError, format_error

LOCAL = "local"
CONNECT_TIMEOUT = 10  # seconds to reach an existing scheduler
RETRIES = 1           # re-runs of a task that raised (a worker that died is handled by the scheduler anyway)
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc)://\S+$")


class ExecutorUnavailable(FacelibError):
    """The executor asked for cannot be used (a bad spec, an unreachable scheduler)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of a traceback
        return format_error(self).splitlines()


def parse(spec) -> tuple[str, object]:
    """``(kind, arg)``: ``("local", None)``, ``("cluster", n_workers or None)`` or ``("address", "tcp://…")``."""
    text = str(spec if spec is not None else LOCAL).strip()
    if text in ("", LOCAL):
        return LOCAL, None
    if text == "dask":
        return "cluster", None
    if re.fullmatch(r"dask:\d+", text) and int(text[5:]) > 0:
        return "cluster", int(text[5:])
    if text.startswith("dask://") and len(text) > 7:
        return "address", "tcp://" + text[7:]
    if _ADDRESS.match(text):
        return "address", text
    raise ExecutorUnavailable(f"executor {text!r}: not understood",
                              hint="use local, dask (a cluster on this machine), dask:N (N workers here), "
                                   "dask://host:port or tcp://host:port (an existing Dask scheduler)")


def describe(spec) -> str:
    """The executor as the run's provenance records it (the spec, normalised)."""
    kind, arg = parse(spec)
    return LOCAL if kind == LOCAL else f"dask:{arg}" if kind == "cluster" and arg else "dask" if kind == "cluster" \
        else arg


class _Done:
    """A local task's result, shaped like a Dask future."""

    def __init__(self, fn, args):
        self.value = fn(*args)

    def result(self):
        return self.value


class Executor:
    """Runs tasks here (``local``) or on a Dask cluster (``client``); a context manager that closes what it
    started."""

    def __init__(self, spec=LOCAL, client=None, cluster=None):
        self.spec, self.client, self.cluster = describe(spec), client, cluster

    @property
    def local(self) -> bool:
        return self.client is None

    @property
    def n_workers(self) -> int:
        if self.local:
            return 1
        return sum(self.client.nthreads().values())

    @property
    def dashboard_link(self) -> str | None:
        return None if self.local else self.client.dashboard_link

    def __repr__(self) -> str:
        if self.local:
            return "executor local (in this process)"
        where = "LocalCluster" if self.cluster is not None else self.client.scheduler.address
        return f"executor {self.spec}: {self.n_workers} task slots ({where}), dashboard {self.dashboard_link}"

    def put(self, obj):
        """``obj`` as an argument for many tasks: here, itself; on Dask, a task that returns it (sent once, kept by
        the scheduler, so it is rebuilt on another worker when the one holding it dies — scattered data is not)."""
        return obj if self.local else self.client.submit(_same, obj, pure=False)

    def submit(self, fn, *args):
        """Run ``fn(*args)``: at once here; as a Dask task (retried ``RETRIES`` times when it raises)."""
        if self.local:
            return _Done(fn, args)
        return self.client.submit(_in_worker, fn, *args, pure=False, retries=RETRIES)

    def tracker(self, desc: str, progress: bool = True, unit: str = "task") -> "Tracker":
        return Tracker(self, desc, progress, unit)

    def map(self, fn, items, desc: str = "tasks", progress: bool = True) -> list:
        """``[fn(item) for item in items]``, the tasks spread over the workers, results in the items' order."""
        with self.tracker(desc, progress) as track:
            futures = [self.submit(fn, item) for item in items]
            track.add(futures)
            done = dict(track.finished())
        return [done[f] for f in futures]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Tracker:
    """Tasks in flight, gathered as they finish (``finished``), with a bar of done / total and an ETA on stderr (the
    terminal of ``make reproduce``: papermill streams it). Tasks may be added while earlier ones run."""

    def __init__(self, ex: Executor, desc: str, progress: bool = True, unit: str = "task"):
        self.ex, self.total, self.sizes = ex, 0, {}
        where = "" if ex.local else f" on {ex.n_workers} Dask workers"
        self.bar = tqdm(total=0, desc=desc + where, disable=not progress, unit=unit)
        if ex.local:
            self.queue = deque()
        else:
            from distributed import as_completed
            self.queue = as_completed(with_results=False)

    def add(self, futures, sizes=None) -> None:
        """Track ``futures``; ``sizes``: what each counts for on the bar (e.g. its pictures; default 1)."""
        futures = list(futures)
        sizes = [1] * len(futures) if sizes is None else list(sizes)
        self.sizes.update({id(f): n for f, n in zip(futures, sizes)})
        self.total += sum(sizes)
        self.bar.total = self.total
        self.bar.refresh()
        if self.ex.local:
            self.queue.extend(futures)
        else:
            self.queue.update(futures)

    def finished(self, block: bool = True):
        """``(future, result)`` of each task as it finishes; ``block=False``: only those already done. A task that
        raised raises here."""
        while True:
            if self.ex.local:
                batch = [self.queue.popleft()] if self.queue else []
            elif block:
                batch = self.queue.next_batch(block=True) if not self.queue.is_empty() else []
            else:
                batch = self.queue.next_batch(block=False) if self.queue.has_ready() else []
            if not batch:
                return
            for future in batch:
                value = future.result()
                self.bar.update(self.sizes.pop(id(future), 1))
                yield future, value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def _same(obj):
    return obj


# ------------------------------------------------------------------------------------ per-picture batches
_BUILT: dict = {}   # this process's worker objects, by recipe key (the few newest kept)
_KEEP = 4


class Recipe:
    """How a worker gets the object a stage needs (a backend, a fitter with its landmarker): ``fn(**kwargs)``, built
    once per process and kept under ``key`` (the stage's cache key: the same key, the same object). ``fn`` is a
    module-level function and ``kwargs`` picklable (paths, settings, small tables), so a worker builds its own copy
    instead of receiving a model. ``built``: the object already made in this process (the notebook's), never
    sent."""

    def __init__(self, key: str, fn, built=None, **kwargs):
        self.key, self.fn, self.kwargs = str(key), fn, kwargs
        if built is not None:
            _remember(self.key, built)

    @classmethod
    def of(cls, obj, key: str) -> "Recipe":
        """A recipe that sends ``obj`` itself (pickled once per task graph) — for objects no function rebuilds."""
        return cls(f"{key}-{id(obj)}", _same, built=obj, obj=obj)

    def __call__(self):
        if self.key not in _BUILT:
            _remember(self.key, self.fn(**self.kwargs))
        return _BUILT[self.key]

    def __repr__(self) -> str:
        return f"Recipe({self.key}, {getattr(self.fn, '__qualname__', self.fn)})"


def _remember(key: str, obj) -> None:
    _BUILT.pop(key, None)
    _BUILT[key] = obj
    while len(_BUILT) > _KEEP:
        _BUILT.pop(next(iter(_BUILT)))


def run_batches(work, recipe: Recipe, batches: list, write, executor: Executor | None = None, desc: str = "batches",
                progress: bool = True, unit: str = "img") -> int:
    """``work(recipe, batch)`` for every batch (a list or table of pictures), on ``executor`` (None: here, in
    order); ``write(result)`` runs here, in the notebook's process, as each batch finishes (in any order on Dask),
    and is where the stage appends the batch to its cache atomically. A worker killed mid-batch costs that batch
    only: the scheduler runs it again elsewhere; an interrupted run keeps every batch written. The bar counts
    pictures (``len(batch)``) with an ETA. Returns the number of batches."""
    ex = executor or Executor()
    if not batches:
        return 0
    with ex.tracker(desc, progress, unit) as track:
        shared = ex.put(recipe)
        if ex.local:  # one batch, then its write: an interruption loses at most the batch in hand
            for batch in batches:
                track.add([ex.submit(work, shared, batch)], [len(batch)])
                for _, result in track.finished():
                    write(result)
        else:  # every batch queued on the scheduler; each written as it comes back
            track.add([ex.submit(work, shared, b) for b in batches], [len(b) for b in batches])
            for _, result in track.finished():
                write(result)
    return len(batches)


def _in_worker(fn, *args):
    """A task on a Dask worker: one torch thread per task slot (a worker runs as many tasks as it has threads)."""
    import torch

    torch.set_num_threads(1)
    return fn(*args)


def make_executor(spec=LOCAL, connect_timeout: float = CONNECT_TIMEOUT, announce: bool = True) -> Executor:
    """The executor ``spec`` names (see the module docstring). ``announce``: print one line saying where the tasks
    run and the Dask dashboard's link."""
    kind, arg = parse(spec)
    if kind == LOCAL:
        return Executor()
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # a dependency of the project: only an incomplete environment lacks it
        raise ExecutorUnavailable(f"executor {spec}: dask.distributed is not installed ({exc})",
                                  hint="`make env` installs it (requirements.lock)") from None
    if kind == "cluster":
        n = arg or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, silence_logs=logging.ERROR,
                               dashboard_address=":8787")
        ex = Executor(spec, Client(cluster), cluster)
    else:
        try:
            client = Client(arg, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            why = f"no answer within {connect_timeout:g} s" if "timed out" in first.lower() else first
            raise ExecutorUnavailable(
                f"cannot reach the Dask scheduler at {arg} ({why})",
                hint="start it (`dask scheduler`, then `dask worker " + arg + "` on each machine), check the "
                     "address and port, or use executor=dask (a cluster on this machine) or executor=local") \
                from None
        ex = Executor(spec, client)
    if announce:
        print(f"[{ex!r}]", flush=True)
    return ex


def check(spec, connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise :class:`ExecutorUnavailable` now if ``spec`` is not understood or its scheduler cannot be reached (the
    study runner calls it before notebook 01, not when notebook 04 needs the cluster)."""
    kind, _ = parse(spec)
    if kind == "address":
        make_executor(spec, connect_timeout, announce=False).close()
