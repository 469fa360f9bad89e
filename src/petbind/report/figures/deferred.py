"""The report's figures drawn as tasks on a compute engine (e.g. ``petbind demo``'s cluster).

Drawing is most of a report's time (the realistic demo: about 80 % of it,
mostly one fit figure per scan), and it runs one figure after another. With
an engine of several workers (:mod:`petbind.compute`), :func:`render_report`
hands the sections a :class:`DeferredFigures` in place of
:mod:`petbind.report.figures`: a builder call (``fit_figure(...)`` etc.) only
records its arguments, and ``figure_to_data_uri`` of such a recipe returns a
unique placeholder; every few recipes are sent to the engine as one task
(build + ``figure_to_data_uri``, the same functions with the same arguments),
so the workers draw while this process goes on with the sections. Once the
page is rendered, the placeholders are replaced by their ``data:`` URIs. The page is byte
for byte the one drawn in-process: the same matplotlib code runs on the same
numbers with the same settings (:func:`petbind.report.figures.base.new_figure`
sets no global state).

Figures that a section builds itself (not through a builder of the
``figures`` package) are drawn at once, in-process, as before.
"""

from __future__ import annotations

import gc
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from petbind.report import figures as _figures

#: The builders whose calls are recorded and drawn as tasks. Not ``map_grid_figure``:
#: its arguments are every scan's whole BP_ND map (128 scans of a 2 mm human grid:
#: 660 MB of float64); the report draws its map grid with ``map_tiles_figure``
#: from each map's three slices (about 180 kB a scan), computed here one map at a time.
BUILDERS = ("fit_figure", "forest_figure", "map_tiles_figure", "motion_overview_figure",
            "ortho_slices", "paired_lines_figure", "tac_grid_figure")

#: Builders of one large figure each (a panel per scan: 10 s of drawing at 128 scans):
#: each is sent at once as a task of its own, so that it is drawn while the per-scan
#: figures go on the other workers instead of last, alone, on one worker.
LARGE = ("map_tiles_figure", "motion_overview_figure", "tac_grid_figure")


@dataclass(frozen=True)
class Recipe:
    """A figure builder's name and arguments, to be drawn later."""

    builder: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def draw(recipes: list[tuple[Recipe, tuple[Any, ...], dict[str, Any]]]) -> list[str]:
    """Build and embed figures: ``[figure_to_data_uri(builder(*args), *uri_args)]``.

    One task of :meth:`DeferredFigures.fill`: plain arguments in, strings out.
    Inside the task a figure is refilled for the next recipe of the same layout
    (:func:`petbind.report.figures.base.reusing`: one fit figure built per task).
    Before it returns, the garbage collector runs once: a figure's artists refer
    to each other, so a drawn figure is freed by the collector, not when it is
    dropped, and a worker gives its free heap back when a task ends
    (:func:`petbind.compute.release_free_heap`): collected later, the figures of
    one task would stay in the worker's memory during the next ones (128 scans:
    a worker's RSS 20 MiB higher at its peak and 15-40 MiB higher between
    tasks; the collection costs about 50 ms a task).
    """
    from petbind.report.figures.base import reusing

    try:
        with reusing():  # the task's fit figures: one built, the others refilled
            return [_figures.figure_to_data_uri(
                getattr(_figures, r.builder)(*r.args, **r.kwargs), *uri_args, **uri_kwargs)
                for r, uri_args, uri_kwargs in recipes]
    finally:
        gc.collect()


class DeferredFigures:
    """Stands in for :mod:`petbind.report.figures` while a report's sections are built.

    Parameters
    ----------
    engine : petbind.compute.Engine, optional
        Where the figures are drawn. With an engine, every ``batch`` recorded
        figures go to it at once as one task (from a background thread), so
        they are drawn while the sections go on; without, :meth:`fill` takes
        one.
    batch : int
        Figures per task.

    Attributes
    ----------
    pending : dict
        ``{placeholder: (Recipe, figure_to_data_uri args, kwargs)}`` in call order.
    """

    def __init__(self, engine: Any = None, batch: int = 4) -> None:
        self.pending: dict[str, tuple[Recipe, tuple[Any, ...], dict[str, Any]]] = {}
        self._nonce = uuid.uuid4().hex
        self._engine = engine
        self._batch = batch
        self._unsent: list[str] = []
        self._sent: list[tuple[list[str], Future]] = []
        self._pool: ThreadPoolExecutor | None = None

    def __getattr__(self, name: str) -> Any:
        if name in BUILDERS:
            return lambda *args, **kwargs: Recipe(name, args, kwargs)
        return getattr(_figures, name)

    def figure_to_data_uri(self, fig: Any, *args: Any, **kwargs: Any) -> str:
        """A placeholder for a recipe (drawn as a task); a real figure's URI now."""
        if not isinstance(fig, Recipe):
            return _figures.figure_to_data_uri(fig, *args, **kwargs)
        key = f"petbind-figure-{self._nonce}-{len(self.pending)}"
        self.pending[key] = (fig, args, kwargs)
        if self._engine is not None and fig.builder in LARGE:
            self._send(self._engine, [key])
            return key
        self._unsent.append(key)
        if self._engine is not None and len(self._unsent) >= self._batch:
            self._send(self._engine)
        return key

    def _send(self, engine: Any, keys: list[str] | None = None) -> None:
        """Submit ``keys`` (default: the unsent recipes) as one task, from a background thread."""
        from petbind.compute import Task

        if keys is None:
            keys, self._unsent = self._unsent, []
        if not keys:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2 * max(1, engine.n_workers))
        task = Task(f"report-figures-{len(self._sent)}", draw,
                    ([self.pending[k] for k in keys],))
        self._sent.append((keys, self._pool.submit(engine.run, [task])))

    def fill(self, html: str, engine: Any = None) -> str:
        """``html`` with every placeholder replaced by its figure (drawn as tasks on ``engine``,
        default the one given at construction)."""
        import re

        engine = engine if engine is not None else self._engine
        try:
            while self._unsent:  # the rest, spread over the workers
                n = max(1, -(-len(self._unsent) // max(1, engine.n_workers)))
                rest, self._unsent = self._unsent[n:], self._unsent[:n]
                self._send(engine)
                self._unsent = rest
            uris: dict[str, str] = {}
            for keys, fut in self._sent:
                [drawn] = fut.result().values()
                uris.update(zip(keys, drawn, strict=True))
        finally:
            self.close()
        return re.sub(f"petbind-figure-{self._nonce}-[0-9]+", lambda m: uris[m.group(0)], html)

    def close(self) -> None:
        """Stop the background threads (waiting for the tasks already sent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
