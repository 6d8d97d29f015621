"""Where sweep runs execute: one run in a worker, a local process pool, or a Ray cluster.

:func:`execute_task` trains and scores one run and returns its record (a failure is
recorded, not raised). :func:`run_in_processes` maps a function over payloads on
spawned processes with one torch thread each; :func:`run_on_ray` does the same on a Ray
cluster or a local Ray instance (``pip install "vinaflow[ray]"``).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vinaflow.cluster import check_ray_address, require_ray, run_on_ray
from vinaflow.errors import VinaflowError
from vinaflow.experiments import generative, pipeline
from vinaflow.runtime import available_cpus, tune_allocator
from vinaflow.studies.results import FLOW_RECORD_METRICS, RECORD_METRICS

__all__ = [
    "check_ray_address",
    "default_workers",
    "execute_task",
    "require_ray",
    "run_in_processes",
    "run_on_ray",
]


def execute_task(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Train and evaluate one run; a failure is recorded (``status: failed``), not raised.

    ``payload["kind"]`` says which pipeline: ``"run"`` (:func:`vinaflow.experiments.pipeline.run`,
    the default) or ``"flow"`` (:func:`vinaflow.experiments.generative.run_flow`).
    """
    torch.set_num_threads(1)
    tune_allocator()  # idempotent; Ray workers do not run the pool initializer
    t0 = time.perf_counter()
    rec: dict[str, Any] = {
        "id": payload["id"],
        "params": payload["params"],
        "seed": payload["seed"],
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    out = payload.get("run_dir")
    try:
        if payload.get("kind", "run") == "flow":
            rec.update(_execute_flow(payload, out))
        else:
            rec.update(_execute_run(payload, out))
    except VinaflowError as err:
        rec["status"], rec["error"] = "failed", f"{type(err).__name__}: {err}"
    except Exception as err:  # a bug in one configuration must not stop a long sweep
        rec["status"], rec["error"] = "failed", f"{type(err).__name__}: {err}"
        rec["traceback"] = traceback.format_exc(limit=8)
    rec["wall_seconds"] = time.perf_counter() - t0
    return rec


def _execute_run(payload: Mapping[str, Any], out: str | None) -> dict[str, Any]:
    """The record fields of one posterior run, with the demo observations' samples."""
    resume = out is not None and (Path(out) / "checkpoint.pt").exists()
    result = pipeline.run(payload["config"], out, resume=resume, progress=False)
    m = result.metrics
    rec: dict[str, Any] = {
        "metrics": {k: v for k, v in m.items() if k in RECORD_METRICS or k.startswith("sq_error_")},
        "status": "ok",
    }
    imp = m.get("importance") or {}
    for k in ("c2st", "coverage", "efficiency"):  # flat keys for the study tables
        if imp.get(k) is not None:
            rec["metrics"][f"is_{k}"] = imp[k]
    demo = payload.get("demo_observations") or []
    if demo:
        y = torch.tensor(demo, dtype=torch.get_default_dtype())
        g = torch.Generator().manual_seed(int(payload["seed"]))
        s = result.posterior.sample(y, int(payload.get("demo_samples", 200)), generator=g)
        rec["_demo"] = s.numpy().astype(np.float32)
    return rec


def _execute_flow(payload: Mapping[str, Any], out: str | None) -> dict[str, Any]:
    """The record fields of one flow run; ``payload["flow_demo"]`` model samples and as
    many held-out rows are returned under ``_demo`` for the report's figures."""
    resume = out is not None and (Path(out) / "checkpoint.pt").exists()
    result = generative.run_flow(payload["config"], out, resume=resume, progress=False)
    rec: dict[str, Any] = {
        "metrics": {k: v for k, v in result.metrics.items() if k in FLOW_RECORD_METRICS},
        "status": "ok",
    }
    n = int(payload.get("flow_demo") or 0)
    if n:
        g = torch.Generator().manual_seed(int(payload["seed"]))
        rec["_demo"] = {
            "samples": result.model.sample(n, generator=g).numpy().astype(np.float32),
            "data": result.x_test[:n].numpy().astype(np.float32),
        }
    return rec


def _init_worker() -> None:
    torch.set_num_threads(1)
    tune_allocator()


# -- backends ----------------------------------------------------------------------------
def default_workers() -> int:
    """Cores available to this process (the local pool size)."""
    return available_cpus()


def run_in_processes(
    fn: Callable[[Any], Any],
    payloads: Sequence[Any],
    workers: int,
    on_done: Callable[[Any], None],
) -> None:
    """``on_done(fn(p))`` for every payload, in completion order, on ``workers`` processes.

    One worker (or one payload) runs in this process. ``fn`` must be importable at top
    level (spawned workers pickle it); each worker gets one torch thread and the tuned
    allocator.
    """
    if workers <= 1 or len(payloads) == 1:
        for p in payloads:
            on_done(fn(p))
        return
    # spawn: forking a process that holds torch's thread pools can deadlock.
    ctx = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        pending = {pool.submit(fn, p) for p in payloads}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_done(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
