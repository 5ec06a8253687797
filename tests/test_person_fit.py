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
    with pytest.raises(ValueError):
        agg.aggregate_sets(np.zeros((6, 10), np.float32), np.array([[0, 1, 2]]))
    assert torch.get_num_threads() == 1
