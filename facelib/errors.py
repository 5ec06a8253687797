"""One error style: every *expected* failure (missing or bad asset, missing data, unreadable CSV, unknown label
column, a protocol the data cannot support) raises a :class:`FacelibError`; ``python -m facelib`` prints it as
``error: <message>`` (and ``hint: <fix>``) and exits with code 2. A traceback means a bug (or ``--debug``)."""
from __future__ import annotations

EXIT_EXPECTED = 2


class FacelibError(Exception):
    """An expected failure the user can fix; ``hint`` says how (optional)."""

    def __init__(self, message: str = "", hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    hint: str | None = None


def format_error(exc: BaseException) -> str:
    """``error: <first line>`` (+ ``hint: …``): what the command line prints for an expected failure."""
    message = str(exc).strip() or type(exc).__name__
    lines = [f"error: {message}"]
    hint = getattr(exc, "hint", None)
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)


def notebook_failure(notebook: str, exec_count, ename: str, evalue: str, executed: str) -> str:
    """The two lines the study runner prints when a notebook stops (papermill's ``PapermillExecutionError``):
    which notebook and cell, the error's type and message (its first line), and where the full traceback is."""
    first = (str(evalue).strip().splitlines() or [""])[0]
    return (f"error: notebook {notebook} failed in cell {exec_count}: {ename}: {first}\n"
            f"hint: the executed notebook {executed} shows the cell and its traceback")
