"""Renamed names that keep working for one release: notebook parameters (profiles, ``--set``, papermill ``-p``, a
notebook's namespace), command-line options and keyword arguments.

The one place that knows the old names: :data:`DEPRECATED_PARAMETERS` (parameters and their command-line options)
and the ``old="new"`` pairs given to :func:`renamed_kwargs` (keyword arguments). An old name is mapped to its new
one with one ``FutureWarning``; both names given with different values is a :class:`RenamedNameConflict`. The
old names go in the next release: delete this module's tables, the decorators and the ``--landmarks`` option.
"""
from __future__ import annotations

import functools
import warnings

from .errors import FacelibError

DEPRECATED_PARAMETERS = {"landmarks": "landmark_source"}  # old parameter name → new (same values)


class RenamedNameConflict(FacelibError, TypeError):
    """A deprecated name and its replacement given together, with different values."""


def _shown(name: str, kind: str) -> str:
    return f"--{name.replace('_', '-')}" if kind == "option" else name


def warn_renamed(old: str, new: str, kind: str = "parameter", stacklevel: int = 2) -> None:
    """The deprecation message: ``parameter 'landmarks' is deprecated, use 'landmark_source' (same values); …``."""
    warnings.warn(f"{kind} '{_shown(old, kind)}' is deprecated, use '{_shown(new, kind)}' (same values); the old "
                  "name will be removed in the next release", FutureWarning, stacklevel=stacklevel)


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b


def take_renamed(values: dict, old: str, new: str, kind: str = "parameter", old_wins: bool = False,
                 stacklevel: int = 4) -> dict:
    """Move ``values[old]`` to ``values[new]`` in place, with the warning, when the old name is there.

    Both names given (not None) with different values: :class:`RenamedNameConflict`, unless ``old_wins`` (a
    notebook's namespace, where the new name holds the parameters cell's default and only a papermill injection
    can set the old one)."""
    if old not in values:
        return values
    value = values[old]
    if value is not None and values.get(new) is not None and not _same(values[new], value) and not old_wins:
        o, n = _shown(old, kind), _shown(new, kind)
        raise RenamedNameConflict(f"{kind}s '{o}' and '{n}' are both given, with different values ({value!r} and "
                                  f"{values[new]!r}); '{o}' is the deprecated name of '{n}'",
                                  hint=f"give only '{n}'")
    warn_renamed(old, new, kind, stacklevel=stacklevel)
    dropped = old if value is None and new in values else new  # an old None leaves a given new name alone
    items = [(k, v) for k, v in values.items() if k != dropped]
    values.clear()  # in place, the new name where the old one stood (a profile keeps its order)
    values.update((new, v) if k == old else (k, v) for k, v in items)
    return values


def normalise_params(params: dict, kind: str = "parameter", old_wins: bool = False) -> dict:
    """A copy of ``params`` with every deprecated parameter name (:data:`DEPRECATED_PARAMETERS`) replaced by its
    new one: one warning per old name used (pointing at the caller's caller: the notebook cell, the code that
    built the dict); see :func:`take_renamed` for a name given twice."""
    out = dict(params)
    for old, new in DEPRECATED_PARAMETERS.items():
        take_renamed(out, old, new, kind, old_wins, stacklevel=5)
    return out


def renamed_kwargs(**renames: str):
    """Decorator: ``@renamed_kwargs(assets_folder="assets_dir")`` lets callers still pass ``assets_folder=`` (one
    warning each call site) for one release; the decorated function sees only ``assets_dir``."""
    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                take_renamed(kwargs, old, new, kind="keyword argument")
            return func(*args, **kwargs)
        return wrapper
    return decorate
