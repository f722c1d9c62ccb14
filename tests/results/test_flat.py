"""The one flattening of a record: the spec's view entries and the report's rows of every real
record under tests/data are what they were when the two were flattened separately
(``tests/data/flat_golden.json``, written by that code)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from moetrace.report.data import row_from_record
from moetrace.results.flat import failure_entry, success_entry
from moetrace.results.record import Record

DATA = Path(__file__).resolve().parents[1] / "data"


def _records() -> list[tuple[str, Record]]:
    return [(str(p.relative_to(DATA)), Record.from_dict(json.loads(p.read_text())))
            for p in sorted(DATA.rglob("records/*.json"))]


def test_entries_and_rows_of_the_real_records_are_unchanged():
    golden = json.loads((DATA / "flat_golden.json").read_text())
    # the records of runs 1-3 and the CPU samples, frozen with the golden file; later runs' records are checked
    # against the views their own store wrote on the node (tests/gpu/test_gpu_evidence_4.py)
    recs = [(name, rec) for name, rec in _records() if not name.startswith("gpu-4/")]
    assert sorted(golden) == sorted(name for name, _ in recs) and len(recs) > 40
    for name, rec in recs:
        entry = success_entry(rec) if rec.ok else failure_entry(rec)
        assert json.dumps(entry) == json.dumps(golden[name]["entry"]), name  # values and key order
        row = row_from_record(rec)
        flat = {k: v for k, v in dataclasses.asdict(row).items() if k != "expert_load"}
        assert json.loads(json.dumps(flat)) == golden[name]["row"], name
        assert row.expert_load == (rec.expert_load if isinstance(rec.expert_load, dict) else None)
