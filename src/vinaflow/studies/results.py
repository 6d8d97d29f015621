"""The results file of a sweep: ``DIR/results.jsonl``, one JSON record per finished run.

Only the driver process writes it, and always as a whole (temporary file + ``fsync`` +
:func:`os.replace`, :mod:`vinaflow.atomic`), so a crash leaves the old or the new file,
never half a line. Reading never modifies it: a damaged line is a :class:`DataError`
that names it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vinaflow.atomic import atomic_write_text
from vinaflow.errors import DataError

__all__ = [
    "FLOW_RECORD_METRICS",
    "RECORD_METRICS",
    "RESULTS_FILE",
    "load_results",
    "write_results",
]

RESULTS_FILE = "results.jsonl"

#: Scalar metrics copied from a run's ``metrics.json`` into its record.
RECORD_METRICS = (
    "resim_error",
    "c2st",
    "w1",
    "mmd",
    "mean_error",
    "mean_error_truth",
    "ci_width",
    "coverage",
    "coverage_error",
    "train_seconds",
    "train_steps",
    "stopped",
    "retries",
    "peak_memory_mb",
    "sampling_seconds_per_10k",
)

#: Scalar metrics copied from a flow run's ``metrics.json`` into its record.
FLOW_RECORD_METRICS = (
    "w1",
    "w1_slog",
    "mmd",
    "precision",
    "recall",
    "test_nll",
    "test_outside_support",
    "q99_ratio",
    "nonfinite_samples",
    "train_seconds",
    "train_steps",
    "pretrain_steps",
    "stopped",
    "retries",
    "sampling_seconds_per_10k",
)


def load_results(directory: str | Path) -> list[dict[str, Any]]:
    """Records of ``DIR/results.jsonl`` (empty if absent); a damaged file is a DataError.

    The file is never modified here, so an error loses nothing: fix or remove the
    named line and run again.
    """
    path = Path(directory) / RESULTS_FILE
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"results file {path} is corrupted at line {i} ({err.msg}); it was left "
                    "untouched: repair or delete that line, then rerun to redo that run"
                ) from err
            if not isinstance(rec, dict) or "id" not in rec or "status" not in rec:
                raise DataError(
                    f"results file {path} line {i} is not a sweep record (needs id and status); "
                    "it was left untouched: repair or delete that line"
                )
            records.append(rec)
    return records


def write_results(directory: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Replace ``DIR/results.jsonl`` with ``records``, atomically."""
    text = "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in records)
    atomic_write_text(directory / RESULTS_FILE, text)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
