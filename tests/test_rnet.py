"""R-Net / C-Net: initialisation from the released weights, label-free training, aggregation, cross-fitting, cache."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from facelib.classify import aggregate as A
from facelib.classify.experiment import run_task
from facelib.classify.plan import run_plan
from facelib.classify.results import result_name
from facelib.face3d import rnet
from facelib.fitting import cnet as C
from facelib.fitting import crossfit
from facelib.fitting import rnet_train as T
from facelib.run import Run
from tests.fixtures import synthetic_coeff_table, tddfa_rows

# two pictures of each of four people (frontal and half profile): a tiny, subject-rich set
STEMS = ("AF01NES", "AF01HAHL", "AF02ANS", "AF02SAHL", "AM01DIS", "AM01NEHL", "AM02SUS", "AM02AFHL")
SIZE = 96


@pytest.fixture(scope="module")
def table(kdef_root, assets_dir):
    torch.set_num_threads(1)
    made = tddfa_rows(kdef_root, assets_dir, STEMS)
    if made is None:
        pytest.skip("KDEF dev images of F01, F02, M01, M02 absent")
    rows = made["rows"]
    rows.append({**rows[0], "image_id": "BLACK", "sha256": "0" * 64, "status": "no_face", "box": None,
                 "landmarks": None, "alpha": None, "beta": None, "pose": None})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def setup(table, assets_dir):
    from facelib.fitting.fitter import Fitter

    fitter = Fitter(assets_dir=assets_dir, image_size=SIZE)
    composer = T.Composer(fitter, mesh_vertices=3000)
    data = T.prepare_data(table, SIZE, "table")
    return composer, data


def test_untrained_mobilenet_rnet_is_3ddfa(table, assets_dir):
    """Trunk and fc_param are the released mb05 weights; the added heads start at zero (mean texture, ambient)."""
    from facelib.face3d.tddfa import TDDFARegressor, crop_and_resize

    net = rnet.build_rnet("mobilenet", 0, assets_dir)
    img = cv2.imread(table["path"].iloc[0])
    crop, _ = crop_and_resize(img, table["box"].iloc[0])
    ref, _ = TDDFARegressor(assets_dir=assets_dir).forward_crops([crop])
    out = rnet.predict(net, crop[None])
    np.testing.assert_allclose(out["alpha"], ref[:, 12:52], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(out["pose"], ref[:, :12], rtol=1e-4, atol=1e-5)
    assert np.all(out["gamma"] == 0) and np.all(out["gain"] == 0)
    assert set(out) == {"pose", "alpha", "beta", "gamma", "gain"}
    tex = rnet.predict(rnet.build_rnet("mobilenet", 7, assets_dir), crop[None])
    assert tex["texture"].shape == (1, 7) and "gain" not in tex


def test_one_step_lowers_hybrid_loss(setup, assets_dir):
    composer, data = setup
    torch.manual_seed(0)
    net = rnet.build_rnet("mobilenet", 0, assets_dir)
    idx = np.arange(len(data))
    before = T.evaluate_loss(net, composer, data)["total"]
    net.train()
    opt = torch.optim.Adam([{"params": [p for n, p in net.named_parameters() if not n.startswith("fc_")],
                             "lr": 1e-6},
                            {"params": [p for n, p in net.named_parameters() if n.startswith("fc_")], "lr": 1e-3}])
    T.rnet_step(net, composer, data, idx, opt)
    after = T.evaluate_loss(net, composer, data)["total"]
    assert after < before - 1e-3, (before, after)
    # BatchNorm statistics stay the released ones while training
    ref = rnet.build_rnet("mobilenet", 0, assets_dir)
    assert torch.equal(net.trunk.bn1.running_mean, ref.trunk.bn1.running_mean)


def test_resnet50_backbone_same_interface(assets_dir):
    net = rnet.build_rnet("resnet50", 5, assets_dir, init=None)
    crops = np.random.default_rng(0).integers(0, 255, (2, 120, 120, 3), dtype=np.uint8)
    x = net.preprocess(crops)
    assert x.shape == (2, 3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    raw = net(x)
    assert raw["features"].shape == (2, 2048, 7, 7)
    out = net.decode(raw)
    mean = net.param_mean.numpy()  # zero heads: the untrained output is 3DDFA's mean parameters
    np.testing.assert_allclose(out["alpha"].detach().numpy(), np.tile(mean[12:52], (2, 1)), rtol=1e-5)
    assert out["texture"].shape == (2, 5) and out["gamma"].shape == (2, 27)


def test_save_load_roundtrip(tmp_path, assets_dir):
    net = rnet.build_rnet("mobilenet", 4, assets_dir)
    with torch.no_grad():
        net.fc_gamma.bias.fill_(0.1)
    path = rnet.save_rnet(net, tmp_path / "r.pt", {"k": 1})
    back, meta = rnet.load_saved_rnet(path)
    assert meta == {"k": 1} and rnet.weights_checksum(back) == rnet.weights_checksum(net)
    (tmp_path / "bad.pt").write_bytes(b"")
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a saved R-Net"):
        rnet.load_saved_rnet(tmp_path / "bad.pt")


# ----------------------------------------------------------------------------------------------- C-Net
def test_confidences_positive_and_equal_confidences_give_the_mean():
    torch.manual_seed(0)
    net = C.CNet(16, 10)
    feats = torch.randn(6, 16, 4, 4)
    c = net(feats)
    assert c.shape == (6, 10) and bool((c > 0).all())
    with torch.no_grad():  # random last layer: still positive
        net.out.weight.normal_(0, 5.0)
        net.out.bias.fill_(-20.0)
    assert bool((net(feats) > 0).all())
    alpha = torch.randn(2, 3, 10)
    same = torch.full((2, 3, 10), 0.37)
    torch.testing.assert_close(C.aggregate_torch(alpha, same), alpha.mean(1))
    X = alpha.reshape(6, 10).numpy()
    sets = np.array([[0, 1, 2], [3, 4, 5]])
    agg = A.ConfidenceAggregator(np.full((6, 10), 2.0)).aggregate_sets(X, sets)
    np.testing.assert_allclose(agg, X[sets].mean(1), rtol=1e-6)
    w = np.abs(np.random.default_rng(1).normal(size=(6, 10))) + 0.1  # independent computation of the rule
    got = A.ConfidenceAggregator(w).aggregate_sets(X, sets)
    np.testing.assert_allclose(got[0], (w[:3] * X[:3]).sum(0) / w[:3].sum(0), rtol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        A.ConfidenceAggregator(-w)


def test_confidence_by_angle_without_angles():
    """Your own folder of pictures has no head angles: one group, and the figure still draws."""
    df = pd.DataFrame({"confidence": [np.array([1.0, 3.0]), np.array([2.0, 2.0])], "angle": [None, None]})
    tab = C.confidence_by_angle(df)
    assert list(tab.index) == ["all"]
    np.testing.assert_allclose(tab.to_numpy(), [[0.75, 1.25]])  # (0.5 + 1) / 2, (1.5 + 1) / 2
    assert list(C.confidence_by_angle(df.drop(columns="angle")).index) == ["all"]
    fig = C.confidence_figure(df.drop(columns="angle"))
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["all"]  # the per-picture bar panel
    kdef = df.assign(angle=["FR", "S"])
    assert list(C.confidence_by_angle(kdef).index) == ["S", "FR"]  # KDEF's left-to-right order


def test_aggregator_parameter():
    X = np.arange(12, dtype=np.float64).reshape(4, 3) ** 2
    sets = np.array([[0, 1, 3]])
    np.testing.assert_allclose(A.make_aggregator("mean").aggregate_sets(X, sets), X[[0, 1, 3]].mean(0)[None])
    np.testing.assert_allclose(A.make_aggregator("median").aggregate_sets(X, sets), X[[1]])
    df = pd.DataFrame({"confidence": [[1.0, 1.0]] * 4})
    out = A.make_aggregator("cnet", df).aggregate_sets(X, sets)  # 2 confidences: α part weighted, rest averaged
    np.testing.assert_allclose(out, X[[0, 1, 3]].mean(0)[None], rtol=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        A.make_aggregator("cnet", pd.DataFrame({"alpha": [[1.0]]}))
    with pytest.raises(ValueError, match="aggregator must be one of"):
        A.make_aggregator("max")


def test_gradients_reach_cnet_through_aggregation(setup, assets_dir):
    composer, data = setup
    net = rnet.build_rnet("mobilenet", 0, assets_dir)
    coeffs = rnet.predict(net, data.crops, features=True)
    feats = coeffs.pop("features")
    cn = C.CNet(net.feature_channels, coeffs["alpha"].shape[1])
    with torch.no_grad():
        cn.out.weight.normal_(0, 0.01)
    sets = T.sample_sets(data.subject, 2, 3, seed=0)
    assert all(len(set(data.subject[s])) == 1 for s in sets)
    T.cnet_step(cn, composer, data, coeffs, feats, sets)
    # no optimiser: cnet_step leaves gradients untouched; do the backward by hand
    total = _cnet_total(cn, composer, data, coeffs, feats, sets)
    total.backward()
    grads = [p.grad for p in cn.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(cn.reduce.weight.grad.abs().sum()) > 0 and float(cn.out.weight.grad.abs().sum()) > 0


def test_identity_term_in_the_real_composer(setup, assets_dir):
    """With identity_weight the real Composer's step adds the whitened-α spread term (fitting.identity) and
    train_rnet draws person-grouped batches: 4 people × 2 pictures, batch 8 → groups of 2, two people a step."""
    composer, data = setup
    net = rnet.build_rnet("mobilenet", 0, assets_dir)
    idx = np.arange(len(data))
    total0, terms0 = T.rnet_step(net, composer, data, idx)
    total1, terms1 = T.rnet_step(net, composer, data, idx, identity_weight=0.5)
    assert "identity" not in terms0 and terms1["identity"] > 0
    assert total1 == pytest.approx(total0 + terms1["identity"], rel=1e-5)
    hist = T.train_rnet(net, composer, data, epochs=1, batch_size=8, lr=1e-6, head_lr=1e-6, seed=0,
                        identity_weight=0.5, per_person=4)
    assert hist["steps"] == 2 and all(np.isfinite(t["identity"]) for t in hist["terms"])


def _cnet_total(cn, composer, data, coeffs, feats, sets):
    S, k = sets.shape
    flat = sets.reshape(-1)
    t = {n: torch.from_numpy(v[flat]) for n, v in coeffs.items()}
    conf = cn(torch.from_numpy(feats[flat]))
    t["alpha"] = C.aggregate_torch(t["alpha"].reshape(S, k, -1), conf.reshape(S, k, -1)).repeat_interleave(k, 0)
    b = composer.batch(data, flat)
    return composer.losses(*composer.forward(t, b))[0]


# ----------------------------------------------------------------------------------------------- cross-fit
def test_parts_are_subject_disjoint_and_balanced():
    subjects = np.repeat([f"F{i:02d}" for i in range(7)] + [f"fei_{i}" for i in range(5)], 3)
    strata = np.array(["kdef"] * 21 + ["fei"] * 15)
    for k in (2, 3):
        parts = crossfit.assign_parts(subjects, k, seed=4, strata=strata)
        for s in np.unique(subjects):
            assert len(set(parts[subjects == s])) == 1
        for g in ("kdef", "fei"):
            people = pd.Series(parts[strata == g]).groupby(subjects[strata == g]).first()
            counts = np.bincount(people, minlength=k)
            assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="subject-disjoint"):
        crossfit.assign_parts(["a", "a"], 2)


def test_unknown_settings_are_named():
    with pytest.raises(ValueError, match="unknown R-Net settings \\['epoch'\\]"):
        crossfit.make_settings({"epoch": 3})
    assert crossfit.make_settings({"epochs": 3}).epochs == 3


def test_lr_schedule_warmup_then_constant_or_cosine():
    warm = [T.lr_factor(i, 10, 100) for i in range(10)]
    assert np.allclose(warm, np.arange(1, 11) / 10)  # linear warm-up, the same for both schedules
    assert [T.lr_factor(i, 10, 100, "cosine") for i in range(10)] == warm
    assert T.lr_factor(50, 10, 100) == 1.0 and T.lr_factor(99, 10, 100) == 1.0
    cos = np.array([T.lr_factor(i, 10, 100, "cosine") for i in range(10, 101)])
    assert cos[0] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(cos) <= 1e-12)  # never rises after the warm-up
    assert T.lr_factor(55, 10, 100, "cosine") == pytest.approx(0.5)  # half way: half the rate
    with pytest.raises(ValueError, match="schedule must be one of"):
        T.train_rnet(None, None, [], schedule="step")


def test_schedule_setting_keeps_old_caches_and_keys_new_ones():
    old = crossfit.RNetSettings().key_dict()
    assert "schedule" not in old  # "constant" was the behaviour before the setting: same key, same cache file
    new = crossfit.make_settings({"schedule": "cosine"}).key_dict()
    assert new["schedule"] == "cosine"
    assert crossfit.weights_key(["x"], old, {}) != crossfit.weights_key(["x"], new, {})


def test_cache_key_changes_with_training_pictures():
    s = crossfit.RNetSettings().key_dict()
    a = crossfit.weights_key(["x", "y"], s, {"mb05": "1"})
    assert a == crossfit.weights_key(["y", "x"], s, {"mb05": "1"})  # order does not matter
    assert a != crossfit.weights_key(["x", "z"], s, {"mb05": "1"})
    assert a != crossfit.weights_key(["x"], s, {"mb05": "1"})
    assert a != crossfit.weights_key(["x", "y"], {**s, "epochs": 7}, {"mb05": "1"})
    assert a != crossfit.weights_key(["x", "y"], s, {"mb05": "2"})


def test_crossfit_never_codes_a_training_picture(table, assets_dir, tmp_path):
    log = []
    settings = dict(epochs=1, batch_size=4, image_size=SIZE, mesh_vertices=3000, cnet_steps=2, cnet_k=2,
                    cnet_sets_per_step=2, targets="table")
    out = crossfit.rnet_tables({"kdef": table}, k=2, settings=settings, skin_model=False, assets_dir=assets_dir,
                               cache_dir=tmp_path, progress=False, log=log)["kdef"]
    ok = out[out["status"] == "ok"]
    assert (out.loc[out["status"] != "ok", "rnet_network"].isna()).all()
    assert set(ok["backend"]) == {"tddfa+rnet"} and len(ok["alpha"].iloc[0]) == 40
    by_key = {r["rnet_key"]: r for r in log}
    for _, row in ok.iterrows():  # the network that coded a picture never trained on its person nor the picture
        rec = by_key[row["rnet_network"]]
        assert row["subject"] not in rec["train_subjects"] and rec["part"] == row["rnet_part"]
        saved = torch.load(tmp_path / f"rnet-{row['rnet_network']}.pt", weights_only=True)["meta"]
        assert row["sha256"] not in saved["train_sha256"]
    assert len(by_key) == 2 and all(not r["cached"] for r in log)
    assert np.all(np.stack(ok["confidence"].map(np.asarray)) > 0)
    fig = crossfit.reconstruction_figure(out, n=3, image_size=64, assets_dir=assets_dir,
                                         out=tmp_path / "rec.png")
    assert (tmp_path / "rec.png").stat().st_size > 0 and len(fig.axes) == 3 * len(set(ok["angle"]))
    tab = C.confidence_by_angle(ok)
    assert list(tab.index) == ["HL", "S"] and tab.shape[1] == 40
    np.testing.assert_allclose(tab.to_numpy().mean(1), 1.0, rtol=1e-6)  # relative to each picture's mean
    # a second run reuses the cached weights and gives the same coefficients
    log2 = []
    again = crossfit.rnet_tables({"kdef": table}, k=2, settings=settings, skin_model=False,
                                 assets_dir=assets_dir, cache_dir=tmp_path, progress=False, log=log2)["kdef"]
    assert all(r["cached"] and r["cnet_cached"] for r in log2)
    np.testing.assert_allclose(np.stack(again.loc[ok.index, "alpha"]), np.stack(ok["alpha"]), rtol=1e-5)
    # one training picture fewer: a different key for the network that trained on it
    smaller = table.drop(index=table.index[table["image_id"] == "AM02AFHL"])
    log3 = []
    crossfit.rnet_tables({"kdef": smaller}, k=2, settings={**settings, "cnet": False}, skin_model=False,
                         assets_dir=assets_dir, cache_dir=tmp_path, progress=False, log=log3)
    changed = [r for r in log3 if "M02" in r["train_subjects"]]
    same = [r for r in log3 if "M02" not in r["train_subjects"]]
    assert changed and changed[0]["rnet_key"] not in by_key and not changed[0]["cached"]
    assert same and same[0]["rnet_key"] in by_key and same[0]["cached"]  # C-Net settings are not R-Net's key
    assert len(list(tmp_path.glob("data-*.npz"))) == 2  # training inputs cached per picture set


def test_crossfit_skin_model_per_part_sees_only_training_pictures(table, assets_dir, tmp_path, monkeypatch):
    """Default (skin_model=None): each part's photometric attention comes from a skin model trained on that part's
    training pictures, never on the pictures its network codes; the part's key carries that model."""
    seen = []
    real = crossfit.skin_model_for_table

    def spy(t, **kw):
        seen.append(set(t["sha256"]))
        return real(t, **kw)

    monkeypatch.setattr(crossfit, "skin_model_for_table", spy)
    log = []
    settings = dict(epochs=1, batch_size=4, image_size=SIZE, mesh_vertices=3000, cnet=False, targets="table")
    out = crossfit.rnet_tables({"kdef": table}, k=2, settings=settings, assets_dir=assets_dir,
                               cache_dir=tmp_path, progress=False, log=log)["kdef"]
    ok = out[out["status"] == "ok"]
    assert len(seen) == 2
    for rec, shas in zip(log, seen):
        coded = set(ok.loc[ok["rnet_part"] == rec["part"], "sha256"])
        trained = set(ok.loc[ok["rnet_part"] != rec["part"], "sha256"])
        assert shas and shas <= trained and not shas & coded
    assert log[0]["rnet_key"] != log[1]["rnet_key"]
    assert len(list((tmp_path / "fitting").glob("skin_*.npz"))) == 2  # one cached skin model per part


# ----------------------------------------------------------------------------------------------- study integration
def test_classification_with_each_aggregator(tmp_path):
    """Equal C-Net confidences classify exactly as the mean; run_plan adds one identity row per aggregator and
    skips ``cnet`` for a table without confidences."""
    df = synthetic_coeff_table(5, fei_per_gender=4, separation=1.0, seed=2)
    kw = dict(model="logreg", n_folds=2, protocol_kwargs={"subjects": None, "max_sets": 20}, keep_predictions=False)
    mean = run_task(df, "identity", "paper", **kw)
    df["confidence"] = [[0.5] * len(a) for a in df["alpha"]]
    same = run_task(df, "identity", "paper", aggregator="cnet", **kw)
    assert mean["aggregator"] == "mean" and same["aggregator"] == "cnet"
    assert same["fold_accuracies"] == mean["fold_accuracies"]
    assert result_name(same) != result_name(mean)
    plan = [dict(dataset="kdef", task="identity", protocol=p, input="alpha", model="logreg")
            for p in ("paper", "cross_angle")]
    plain = df.drop(columns=["confidence"])
    summary = run_plan({"kdef": [plain, df.assign(backend="tddfa+rnet")]}, plan, tmp_path, n_folds=2,
                             identity_max_sets=20, aggregators=("mean", "median", "cnet"), progress=False)
    paper = summary[summary["protocol"] == "paper"]
    assert sorted(zip(paper["backend"], paper["aggregator"])) == [
        ("synthetic", "mean"), ("synthetic", "median"), ("tddfa+rnet", "cnet"), ("tddfa+rnet", "mean"),
        ("tddfa+rnet", "median")]
    assert summary.loc[summary["protocol"] == "cross_angle", "aggregator"].isna().all()  # single pictures
    assert len(list(tmp_path.glob("*.json"))) == len(summary)  # no result overwrote another
    assert {json.loads(p.read_text())["dataset"] for p in tmp_path.glob("*.json")} == {"kdef"}  # whose data


def test_fast_coder_matches_the_study_path(table, assets_dir, tmp_path):
    """RNetCoder (reduced JPEG decode, small detection scale) finds the faces, returns boxes in original pixels
    close to the study's, and coefficients close to coding the study's crops; unreadable files give NaN rows."""
    net = rnet.build_rnet("mobilenet", 0, assets_dir)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    paths = list(table.loc[table["status"] == "ok", "path"].iloc[:3]) + [str(bad)]
    out = rnet.RNetCoder(net, assets_dir=assets_dir, batch_size=4, threads=1)(paths)
    assert out["found"].tolist() == [True, True, True, False] and np.isnan(out["alpha"][3]).all()
    ref = np.stack(table.loc[table["status"] == "ok", "box"].iloc[:3].map(np.asarray))[:, :4]
    assert np.abs(out["box"][:3, :4] - ref).max() < 0.08 * (ref[:, 2] - ref[:, 0]).max()
    data = T.prepare_data(table.iloc[:3], 120, "table")
    study = rnet.predict(net, data.crops)
    corr = np.corrcoef(out["alpha"][:3].ravel(), study["alpha"].ravel())[0, 1]
    assert corr > 0.9, corr


def test_study_rnet_writes_the_run_tables(table, assets_dir, tmp_path):
    """Notebook 02's call: every dataset coded and written as ``<dataset>_tddfa+rnet.parquet`` of the run; the
    run lists it among its coefficient variants (notebook 04 classifies it)."""
    run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa", "rnet": True})
    settings = {"epochs": 1, "batch_size": 4, "image_size": 64, "mesh_vertices": 2000, "cnet": False,
                "targets": "table", "parts": 2, "tuned_on_test": "epochs picked on test"}
    tables, summary = crossfit.study_rnet({"kdef": table}, run, settings, assets_dir=assets_dir,
                                          progress=False)
    path = run.coeffs("kdef", rnet=True)
    assert path.name == "kdef_tddfa+rnet.parquet" and path in run.coefficient_variants("kdef")
    back = pd.read_parquet(path)
    assert (back["backend"] == "tddfa+rnet").all() and back["rnet_part"].notna().sum() == 8
    assert list(summary["part"]) == [0, 1] and (summary["loss_after"] < summary["loss_before"]).all()
    # no data-built texture basis, per-part skin models: nothing learnt from the coded pictures, no flag
    assert "transductive" not in back.columns
    # settings declared as chosen on test flag every row (Table 1's tuned_on_test); the part probe is recorded
    assert (back.loc[back["status"] == "ok", "tuned_on_test"] == "epochs picked on test").all()
    probe = json.loads((run.dir / "coeffs" / "rnet_part_probe.json").read_text())
    assert set(probe["kdef"]) == {"raw", "centered"} and probe["kdef"]["raw"]["n_people"] == 4
    assert summary["part_probe_kdef_raw"].iloc[0] == round(probe["kdef"]["raw"]["accuracy"], 3)


def test_resnet50_takes_the_official_trunk(tmp_path, assets_dir):
    """Fine-tuning Deep3DFaceRecon's checkpoint: a file in its format (made here) gives the R-Net its trunk."""
    from facelib.face3d.deep3d import ReconNet

    torch.manual_seed(0)
    official = ReconNet()
    torch.save({"net_recon": official.state_dict(), "epoch": 20}, tmp_path / "epoch_20.pth")
    net = rnet.build_rnet("resnet50", 0, assets_dir, init=tmp_path / "epoch_20.pth")
    for k, v in official.backbone.state_dict().items():
        assert torch.equal(net.trunk.state_dict()[k], v), k
    torch.save({"something": 1}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a Deep3DFaceRecon checkpoint"):
        rnet.build_rnet("resnet50", 0, assets_dir, init=tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="released"):
        rnet.build_rnet("mobilenet", 0, assets_dir, init=tmp_path / "epoch_20.pth")
