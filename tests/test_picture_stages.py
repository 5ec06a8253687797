"""Notebook 02's per-picture stages on the ``executor``: reconstruction, the landmark fits (BFM, ICT), the dlib
targets and the person-consistent refit give on a 2-worker Dask cluster the tables they give here; a worker killed
mid-stage and an interrupted stage lose nothing (every batch is written once, into the same cache)."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from facelib import executor as X
from facelib import io as fio
from facelib.data import datasets
from facelib.face3d import reconstruct
from facelib.fitting import ict_fit, person_fit, table

# real KDEF pictures: 3 people × 3 expressions (straight and half profiles), batches of 2 → 5 batches a stage
PICTURES = ("AF01ANS", "AF01HAS", "AF01SUHL", "AF02NES", "AF02HAHR", "AF02AFS", "AM02NEFR", "AM02HAS", "AM02SAS")
BATCH = 2
COEFFS = ["alpha", "beta", "pose", "landmarks", "box"]


@pytest.fixture(scope="module")
def dask2():
    with X.make_executor("dask:2", announce=False) as ex:
        yield ex


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, kdef_root):
    root = tmp_path_factory.mktemp("kdef") / "KDEF"
    for name in PICTURES:
        src = next(kdef_root.rglob(f"{name}.JPG"), None)
        if src is None:
            pytest.skip(f"{name}.JPG is not in this KDEF folder")
        (root / name[:4]).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / name[:4] / src.name)
    return datasets.load_kdef(root, progress=False)


@pytest.fixture(scope="module")
def local_tables(manifest, assets_dir, tmp_path_factory):
    """Every stage run here (executor None), each with its own cache."""
    cache = tmp_path_factory.mktemp("local-cache")
    return _stages(manifest, assets_dir, cache, None)


def _stages(manifest, assets_dir, cache, ex) -> dict[str, pd.DataFrame]:
    raw = reconstruct.reconstruct_manifest(manifest, "tddfa", cache_dir=cache / "reconstruct", batch_size=BATCH,
                                           assets_dir=assets_dir, progress=False, executor=ex)
    fit = table.fit_table(raw, "landmarks", iterations=15, batch_size=BATCH, assets_dir=assets_dir,
                          cache_dir=cache / "fitting", progress=False, executor=ex)
    ict = ict_fit.fit_ict_table(raw, "landmarks", iterations=15, batch_size=BATCH, assets_dir=assets_dir,
                                cache_dir=cache / "fitting", progress=False, executor=ex)
    targets = person_fit.target_table(raw, "dlib", cache_dir=cache / "fitting", batch_size=BATCH, executor=ex)
    fitter = X.Recipe("test-bfm-fitter", person_fit.bfm_fitter, device="cpu", assets_dir=assets_dir)
    person = person_fit.person_consistent_table(fit, fitter, targets, iterations=10, batch_size=BATCH,
                                                cache_dir=cache / "fitting", executor=ex)
    return {"raw": raw, "fit": fit, "ict": ict, "targets": targets, "person": person}


def _stack(t: pd.DataFrame, column: str) -> np.ndarray:
    ok = t[t["status"] == "ok"]
    return np.stack([np.asarray(v, np.float64) for v in ok[column]])


def test_dask_gives_the_local_tables(manifest, local_tables, dask2, assets_dir, tmp_path):
    spread = _stages(manifest, assets_dir, tmp_path, dask2)
    # a Dask worker runs torch on 1 thread, this process on several: the convolutions' sums may be taken in another
    # order, so reconstruction agrees to float rounding (measured: 5e-7 of the largest |α|); bit for bit below
    for col in COEFFS:
        a, b = _stack(local_tables["raw"], col), _stack(spread["raw"], col)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(a).max(), err_msg=col)
    assert list(local_tables["raw"]["status"]) == list(spread["raw"]["status"])
    assert local_tables["targets"]["sha256"].tolist() == spread["targets"]["sha256"].tolist()  # the table's order
    np.testing.assert_allclose(np.stack(local_tables["targets"]["target"]), np.stack(spread["targets"]["target"]),
                               rtol=0, atol=1e-2)  # pixels; dlib's own points do not depend on torch
    # the fits are optimisations (Adam, float32) that start from those coefficients; landmarks fix the BFM α only
    # loosely, so the rounding grows along its flat directions: the same within 1 % of each column's largest value
    # (measured: 1.0e-3 for the BFM fit's α, 2.4e-3 for the person refit's β, below 3e-5 for the ICT fit)
    for name in ("fit", "ict", "person"):
        for col in ("alpha", "beta", "pose", "landmarks"):
            a, b = _stack(local_tables[name], col), _stack(spread[name], col)
            assert a.shape == b.shape and len(a) == len(PICTURES), (name, col)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-2 * np.abs(a).max(), err_msg=f"{name} {col}")
        assert list(local_tables[name]["status"]) == list(spread[name]["status"])


def test_dask_is_bit_for_bit_at_the_same_thread_count(manifest, dask2, assets_dir, tmp_path):
    """Inference and the fits are deterministic: with this process on 1 torch thread, as a worker is, the
    reconstruction and the landmark fit equal the workers' to the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = reconstruct.reconstruct_manifest(manifest, "tddfa", cache_dir=tmp_path / "here", batch_size=BATCH,
                                                assets_dir=assets_dir, progress=False)
        fit_here = table.fit_table(here, "landmarks", iterations=15, batch_size=BATCH, assets_dir=assets_dir,
                                   cache_dir=tmp_path / "here", progress=False)
    finally:
        torch.set_num_threads(threads)
    there = reconstruct.reconstruct_manifest(manifest, "tddfa", cache_dir=tmp_path / "there", batch_size=BATCH,
                                             assets_dir=assets_dir, progress=False, executor=dask2)
    fit_there = table.fit_table(there, "landmarks", iterations=15, batch_size=BATCH, assets_dir=assets_dir,
                                cache_dir=tmp_path / "there", progress=False, executor=dask2)
    for col in COEFFS:
        assert np.array_equal(_stack(here, col), _stack(there, col)), col
    for col in ("alpha", "beta", "pose", "landmarks"):
        assert np.array_equal(_stack(fit_here, col), _stack(fit_there, col)), f"fit {col}"


def test_a_worker_killed_mid_stage_loses_nothing(manifest, local_tables, dask2, assets_dir, tmp_path):
    """SIGKILL the worker running a landmark-fit batch: the scheduler runs it again on the other worker, every
    picture's fit arrives once, and the table equals the local one."""
    client, killed = dask2.client, {}
    raw = local_tables["raw"]

    def kill_a_busy_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            busy = {w: keys for w, keys in client.processing().items() if keys}
            if busy:
                worker = sorted(busy)[0]
                pid = client.run(os.getpid, workers=[worker])[worker]
                killed.update(pid=pid)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    fit = table.fit_table(raw, "landmarks", iterations=15, batch_size=BATCH, assets_dir=assets_dir,
                          cache_dir=tmp_path / "fitting", progress=False, executor=dask2)
    killer.join()
    assert killed
    shards = sorted((tmp_path / "fitting").glob("*/shard-*.parquet"))
    assert len(shards) == 5  # one shard per batch: the lost batch was written once, when it finished elsewhere
    cached = pd.concat([pd.read_parquet(s) for s in shards])
    assert cached["sha256"].is_unique and len(cached) == 9
    for col in ("alpha", "beta", "pose"):
        np.testing.assert_allclose(_stack(fit, col), _stack(local_tables["fit"], col), rtol=0, atol=1e-3)
    client.wait_for_workers(2, timeout=60)


class Interrupt(KeyboardInterrupt):
    pass


def test_an_interrupted_stage_resumes_where_it_stopped(manifest, local_tables, dask2, assets_dir, tmp_path,
                                                       monkeypatch):
    """Ctrl-C after two batches were written: those stay in the cache, the rerun reconstructs only the rest, and the
    table is the uninterrupted one."""
    real, written = fio.append_shard, []

    def stop_after_two(folder, shard):
        if len(written) == 2:
            raise Interrupt()
        written.append(len(shard))
        return real(folder, shard)

    monkeypatch.setattr(reconstruct, "append_shard", stop_after_two)
    with pytest.raises(Interrupt):
        reconstruct.reconstruct_manifest(manifest, "tddfa", cache_dir=tmp_path, batch_size=BATCH,
                                         assets_dir=assets_dir, progress=False, executor=dask2)
    monkeypatch.setattr(reconstruct, "append_shard", real)
    folder = next(tmp_path.glob("tddfa-*"))
    assert len(written) == 2 and len(fio.read_shards(folder)) == sum(written)  # batches finish in any order
    seen = []
    monkeypatch.setattr(reconstruct, "_process_batch", _counting(reconstruct._process_batch, seen))
    again = reconstruct.reconstruct_manifest(manifest, "tddfa", cache_dir=tmp_path, batch_size=BATCH,
                                             assets_dir=assets_dir, progress=False)  # resumed here
    assert sum(seen) == len(PICTURES) - sum(written)  # only the pictures not yet in the cache
    for col in COEFFS:
        a = _stack(local_tables["raw"], col)
        np.testing.assert_allclose(_stack(again, col), a, rtol=1e-5, atol=1e-5 * np.abs(a).max(), err_msg=col)


def _counting(fn, seen: list):
    def call(backend, items, pool):
        seen.append(len(items))
        return fn(backend, items, pool)
    return call


def test_a_recipe_is_built_once_per_process_and_never_sends_the_built_object():
    built = []
    r = X.Recipe("test-recipe-once", lambda n: built.append(n) or list(range(n)), n=3)
    assert r() == [0, 1, 2] and r() is r() and built == [3]
    made = X.Recipe("test-recipe-built", _unreachable, built={"here": True}, n=1)
    assert made() == {"here": True}  # the notebook's own object, not rebuilt here
    import cloudpickle

    state = cloudpickle.dumps(made)
    assert b"here" not in state  # only the function and its arguments travel


def _unreachable(n):
    raise AssertionError("the built object should have been used")
