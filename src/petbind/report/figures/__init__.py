"""Figure builders of the report: plain arrays in, matplotlib figures out.

Every builder takes numbers (times in **minutes**, activity in kBq/mL, BP_ND
dimensionless, % change in percent) and returns a
:class:`matplotlib.figure.Figure` made without pyplot (no global state, the
Agg canvas), so builders are safe to call from any thread and leak nothing.
:func:`figure_to_data_uri` turns a figure into an embeddable ``data:`` URI
and closes it.

Figures are small multiples sized for a page column; colour maps are
perceptually uniform (viridis / inferno for maps, a diverging map centred on
zero for t statistics).

The builders live in :mod:`~petbind.report.figures.base` (embedding),
:mod:`~petbind.report.figures.curves` and :mod:`~petbind.report.figures.maps`;
this package names them all.
"""

from petbind.report.figures.base import DPI, MODEL_COLOURS, figure_to_data_uri, png_file_to_data_uri
from petbind.report.figures.curves import (
    fit_figure,
    forest_figure,
    motion_overview_figure,
    paired_lines_figure,
    tac_grid_figure,
)
from petbind.report.figures.maps import map_grid_figure, map_tiles_figure, ortho_slices

__all__ = ["DPI", "MODEL_COLOURS", "figure_to_data_uri", "fit_figure", "forest_figure",
           "map_grid_figure", "map_tiles_figure", "motion_overview_figure", "ortho_slices",
           "paired_lines_figure", "png_file_to_data_uri", "tac_grid_figure"]
