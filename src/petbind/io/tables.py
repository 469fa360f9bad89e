"""Region TAC tables: BIDS-derivative ``*_tacs.tsv``, PMOD ``.tac``, Turku ``.dft``.

Formats
-------
BIDS ``*_tacs.tsv`` (BIDS-derivatives for PET, BEP009/PET-preprocessing)
    Tab-separated, columns ``frame_start`` and ``frame_end`` in seconds
    followed by one column per region; ``n/a`` for missing. The JSON sidecar
    beside it gives ``"Units"`` (activity unit of the region columns) and may
    describe each column (``{"frame_start": {"Units": "s"}}``).
PMOD ``.tac`` (PMOD Technologies, PKIN user guide, "TAC file format")
    Tab-separated with a header such as ``start[seconds] end[kBq/cc] region...``:
    the time unit is in the brackets of the ``start`` column, the activity unit
    in the brackets of the ``end`` column. Times may be ``seconds`` or
    ``minutes``.
Turku ``.dft`` (Turku PET Centre, "DFT file format" 1.0,
https://www.turkupetcentre.net/formats/format_dft_1_0.html)
    Whitespace-separated; four title lines: ``DFT1`` and region names,
    study number and second name parts, activity unit and third name parts,
    ``Times (min)`` / ``Times (sec)`` and region volumes. ``Times`` means two
    time columns (frame start and end); ``Time`` (mid times only) cannot give
    frame durations and is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np

from petbind.errors import (
    DataError,
    FileFormatError,
    MetadataError,
    PetbindError,
    TimingError,
    UnitsError,
)
from petbind.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from petbind.io.boundary import file_reader
from petbind.io.verify import check_activity_range
from petbind.isotopes import get_isotope
from petbind.lazy import lazy_module
from petbind.tac import FRAME_COLUMNS, TACTable
from petbind.timing import FrameTiming, check_frames_in_seconds
from petbind.units import activity_factor, time_factor

pd = lazy_module("pandas")  # imported on first use: maps need no pandas

PathLike = str | os.PathLike


def sidecar_path(path: PathLike) -> Path:
    """The JSON sidecar of a BIDS file: same name with ``.json`` for the extension."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".tsv.gz", ".nii", ".tsv", ".v", ".json"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + ".json")
    return p.with_suffix(".json")


@file_reader
def read_json(path: PathLike, *, required: bool = True) -> dict:
    """Read a JSON object, naming the file, line and column of a syntax error.

    Raises
    ------
    MetadataError
        The file is missing and ``required``.
    FileFormatError
        The file is not valid JSON or not a JSON object.
    """
    p = Path(path)
    if not p.exists():
        if required:
            raise MetadataError("JSON sidecar is missing", path=p,
                                fix="write the sidecar beside the data file")
        return {}
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg}", path=p, fix="fix the JSON syntax") from None
    except UnicodeDecodeError:
        raise FileFormatError("not a UTF-8 text file", path=p,
                              fix="save the sidecar as UTF-8 JSON") from None
    except RecursionError:
        raise FileFormatError("JSON nested too deeply to read", path=p,
                              fix="flatten the nesting; sidecars are a few levels deep") \
            from None
    if not isinstance(obj, dict):
        raise FileFormatError("JSON sidecar must be an object ({...})", path=p,
                              fix="put the fields in a JSON object")
    return obj


@file_reader
def read_tsv(path: PathLike) -> pd.DataFrame:
    """Read a BIDS TSV as strings (``n/a`` kept), refusing ragged or empty files."""
    p = Path(path)
    if not p.exists():
        raise FileFormatError("file does not exist", path=p, fix="check the path")
    try:
        df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise FileFormatError("file is empty", path=p,
                              fix="write a header line and one row per frame") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"cannot parse as tab-separated values: {exc}", path=p,
                              fix="use one tab-separated row per line with the same "
                              "number of columns as the header") from None
    if df.shape[0] == 0:
        raise FileFormatError("no data rows", path=p, fix="write one row per frame")
    check_header(_header_cells(p), p)
    unnamed = [c for c in df.columns if str(c).startswith("Unnamed:")]
    if unnamed:
        raise FileFormatError("a column has no name in the header", path=p, field=unnamed[0],
                              fix="name every column in the header line")
    return df


def _header_cells(path: Path) -> list[str]:
    """The cells of a TSV's first line, as written (pandas renames duplicates to ``x.1``)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            line = f.readline()
    except UnicodeDecodeError:
        raise FileFormatError("not a UTF-8 text file", path=path,
                              fix="save the table as UTF-8 tab-separated text") from None
    return line.rstrip("\r\n").split("\t")


def check_header(names: list[str], path: PathLike, *, what: str = "column") -> None:
    """Refuse empty or duplicate column names (never renamed silently to ``cortex.1``).

    Raises
    ------
    FileFormatError
        Field: the offending name (``header`` for an empty one).
    """
    for i, n in enumerate(names):
        if not str(n).strip():
            raise FileFormatError(f"{what} {i + 1} of the header has no name", path=path,
                                  field="header", fix="name every column in the header line")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise FileFormatError(f"{what} name {n!r} appears twice in the header", path=path,
                                  field=n, fix="give every column a unique name (a region "
                                  "measured twice needs two names)")
        seen.add(n)


def _tac_format(path: PathLike) -> str:
    name = Path(path).name.lower()
    if name.endswith(".tsv"):
        return "bids"
    if name.endswith(".tac"):
        return "pmod"
    if name.endswith(".dft"):
        return "dft"
    raise FileFormatError("unknown TAC table format", path=path,
                          fix="use a BIDS _tacs.tsv, a PMOD .tac or a Turku .dft file")


@file_reader
def read_tacs(path: PathLike, units: str | None = None) -> TACTable:
    """Read a TAC table and return it in kBq/mL with timing in minutes.

    Parameters
    ----------
    path : str or PathLike
        A BIDS ``*_tacs.tsv`` (with JSON sidecar), PMOD ``.tac`` or Turku ``.dft``.
    units : str, optional
        Activity unit to assume when the file does not state one (a BIDS TSV
        without sidecar). A unit stated in the file always wins.

    Returns
    -------
    TACTable
        Values in kBq/mL; ``metadata["source_units"]`` keeps the file's unit.
        A ``weights`` column (per-frame weights, as kinfitr's data sets ship
        them) is not a region: it goes to ``metadata["frame_weights"]``.

    Raises
    ------
    FileFormatError, TimingError, DataError, UnitsError, MetadataError
        Unreadable file, bad frames, non-numeric cells, unknown units,
        or no unit at all.
    """
    fmt = _tac_format(path)
    reader = {"bids": _read_bids_tacs, "pmod": _read_pmod, "dft": _read_dft}[fmt]
    table = _split_weights(reader(Path(path), units), path)
    md = dict(table.metadata)
    md.setdefault("source_units", table.units)
    md["source_format"] = fmt
    half_life = None
    with contextlib.suppress(PetbindError, TypeError, ValueError, KeyError):
        half_life = get_isotope(str(md["TracerRadionuclide"])).half_life_s
    st = table.timing.start_s
    note = check_frames_in_seconds(st - st[0], table.timing.duration_s, half_life_s=half_life,
                                   path=str(path), field="frame_end")
    if note:
        md.setdefault("warnings", []).append(f"frame_end: {note}")
    f = activity_factor(table.units, path=path)
    for name, row in zip(table.regions, table.values * f, strict=True):
        check_activity_range(row, path, name)
    return TACTable(table.timing, table.values * f, table.regions, "kBq/mL", md,
                    source=str(path))


#: A TAC-table column of per-frame weights (as in kinfitr's data sets), not a region.
WEIGHTS_COLUMN = "weights"


def _split_weights(table: TACTable, path: PathLike) -> TACTable:
    """Move a ``weights`` column out of the regions into ``metadata["frame_weights"]``.

    Raises
    ------
    DataError
        Weights that are not finite and >= 0, or all zero (field ``weights``).
    """
    if WEIGHTS_COLUMN not in table.regions:
        return table
    i = table.regions.index(WEIGHTS_COLUMN)
    w = table.values[i]
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise DataError("frame weights must be finite, >= 0 and not all 0", path=path,
                        field=WEIGHTS_COLUMN,
                        fix="fix the weights column or remove it (then choose --weights)")
    keep = [k for k in range(table.n_regions) if k != i]
    if not keep:
        raise DataError("no region columns besides the weights", path=path, field="columns",
                        fix="add one column per region")
    md = {**table.metadata, "frame_weights": w.tolist()}
    return TACTable(table.timing, table.values[keep], [table.regions[k] for k in keep],
                    table.units, md, source=table.source)


def write_tacs(path: PathLike, table: TACTable) -> Path:
    """Write a TAC table atomically, in the format its extension names.

    ``.tsv`` writes a BIDS-derivative table and its JSON sidecar (``Units``,
    column descriptions and ``table.metadata``); ``.tac`` a PMOD table;
    ``.dft`` a Turku DFT file. Times are written in seconds (``.dft``:
    minutes), values in ``table.units``.
    """
    fmt = _tac_format(path)
    p = Path(path)
    if fmt == "bids":
        df = table.to_frame()
        text = df.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.15g",
                         lineterminator="\n")
        side = {
            **{k: v for k, v in table.metadata.items() if k not in FRAME_COLUMNS},
            "Units": table.units,
            "frame_start": {"Description": "frame start, relative to injection",
                            "Units": "s"},
            "frame_end": {"Description": "frame end, relative to injection", "Units": "s"},
        }
        with atomic_path(sidecar_path(p)) as tj, atomic_path(p) as tt:
            write_json_atomic(tj, side)
            tt.write_text(text, encoding="utf-8")
        return p
    for r in table.regions:
        if re.search(r"\s", r):
            raise DataError(f"region name {r!r} contains white space", path=p,
                            field="regions",
                            fix=f"rename the region; {fmt} files cannot hold spaces in names")
    if fmt == "pmod":
        head = ["start[seconds]", f"end[{table.units}]", *table.regions]
        cols = [table.timing.start_s, table.timing.end * 60.0, *table.values]
    else:
        head = None
        cols = [table.timing.start, table.timing.end, *table.values]
    arr = np.column_stack(cols)
    lines = []
    if head is not None:
        lines.append("\t".join(head))
    else:
        n = table.n_regions
        study = str(table.metadata.get("study", ".")).replace(" ", "_") or "."
        lines += ["\t".join(["DFT1", *table.regions]),
                  "\t".join([study, *["."] * n]),
                  "\t".join([table.units, *["."] * n]),
                  "\t".join(["Times (min)", *["."] * n])]
    missing = "nan" if fmt == "pmod" else "."
    for row in arr:
        lines.append("\t".join(f"{v:.15g}" if np.isfinite(v) else missing for v in row))
    return write_text_atomic(p, "\n".join(lines) + "\n")


# -- BIDS -------------------------------------------------------------------------
def _read_bids_tacs(path: Path, units: str | None) -> TACTable:
    side_p = sidecar_path(path)
    side = read_json(side_p, required=False)
    df = read_tsv(path)
    src = str(path)
    unit = side.get("Units")
    if unit is None:
        per_col = {d.get("Units") for k, d in side.items()
                   if isinstance(d, dict) and k not in FRAME_COLUMNS and "Units" in d}
        if len(per_col) == 1:
            unit = per_col.pop()
        elif len(per_col) > 1:
            raise UnitsError(f"region columns have different units {sorted(per_col)}",
                             path=side_p, field="Units",
                             fix="give all regions of a table the same unit")
    if unit is None:
        unit = units
    if unit is None:
        raise MetadataError("no activity unit: the JSON sidecar is missing or has no 'Units'",
                            path=side_p, field="Units",
                            fix='add {"Units": "kBq/mL"} (or the real unit) to the sidecar')
    if not isinstance(unit, str):
        raise UnitsError(f"'Units' must be a string, got {unit!r}", path=side_p,
                         field="Units", fix='write e.g. "kBq/mL"')
    activity_factor(unit, path=side_p, field="Units")
    for col in FRAME_COLUMNS:
        d = side.get(col)
        if isinstance(d, dict) and "Units" in d:
            f = time_factor(d["Units"], path=side_p, field=f"{col}.Units") * 60.0
            if f != 1.0 and col in df.columns:
                vals = pd.to_numeric(df[col], errors="coerce") * f
                df[col] = vals.where(vals.notna(), df[col]).astype(object)
    md = {k: v for k, v in side.items() if k not in FRAME_COLUMNS and k != "Units"
          and not isinstance(v, dict)}
    return TACTable.from_frame(df, units=unit, metadata=md, source=src)


# -- PMOD -------------------------------------------------------------------------
_BRACKET = re.compile(r"^\s*([^\[\]]*?)\s*\[([^\[\]]*)\]\s*$")


def _read_pmod(path: Path, units: str | None) -> TACTable:
    df = read_tsv(path)
    cols = [str(c) for c in df.columns]
    if len(cols) < 3:
        raise FileFormatError("a PMOD .tac needs start, end and at least one region column",
                              path=path, fix="header like 'start[seconds]  end[kBq/cc]  region'")
    m0, m1 = _BRACKET.match(cols[0]), _BRACKET.match(cols[1])
    if not m0 or m0.group(1).lower() != "start" or not m1 or m1.group(1).lower() != "end":
        raise FileFormatError(
            f"header starts with {cols[:2]}, expected 'start[<time unit>]' and "
            "'end[<activity unit>]'", path=path, field="header",
            fix="write the PMOD header, e.g. 'start[seconds]\tend[kBq/cc]\t<regions>'")
    tf = time_factor(m0.group(2), path=path, field=cols[0]) * 60.0  # -> seconds
    unit = m1.group(2)
    activity_factor(unit, path=path, field=cols[1])
    rest = cols[2:]
    if rest and _BRACKET.match(rest[0]) and _BRACKET.match(rest[0]).group(1).lower() == "mid":
        df = df.drop(columns=rest[0])
        rest = rest[1:]
    names = []
    for c in rest:
        m = _BRACKET.match(c)
        names.append(m.group(1) if m else c)
    check_header(names, path, what="region")
    out = pd.DataFrame({"frame_start": df[cols[0]], "frame_end": df[cols[1]]})
    for c, n in zip(rest, names, strict=True):
        out[n] = df[c]
    for col in FRAME_COLUMNS:
        num = pd.to_numeric(out[col], errors="coerce")
        out[col] = (num * tf).where(num.notna(), out[col]).astype(object)
    return TACTable.from_frame(out, units=unit, metadata={}, source=str(path))


# -- Turku DFT --------------------------------------------------------------------
def _read_dft(path: Path, units: str | None) -> TACTable:
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise FileFormatError("file does not exist", path=path, fix="check the path") from None
    except UnicodeDecodeError:
        raise FileFormatError("not a text file", path=path, fix="give a Turku DFT text file") \
            from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) < 5 or not lines[0].split()[0].upper().startswith("DFT"):
        raise FileFormatError("not a Turku DFT file (first line must start with 'DFT')",
                              path=path, field="header", fix="give a DFT 1.0 file")
    names1 = lines[0].split()[1:]
    names2 = lines[1].split()[1:]
    unit_tokens = lines[2].split()
    names3 = unit_tokens[1:]
    unit = unit_tokens[0]
    time_line = lines[3]
    tm = re.match(r"\s*(Times?)\s*\(([^)]*)\)", time_line, flags=re.IGNORECASE)
    if not tm:
        raise FileFormatError(f"fourth title line {time_line.strip()!r} does not name the time "
                              "columns", path=path, field="Times",
                              fix="write 'Times (min)' (frame start and end columns)")
    if tm.group(1).lower() == "time":
        raise TimingError("the DFT file gives frame mid times only; frame durations are unknown",
                          path=path, field="Time", fix="save the table with frame start and "
                          "end times ('Times (min)')")
    tf = time_factor(tm.group(2), path=path, field="Times") * 60.0
    n = len(names1)
    regions = []
    for i, a in enumerate(names1):
        parts = [a] + [p[i] for p in (names2, names3) if i < len(p) and p[i] != "."]
        regions.append("_".join(parts) if len(parts) > 1 else a)
    rows = []
    for k, ln in enumerate(lines[4:], start=5):
        tok = ln.split()
        if len(tok) != n + 2:
            raise FileFormatError(f"data line {k} has {len(tok)} values, expected {n + 2} "
                                  "(start, end and one per region)", path=path,
                                  fix="give every frame the same number of values")
        rows.append(["n/a" if t == "." else t for t in tok])
    check_header(regions, path, what="region")
    df = pd.DataFrame(rows, columns=["frame_start", "frame_end", *regions], dtype=object)
    for col in FRAME_COLUMNS:
        num = pd.to_numeric(df[col], errors="coerce")
        df[col] = (num * tf).where(num.notna(), df[col]).astype(object)
    return TACTable.from_frame(df, units=unit, metadata={}, source=str(path))


@file_reader
def timing_from_frame_table(path: PathLike) -> FrameTiming:
    """Frame timing from a TSV with ``frame_start`` and ``frame_end`` or ``frame_duration``.

    Times are seconds unless the JSON sidecar gives
    ``{"frame_start": {"Units": "min"}}``.
    """
    p = Path(path)
    df = read_tsv(p)
    side = read_json(sidecar_path(p), required=False)
    if "frame_start" not in df.columns:
        raise TimingError("column 'frame_start' is missing", path=p, field="frame_start",
                          fix="give frame_start and frame_end (or frame_duration) in seconds")
    d = side.get("frame_start")
    f = time_factor(d["Units"], path=p, field="frame_start.Units") * 60.0 \
        if isinstance(d, dict) and "Units" in d else 1.0
    vals = {}
    for col in ("frame_start", "frame_end", "frame_duration"):
        if col in df.columns:
            num = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
            bad = np.flatnonzero(np.isnan(num))
            if bad.size:
                raise TimingError(f"non-numeric value {df[col].iloc[bad[0]]!r} in row "
                                  f"{bad[0] + 1}", path=p, field=col,
                                  fix="every frame needs a numeric time")
            vals[col] = num * f
    if "frame_duration" in vals:
        dur = vals["frame_duration"]
        dfield = "frame_duration"
    elif "frame_end" in vals:
        dur = vals["frame_end"] - vals["frame_start"]
        dfield = "frame_end"
    else:
        raise TimingError("neither 'frame_end' nor 'frame_duration' is given", path=p,
                          field="frame_end", fix="add frame_end or frame_duration (seconds)")
    check_frames_in_seconds(vals["frame_start"] - vals["frame_start"][0], dur, path=str(p),
                            field=dfield)
    return FrameTiming(vals["frame_start"], dur, unit="s", source=str(p),
                       start_field="frame_start", duration_field=dfield)


@file_reader
def read_typed_tsv(path: PathLike, text_columns: tuple[str, ...] = (), *,
                   default_na: bool = False, booleans: bool = True) -> pd.DataFrame:
    """A TSV with typed columns (numbers parsed): ``n/a`` is missing, ``text_columns`` stay text.

    For tables petbind wrote and for BIDS tables of values
    (``participants.tsv``); :func:`read_tsv` reads an input table as strings.

    Parameters
    ----------
    path : path
    text_columns : tuple of str
        Columns read as text (labels: subject ``"01"`` stays ``"01"``).
    default_na : bool
        Also read pandas' default missing markers (``NA``, ``null``, ``NaN``
        ...) as missing; by default only ``n/a`` is, as BIDS writes it.
    booleans : bool
        Turn columns holding only ``true``/``false`` (any case) into booleans.

    Raises
    ------
    FileFormatError
        The file is missing or cannot be parsed (names the file).
    """
    try:
        df = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=default_na,
                         dtype={c: str for c in text_columns})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise FileFormatError(f"cannot read this table: {exc}", path=path,
                              fix="write one tab-separated row per line under one header line "
                              "(petbind's outputs: rerun the step that wrote it)") from exc
    if booleans:
        for col in df.columns:
            if df[col].dtype == object:
                low = df[col].astype(str).str.lower()
                if low.isin(["true", "false"]).all() and len(df):
                    df[col] = low == "true"
    return df
