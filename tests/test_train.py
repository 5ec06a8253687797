"""Training loop, run_task, CLI — on synthetic data (small epochs)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facelib.classify import protocols as P
from facelib.classify import experiment as E
from facelib.classify import images as I
from facelib.classify import trainer as T
from facelib.classify import validation as V
from facelib.cli import classify_main
from tests.fixtures import synthetic_coeff_table


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(n_per=100, d=10, n_classes=3, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = sep * rng.normal(size=(n_classes, d))
    y = np.repeat(np.arange(n_classes), n_per)
    X = centres[y] + rng.normal(size=(len(y), d))
    X = X * np.logspace(0, 3, d)  # very different scales per coefficient, as real α/β: standardisation matters
    perm = rng.permutation(len(y))
    return X[perm].astype(np.float32), y[perm]


def test_vector_resnet_learns_easy_problem():
    X, y = _blobs(n_per=60)
    r = T.train_vector_model(X[:120], y[:120], X[120:], y[120:], epochs=10, batch_size=32, seed=0)
    assert r["accuracy"] > 0.9, r["history"]
    assert 1 <= r["best_epoch"] <= 10 and r["n_val"] == 18 and r["n_fit"] == 102
    assert r["seconds_per_input"] == pytest.approx(r["seconds_per_epoch"] / 102)
    assert r["scores"].shape == (60, 3) and np.allclose(r["scores"].sum(1), 1, atol=1e-5)
    assert r["history"][0]["lr"] > r["history"][-1]["lr"]  # the cosine schedule decays


def test_vector_resnet_shuffled_labels_near_chance():
    X, y = _blobs(n_per=60)
    y_shuf = np.random.default_rng(1).permutation(y)
    r = T.train_vector_model(X[:120], y_shuf[:120], X[120:], y_shuf[120:], epochs=10, batch_size=32, seed=0)
    assert r["accuracy"] < 0.6  # chance is 1/3; 60 test samples (sd ≈ 0.06)


def test_determinism_and_standardisation_on_training_only():
    X, y = _blobs(n_per=30)
    a = T.train_vector_model(X[:60], y[:60], X[60:], y[60:], model="mlp", epochs=3, seed=5)
    b = T.train_vector_model(X[:60], y[:60], X[60:], y[60:], model="mlp", epochs=3, seed=5)
    assert (a["predictions"] == b["predictions"]).all()
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    # the scaler saw the fit split only (not the validation carve-out, not the test set)
    fit, _ = T.carve_validation(y[:60], T.RECIPE["val_fraction"], 5)
    assert np.allclose(a["standardize_mean"], X[:60][fit].mean(0), rtol=1e-5)


def test_baselines_and_early_stopping():
    X, y = _blobs()
    for m in ("logreg", "svm", "linsvm", "fisherfaces"):
        r = T.train_vector_model(X[:200], y[:200], X[200:], y[200:], model=m)
        assert r["accuracy"] > 0.9 and r["C"] in T.C_GRID, m
        assert [h["C"] for h in r["history"]] == list(T.C_GRID)  # C chosen on the validation split
        best = max(r["history"], key=lambda h: h["val_accuracy"])
        assert r["best_val_accuracy"] == best["val_accuracy"]
    # learnable: validation beats chance at once, then patience stops the run before the cap
    r = T.train_vector_model(X[:200], y[:200], X[200:], y[200:], model="mlp", epochs=50, patience=2)
    assert r["learning_epoch"] is not None and r["epochs_run"] < 50 and not r["ran_to_cap"]
    assert r["best_epoch"] == r["epochs_run"] - 2


def test_learning_threshold_against_binomial_arithmetic():
    y = np.array([0] * 30 + [1] * 10 + [2] * 10)  # majority rate 0.6, n = 50
    assert V.learning_threshold(y) == pytest.approx(0.6 + np.sqrt(0.6 * 0.4 / 50))
    assert V.learning_threshold(np.arange(7).repeat(9)) == pytest.approx(1 / 7 + np.sqrt((1 / 7) * (6 / 7) / 63))
    assert V.learning_threshold(np.array([], dtype=int)) == 1.0
    assert V.prior_loss(y) == pytest.approx(-(0.6 * np.log(0.6) + 2 * 0.2 * np.log(0.2)))
    assert V.prior_loss(np.arange(7).repeat(9)) == pytest.approx(np.log(7))


def test_learning_rule_is_within_reach_of_a_small_validation_split():
    """Gender on the paper's protocol selects on 16 people (8 + 8): the rule asks 11 right (not the 13 that two
    standard errors asked), and the loss half keeps a lucky draw at chance out: 11 right with a loss at or above
    ln 2 (the prior's) has not learnt."""
    y = np.array([0] * 8 + [1] * 8)
    assert V.learning_threshold(y) == pytest.approx(0.625)
    assert V.has_learnt(11 / 16, 0.60, y) and not V.has_learnt(10 / 16, 0.60, y)
    assert not V.has_learnt(11 / 16, np.log(2), y) and not V.has_learnt(1.0, 0.70, y)


def test_patience_waits_until_the_network_beats_chance():
    """A network that cannot learn (labels with no relation to the inputs: its validation stays at chance) is not
    stopped by patience on its flat start: it trains to the cap, and ``ran_to_cap`` says so. The learning rule
    never fired, on accuracy or on loss."""
    X, _ = _blobs()
    y = np.random.default_rng(1).integers(0, 3, len(X))
    r = T.train_vector_model(X[:200], y[:200], X[200:], y[200:], model="mlp", epochs=12, patience=2)
    assert r["learning_epoch"] is None
    assert r["epochs_run"] == 12 and r["ran_to_cap"]
    assert all(h["val_accuracy"] <= r["learning_threshold"] or h["val_loss"] >= r["prior_loss"]
               for h in r["history"])


def test_epoch_bar_reaches_stderr(capsys):
    """A batch run shows each network's epochs (papermill streams the kernel's stderr to the terminal)."""
    X, y = _blobs()
    r = T.train_vector_model(X[:200], y[:200], model="mlp", epochs=6, patience=None, progress=True,
                             desc="expression/paper beta→mlp split 1/3")
    err = capsys.readouterr().err
    assert "expression/paper beta→mlp split 1/3 epochs (cap 6, early stop)" in err
    assert "6/6" in err and "val_acc=" in err and r["epochs_run"] == 6
    T.train_vector_model(X[:200], y[:200], model="mlp", epochs=3, patience=None)
    assert "epochs (cap" not in capsys.readouterr().err  # off by default


@pytest.fixture(scope="module")
def synth():
    return synthetic_coeff_table(5, fei_per_gender=10, separation=1.0, seed=0)


def test_run_task_identity_paper(synth):
    r = E.run_task(synth, "identity", "paper", model="logreg", n_folds=2,
                   protocol_kwargs={"max_sets": 100})
    assert isinstance(r, E.TaskResult) and r.split_kind == "repeats" and r.k == 3
    assert r["n_folds"] == 2 and r["n_test"] == 1000 and r.n_test_pictures == [150, 150]
    assert r.n_train_pictures == [200, 200] and r.n_val == [100, 100]  # 5 held-out pictures → C(5,3) sets
    assert r["accuracy_mean"] > 0.9 and len(r["fold_accuracies"]) == 2
    assert set(r.accuracy_by_k) == {"1", "3"} and r.accuracy_by_k["1"]["n_test"] == [150, 150]
    assert r["per_angle_accuracy"] == {} and "+" in r["predictions"][0]["image_id"]
    assert np.asarray(r["confusion"]).sum() == 2000
    json.dumps(r.to_dict())  # JSON-able


def test_run_task_expression_keys(synth):
    r = E.run_task(synth, "expression", "subject_independent", model="mlp", n_folds=2, epochs=5)
    for key in ("task", "protocol", "input", "model", "backend", "device", "fold_accuracies", "accuracy_mean",
                "accuracy_std", "n_train", "n_test", "seconds_per_input", "seconds_per_epoch", "confusion",
                "per_angle_accuracy", "predictions", "classes", "leak_free"):
        assert key in r
    assert r["classes"] == list(P.EXPRESSIONS) and r["input"] == "beta" and r["leak_free"]
    assert set(r["per_angle_accuracy"]) == set(P.ANGLES)
    assert np.asarray(r["confusion"]).shape == (7, 7) and np.asarray(r["confusion"]).sum() == 350
    r2 = E.run_task(synth, "gender", "paper", input="alpha+beta", model="logreg", n_folds=2)
    assert r2["classes"] == ["F", "M"] and r2.n_train_pictures == [10, 10]  # FEI rows, one picture per subject
    r3 = E.run_task(synth, "gender", "paper", input="alpha", model="logreg", n_folds=1)
    assert r3.accuracy_std is None and r3.split_kind == "single split"
    lo, hi = r3.accuracy_ci
    assert lo <= r3.accuracy_mean <= hi


def test_run_task_unavailable(synth):
    with pytest.raises(P.ProtocolUnavailable):
        E.run_task(synth, "identity", "cross_session", model="logreg")


def test_image_model_and_cache(tmp_path, synth):
    rows = []
    rng = np.random.default_rng(0)
    for i in range(24):
        label = i % 2
        img = rng.integers(0, 60, (48, 40), dtype=np.uint8)
        if label:
            img[10:30, 10:30] = 230  # a bright square: an easy visual class
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), img)
        rows.append(str(p))
    y = np.arange(24) % 2
    r = T.train_image_model(rows[:16], y[:16], rows[16:], y[16:], image_size=32, epochs=2, batch_size=8,
                            boxes_train=[[0, 0, 40, 48, 1.0]] * 16, boxes_test=[[0, 0, 40, 48, 1.0]] * 8)
    assert r["image_size"] == 32 and len(r["predictions"]) == 8 and 0 <= r["accuracy"] <= 1
    assert I.load_image(rows[0], 32).shape == (32, 32, 3) and I.load_image(rows[0], 32, gray=True).shape == (32, 32)
    assert I.load_image(rows[0], 32, [0, 0, 40, 48, 1.0]).shape == (32, 32, 3)  # colour head crop
    df = synth[synth["dataset"] == "fei"].copy().reset_index(drop=True).iloc[:24]
    df["path"] = rows
    res = E.run_task(df, "gender", "two_picture", input="image", n_folds=1, epochs=1, image_size=32)
    assert res["image_size"] == 32 and res["input"] == "image" and res.flip is True
    for feat, model in (("hog", "linsvm"), ("pixels", "fisherfaces")):
        r = E.run_task(df, "gender", "two_picture", input=feat, model=model, n_folds=1)
        assert r.kind == "features" and 0 <= r.accuracy_mean <= 1 and r.accuracy_ci is not None


def test_augmentation_keeps_shape_and_flip_off_is_unflipped():
    import torch

    x = torch.randn(4, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    out = I.augment_batch(x, g, flip=False, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0)
    assert out.shape == x.shape
    # identity crop, no jitter, no flip: the batch comes back (up to the [0, 1] clamp)
    img = (x * I.IMAGENET_STD + I.IMAGENET_MEAN).clamp(0, 1)
    assert torch.allclose(out, (img - I.IMAGENET_MEAN) / I.IMAGENET_STD, atol=1e-4)


def test_cli(tmp_path, synth):
    coeffs = tmp_path / "coeffs.parquet"
    synth.to_parquet(coeffs)
    rc = classify_main(["--coeffs", str(coeffs), "--task", "gender", "--protocol", "subject_independent",
                          "--model", "logreg", "--n-folds", "3", "--out", str(tmp_path / "res"), "--quiet"])
    assert rc == 0
    (f,) = (tmp_path / "res").glob("*.json")
    d = json.loads(f.read_text())
    assert d["task"] == "gender" and d["n_folds"] == 3 and (tmp_path / "res" / d["predictions_file"]).exists()
    rc = classify_main(["--coeffs", str(coeffs), "--task", "identity", "--protocol", "cross_session",
                          "--model", "logreg", "--out", str(tmp_path / "res2"), "--quiet"])
    assert rc == 2  # an expected failure: "error: …", exit code 2 (facelib.errors)


def test_picture_features_on_real_kdef(kdef_root):
    """HOG / pixels / dlib descriptors of real KDEF pictures: shapes, and dlib's descriptor is closer within a
    person (two expressions, frontal) than across people."""
    from facelib.data.datasets import load_kdef
    from facelib.face3d.landmarks import DlibLandmarker

    man = load_kdef(kdef_root)
    pick = man[(man["angle"] == "S") & man["expression"].isin(["NE", "HA"])].sort_values("image_id")
    pick = pick[pick["subject"].isin(sorted(set(pick["subject"]))[:2])].reset_index(drop=True)
    assert len(pick) == 4
    assert I.picture_features(pick, "hog").shape == (4, 1764)
    assert I.picture_features(pick, "pixels").shape == (4, 1024)
    try:
        import dlib

        lm, detector = DlibLandmarker(), dlib.get_frontal_face_detector()
    except Exception as exc:  # dlib runtime or model missing
        pytest.skip(f"dlib landmarker unavailable: {exc}")
    marks = []
    for f in pick["path"]:
        bgr = cv2.imread(f)
        d = max(detector(np.ascontiguousarray(bgr[:, :, ::-1]), 1), key=lambda r: r.area())
        p = lm([bgr], [np.array([d.left(), d.top(), d.right(), d.bottom()])])[0]
        marks.append(np.concatenate([p[:, 0], p[:, 1]]).tolist())
    pick["landmarks"] = marks
    D = I.picture_features(pick, "dlib")
    assert D.shape == (4, 128)
    dist = np.linalg.norm(D[:, None] - D[None], axis=-1)
    subj = pick["subject"].to_numpy()
    same = dist[(subj[:, None] == subj[None]) & ~np.eye(4, dtype=bool)].max()
    other = dist[subj[:, None] != subj[None]].min()
    assert same < other, (same, other)


from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402


class _FadingClassifier(ClassifierMixin, BaseEstimator):
    """A stand-in classifier whose predictions get worse with C (a fraction ``WRONG[C]`` of them shifted to the
    next class): validation accuracy along the grid is known in advance. ``fits`` records every C fitted."""

    fits: list = []
    WRONG: dict = {}

    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        type(self).fits.append(self.C)
        return self

    def predict(self, X):
        pred = (np.asarray(X)[:, 0] > 0).astype(np.int64)
        n_wrong = int(round(self.WRONG[self.C] * len(pred)))
        pred[:n_wrong] = 1 - pred[:n_wrong]
        return pred

    def decision_function(self, X):
        return np.asarray(X)[:, 0]


def _fading(monkeypatch, wrong):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _FadingClassifier.fits, _FadingClassifier.WRONG = [], dict(wrong)
    monkeypatch.setattr(T, "baseline", lambda name, seed=0, C=None, **kw: make_pipeline(
        StandardScaler(), _FadingClassifier(C=1.0 if C is None else C)))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    return X, y


def test_c_grid_stops_after_two_falls(monkeypatch):
    X, y = _fading(monkeypatch, {0.01: 0.0, 0.1: 0.1, 1.0: 0.3, 10.0: 0.5, 100.0: 0.6})
    r = T.train_vector_model(X[:150], y[:150], X[150:], y[150:], model="linsvm")
    assert _FadingClassifier.fits == [0.01, 0.1, 1.0] and len(_FadingClassifier.fits) < len(T.C_GRID)
    assert r["C_tried"] == [0.01, 0.1, 1.0] and [h["C"] for h in r["history"]] == r["C_tried"]
    assert r["C"] == 0.01 and r["best_val_accuracy"] == 1.0 and r["accuracy"] > 0.9
    assert "fell twice in a row" in r["grid_stop"] and "C = 0.01, 0.1, 1" in r["grid_stop"]
    accs = [h["val_accuracy"] for h in r["history"]]
    assert accs[0] > accs[1] > accs[2]


def test_c_grid_goes_on_after_a_single_fall(monkeypatch):
    X, y = _fading(monkeypatch, {0.01: 0.2, 0.1: 0.3, 1.0: 0.1, 10.0: 0.2, 100.0: 0.0})  # fall, rise, fall, rise
    r = T.train_vector_model(X[:150], y[:150], X[150:], y[150:], model="logreg")
    assert _FadingClassifier.fits == sorted(T.C_GRID) and r["grid_stop"] == "grid exhausted"
    assert r["C"] == 100.0 and r["best_val_accuracy"] == 1.0
    r = T.train_vector_model(X[:150], y[:150], X[150:], y[150:], model="logreg", C=10.0)
    assert r["C_tried"] == [10.0] and r["grid_stop"] == "fixed C"


def test_sklearn_grid_refits_only_the_classifier_and_matches_a_cold_fit():
    """The C-independent steps are fitted once; the chosen pipeline predicts as a pipeline fitted from scratch at
    the chosen C (warm starts change the path, not the optimum)."""
    from facelib.classify.models import baseline

    X, y = _blobs(n_per=40, sep=1.0)
    fit, val = T.carve_validation(y[:90], T.RECIPE["val_fraction"], 0)
    for m in ("logreg", "linsvm", "fisherfaces"):
        r = T.train_vector_model(X[:90], y[:90], X[90:], y[90:], model=m)
        cold = baseline(m, seed=0, C=r["C"], n_fit=len(fit), n_features=X.shape[1]).fit(X[:90][fit], y[:90][fit])
        agree = (cold.predict(X[90:]) == r["model"].predict(X[90:])).mean()
        assert agree >= 0.95, (m, agree)
        assert r["precision"] in ("fp32", "fp64") and r["history"][-1]["converged"] in (True, False)


def test_linsvm_over_the_gram_matrix_is_the_linear_svm_on_the_features(monkeypatch):
    """linsvm solves over X·X_fitᵀ (computed once per fit split): its decisions equal libsvm's own linear-kernel
    SVM on the standardised features, and its pairwise weights Σ dual_coef · x_sv reproduce them; above
    GRAM_MAX_FIT fit rows it falls back to liblinear."""
    from sklearn.svm import SVC, LinearSVC

    from facelib.classify import models as M

    X, y = _blobs(n_per=40, sep=1.0)
    pipe = M.baseline("linsvm", C=0.1, n_fit=len(X), n_features=X.shape[1]).fit(X, y)
    assert isinstance(pipe[1], M.LinearKernel) and pipe[-1].kernel == "precomputed"
    Z = pipe[0].transform(X).astype(np.float64)
    ref = SVC(kernel="linear", C=0.1).fit(Z, y)
    np.testing.assert_allclose(pipe.decision_function(X), ref.decision_function(Z), atol=1e-6)
    svc = pipe[-1]
    n0, n1 = svc.n_support_[:2]
    sv = np.arange(n0 + n1)
    w01 = svc.dual_coef_[0, sv] @ Z[svc.support_[sv]]
    np.testing.assert_allclose(w01, ref.coef_[0], atol=1e-6)
    monkeypatch.setattr(M, "GRAM_MAX_FIT", len(X) - 1)
    big = M.baseline("linsvm", C=0.1, n_fit=len(X), n_features=X.shape[1])
    assert isinstance(big[-1], LinearSVC) and len(big.steps) == 2
