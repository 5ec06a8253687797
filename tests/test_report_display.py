"""Table 1 explains itself: a glossary entry for every column (mirrored in docs/reading.md), the paper's figures beside
every row of its task and protocol, a chance level computed from the row's own test data, picture baselines
without a 3DMM backend; the protocol table; Table 3 and its heatmap name what they show; the run page carries
the banner, findings and glossary."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest

from facelib.classify.plan import IMAGE_MODELS
from facelib.classify.results import save_result
from facelib.report import figures, index, tables
from facelib.run import write_status
from facelib.vocab import EXPRESSIONS

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent
PROV = {"synthetic": False, "backend": "tddfa", "device": "cpu", "parameters": {"run_name": "r"},
        "data": {"kdef": {"ok": 699, "subjects": 20}, "fei": {"ok": 400, "subjects": 200}}}


def result(task, protocol, input, model, confusion, classes, backend="tddfa", n=2, kind="repeats", acc=0.6):
    return {"task": task, "protocol": protocol, "input": input, "model": model, "backend": backend,
            "classes": classes, "confusion": confusion, "k": 1, "n_folds": n, "split_kind": kind,
            "accuracy_mean": acc, "accuracy_std": 0.02, "leak_free": False,
            "dataset": "fei" if task == "gender" else "kdef",
            "image_size": 224 if input == "image" else None, "transductive": ""}


def expression_confusion(per_class):
    """A 7×7 confusion whose rows sum to ``per_class`` (mostly right)."""
    conf = np.zeros((7, 7), int)
    for i, n in enumerate(per_class):
        conf[i, i], conf[i, (i + 1) % 7] = n - n // 4, n // 4
    return conf.tolist()


@pytest.fixture()
def results():
    unbalanced = [40, 10, 10, 10, 10, 10, 10]  # majority class AF: 40 of 100
    return [result("expression", "paper", "beta", "logreg", expression_confusion(unbalanced), list(EXPRESSIONS)),
            result("expression", "paper", "dlib", "logreg", expression_confusion([10] * 7), list(EXPRESSIONS)),
            result("expression", "paper", "image", "resnet34", [], list(EXPRESSIONS)),  # no confusion kept
            result("expression", "subject_independent", "hog", "linsvm", expression_confusion([10] * 7),
                   list(EXPRESSIONS), kind="folds"),
            result("gender", "paper", "alpha", "svm", [[30, 20], [10, 40]], ["F", "M"])]


def test_every_column_has_a_glossary_entry(results):
    t1 = tables.table1(results)
    shown = index.table1_with_flags(t1, results)
    missing = (set(shown.columns) | set(tables.TABLE1_COLUMNS)) - set(tables.TABLE1_GLOSSARY)
    assert not missing, f"add these columns to tables.TABLE1_GLOSSARY (and docs/reading.md): {sorted(missing)}"
    md = tables.glossary_markdown(["k", "chance", "not_a_column"])
    assert md.splitlines() == [f"* `k`: {tables.TABLE1_GLOSSARY['k']}", f"* `chance`: {tables.TABLE1_GLOSSARY['chance']}"]


def test_readme_and_notebook_04_carry_the_glossary_and_protocols():
    readme = (ROOT / "docs" / "reading.md").read_text()
    hint = "regenerate docs/reading.md's with facelib.report.tables.glossary_markdown() / protocol_markdown()"
    assert tables.glossary_markdown() in readme, hint
    assert tables.protocol_markdown() in readme, hint
    nb = nbformat.read(str(ROOT / "notebooks" / "04_classification.ipynb"), as_version=4)
    assert any(tables.protocol_markdown() in c.source for c in nb.cells if c.cell_type == "markdown"), hint


def test_protocol_table_chance_matches_the_class_counts():
    # identity/paper: KDEF's 10 people; expression: 7 classes; gender: 2
    n_classes = {"identity": 10, "expression": len(EXPRESSIONS), "gender": 2}
    for r in tables.PROTOCOL_TABLE.itertuples():
        assert r.chance.startswith(f"{100 / n_classes[r.task]:.1f}".rstrip("0").rstrip(".") + " %"), r
    from facelib.classify.protocols import PAPER_SUBJECTS, PROTOCOLS
    assert len(PAPER_SUBJECTS) == 10
    assert all(r.protocol in PROTOCOLS[r.task] for r in tables.PROTOCOL_TABLE.itertuples())


def test_paper_figures_chance_and_picture_baselines(results):
    t1 = tables.table1(results)
    d = tables.table1_explained(t1, results).set_index(t1["input"].to_numpy())
    # the paper's figures beside every row of its task and protocol, whatever the model
    for inp in ("beta", "dlib", "image"):
        assert (d.loc[inp, "paper_coefficients"], d.loc[inp, "paper_images"]) == ("83.5 %", "70.6 %")
    assert (d.loc["alpha", "paper_coefficients"], d.loc["alpha", "paper_images"]) == ("95.4 %", "79.8 %")
    assert (d.loc["hog", "paper_coefficients"], d.loc["hog", "paper_images"]) == ("—", "—")  # not the paper's protocol
    # chance: the majority-class rate of the row's own test data; 1 / n without a confusion
    assert d.loc["beta", "chance"] == "40.0 %" and d.loc["dlib", "chance"] == "14.3 %"
    assert d.loc["image", "chance"] == "14.3 %"
    assert d.loc["alpha", "chance"] == "50.0 %"  # 50 F, 50 M
    assert tables.chance_level({"confusion": [[5, 0], [15, 0]]}) == 0.75
    assert tables.chance_level({}) is None
    # picture baselines: named as such, no 3DMM backend (the result file says tddfa)
    assert d.loc["dlib", "input"] == "dlib embedding" and d.loc["dlib", "backend"] == tables.PICTURE_BACKEND
    assert d.loc["hog", "input"] == "HOG features" and d.loc["image", "backend"] == tables.PICTURE_BACKEND
    assert d.loc["beta", "backend"] == "tddfa"
    assert set(tables.PICTURE_INPUT_NAMES) == {i for i, _ in IMAGE_MODELS}
    # another dataset than the paper's: no reference
    own = tables.table1([{**results[0], "dataset": "folder"}])
    assert tables.table1_explained(own).iloc[0]["paper_coefficients"] == "—"


def test_table3_names_what_it_shows(tmp_path, results):
    source = {**results[0], "n_folds": 5, "split_kind": "repeats"}
    tables.write_table3(source, tmp_path, PROV)
    md = (tmp_path / "table3.md").read_text()
    assert "paper protocol · input beta · model logreg · backend tddfa · counts summed over 5 repeats" in md
    assert tables.table3_source({**source, "input": "dlib", "split_kind": "folds", "n_folds": 3}) == \
        "paper protocol · input dlib embedding · model logreg · backend — (picture) · counts summed over 3 folds"
    title = figures.confusion_title(source, {**PROV, "parameters": {"run_name": "a_long_run_name_" * 3}})
    assert "summed over 5 repeats" in title and "folds" not in title
    parts = [part for line in title.splitlines() for part in line.split(" · ")]  # lines break between parts
    assert {"Table 3 — expression confusion: paper's protocol", "expression coefficients β", "logistic regression", "tddfa",
            "counts summed over 5 repeats"} <= set(parts)
    assert all(len(line) <= 88 for line in title.splitlines())  # wrapped to the figure, nothing cut off
    fig = figures.plot_confusion(tables.table3(source)[0], source, PROV)
    fig.canvas.draw()
    ax = fig.axes[0]
    bbox = ax.title.get_window_extent(fig.canvas.get_renderer())
    assert bbox.x0 >= 0 and bbox.x1 <= fig.bbox.width  # the title fits inside the figure


def _run_folder(tmp_path, results, name="r"):
    folder = tmp_path / "runs" / name
    for r in results:
        save_result(r, folder / "results")
    (folder / "provenance.json").write_text(json.dumps(PROV))
    tables.write_tables(folder / "results", folder / "tables", PROV)
    write_status(folder, status="finished", profile="notebooks/params/paper.yaml", started="2026-01-01T00:00:00Z")
    return folder


def test_run_page_has_banner_findings_glossary_and_table3_source(tmp_path, results):
    cheap = [r for r in results if r["model"] != "resnet34"]
    folder = _run_folder(tmp_path, cheap)
    page = index.write_run_page(folder, []).read_text()
    assert "What this run can show." in page and "did not train the paper&#x27;s ResNet-34" in page
    assert "<h2>Verdict</h2>" in page and "What each column means" in page
    for column in ("chance", "paper_coefficients", "paper_images"):
        assert f"<th>{column}</th>" in page  # in the table header and the glossary
    assert "83.5 %" in page and "70.6 %" in page  # the paper's figures beside the expression rows
    assert "input beta · model logreg · backend tddfa" in page  # Table 3's caption
    assert "<h3>Protocols</h3>" in page and "GroupKFold" in page
    # with both of the paper's arms (224 px) there is no banner
    full = results + [{**results[0], "model": "resnet34"}]
    page = index.write_run_page(_run_folder(tmp_path, full, "full"), []).read_text()
    assert "What this run can show." not in page and "<h2>Verdict</h2>" in page
    overview = index.write_overview(tmp_path).read_text()
    assert "What each column means" in overview


def test_readme_is_a_short_front_door_whose_links_resolve():
    """The README stays short (what the study is, the two commands, where to look, your own data and your own
    reconstruction, on a cluster, where to go next, in that order) and every page it links exists."""
    import re
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 100
    heads = [h for h in re.findall(r"^## (.+)$", readme, flags=re.M)]
    assert heads[:6] == ["The two commands", "Where to look after a run", "Your own data", "Your own reconstruction",
                         "On a cluster", "Where to go next"]
    links = set(re.findall(r"\]\(([^)#]+)\)", readme))
    assert {"docs/reading.md", "docs/profiles.md", "docs/run_page.png"} <= links
    assert [link for link in links if not (ROOT / link).exists()] == []
