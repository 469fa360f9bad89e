"""Figure text shown literally: no matplotlib mathtext from region or file names.

matplotlib parses any text holding a pair of unescaped ``$`` as mathtext, so
a region named ``cortex$_a$`` is typeset, and one named ``a$b\\frac$`` makes
rendering fail with a parse error. petbind's figures never use mathtext on
purpose; :func:`literal_text` escapes every ``$`` of every text in a figure
just before it is rendered.
"""

from __future__ import annotations

import re
from typing import Any

_DOLLAR = re.compile(r"(?<!\\)\$")


def literal(text: str) -> str:
    """``text`` with every unescaped ``$`` escaped, so matplotlib shows it as written."""
    return _DOLLAR.sub(r"\\$", text)


def _texts(artist: Any) -> Any:
    """Every :class:`~matplotlib.text.Text` under ``artist``, creating no tick.

    ``Artist.findobj`` asks each axis for its children, and an axis creates its
    ticks to answer (``Axis.get_major_ticks``): about a quarter of a report's
    drawing time went there, for ticks that drawing creates anyway (or never,
    on an axis that is switched off). Here an axis gives its label, its offset
    text and the ticks it already has; tick labels made at drawing time come
    from the axis's formatter, which :func:`literal_text` escapes instead.
    """
    from matplotlib.axis import Axis
    from matplotlib.text import Text

    stack = [artist]
    while stack:
        a = stack.pop()
        if isinstance(a, Text):
            yield a
        if isinstance(a, Axis):
            made = vars(a)  # the tick lists are lazy: absent until something asks for them
            children = [a.label, a.offsetText]
            children += [t for name in ("majorTicks", "minorTicks")
                         for tick in made.get(name, ()) for t in tick.get_children()]
        else:
            children = a.get_children()
        stack.extend(reversed(children))


def _literal_labels(formatter: Any) -> None:
    """Escape the tick labels a formatter holds as strings (``set_xticks(ticks, labels)``)."""
    import functools

    from matplotlib.ticker import FixedFormatter, FuncFormatter

    if isinstance(formatter, FixedFormatter):
        if any("$" in str(s) for s in formatter.seq):
            formatter.seq = [literal(str(s)) for s in formatter.seq]
    elif isinstance(formatter, FuncFormatter) and isinstance(formatter.func, functools.partial):
        # matplotlib >= 3.10: labels given with their ticks are a {tick: label} dict
        # bound to Axis._format_with_dict
        f = formatter.func
        if f.args and isinstance(f.args[0], dict) and any("$" in str(v)
                                                          for v in f.args[0].values()):
            labels = {k: literal(str(v)) for k, v in f.args[0].items()}
            formatter.func = functools.partial(f.func, labels, *f.args[1:], **f.keywords)


def literal_text(fig: Any) -> Any:
    """Escape ``$`` in every text of ``fig`` (titles, labels, ticks, legends); return ``fig``.

    Tick labels given as strings (``Axes.set_xticks(ticks, labels)``) are
    escaped in the axis's formatter, which sets them again when the figure is
    drawn. No tick is created. Numeric tick labels are left as they are (a
    log axis's ``10^2`` is mathtext on purpose).
    """
    for t in _texts(fig):
        s = t.get_text()
        if "$" in s:
            t.set_text(literal(s))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            _literal_labels(axis.get_major_formatter())
            _literal_labels(axis.get_minor_formatter())
    return fig
