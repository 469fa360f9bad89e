"""``petbind fit``: kinetic models on a table of regional time-activity curves.

One row per target region: ``region``, ``model``, ``bp_nd`` and the model's
other parameters, their standard errors (``*_se``) and fit statistics
(``aic``, ``r2``, ``n_frames_used``, ``valid``). A JSON sidecar beside the
table records every setting; ``--plots DIR`` writes a fit + residual figure
per region.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import typer

from petbind.errors import ConfigError

#: Reference-tissue models of the command's contract (plasma models register their own).
REFERENCE_MODELS = ("srtm", "srtm2", "bfsrtm", "mrtm", "mrtm2", "logan", "suvr")


def parse_number_or(value: str, option: str, keyword: str, *, what: str, example: str
                    ) -> float | str:
    """A command-line value that is either ``keyword`` (any case) or a finite number.

    Parameters
    ----------
    value : str
        The text given on the command line.
    option : str
        The option's name (``--k2prime``), named in the error.
    keyword : str
        The word accepted instead of a number (``auto``, ``fit``).
    what : str
        What the number is, with its unit (``"minutes"``), for the error.
    example : str
        The fix shown in the error (``"e.g. --delay -0.1 or --delay fit"``).

    Returns
    -------
    float or str
        The number, or ``keyword`` itself.

    Raises
    ------
    ConfigError
        When ``value`` is neither (field: the option).
    """
    if value.strip().lower() == keyword:
        return keyword
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        raise ConfigError(f"{option} must be {what} or '{keyword}', got {value!r}",
                          field=option, fix=example)
    return number


def _parse_k2prime(value: str | None) -> float | str | None:
    if value is None:
        return None
    k = parse_number_or(value, "--k2prime", "auto", what="a number (1/min)",
                        example="e.g. --k2prime 0.12 or --k2prime auto")
    if k != "auto" and not k > 0:
        raise ConfigError(f"--k2prime must be positive, got {value}", field="--k2prime",
                          fix="give k2' in 1/min, e.g. 0.12")
    return k


def select_regions(regions: str, names: list[str], path: Path) -> list[str]:
    """The regions named in ``--regions A,B,...``, each checked against the table.

    Parameters
    ----------
    regions : str
        Comma-separated names (blanks around names are dropped).
    names : list of str
        The regions of the TAC table.
    path : Path
        The table, named in the error.

    Raises
    ------
    ConfigError
        When a name is not a region of the table (field ``--regions``).
    """
    targets = [r.strip() for r in regions.split(",") if r.strip()]
    missing = [r for r in targets if r not in names]
    if missing:
        raise ConfigError(f"regions {missing} are not in the table", path=path,
                          field="--regions", fix=f"use names from {', '.join(names)}")
    return targets


def refuse_overwrite(outputs: dict[str, Path | None], inputs: list[Path]) -> None:
    """Raise ConfigError when an output path (keyed by its option) is an input file."""
    given = {p.resolve() for p in inputs}
    for option, path in outputs.items():
        if path is not None and path.resolve() in given:
            raise ConfigError(f"{option} would overwrite the input {path.name}", path=path,
                              field=option, fix="write the results to another file")


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "region"


def _tsv_text(df: Any) -> str:
    return df.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g",
                     lineterminator="\n")


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out a matplotlib figure, write it as PNG (atomically, 110 dpi) and close it."""
    import matplotlib.pyplot as plt

    from petbind.io.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def emit_table(df: Any, out: Path | None, sidecar: dict[str, Any]) -> None:
    """Print the results table, or write it to ``out`` with its JSON sidecar."""
    from petbind.io.atomic import write_json_atomic, write_text_atomic

    text = _tsv_text(df)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomic(out, text)
        write_json_atomic(out.with_suffix(".json"), sidecar)
        typer.echo(f"wrote {out} ({len(df)} regions, {int(df['valid'].sum())} valid)")


def warn_invalid(df: Any) -> None:
    """Name the regions without a valid fit on stderr."""
    n_bad = int((~df["valid"]).sum())
    if n_bad:
        bad = ", ".join(df.loc[~df["valid"], "region"].astype(str))
        typer.echo(f"warning: {n_bad} region(s) gave no valid fit: {bad}", err=True)


def _plot_fits(fit: Any, ref: Any, regions: list[str], ref_name: str, units: str,
               folder: Path) -> list[Path]:
    """One PNG per region: data, fit and reference over time, and weighted residuals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = fit.timing.mid
    written = []
    for i, name in enumerate(regions):
        fig, (ax, axr) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
        ax.plot(t, ref, "s", ms=3, color="0.55", label=f"reference ({ref_name})")
        ax.plot(t, fit.data[i], "o", ms=4, color="C0", label=f"{name} (data)")
        ok = np.isfinite(fit.fitted[i])
        ax.plot(t[ok], fit.fitted[i][ok], "-", color="C3", label=f"{fit.model} fit")
        bp = float(fit.params["bp_nd"][i])
        ax.set_title(f"{name}: {fit.model}, BP_ND = {bp:.3g}" if np.isfinite(bp)
                     else f"{name}: {fit.model}, fit invalid")
        ax.set_ylabel(f"activity ({units})")
        ax.legend(frameon=False, fontsize=8)
        axr.axhline(0, color="0.6", lw=0.8)
        axr.plot(t[ok], fit.residuals[i][ok], "o-", ms=3, color="C0")
        axr.set_xlabel("time after injection (min)")
        axr.set_ylabel("residual")
        written.append(save_figure(fig, folder / f"{_safe_name(name)}_{fit.model}.png"))
    return written


def register(app: typer.Typer) -> None:
    """Add the ``fit`` command to ``app``."""

    @app.command("fit")
    def fit(
        tacs: Path = typer.Argument(..., help="TAC table: BIDS _tacs.tsv (frame_start, "  # noqa: B008
                                    "frame_end in s), PMOD .tac or Turku .dft."),
        model: str = typer.Option(..., "--model", "-m",
                                  help="srtm | srtm2 | bfsrtm | mrtm | mrtm2 | logan | suvr; "
                                  "with --blood: 1tcm | 2tcm | 2tcm-irr | logan-plasma | "
                                  "patlak | ma1"),
        ref: str | None = typer.Option(None, "--ref", metavar="REGION",
                                       help="Reference region (a column of TACS)."),
        k2prime: str | None = typer.Option(None, "--k2prime", metavar="VALUE|auto",
                                           help="Fixed k2' (1/min) for srtm2, mrtm2, logan "
                                           "(optional for bfsrtm), or 'auto': median k2' "
                                           "(SRTM for srtm2/bfsrtm, else MRTM) of the "
                                           "higher-binding half of the regions."),
        tstar: float | None = typer.Option(None, "--tstar", metavar="MIN",
                                           help="Logan t* in minutes (default: chosen per "
                                           "region by the 10 % max-error rule)."),
        weights: str = typer.Option("uniform", "--weights",
                                    help="uniform | duration | counts"),
        isotope: str | None = typer.Option(None, "--isotope",
                                           help="Radionuclide for counts weights (default: "
                                           "TracerRadionuclide of the table's metadata)."),
        start: float | None = typer.Option(None, "--start", metavar="MIN",
                                           help="Fit window start (minutes after injection)."),
        end: float | None = typer.Option(None, "--end", metavar="MIN",
                                         help="Fit window end (minutes after injection)."),
        regions: str | None = typer.Option(None, "--regions", metavar="A,B,...",
                                           help="Only these target regions (default: all "
                                           "but the reference)."),
        blood: Path | None = typer.Option(None, "--blood", metavar="FILE",  # noqa: B008
                                          help="Arterial input for plasma-input models."),
        delay: str | None = typer.Option(None, "--delay", metavar="MIN|fit",
                                         help="Plasma models: input delay in minutes, or "
                                         "'fit' (per region, early-frame 1TCM pre-fit; "
                                         "default 0)."),
        vb: str | None = typer.Option(None, "--vb", metavar="FRACTION|fit",
                                      help="Plasma models: blood volume, fixed or 'fit' "
                                      "(default: fit; 0 for graphical methods, for which "
                                      "'fit' takes it from the delay pre-fit)."),
        out: Path | None = typer.Option(None, "--out", metavar="FILE.tsv",  # noqa: B008
                                        help="Output table (default: print it)."),
        plots: Path | None = typer.Option(None, "--plots", metavar="DIR",  # noqa: B008
                                          help="Write a fit + residual PNG per region here."),
    ) -> None:
        """Fit a kinetic model to every target region of a TAC table."""
        import numpy as np

        from petbind import __version__
        from petbind.io.tables import read_tacs
        from petbind.models import get_model, model_spec
        from petbind.models.reference import estimate_k2prime

        spec = model_spec(model)
        if spec.input == "plasma":
            if blood is None:
                from petbind.errors import ModelError

                raise ModelError(f"model {spec.name} needs --blood", field="--blood",
                                 fix="give the arterial input with --blood FILE")
            from petbind.commands.fit_plasma import fit_plasma

            fit_plasma(spec, tacs, blood, ref=ref, regions=regions, tstar=tstar,
                       weights=weights, isotope=isotope, start=start, end=end, delay=delay,
                       vb=vb, out=out, plots=plots)
            return
        if delay is not None or vb is not None:
            raise ConfigError("--delay and --vb apply to plasma-input models only",
                              field="--delay" if delay is not None else "--vb",
                              fix="drop the option or choose a plasma model")
        if blood is not None:
            raise ConfigError(f"model {spec.name} uses a reference region, not --blood",
                              field="--blood", fix="drop --blood or choose a plasma model")
        if ref is None:
            raise ConfigError(f"model {spec.name} needs a reference region", field="--ref",
                              fix="give --ref REGION (a column of the table)")
        if tstar is not None and spec.name != "logan":
            raise ConfigError("--tstar applies to logan only", field="--tstar",
                              fix="use --start MIN to start the fit window of other models")
        refuse_overwrite({"--out": out}, [tacs])

        table = read_tacs(tacs)
        from petbind.study.regions import add_pools, split_pool

        table, pool_notes = add_pools(table, [ref, *(regions or "").split(",")])
        for note in pool_notes:
            typer.echo(f"note: {note}", err=True)
        if ref not in table.regions:
            raise ConfigError(f"reference region {ref!r} is not in the table", path=tacs,
                              field="--ref", fix=f"use one of {', '.join(table.regions)}")
        if regions is None:
            targets = [r for r in table.regions
                       if r != ref and r not in split_pool(ref) and "+" not in r]
        else:
            targets = select_regions(regions, list(table.regions), tacs)
        if not targets:
            raise ConfigError("no target region to fit", path=tacs, field="--regions",
                              fix="the table needs at least one region besides the reference")
        iso = isotope or table.metadata.get("TracerRadionuclide")
        ref_curve = table.curve(ref)
        y = np.stack([table.curve(r) for r in targets])
        settings: dict[str, Any] = {"weights": weights, "start": start, "end": end,
                                    "isotope": iso}
        k2 = _parse_k2prime(k2prime)
        k2_info: dict[str, Any] | None = None
        if k2 == "auto":
            # SRTM-family models take k2' from an SRTM pass (Wu & Carson 2002), the
            # others from MRTM (Ichise et al. 2003)
            method = "srtm" if spec.name in ("srtm2", "bfsrtm") else "mrtm"
            k2, k2_info = estimate_k2prime(table.timing, ref_curve, y, method=method,
                                           **settings)
            k2_info["regions"] = [targets[i] for i in k2_info["selected"]]
        if k2 is not None:
            settings["k2prime"] = k2
        if tstar is not None:
            settings["tstar"] = tstar
        m = get_model(spec.name, timing=table.timing, ref=ref_curve, **settings)
        result = m.fit(y)
        df = result.to_frame(targets)
        df["reference"] = ref
        sidecar = {"Description": f"petbind fit: {spec.description}",
                   "Software": "petbind", "SoftwareVersion": __version__,
                   "Input": str(tacs), "ReferenceRegion": ref, "Regions": targets,
                   "Model": spec.name, "Settings": m.settings, "K2primeEstimate": k2_info,
                   "Units": {"bp_nd": "unitless", "dvr": "unitless", "r1": "unitless",
                             "k2": "1/min", "k2a": "1/min", "k2prime": "1/min",
                             "tstar": "min", "intercept": "min", "suvr": "unitless"},
                   "Columns": list(df.columns)}
        emit_table(df, out, sidecar)
        if plots is not None:
            paths = _plot_fits(result, ref_curve, targets, ref, table.units, plots)
            typer.echo(f"wrote {len(paths)} plots to {plots}")
        warn_invalid(df)
