"""Person-consistent and set fits (facelib.fitting.person_fit): α held fixed, leave-one-out identity, shared set α,
and the person_grouped flag in a result."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from facelib.classify.experiment import run_task
from facelib.classify.protocols import ProtocolUnavailable
from facelib.fitting import person_fit as PF
from tests.fixtures import synthetic_coeff_table, tddfa_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEMS = ("AF01NES", "AF01HAS", "AF01ANS", "AM02NES", "AM02HAS", "AM02SUS")
SIZE = 96


# ------------------------------------------------------------------------------------------------ no data needed
def test_loo_mean_never_includes_the_picture():
    X = np.array([[0.0], [3.0], [9.0], [100.0], [1.0]], np.float32)
    g = ["a", "a", "a", "b", "c"]
    loo = PF.loo_mean(X, g)
    assert loo[0, 0] == pytest.approx(6.0)      # (3 + 9) / 2; with itself it would be 4
    assert loo[2, 0] == pytest.approx(1.5)      # (0 + 3) / 2; with itself 4
    assert loo[1, 0] == pytest.approx(4.5)
    assert np.isnan(loo[3]).all() and np.isnan(loo[4]).all()  # alone: no other picture, never its own value


def test_person_grouped_flag_reaches_the_result():
    t = synthetic_coeff_table(3, sessions=("A",))
    plain = run_task(t, "expression", "subject_independent", "beta", "logreg", n_folds=2, keep_predictions=False)
    assert plain["person_grouped"] == ""
    pg = run_task(PF.person_centred(t), "expression", "subject_independent", "beta", "logreg", n_folds=2,
                  keep_predictions=False)
    assert "leave-one-out" in pg["person_grouped"]
    assert pg.to_dict()["person_grouped"] == pg["person_grouped"]
    with pytest.raises(ProtocolUnavailable):  # a person-grouped table is scored on β only
        run_task(PF.person_centred(t), "identity", "paper", "alpha", "logreg", n_folds=2, keep_predictions=False)


def test_person_centred_subtracts_the_others_mean():
    t = synthetic_coeff_table(2, sessions=("A",))
    c = PF.person_centred(t)
    X, C = np.stack(t["beta"]), np.stack(c["beta"])
    i = 0
    same = (t["subject"] == t["subject"][i]).to_numpy().copy()
    same[i] = False
    assert np.allclose(C[i], X[i] - X[same].mean(0), atol=1e-5)


# ------------------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def data(kdef_root, assets_dir):
    d = tddfa_rows(kdef_root, assets_dir, STEMS)
    if d is None:
        pytest.skip(f"KDEF dev pictures {STEMS} absent")
    t = pd.DataFrame(d["rows"])
    t["backend"] = "tddfa+fit_landmarks"  # stands in for a per-picture fit: α per picture differ within a person
    return t


@pytest.fixture(scope="module")
def fitter(assets_dir):
    from facelib.fitting.fitter import Fitter

    return Fitter(device="cpu", assets_dir=assets_dir, image_size=SIZE)


@pytest.fixture(scope="module")
def targets(data, tmp_path_factory):
    """The table's own landmarks, squeezed vertically around their centre: a target the start does not meet."""
    t = PF.target_table(data, "table", cache_dir=tmp_path_factory.mktemp("targets"))
    pts = np.stack(t["target"]).reshape(-1, 2, 68)
    c = pts.mean(2, keepdims=True)
    pts = c + (pts - c) * np.array([1.0, 0.9])[None, :, None]
    return t.assign(target=list(pts.reshape(len(t), 136)))


def test_person_fit_holds_alpha_at_the_others_mean(data, fitter, targets, tmp_path):
    out = PF.person_consistent_table(data, fitter, targets, iterations=8, image_size=SIZE, cache_dir=tmp_path)
    assert (out["backend"] == "tddfa+fit_person").all()
    assert out["person_grouped"].str.contains("leave-one-out").all()
    A_in, A_out = np.stack(data["alpha"]), np.stack(out["alpha"])
    loo = PF.loo_mean(A_in, data["subject"])
    assert np.allclose(A_out, loo, rtol=1e-5, atol=1e-3 * np.abs(A_in).max())  # α unchanged by the fit
    assert not np.allclose(A_out, A_in, atol=1e-3 * np.abs(A_in).max())         # and not the picture's own α
    assert not np.allclose(np.stack(out["beta"]), np.stack(data["beta"]))       # β was fitted
    again = PF.person_consistent_table(data, fitter, targets, iterations=8, image_size=SIZE, cache_dir=tmp_path)
    assert np.array_equal(np.stack(again["beta"]), np.stack(out["beta"]))       # cached


def test_set_fit_shares_alpha_across_members(data, fitter, targets):
    init = {c: np.stack(data[c]).astype(np.float32) for c in ("alpha", "beta", "pose")}
    from facelib.face3d.cameras import crop_box

    rois = np.stack([crop_box(b) for b in data["box"]])
    tgt = PF._targets_of(targets, data["sha256"])
    sets = np.array([[0, 1, 2], [3, 4, 5]])
    r = PF.set_fit(fitter, init, rois, tgt, sets, iterations=10, image_size=SIZE)
    m = r["alpha_members"]
    assert m.shape == (2, 3, 40)
    assert np.array_equal(m[:, 0], m[:, 1]) and np.array_equal(m[:, 0], m[:, 2])  # one α per set
    assert not np.allclose(r["alpha"][0], init["alpha"][:3].mean(0))              # it was fitted
    assert not np.allclose(r["beta"][0, 0], r["beta"][0, 1])                       # β per picture
    # a plain Fitter on the same batch gives each picture its own α
    plain = fitter.fit({k: v[sets.ravel()] for k, v in init.items()}, rois[sets.ravel()],
                       PF.image_to_crop(tgt[sets.ravel()], rois[sets.ravel()], SIZE), iterations=10)
    assert not np.allclose(plain.alpha[0], plain.alpha[1])
    assert PF.SharedAlphaFitter.wrap(fitter).groups is None and not hasattr(fitter, "groups")


def test_set_fit_aggregator_is_order_free_and_cached(data, fitter, targets, tmp_path):
    agg = PF.SetFitAggregator(fitter, data, data, targets, iterations=6, image_size=SIZE, cache_dir=tmp_path)
    X = np.stack(data["alpha"]).astype(np.float32)
    a = agg.aggregate_sets(X, np.array([[0, 1, 2], [3, 4, 5]]))
    b = agg.aggregate_sets(X, np.array([[2, 0, 1]]))
    assert agg.n_fitted == 2 and np.array_equal(a[0], b[0])
    fresh = PF.SetFitAggregator(fitter, data, data, targets, iterations=6, image_size=SIZE, cache_dir=tmp_path)
    assert np.allclose(fresh.aggregate_sets(X, np.array([[3, 4, 5]]))[0], a[1]) and fresh.n_fitted == 0
    assert fresh.seconds_per_set() == pytest.approx(agg.seconds / 2) and agg.seconds > 0  # cost kept with the fits
    with pytest.raises(ValueError):
        agg.aggregate_sets(np.zeros((6, 10), np.float32), np.array([[0, 1, 2]]))
    assert torch.get_num_threads() == 1


# ------------------------------------------------------------------------------------------ set fit, known α
def _known_sets(fitter, assets_dir, n_sets: int, seed: int, noise_px: float = 0.5):
    """Synthetic 3-sets with a KNOWN shared α: per set one α ~ N(0, σ_α); per picture a random β ~ N(0, σ_β) and
    a head turned left / straight / right (3DDFA's mean pose, yaw −0.6 / 0 / 0.6 rad, jittered); the 68 model
    landmarks projected into a SIZE² crop plus ``noise_px`` Gaussian noise. Fits start from the mean face at a
    jittered pose. Returns (true α (n_sets, 40), start, rois, target points in image pixels, sets)."""
    import pickle

    from facelib import assets

    rng = np.random.default_rng(seed)
    with open(assets.resolve("param_mean_std", assets_dir), "rb") as fh:
        pose_mean = np.asarray(pickle.load(fh)["mean"], np.float32).reshape(-1)[:12]
    sa, sb = fitter.sigma_alpha.numpy(), fitter.sigma_beta.numpy()
    k, n = 3, 3 * n_sets
    a_true = (rng.normal(size=(n_sets, 40)) * sa).astype(np.float32)
    beta = (rng.normal(size=(n, 10)) * sb).astype(np.float32)

    def turned(pose, omega, dt):
        return fitter._pose(torch.as_tensor(pose), torch.zeros(n), torch.as_tensor(omega, dtype=torch.float32),
                            torch.as_tensor(dt, dtype=torch.float32)).reshape(n, 12).numpy()

    yaw = np.tile([-0.6, 0.0, 0.6], n_sets) + rng.normal(size=n) * 0.05
    pose = turned(np.tile(pose_mean, (n, 1)), np.stack([rng.normal(size=n) * 0.1, yaw, rng.normal(size=n) * 0.05], 1),
                  np.zeros((n, 2)))
    rois = np.tile(np.array([[0, 0, SIZE, SIZE]], np.float32), (n, 1))
    projected = fitter.fit({"alpha": np.repeat(a_true, k, 0), "beta": beta, "pose": pose}, rois, iterations=0)
    target = PF.crop_to_image(projected.landmarks + rng.normal(size=projected.landmarks.shape) * noise_px, rois, SIZE)
    start = {"alpha": np.zeros((n, 40), np.float32), "beta": np.zeros((n, 10), np.float32),
             "pose": turned(pose, rng.normal(size=(n, 3)) * 0.05, rng.normal(size=(n, 2)))}
    return a_true, start, rois, target, np.arange(n).reshape(n_sets, k)


def _shape_error(fitter, alpha, a_true) -> float:
    """How far an α is from the true one where the 68 points can tell: RMS distance of the neutral (β = 0) 3-D
    keypoints of the two identities (model units), mean over sets."""
    with torch.no_grad():
        zero = torch.zeros(len(alpha), fitter.kp.n_exp)
        d = fitter.kp.shape(torch.as_tensor(alpha, dtype=torch.float32), zero) - \
            fitter.kp.shape(torch.as_tensor(a_true), zero)
    return float((d ** 2).sum(-1).mean(-1).sqrt().mean())


def test_set_fit_recovers_a_known_shared_alpha_better_than_the_mean_of_per_picture_fits(fitter, assets_dir):
    a_true, start, rois, target, sets = _known_sets(fitter, assets_dir, n_sets=8, seed=0)
    n_sets = len(sets)
    per_picture = fitter.fit(start, rois, PF.image_to_crop(target, rois, SIZE), iterations=60)
    mean_of_3 = per_picture.alpha.reshape(n_sets, 3, -1).mean(1)
    joint = PF.set_fit(fitter, start, rois, target, sets, iterations=60, image_size=SIZE)["alpha"]
    e_mean, e_set, e_start = (_shape_error(fitter, a, a_true) for a in (mean_of_3, joint, np.zeros_like(a_true)))
    assert e_mean < 0.9 * e_start                      # the per-picture fits do recover part of α
    assert e_set < e_mean, (e_set, e_mean)             # one joint fit recovers the shared α better
    # the property can fail: a set fit stopped after one step stays near its start (the mean face)
    stopped = PF.set_fit(fitter, start, rois, target, sets, iterations=1, image_size=SIZE)["alpha"]
    assert _shape_error(fitter, stopped, a_true) > e_mean


# ------------------------------------------------------------------------------------------ in the study
def _person_run(tmp_path, **params):
    """A run folder holding what notebook 02 writes with ``person_fits: [ict]``: the raw, ict and ict+fit_person
    tables of a synthetic KDEF-like set (the person table: β minus the person's leave-one-out mean, flagged)."""
    from facelib.run import Run

    run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa", "ict_modes": ["landmarks"],
               "person_fits": ["ict"], **params})
    raw = synthetic_coeff_table(3, sessions=("A",), backend="tddfa")
    raw.to_parquet(run.coeffs("kdef"))
    raw.assign(backend="ict").to_parquet(run.ict_coeffs("kdef", "landmarks"))
    return run, raw


def test_person_fits_rows_reach_table1_with_the_person_grouped_flag(tmp_path):
    from facelib.classify import plan as study_plan
    from facelib.classify.results import read_coeffs
    from facelib.report import tables

    run, raw = _person_run(tmp_path)
    assert [p.name for p in run.coefficient_variants("kdef")] == ["kdef_tddfa.parquet", "kdef_ict.parquet"]
    person = PF.person_centred(raw.assign(backend="ict")).assign(backend="ict+fit_person",
                                                                 person_grouped=PF.PERSON_NOTE)
    person.to_parquet(run.person_coeffs("kdef", "ict"))  # notebook 02's table (here without the refit)
    names = [p.name for p in run.coefficient_variants("kdef")]
    assert names == ["kdef_tddfa.parquet", "kdef_ict.parquet", "kdef_ict+fit_person.parquet"]
    coeffs = {"kdef": [read_coeffs(p) for p in run.coefficient_variants("kdef")]}
    plan = study_plan.study_plan(models=["logreg"], image_baseline=False, rows=study_plan.rows_for(coeffs))
    summary = study_plan.run_plan(coeffs, plan, run.results, n_folds=2, identity_max_sets=5, progress=False)
    mine = summary[summary["backend"] == "ict+fit_person"]
    done = mine[mine["status"] == "ok"]
    assert set(zip(done["task"], done["protocol"])) == {("expression", "paper"), ("expression", "subject_independent")}
    skipped = mine[mine["status"] != "ok"]
    assert set(skipped["task"]) == {"identity"} and skipped["status"].str.contains("scored on β only").all()
    t1 = tables.table1(tables.load_results(run.results))
    flagged = t1[t1["person_grouped"].astype(str).str.len() > 0]
    assert set(flagged["backend"]) == {"ict+fit_person"} and (flagged["task"] == "expression").all()
    assert len(flagged) == 2 and flagged["person_grouped"].str.contains("leave-one-out").all()
    assert (t1.loc[t1["backend"] != "ict+fit_person", "person_grouped"] == "").all()
    shown = tables.table1_display(t1)
    assert "person_grouped" in shown.columns and "person_grouped" in tables.TABLE1_GLOSSARY
    assert "**person-grouped**" in tables.table1_footnotes(t1)
    pivot = tables.table1_pivot(t1)
    assert pivot.apply(lambda c: c.str.endswith("§")).to_numpy().sum() == 2


def test_set_fit_skips_tables_it_cannot_fit_and_reports_its_cost_in_table2(tmp_path):
    from facelib.classify import plan as study_plan
    from facelib.report import tables

    raw = synthetic_coeff_table(3, sessions=("A",), backend="tddfa")
    plan = study_plan.study_plan(models=["logreg"], image_baseline=False, rows=(("kdef", "identity", "paper", "alpha"),))
    summary = study_plan.run_plan({"kdef": [raw]}, plan, tmp_path, n_folds=2, identity_max_sets=5,
                                  aggregators=["mean", "set_fit"], progress=False)
    by = summary.set_index("aggregator")["status"]
    assert by["mean"] == "ok" and by["set_fit"].startswith("skipped: set_fit fits the per-picture landmark-fit")
    with pytest.raises(ValueError, match="aggregators: unknown value"):
        study_plan.run_plan({"kdef": [raw]}, plan, tmp_path, aggregators=["mean", "setfit"], progress=False)

    class Costed:  # stands in for SetFitAggregator: a name, a per-set vector, a cost per set
        name = "set_fit"

        def aggregate_sets(self, X, sets):
            return X[np.asarray(sets)].mean(1)

        def seconds_per_set(self):
            return 0.25

    r = run_task(raw, "identity", "paper", "alpha", "logreg", n_folds=2, aggregator=Costed(),
                 protocol_kwargs={"max_sets": 5}, keep_predictions=False)
    plain = run_task(raw, "identity", "paper", "alpha", "logreg", n_folds=2, protocol_kwargs={"max_sets": 5},
                     keep_predictions=False)
    assert r["aggregator"] == "set_fit" and r["aggregator_seconds_per_set"] == 0.25
    assert plain["aggregator_seconds_per_set"] is None
    t2 = tables.table2([plain.to_dict(), r.to_dict()])
    assert list(t2.columns) == tables.TABLE2_COLUMNS and len(t2) == 2  # its own row beside the mean's
    assert t2.set_index("aggregator", drop=False).loc["set_fit", "aggregator_seconds_per_set"] == 0.25
    assert t2["aggregator"].isna().sum() == 1 and t2["aggregator_seconds_per_set"].isna().sum() == 1


def test_person_fits_errors_are_one_line_and_name_the_parameter_to_add():
    base = {"backend": "tddfa", "ict_modes": [], "fit_modes": []}
    assert PF.check_person_fits(base) == [] and PF.check_person_fits({**base, "person_fits": None}) == []
    cases = {"ict": "ict_modes=[landmarks]", "tddfa": "fit_modes=[landmarks]", "bfm": "unknown value"}
    for value, says in cases.items():
        with pytest.raises(ValueError, match=None) as err:
            PF.check_person_fits({**base, "person_fits": [value]})
        assert says in str(err.value) and "\n" not in str(err.value)
    assert PF.check_person_fits({**base, "ict_modes": ["full", "landmarks"], "person_fits": "ict"}) == ["ict"]
    with pytest.raises(ValueError, match="ict_modes"):  # the rendered fit alone is not the landmark fit refitted
        PF.check_person_fits({**base, "ict_modes": ["full"], "person_fits": ["ict"]})
    with pytest.raises(ValueError, match="backend tddfa"):
        PF.check_person_fits({**base, "backend": "deep3d", "fit_modes": ["landmarks"], "person_fits": ["tddfa"]})


def test_the_study_stops_before_notebook_01_on_a_person_fit_without_its_base(tmp_path, monkeypatch):
    from facelib import study

    monkeypatch.setattr(study, "run_dir", lambda params: (_ for _ in ()).throw(AssertionError("started")))
    with pytest.raises(SystemExit) as err:
        study.run_study(study.PARAMS_DIR / "ci.yaml", run_name="x", sets=["person_fits=[ict]"])
    msg = str(err.value)
    assert msg.startswith("The study cannot start: person_fits: [ict]") and "ict_modes" in msg and "\n" not in msg
    with pytest.raises(SystemExit, match="aggregators: unknown"):
        study.run_study(study.PARAMS_DIR / "ci.yaml", run_name="x", sets=["aggregators=[mean,setfit]"])


def test_person_tables_are_made_for_the_datasets_table1_scores_on_beta():
    from facelib.classify.plan import rows_for

    kdef = synthetic_coeff_table(2, sessions=("A",))
    fei = synthetic_coeff_table(0, fei_per_gender=3)
    folder = kdef.assign(dataset="folder")
    no_expression = folder.drop(columns=["expression"])
    for name, t in (("kdef", kdef), ("fei", fei), ("folder", folder), ("folder", no_expression)):
        on_beta = any("beta" in r[3] for r in rows_for({name: t}))
        assert PF.scored_on_beta(name, t) == on_beta, name
    assert PF.scored_on_beta("kdef", kdef) and not PF.scored_on_beta("fei", fei)


def test_study_variants_writes_the_flagged_ict_person_table(data, tmp_path):
    """Notebook 02's step on six KDEF pictures: the ICT landmark fit, then its person-consistent refit."""
    from facelib.fitting.ict_fit import fit_ict_table
    from facelib.run import Run, coefficient_cost

    run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa", "ict_modes": ["landmarks"], "person_fits": ["ict"]})
    raw = data.assign(backend="tddfa", expression=[s[4:6] for s in data["image_id"]], dataset="kdef", recon_seconds=0.01)
    raw.to_parquet(run.coeffs("kdef"))
    fit_ict_table(raw, "landmarks", iterations=20, progress=False, cache_dir=tmp_path / "c",
                  out=run.ict_coeffs("kdef", "landmarks"))
    made = PF.study_variants(run, {"kdef": raw, "fei": raw.assign(dataset="fei")}, ["ict"], progress=False,
                             cache_dir=tmp_path / "c")
    assert list(made) == [("kdef", "ict")]  # FEI is scored on gender (α) only: no person table for it
    t = pd.read_parquet(run.person_coeffs("kdef", "ict"))
    assert (t["backend"] == "ict+fit_person").all() and t["person_grouped"].str.contains("leave-one-out").all()
    assert run.coefficient_variants("kdef")[-1] == run.person_coeffs("kdef", "ict")
    ict = pd.read_parquet(run.ict_coeffs("kdef", "landmarks"))
    assert np.allclose(np.stack(t["alpha"]), PF.loo_mean(np.stack(ict["alpha"]), ict["subject"]), atol=1e-4)
    cost = coefficient_cost([run.ict_coeffs("kdef", "landmarks"), run.person_coeffs("kdef", "ict")])
    assert cost["ict+fit_person"] > cost["ict"]  # the refit's cost adds the per-picture fit it starts from
