"""The plasma-input branch of ``petbind fit`` (models 1tcm, 2tcm, 2tcm-irr, logan-plasma,
patlak, ma1).

Not a command of its own: :mod:`petbind.commands.fit` hands plasma-input
models to :func:`fit_plasma`. The blood file given with ``--blood`` is read
with :func:`petbind.io.blood.read_blood`, together with the other recordings
of the same scan in its folder (``..._recording-manual_blood.tsv`` beside
``..._recording-autosampler_blood.tsv``), and turned into the input function
by :func:`petbind.blood.input_from_recordings`. Output: one row per region
with ``vt`` (NaN for irreversible models), ``ki`` (irreversible models), the
model's other parameters, ``*_se`` and fit statistics; with ``--ref REGION``
that region's V_T is V_ND, giving ``vnd``, ``bp_nd = V_T / V_ND - 1`` and
``bp_p = V_T - V_ND`` for the other regions. ``--plots DIR`` writes the input
function and a fit + residual figure per region.

``--delay fit`` and, for the graphical methods, ``--vb fit`` take the delay
and v_B per region from an early-frame 1TCM + v_B pre-fit
(:func:`petbind.models.delay.fit_delay`) and add ``delay`` / ``vb`` columns; the
compartment models fit v_B with their rates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petbind.commands.fit_common import (
    _safe_name,
    emit_table,
    parse_number_or,
    refuse_overwrite,
    save_figure,
    select_regions,
    warn_invalid,
)
from petbind.errors import ConfigError
from petbind.models.catalogue import parameter_units


def blood_recordings(path: Path) -> list[Any]:
    """Read ``path`` and the other recordings of the same scan beside it."""
    from petbind.io.blood import read_blood

    paths = [path]
    if "_recording-" in path.name:
        prefix = path.name.split("_recording-")[0]
        paths += sorted(p for p in path.parent.glob(f"{prefix}_recording-*_blood.tsv")
                        if p.resolve() != path.resolve())
    return [read_blood(p) for p in paths]


def _parse_delay(value: str | None) -> float | str:
    if value is None:
        return 0.0
    return parse_number_or(value, "--delay", "fit", what="minutes",
                           example="e.g. --delay -0.1 or --delay fit")


def _parse_vb(value: str | None, graphical: bool) -> float | str:
    if value is None:
        return 0.0 if graphical else "fit"
    v = parse_number_or(value, "--vb", "fit", what="a fraction", example="e.g. --vb 0.05")
    if v == "fit":
        return "fit"
    if not 0 <= v < 1:
        raise ConfigError(f"--vb must lie in [0, 1), got {v:g}", field="--vb",
                          fix="give the blood volume as a fraction, e.g. 0.05")
    return v


def plot_input(inp: Any, timing: Any, folder: Path) -> Path:
    """Input-function figure: parent plasma and whole blood, early and whole scan."""
    import numpy as np
    from matplotlib.figure import Figure

    t, cp, cb = inp.on_grid(0.01, t_end=max(float(timing.end[-1]), 1.0))
    pf = inp.parent
    fig = Figure(figsize=(14.0 if pf is not None else 9.6, 3.8))
    axes = fig.subplots(1, 3 if pf is not None else 2)
    if pf is not None:
        ax = axes[2]
        ax.plot(pf.t, pf.fraction, "o", ms=4, color="0.4", label="measured")
        tf = np.linspace(0.0, t[-1], 400)
        ax.plot(tf, pf(tf), "-", color="C2", label=f"{pf.kind} model")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("time after injection (min)")
        ax.set_ylabel("parent fraction")
        ax.legend(frameon=False, fontsize=8)
    for ax, lim in zip(axes[:2], (min(5.0, t[-1]), t[-1]), strict=True):
        sel = t <= lim
        ax.plot(t[sel], cb[sel], color="C1", label="whole blood")
        ax.plot(t[sel], cp[sel], color="C0", label="parent plasma (input)")
        ax.set_xlabel("time after injection (min)")
        ax.set_ylabel("activity (kBq/mL)")
        for a in timing.start[timing.start <= lim]:
            ax.axvline(a, color="0.9", lw=0.6, zorder=0)
    axes[1].set_yscale("log")
    axes[1].set_ylim(bottom=max(np.nanmin(cp[cp > 0]) if np.any(cp > 0) else 1e-3, 1e-6))
    axes[0].legend(frameon=False, fontsize=8)
    delay = inp.delay_min
    fig.suptitle(f"arterial input (delay {delay * 60:.1f} s; "
                 f"parent fraction: {inp.settings.get('parent_fraction')})", fontsize=10)
    folder.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, folder / "input_function.png")


def plot_fits(fit: Any, regions: list[str], folder: Path) -> list[Path]:
    """One PNG per region: data and fit, weighted residuals, and the linear plot if any."""
    import numpy as np
    from matplotlib.figure import Figure

    from petbind.models import model_spec

    coords = model_spec(fit.model).plot  # the catalogue names the line's Fit.extra keys
    t = fit.timing.mid
    x_all = fit.extra.get(coords.x) if coords else None
    written = []
    for i, name in enumerate(regions):
        graph = x_all is not None
        fig = Figure(figsize=(6.4, 8.0 if graph else 5.6))
        axes = fig.subplots(3 if graph else 2, 1,
                            gridspec_kw={"height_ratios": [3, 1, 3] if graph else [3, 1]})
        ax, axr = axes[0], axes[1]
        ax.plot(t, fit.data[i], "o", ms=4, color="C0", label=f"{name} (data)")
        ok = np.isfinite(fit.fitted[i])
        ax.plot(t[ok], fit.fitted[i][ok], "-", color="C3", label=f"{fit.model} fit")
        key = "ki" if "ki" in fit.params and not np.isfinite(fit.params["vt"][i]) else "vt"
        val = float(fit.params[key][i])
        ax.set_title(f"{name}: {fit.model}, {key} = {val:.4g}" if np.isfinite(val)
                     else f"{name}: {fit.model}, fit invalid")
        ax.set_ylabel("activity (kBq/mL)")
        ax.set_xlabel("time after injection (min)")
        ax.legend(frameon=False, fontsize=8)
        axr.axhline(0, color="0.6", lw=0.8)
        axr.plot(t[ok], fit.residuals[i][ok], "o-", ms=3, color="C0")
        axr.set_ylabel("residual")
        if graph:
            axg = axes[2]
            x, y, yf = x_all[i], fit.extra[coords.y][i], fit.extra["y_fit"][i]
            fin = np.isfinite(x) & np.isfinite(y)
            axg.plot(x[fin], y[fin], "o", ms=4, color="0.5", label="all frames")
            used = np.isfinite(yf)
            axg.plot(x[used], yf[used], "-", color="C3",
                     label=f"line from t* = {float(fit.params['tstar'][i]):.3g} min")
            axg.set_xlabel("x (min)")
            axg.set_ylabel("y")
            axg.legend(frameon=False, fontsize=8)
        written.append(save_figure(fig, folder / f"{_safe_name(name)}_{fit.model}.png"))
    return written


def fit_plasma(
    spec: Any, tacs: Path, blood: Path, *, ref: str | None, regions: str | None,
    tstar: float | None, weights: str, isotope: str | None, start: float | None,
    end: float | None, delay: str | None, vb: str | None, out: Path | None,
    plots: Path | None,
) -> None:
    """Run a plasma-input model on a TAC table and write / print the table."""
    import numpy as np
    import typer

    from petbind import __version__
    from petbind.blood import input_from_recordings
    from petbind.io.tables import read_tacs
    from petbind.models import get_model
    from petbind.models.plasma import add_binding

    graphical = spec.plot is not None
    if tstar is not None and not graphical:
        raise ConfigError("--tstar applies to logan-plasma, patlak and ma1 only",
                          field="--tstar", fix="use --start MIN to start the fit window")
    d = _parse_delay(delay)
    v = _parse_vb(vb, graphical)
    refuse_overwrite({"--out": out, "--plots": plots}, [tacs, blood])
    table = read_tacs(tacs)
    names = list(table.regions)
    if regions is not None:
        targets = select_regions(regions, names, tacs)
        if ref is not None and ref not in targets:
            targets.append(ref)
    else:
        targets = names
    if ref is not None and ref not in names:
        raise ConfigError(f"reference region {ref!r} is not in the table", path=tacs,
                          field="--ref", fix=f"use one of {', '.join(names)}")
    if ref is not None and spec.name in ("patlak", "2tcm-irr"):
        raise ConfigError(f"{spec.name} gives K_i, not V_T: --ref (V_ND region) does not apply",
                          field="--ref", fix="drop --ref or use 1tcm, 2tcm, logan-plasma, ma1")
    iso = isotope or table.metadata.get("TracerRadionuclide")
    inp = input_from_recordings(blood_recordings(blood), isotope=iso)
    y = np.stack([table.curve(r) for r in targets])
    settings: dict[str, Any] = {"weights": weights, "start": start, "end": end,
                                "isotope": iso, "delay": d, "vb": v}
    if graphical:
        settings["tstar"] = tstar
    model = get_model(spec.name, timing=table.timing, blood=inp, **settings)
    result = model.fit(y)
    if ref is not None:
        i_ref = targets.index(ref)
        result = add_binding(result, float(result.params["vt"][i_ref]),
                             float(result.se.get("vt", np.full(len(targets), np.nan))[i_ref]))
    df = result.to_frame(targets)
    if ref is not None:
        df["reference"] = ref  # trailing, as in the reference-model table
    sidecar = {"Description": f"petbind fit: {spec.description}", "Software": "petbind",
               "SoftwareVersion": __version__, "Input": str(tacs), "Blood": str(blood),
               "ReferenceRegion": ref, "Regions": targets, "Model": spec.name,
               "Settings": result.settings,
               "Citation": spec.citation, "Units": parameter_units(df.columns),
               "Columns": list(df.columns)}
    emit_table(df, out, sidecar)
    if plots is not None:
        dl = np.asarray(result.params.get("delay", np.zeros(1)), dtype=float)
        dl = dl[np.isfinite(dl)]
        paths = [plot_input(inp.shifted(float(np.median(dl))) if dl.size else inp,
                            table.timing, plots)]
        paths += plot_fits(result, targets, plots)
        typer.echo(f"wrote {len(paths)} plots to {plots}")
    warn_invalid(df)
