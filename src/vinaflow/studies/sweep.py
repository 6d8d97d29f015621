"""Sweeps: one base config run over a grid of overrides and a range of seeds, in parallel.

A sweep is the cartesian product of its *axes* and its seeds. An axis is a named list
of values; each value is a *patch* of the config, a mapping from dotted keys
(``"objective.prior_weight"``) to values, where a bare section name
(``"objective"``) replaces that whole section (needed when switching objectives,
whose parameters differ). ``--grid key=v1,v2`` makes the axis ``key`` with patches
``{key: v1}``, ``{key: v2}``.

Output folder::

    DIR/sweep.json       base config, axes, seeds (rewritten each invocation)
    DIR/results.jsonl    one JSON record per finished run (see below)
    DIR/samples/ID.npz   posterior samples at the sweep's demo observations, if any
                         (flow sweeps: model ``samples`` and held-out ``data`` of the
                         first seed's runs)
    DIR/runs/ID/         full run folders, only with ``save_runs`` (shared filesystem)

``results.jsonl`` is only ever written by the driver process, and always as a whole
(temporary file + ``fsync`` + :func:`os.replace`), so a crash leaves either the old or
the new file, never a half line; re-running the same command skips every run whose
``id`` is already recorded. A record is::

    {"id", "params": {axis: label}, "seed", "status": "ok"|"failed", "error",
     "metrics": {resim_error, c2st, w1, mmd, mean_error, train_seconds, ...},
     "wall_seconds", "base_hash", "worker"}

Backends (:mod:`vinaflow.studies.runners`): ``local`` (a process pool, one
single-threaded torch process per core by default) and ``ray``
(``ray.init(address=...)`` on a cluster, or a local Ray instance;
``pip install "vinaflow[ray]"``). With ``save_runs`` on a multi-node Ray cluster,
``DIR`` must be on a filesystem shared by the nodes; the default needs none, since
workers return their results to the driver.

This module is the driver, :func:`run_sweep`; the grid model (:class:`Axis`,
:class:`Sweep`, seed and grid parsing) lives in :mod:`vinaflow.studies.grid`, the
results file in :mod:`vinaflow.studies.results`, and both are re-exported here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vinaflow.atomic import atomic_path, atomic_write_json
from vinaflow.errors import ConfigError
from vinaflow.studies.grid import Axis, Sweep, SweepTask, parse_grid, parse_seeds
from vinaflow.studies.results import RECORD_METRICS, RESULTS_FILE, load_results, write_results
from vinaflow.studies.runners import (
    check_ray_address,
    default_workers,
    execute_task,
    require_ray,
    run_in_processes,
    run_on_ray,
)

__all__ = [
    "Axis",
    "RESULTS_FILE",
    "RECORD_METRICS",
    "Sweep",
    "SweepTask",
    "default_workers",
    "execute_task",
    "load_results",
    "parse_grid",
    "parse_seeds",
    "run_in_processes",
    "run_sweep",
]


# -- driver ------------------------------------------------------------------------------
def run_sweep(
    sweep: Sweep,
    out: str | Path,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    save_runs: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished task of ``sweep`` into ``out``; return all records.

    Resumable: records already in ``out/results.jsonl`` (same base config) are kept
    and their runs skipped (failed ones too, unless ``retry_failed``).
    """
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend: unknown {backend!r}; allowed: local, ray")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if ray_address and backend != "ray":
        raise ConfigError("--ray-address needs --backend ray")
    if backend == "ray":
        require_ray()  # fail before any output is written
        if ray_address:
            check_ray_address(ray_address)
    out = Path(out)
    tasks = sweep.tasks()
    if (out / "study.json").is_file() and not (out / "sweep.json").is_file():
        raise ConfigError(
            f"{out} holds a flow study written by an earlier version (study.json, records "
            "without id): `vinaflow report` reads it; run into another --out"
        )
    records = load_results(out)  # before anything is written: a damaged file stops here
    other = {r.get("base_hash") for r in records} - {sweep.base_hash}
    if other:
        raise ConfigError(
            f"{out} holds results of a different base config; use another --out "
            "(or delete its results.jsonl to start over)"
        )
    if retry_failed:
        records = [r for r in records if r.get("status") == "ok"]
    done_ids = {r["id"] for r in records}
    todo = [t for t in tasks if t.id not in done_ids]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "sweep.json",
        {
            "base": sweep.base,
            "base_hash": sweep.base_hash,
            "axes": [
                {"name": a.name, "values": [[lab, dict(p)] for lab, p in a.values]}
                for a in sweep.axes
            ],
            "seeds": sweep.seeds,
            "demo_observations": sweep.demo_observations,
            "kind": sweep.kind,
            "num_tasks": len(tasks),
            **(dict(meta) if meta else {}),
        },
    )
    if retry_failed:
        write_results(out, records)
    n_workers = workers or (default_workers() if backend == "local" else None)
    if progress:
        print(
            f"sweep: {len(tasks)} runs, {len(tasks) - len(todo)} already done, "
            f"{len(todo)} to run on backend {backend} "
            f"({n_workers or 'all cluster'} workers)",
            file=sys.stderr,
            flush=True,
        )
    payloads = []
    for t in todo:
        p = {
            "id": t.id,
            "params": t.params,
            "seed": t.seed,
            "config": t.config,
            "demo_observations": sweep.demo_observations,
            "demo_samples": sweep.demo_samples,
            "kind": sweep.kind,
        }
        if sweep.kind == "flow" and t.seed == sweep.seeds[0]:
            p["flow_demo"] = sweep.demo_samples
        if save_runs:
            p["run_dir"] = str((out / "runs" / t.id).resolve())
        payloads.append(p)
    t_start = time.perf_counter()
    count = [0]

    def on_done(rec: dict[str, Any]) -> None:
        demo = rec.pop("_demo", None)
        if demo is not None:
            arrays = (
                demo
                if isinstance(demo, dict)  # a flow run's model and held-out samples
                else {"samples": demo, "observations": np.asarray(sweep.demo_observations)}
            )
            with atomic_path(out / "samples" / f"{rec['id']}.npz", suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
        rec["base_hash"] = sweep.base_hash
        records.append(rec)
        write_results(out, records)
        count[0] += 1
        if progress:
            m = rec.get("metrics") or {}
            # the headline number: re-simulation error of posteriors, W1 of flows
            key = next((k for k in ("resim_error", "w1") if m.get(k) is not None), None)
            extra = f"{_SHORT.get(key, key)}={m[key]:.4f}" if key else rec.get("error", "")
            print(
                f"[{count[0]}/{len(todo)}] {rec['status']} "
                f"{_describe(rec['params'])} seed={rec['seed']} "
                f"{rec['wall_seconds']:.1f}s {extra}",
                file=sys.stderr,
                flush=True,
            )

    if todo:
        if backend == "local":
            run_in_processes(execute_task, payloads, n_workers or 1, on_done)
        else:
            run_on_ray(execute_task, payloads, workers, ray_address, on_done)
    if progress and todo:
        print(f"sweep: finished in {time.perf_counter() - t_start:.1f}s", file=sys.stderr)
    return records


_SHORT = {"resim_error": "resim"}


def _describe(params: Mapping[str, str]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in params.items())
