"""Figure text shown literally (petbind.figtext), without creating any tick."""

from __future__ import annotations

import io
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from petbind.figtext import literal, literal_text

UNESCAPED = re.compile(r"(?<!\\)\$")


def _figure(names: list[str]) -> Figure:
    fig = Figure(figsize=(5, 3), dpi=72)
    FigureCanvasAgg(fig)
    left, right, off = fig.subplots(1, 3)
    for i, name in enumerate(names):
        left.plot([0, 1, 2], [i, i + 1, i], label=name)
    left.legend()
    left.set_title(f"{names[0]} curves")
    right.barh([0, 1], [1.0, 2.0])
    right.set_yticks([0, 1], names[:2])
    off.imshow(np.arange(12.0).reshape(3, 4))
    off.set_axis_off()
    off.text(0.1, 0.5, names[-1], transform=off.transAxes)
    fig.suptitle("figure of " + names[1])
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _ticks_made(fig: Figure) -> list[int]:
    """Ticks each axis holds (its tick lists are lazy: absent until asked for)."""
    return [len(vars(axis).get(name, ())) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
            for name in ("majorTicks", "minorTicks")]


def test_literal_text_creates_no_tick():
    fig = _figure(["a$x$b", "cortex", "c$"])
    before = _ticks_made(fig)
    literal_text(fig)
    assert _ticks_made(fig) == before
    assert fig.axes[0].get_title() == "a\\$x\\$b curves"
    fig.findobj(Text)  # what the former implementation did: every axis makes its ticks
    assert sum(_ticks_made(fig)) > sum(before)


def test_every_text_drawn_is_literal_tick_labels_included():
    names = ["a$\\frac$b", "cortex $x$", "$p$"]
    fig = _figure(names)
    literal_text(fig)
    fig.canvas.draw()  # would raise on a$\frac$b parsed as mathtext
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert not [t for t in texts if UNESCAPED.search(t)]
    assert literal("cortex $x$") == "cortex \\$x\\$"
    # the bar chart's tick labels, set again from its formatter when drawn
    right = fig.axes[1]
    assert [t.get_text() for t in right.get_yticklabels()] == [literal(n) for n in names[:2]]


def test_same_picture_as_escaping_every_object_findobj_finds():
    """Names without ``$`` (every real report): the PNG is byte for byte the one of the
    former implementation, which walked ``fig.findobj(Text)`` (and so made every tick)."""
    names = ["striatum", "cerebellum", "thalamus"]
    ours = _figure(names)
    literal_text(ours)
    theirs = _figure(names)
    for t in theirs.findobj(Text):  # the former literal_text
        if "$" in t.get_text():
            t.set_text(literal(t.get_text()))
    assert _png(ours) == _png(theirs)
