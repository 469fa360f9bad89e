"""The Provenance section: command, versions, input hashes, the run's config."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from petbind.report.outputs import StudyOutputs


def _walk_hashes(obj: Any, prefix: str = "") -> Iterable[tuple[str, str]]:
    """(where, sha256) pairs found anywhere in a provenance JSON."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_hashes(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_hashes(v, f"{prefix}[{i}]")
    elif isinstance(obj, str) and re.fullmatch(r"(sha256:)?[0-9a-f]{64}", obj):
        yield prefix, obj


def provenance_section(study: StudyOutputs) -> dict[str, Any]:
    prov = study.provenance
    inputs = []
    n_outputs = 0
    for scan in study.scans:
        sp = scan.provenance
        n_outputs += len(sp.get("outputs") or {})
        if isinstance(sp.get("inputs"), dict):
            for name, entry in sp["inputs"].items():
                entry = entry if isinstance(entry, dict) else {"sha256": entry}
                inputs.append({"scan": scan.label, "input": str(name),
                               "file": Path(str(entry.get("path", ""))).name,
                               "path": str(entry.get("path", "")),
                               "sha256": str(entry.get("sha256", "n/a"))})
        else:  # another layout: list every hash found
            inputs += [{"scan": scan.label, "input": where, "file": "", "path": "",
                        "sha256": h} for where, h in _walk_hashes(sp)]
    meta = {k: prov.get(k) for k in ("petbind_version", "python", "numpy", "scipy",
                                     "statsmodels", "dataset", "config_sha256", "seed",
                                     "started", "finished") if prov.get(k) is not None}
    command = prov.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    return {"meta": meta, "command": command, "inputs": inputs, "n_outputs": n_outputs,
            "config_text": study.config_text,
            "generated_by": study.description.get("GeneratedBy"),
            "run_seconds": study.summary.get("run_seconds")}
