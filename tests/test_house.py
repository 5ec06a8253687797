"""House rules measured on facelib's own source: no import cycle between its modules, no module over 500 lines."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facelib"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module → the facelib modules it imports, at module level and inside functions alike.

    ``from . import x`` / ``from .. import x`` name the submodule ``x`` when there is one, else the package."""
    files = {_module_name(p): p for p in package.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            for t in targets:
                while t and t not in modules:  # import a.b.c where c is a name → a.b
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_counts_function_level_imports():
    graph = import_graph()
    assert "facelib.face3d.morphable" in graph["facelib.face3d.ict"]
    assert "facelib.config" in graph["facelib.face3d.morphable"]


def test_no_import_cycle():
    assert import_cycles(import_graph()) == []


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these along their seams (over {MAX_LINES} lines): {long}"


# Words that point a reader at a tracker or a work session (an issue number, a numbered stop, lever or finding): a
# reader cannot look them up. Product files name the idea instead; history lives in git.
HISTORY_WORDS = r"\(stop [0-9]+|\bstop [0-9]+\b|\b[Ii]ssue [0-9]+|\b[Ll]evers? [0-9]|\b[Ff]inding [0-9]"
PRODUCT_FILES = ("README.md", "docs/*.md", "reports/README.md", "data/README.md", "notebooks/*.ipynb",
                 "notebooks/params/*.yaml", "facelib/**/*.py", "benchmarks/*.py", "tests/*.py", "Makefile",
                 "environment.yml", "pyproject.toml")


def history_words(root: Path = PACKAGE.parent) -> list[str]:
    """``path:line: text`` of every product-file line naming a tracker number or a work session."""
    import re
    pattern, hits = re.compile(HISTORY_WORDS), []
    for glob in PRODUCT_FILES:
        for path in sorted(root.glob(glob)):
            for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if pattern.search(line) and "HISTORY_WORDS" not in line and "history_words" not in line:
                    hits.append(f"{path.relative_to(root)}:{i}: {line.strip()[:100]}")
    return hits


def test_history_words_are_found(tmp_path):
    words = ["measured (st" + "op 4)", "iss" + "ue 22's levers", "see lev" + "er 3", "the set fit"]
    (tmp_path / "README.md").write_text("\n".join(words) + "\n")
    assert [h.split(":")[1] for h in history_words(tmp_path)] == ["1", "2", "3"]


def test_product_files_name_ideas_not_trackers():
    hits = history_words()
    assert hits == [], "name the idea instead (history lives in git):\n" + "\n".join(hits)
