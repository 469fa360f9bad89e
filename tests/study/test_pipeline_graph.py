"""The study's task graph (study.pipeline.study_tasks): one task per subject registration
when preprocessing, one per scan, each scan waiting for its own subject only."""

from __future__ import annotations

from types import SimpleNamespace

from petbind.compute import open_engine
from petbind.study.pipeline import process_scan, study_tasks


def _scans():
    return [SimpleNamespace(subject=sub, stem=f"sub-{sub}_ses-{c}_trc-X", tracer="X")
            for sub in ("02", "01") for c in ("a", "b")]


def test_with_preprocessing_each_scan_waits_for_its_subjects_registration():
    config = SimpleNamespace(tracers={"X": "tracer-config"}, pvc="pvc-config",
                             regions="regions-config")
    plan = object()
    tasks = study_tasks(_scans(), config, "OUT", plan=plan)
    keys = [t.key for t in tasks]
    assert keys[:2] == ["petbind-subject-01", "petbind-subject-02"]
    assert len(keys) == 6 and len(set(keys)) == 6
    for t in tasks[2:]:
        sub = t.args[0].subject
        assert t.func is process_scan
        assert t.after == (f"petbind-subject-{sub}",)
        assert t.args[1:] == ("tracer-config", "OUT")
        assert t.kwargs == {"plan": plan, "pvc": "pvc-config", "regions": "regions-config"}
    for t in tasks[:2]:
        assert t.after == () and t.args[0] is plan and t.args[2] == "OUT"


def test_without_preprocessing_scans_are_independent_tasks_in_discovery_order():
    scans = _scans()
    tasks = study_tasks(scans, SimpleNamespace(tracers={"X": None}, pvc=None, regions={}), "OUT")
    assert [t.key for t in tasks] == [f"petbind-scan-{s.stem}" for s in scans]
    assert all(t.after == () for t in tasks)


def test_in_process_every_registration_runs_before_the_scans():
    seen = []
    config = SimpleNamespace(tracers={"X": None}, pvc=None, regions={})
    tasks = study_tasks(_scans(), config, "OUT", plan=object())
    for t in tasks:  # record the order instead of doing the work
        t.func, t.args, t.kwargs = seen.append, (t.key,), {}
    with open_engine("sync") as engine:
        engine.run(tasks)
    assert seen[:2] == ["petbind-subject-01", "petbind-subject-02"]
    assert seen[2:] == [f"petbind-scan-{s.stem}" for s in _scans()]
