"""``petbind fit``: kinetic models on a table of regional time-activity curves.

One row per target region: ``region``, ``model``, ``bp_nd`` and the model's
other parameters, their standard errors (``*_se``) and fit statistics
(``aic``, ``r2``, ``n_frames_used``, ``valid``). A JSON sidecar beside the
table records every setting; ``--plots DIR`` writes a fit + residual figure
per region.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from petbind.commands import fit_common
from petbind.errors import ConfigError
from petbind.models.catalogue import model_choices, parameter_units


def _parse_k2prime(value: str | None) -> Any:
    """The ``--k2prime`` policy (:func:`petbind.models.k2prime.parse_k2prime`), as a ConfigError."""
    from petbind.errors import ModelError
    from petbind.models.k2prime import parse_k2prime

    try:
        return parse_k2prime(value, field="--k2prime")
    except ModelError as exc:
        raise ConfigError(exc.message, field="--k2prime", fix=exc.fix) from exc


def _plot_fits(fit: Any, ref: Any, regions: list[str], ref_name: str, units: str,
               folder: Path) -> list[Path]:
    """One PNG per region: data, fit and reference over time, weighted residuals, and
    the linear plot of a graphical model (coordinates named by its catalogue entry)."""
    import numpy as np
    from matplotlib.figure import Figure

    from petbind.models import model_spec

    coords = model_spec(fit.model).plot
    t = fit.timing.mid
    written = []
    for i, name in enumerate(regions):
        fig = Figure(figsize=(6.4, 8.0 if coords else 5.6))
        axes = fig.subplots(3 if coords else 2, 1,
                            gridspec_kw={"height_ratios": [3, 1, 3] if coords else [3, 1]})
        ax, axr = axes[0], axes[1]
        axr.sharex(ax)
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
        if coords:
            x, y = fit.extra[coords.x][i], fit.extra[coords.y][i]
            fin = np.isfinite(x) & np.isfinite(y) & (x != 0)
            axg = axes[2]
            axg.plot(x[fin], y[fin], "o", ms=4, color="0.5", label="all frames")
            used = np.asarray(fit.extra["used"][i]) if "used" in fit.extra else fin
            dvr, b = float(fit.params["dvr"][i]), float(fit.params["intercept"][i])
            if np.isfinite(dvr) and used.any():
                xs = np.sort(x[used])
                tstar = float(fit.params["tstar"][i])
                axg.plot(xs, dvr * xs + b, "-", color="C3",
                         label=f"slope (DVR) {dvr:.3g}, t* = {tstar:.3g} min")
            axg.set_xlabel(coords.x_label)
            axg.set_ylabel(coords.y_label)
            axg.legend(frameon=False, fontsize=8)
        png = folder / f"{fit_common._safe_name(name)}_{fit.model}.png"
        written.append(fit_common.save_figure(fig, png))
    return written


def register(app: typer.Typer) -> None:
    """Add the ``fit`` command to ``app``."""

    @app.command("fit")
    def fit(
        tacs: Path = typer.Argument(..., help="TAC table: BIDS _tacs.tsv (frame_start, "  # noqa: B008
                                    "frame_end in s), PMOD .tac or Turku .dft."),
        model: str = typer.Option(..., "--model", "-m",
                                  help=f"{model_choices('reference')}; with --blood: "
                                  f"{model_choices('plasma')}"),
        ref: str | None = typer.Option(None, "--ref", metavar="REGION",
                                       help="Reference region (a column of TACS)."),
        k2prime: str | None = typer.Option(None, "--k2prime", metavar="POLICY",
                                           help="k2' for srtm2, mrtm2 (required), logan, "
                                           "bfsrtm (optional): a number (1/min); 'auto': "
                                           "median k2' (SRTM for srtm2/bfsrtm, else MRTM) "
                                           "of the higher-binding half of the regions; "
                                           "'median': over all target regions; "
                                           "'mrtm@REGION' / 'srtm@REGION'; 'none'."),
        tstar: float | None = typer.Option(None, "--tstar", metavar="MIN",
                                           help="Logan t* in minutes (default: chosen per "
                                           "region by the 10 % max-error rule)."),
        weights: str | None = typer.Option(None, "--weights",
                                           help="uniform | duration | counts (default: the "
                                           "table's 'weights' column if it has one, else "
                                           "uniform)"),
        ignore_table_weights: bool = typer.Option(False, "--ignore-table-weights",
                                                  help="Do not use the TAC table's 'weights' "
                                                  "column."),
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
        blood: list[Path] | None = typer.Option(  # noqa: B008
            None, "--blood", metavar="FILE",
            help="Arterial input for plasma-input models: a BIDS *_blood.tsv (read with its "
            "own JSON sidecar only). Repeat for a manual and an autosampler recording."),
        blood_tail: str = typer.Option("hold", "--blood-tail", metavar="hold|extrapolate",
                                       help="Blood samples ending before the last frame: "
                                       "hold the last value (kinfitr's choice) or extrapolate "
                                       "a mono-exponential fitted to the last samples; "
                                       "refused when they end more than 10 min or 20 % of "
                                       "the scan early."),
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
        from petbind.models.k2prime import k2prime_for_regions

        spec = model_spec(model)
        if spec.input == "plasma":
            if not blood:
                from petbind.errors import ModelError

                raise ModelError(f"model {spec.name} needs --blood", field="--blood",
                                 fix="give the arterial input with --blood FILE")
            from petbind.commands.fit_plasma import fit_plasma

            fit_plasma(spec, tacs, list(blood), ref=ref, regions=regions, tstar=tstar,
                       weights=weights, isotope=isotope, start=start, end=end, delay=delay,
                       vb=vb, out=out, plots=plots, ignore_table_weights=ignore_table_weights,
                       blood_tail=blood_tail)
            return
        if delay is not None or vb is not None:
            raise ConfigError("--delay and --vb apply to plasma-input models only",
                              field="--delay" if delay is not None else "--vb",
                              fix="drop the option or choose a plasma model")
        if blood:
            raise ConfigError(f"model {spec.name} uses a reference region, not --blood",
                              field="--blood", fix="drop --blood or choose a plasma model")
        if ref is None:
            raise ConfigError(f"model {spec.name} needs a reference region", field="--ref",
                              fix="give --ref REGION (a column of the table)")
        if tstar is not None and spec.name != "logan":
            raise ConfigError("--tstar applies to logan only", field="--tstar",
                              fix="use --start MIN to start the fit window of other models")
        fit_common.refuse_overwrite({"--out": out}, [tacs])

        table = read_tacs(tacs)
        from petbind.study.regions import add_pools, split_pool

        table, pool_notes = add_pools(table, [ref, *(regions or "").split(",")])
        for note in pool_notes:
            typer.echo(f"note: {note}", err=True)
        pngs = fit_common.plot_paths(plots, list(table.regions), spec.name)
        fit_common.refuse_overwrite({"--plots": pngs}, [tacs])
        if ref not in table.regions:
            raise ConfigError(f"reference region {ref!r} is not in the table", path=tacs,
                              field="--ref", fix=f"use one of {', '.join(table.regions)}")
        if regions is None:
            targets = [r for r in table.regions
                       if r != ref and r not in split_pool(ref) and "+" not in r]
        else:
            targets = fit_common.select_regions(regions, list(table.regions), tacs)
        if not targets:
            raise ConfigError("no target region to fit", path=tacs, field="--regions",
                              fix="the table needs at least one region besides the reference")
        iso = isotope or table.metadata.get("TracerRadionuclide")
        ref_curve = table.curve(ref)
        y = np.stack([table.curve(r) for r in targets])
        w, w_source = fit_common.choose_weights(weights, table, ignore_table_weights)
        settings: dict[str, Any] = {"weights": w, "start": start, "end": end,
                                    "isotope": iso}
        policy = _parse_k2prime(k2prime)
        k2_info: dict[str, Any] | None = None
        if policy.estimates:
            # the catalogue names the estimator: SRTM for srtm2/bfsrtm (Wu & Carson
            # 2002), MRTM otherwise (Ichise et al. 2003)
            curves = {r: table.curve(r) for r in table.regions}
            k2, k2_info = k2prime_for_regions(policy, table.timing, ref_curve, curves,
                                              targets, for_models=spec.name,
                                              settings=dict(settings), field="--k2prime")
        else:
            k2 = policy.value
            k2_info = policy.describe()
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
                   "K2PrimePolicy": k2_info, "Citation": spec.citation,
                   "WeightsSource": w_source,
                   "Units": parameter_units(spec.params),
                   "Columns": list(df.columns)}
        fit_common.emit_table(df, out, sidecar)
        if plots is not None:
            paths = _plot_fits(result, ref_curve, targets, ref, table.units, plots)
            typer.echo(f"wrote {len(paths)} plots to {plots}")
        fit_common.warn_invalid(df)
