"""Normalizing-flow studies as a benchmark: support mismatch, heavy tails, precision-recall.

Runs each study with :func:`vinaflow.studies.flows.run_study`, as ``vinaflow study``
does (resumable: rerunning the same command skips finished runs), and prints its
mean ± std table.

    python benchmarks/generative.py [--quick] [--study support-mismatch ...] [--seeds 0,1]
    python benchmarks/generative.py --summary-only   # re-summarize the recorded runs

Each grid point's summary is the mean, the sample standard deviation (``ddof=1``) and
the Student-t 95% interval over seeds of every metric
(:func:`vinaflow.studies.flows.study_summary`, by
:func:`vinaflow.evaluation.intervals.seed_interval`). ``--summary-only`` trains nothing:
it recomputes those summaries from the per-run records already in the study folders.

Results: ``benchmarks/results/study-NAME[-quick]/`` (results.jsonl, summary.json,
report.md, plots/) and ``benchmarks/results/generative[_quick].json``; ``--results DIR``
writes them elsewhere. A study folder written by an earlier version is refused (it stays
readable by ``vinaflow report``): move it away or write to another ``--results``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vinaflow.atomic import atomic_write_json
from vinaflow.experiments.pipeline import environment
from vinaflow.studies.flows import FLOW_STUDIES, run_study, study_summary

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer grid points and seeds")
    parser.add_argument("--study", action="append", choices=list(FLOW_STUDIES))
    parser.add_argument("--seeds", help="comma-separated seeds (default: the study's)")
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (default: cores)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="train nothing: re-summarize the runs recorded in the study folders",
    )
    args = parser.parse_args(argv)
    results = args.results
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    summary = {}
    for name in args.study or list(FLOW_STUDIES):
        out = results / (f"study-{name}" + ("-quick" if args.quick else ""))
        if not args.summary_only:
            report = run_study(name, out, seeds=seeds, quick=args.quick, workers=args.workers)
            print(report.read_text(encoding="utf-8").split("![")[0])
        elif not (out / "results.jsonl").is_file():
            continue
        summary[name] = {"directory": str(out.relative_to(results)), "rows": study_summary(out)}
    path = results / ("generative_quick.json" if args.quick else "generative.json")
    previous = json.loads(path.read_text()) if path.is_file() else {}
    # --summary-only keeps the environment of the runs it summarizes.
    env = previous.get("environment") if args.summary_only else None
    atomic_write_json(path, {**previous, **summary, "environment": env or environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
