"""Analysis-by-synthesis fitting: renderer, losses, skin model, face embedding, texture basis, the ``Fitter`` and
the cached table-level fit."""
