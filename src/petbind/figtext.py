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


def literal_text(fig: Any) -> Any:
    """Escape ``$`` in every text of ``fig`` (titles, labels, ticks, legends); return ``fig``."""
    from matplotlib.text import Text

    for t in fig.findobj(Text):
        s = t.get_text()
        if "$" in s:
            t.set_text(literal(s))
    return fig
