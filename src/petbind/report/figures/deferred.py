"""The report's figures drawn as tasks on a compute engine (e.g. ``petbind demo``'s cluster).

Drawing is most of a report's time (the realistic demo: about 80 % of it,
mostly one fit figure per scan), and it runs one figure after another. With
an engine of several workers (:mod:`petbind.compute`), :func:`render_report`
hands the sections a :class:`DeferredFigures` in place of
:mod:`petbind.report.figures`: a builder call (``fit_figure(...)`` etc.) only
records its arguments, and ``figure_to_data_uri`` of such a recipe returns a
unique placeholder. Once the page is rendered, the recipes are drawn as tasks
(build + ``figure_to_data_uri``, the same functions with the same arguments)
and the placeholders are replaced by their ``data:`` URIs. The page is byte
for byte the one drawn in-process: the same matplotlib code runs on the same
numbers with the same settings (:func:`petbind.report.figures.base.new_figure`
sets no global state).

Figures that a section builds itself (not through a builder of the
``figures`` package) are drawn at once, in-process, as before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from petbind.report import figures as _figures

#: The builders whose calls are recorded and drawn as tasks.
BUILDERS = ("fit_figure", "forest_figure", "map_grid_figure", "motion_overview_figure",
            "ortho_slices", "paired_lines_figure", "tac_grid_figure")


@dataclass(frozen=True)
class Recipe:
    """A figure builder's name and arguments, to be drawn later."""

    builder: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def draw(recipes: list[tuple[Recipe, tuple[Any, ...], dict[str, Any]]]) -> list[str]:
    """Build and embed figures: ``[figure_to_data_uri(builder(*args), *uri_args)]``.

    One task of :meth:`DeferredFigures.fill`: plain arguments in, strings out.
    """
    return [_figures.figure_to_data_uri(getattr(_figures, r.builder)(*r.args, **r.kwargs),
                                        *uri_args, **uri_kwargs)
            for r, uri_args, uri_kwargs in recipes]


@dataclass
class DeferredFigures:
    """Stands in for :mod:`petbind.report.figures` while a report's sections are built.

    Attributes
    ----------
    pending : dict
        ``{placeholder: (Recipe, figure_to_data_uri args, kwargs)}`` in call order.
    """

    pending: dict[str, tuple[Recipe, tuple[Any, ...], dict[str, Any]]] = field(
        default_factory=dict)
    _nonce: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __getattr__(self, name: str) -> Any:
        if name in BUILDERS:
            return lambda *args, **kwargs: Recipe(name, args, kwargs)
        return getattr(_figures, name)

    def figure_to_data_uri(self, fig: Any, *args: Any, **kwargs: Any) -> str:
        """A placeholder for a recipe (drawn by :meth:`fill`); a real figure's URI now."""
        if not isinstance(fig, Recipe):
            return _figures.figure_to_data_uri(fig, *args, **kwargs)
        key = f"petbind-figure-{self._nonce}-{len(self.pending)}"
        self.pending[key] = (fig, args, kwargs)
        return key

    def fill(self, html: str, engine: Any) -> str:
        """``html`` with every placeholder replaced by its figure, drawn as tasks on ``engine``.

        The recipes are dealt round-robin into ``2 x engine.n_workers`` tasks
        (large and small figures mixed; few tasks, so little scheduling).
        """
        import re

        from petbind.compute import Task

        keys = list(self.pending)
        if not keys:
            return html
        n = max(1, min(len(keys), 2 * engine.n_workers))
        groups = [keys[i::n] for i in range(n)]
        tasks = [Task(f"report-figures-{i}", draw, ([self.pending[k] for k in g],))
                 for i, g in enumerate(groups)]
        results = engine.run(tasks)
        uris = {k: uri for t, g in zip(tasks, groups, strict=True)
                for k, uri in zip(g, results[t.key], strict=True)}
        return re.sub(f"petbind-figure-{self._nonce}-[0-9]+", lambda m: uris[m.group(0)], html)
