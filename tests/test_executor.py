"""The ``executor`` parameter (facelib.executor): notebook 04's splits on a Dask cluster give the serial results, a
worker killed mid-task loses nothing, an unreachable scheduler is one error line, the provenance records it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest

from facelib import executor as X
from facelib.classify import plan as study_plan
from facelib.errors import format_error
from facelib.report import tables
from facelib.run import PARAMETER_NAMES, Run, provenance
from tests.fixtures import synthetic_coeff_table

ROOT = Path(__file__).resolve().parents[1]
# where and how long a run took (Table 2), not what it found: a Dask worker trains with one torch thread
MACHINE = ("wall_seconds", "train_seconds", "seconds_per_input", "seconds_per_epoch", "torch_threads")


@pytest.fixture(scope="module")
def dask2():
    """A LocalCluster of two single-threaded worker processes (what ``executor=dask`` starts on 2 cores)."""
    with X.make_executor("dask:2", announce=False) as ex:
        yield ex


def test_specs():
    assert X.parse(None) == X.parse("local") == ("local", None)
    assert X.parse("dask") == ("cluster", None) and X.parse("dask:3") == ("cluster", 3)
    assert X.parse("dask://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    assert X.parse("tls://host:8786") == ("address", "tls://host:8786")
    for bad in ("dask:0", "spark", "dask://", "local2"):
        with pytest.raises(X.ExecutorUnavailable, match="not understood"):
            X.parse(bad)
    assert "executor" in PARAMETER_NAMES
    for profile in sorted((ROOT / "notebooks" / "params").glob("*.yaml")):
        assert "executor: local" in profile.read_text(), profile.name  # every profile runs here by default


def test_local_runs_in_order_here():
    ex = X.make_executor("local")
    assert ex.local and ex.dashboard_link is None
    order = []
    assert ex.map(lambda i: order.append(i) or i * i, range(5), progress=False) == [0, 1, 4, 9, 16]
    assert order == [0, 1, 2, 3, 4]


def test_unreachable_scheduler_is_one_error_line():
    t0 = time.perf_counter()
    with pytest.raises(X.ExecutorUnavailable) as err:
        X.make_executor("dask://127.0.0.1:1", connect_timeout=2)
    assert time.perf_counter() - t0 < 15
    text = format_error(err.value)
    assert text.startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:1") and "hint:" in text
    assert len(text.splitlines()) == 2 and err.value._render_traceback_() == text.splitlines()
    # the study runner says so before notebook 01, with no traceback
    out = subprocess.run([sys.executable, "-m", "facelib", "study", "--params", "notebooks/params/ci.yaml",
                          "--run", "never_made", "--set", "executor=dask://127.0.0.1:1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "error: cannot reach the Dask scheduler at tcp://127.0.0.1:1" in out.stderr
    assert not (ROOT / "reports" / "runs" / "never_made").exists()


def test_provenance_records_the_executor(tmp_path):
    run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa", "executor": "dask://10.0.0.5:8786"})
    prov = provenance(run, {})
    assert prov["executor"] == "dask://10.0.0.5:8786" and prov["parameters"]["executor"] == "dask://10.0.0.5:8786"
    assert provenance(Run({"out_dir": str(tmp_path / "r2"), "backend": "tddfa"}), {})["executor"] == "local"


def _plan_results(folder: Path) -> tuple[pd.DataFrame, dict]:
    results = tables.load_results(folder)
    slim = {r["predictions_file"]: {k: v for k, v in r.items() if k not in MACHINE} for r in results}
    return tables.table1(results), slim


def test_dask_run_gives_the_serial_results(tmp_path, dask2):
    synth = synthetic_coeff_table(5, fei_per_gender=10, separation=1.0, seed=0)
    rows = (("kdef", "identity", "paper", "alpha"), ("kdef", "identity", "cross_session", "alpha"),  # skipped
            ("kdef", "identity", "cross_angle", "alpha"), ("kdef", "expression", "subject_independent", "beta"),
            ("fei", "gender", "paper", "alpha"))
    plan = study_plan.study_plan(models=("logreg", "svm"), image_baseline=False, rows=rows)
    coeffs = {"kdef": synth, "fei": synth}
    # set_fit cannot fit a synthetic table: a row skipped before it starts, on Dask as here
    kwargs = dict(n_folds=2, identity_max_sets=30, seed=3, progress=False, aggregators=["mean", "set_fit"])
    serial = study_plan.run_plan(coeffs, plan, tmp_path / "local", **kwargs)
    spread = study_plan.run_plan(coeffs, plan, tmp_path / "dask", executor=dask2, **kwargs)
    assert (serial["status"] == "ok").sum() == 8 and serial["status"].str.startswith("skipped").sum() == 4
    assert serial.loc[serial["aggregator"] == "set_fit", "status"].str.startswith("skipped: set_fit").sum() == 2
    cols = ["task", "protocol", "model", "status", "accuracy_mean", "accuracy_std", "n_folds"]
    pd.testing.assert_frame_equal(serial[cols], spread[cols])  # same rows, same order
    t_local, r_local = _plan_results(tmp_path / "local")
    t_dask, r_dask = _plan_results(tmp_path / "dask")
    assert t_local.to_csv(index=False) == t_dask.to_csv(index=False)  # Table 1, bit for bit
    assert r_local == r_dask  # every field of every result but the timings and threads
    assert {r["torch_threads"] for r in tables.load_results(tmp_path / "dask")} == {1}
    for f in sorted((tmp_path / "local").glob("*.predictions.csv")):
        assert f.read_bytes() == (tmp_path / "dask" / f.name).read_bytes()


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this test module


def _slow_square(numbers: list, i: int) -> int:
    time.sleep(1.0)
    return numbers[i] ** 2


def test_a_worker_killed_mid_task_loses_nothing(dask2):
    """Kill (SIGKILL) the worker process that holds the tasks' shared argument while it runs a task: every result
    still arrives, equal to the serial one (the scheduler reruns the lost work elsewhere; the nanny restarts it)."""
    client, numbers = dask2.client, list(range(8))
    shared = dask2.put(numbers)
    killed = {}

    def kill_the_holder_when_busy():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            holders = client.who_has(shared).get(shared.key) or ()
            busy = {w: keys for w, keys in client.processing().items() if keys and w in holders}
            if busy:
                worker = sorted(busy)[0]
                pid = client.run(os.getpid, workers=[worker])[worker]
                killed.update(worker=worker, pid=pid, tasks=len(busy[worker]))
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_holder_when_busy)
    killer.start()
    with dask2.tracker("test", progress=False) as track:  # 8 × 1 s on 2 workers: the kill lands mid-run
        futures = [dask2.submit(_slow_square, shared, i) for i in range(len(numbers))]
        track.add(futures)
        done = dict(track.finished())
    killer.join()
    assert killed and killed["tasks"] >= 1  # a worker died while running a task and holding the shared data ...
    assert [done[f] for f in futures] == [n ** 2 for n in numbers]  # every result, as the serial run gives it
    client.wait_for_workers(2, timeout=60)  # ... and the nanny started another one
    assert killed["pid"] not in client.run(os.getpid).values()
