"""Scaling beyond one CPU: Ray simulation throughput, DDP steps per second, streaming memory.

Run (the full run needs a 10-million-row ocean bank, about 5.7 GB on disk, which it
simulates first if missing: about an hour on 2 cores; later runs reuse it)::

    flock /tmp/vinaflow-bench.lock nice -n 5 python -m benchmarks.scaling
    python -m benchmarks.scaling --quick     # 200,000-row bank, fewer steps: a few minutes

Four measurements, each repeated ``--repeats`` times and summarised by
``vinaflow.evaluation.intervals`` (mean, Student-t 95% interval):

1. **Simulation**: ocean-acoustic simulations per second of ``simulate_bank`` with the
   local backend and with Ray on 1 and 2 workers (same bank, checked bit for bit).
2. **Data-parallel training**: model steps per second of ``vinaflow run --nproc N`` for
   N = 1, 2 at one global batch (the ocean cINN of ``examples/ocean_quick.yaml``).
3. **Precision**: steps per second and final validation NLL of one process in float32
   and under bf16 autocast (``training.precision``).
4. **Memory**: peak resident memory (``ru_maxrss`` of a fresh process) of training on
   the sharded bank and on a quarter of it (streamed: memory should not grow with the
   bank) against training on a ``.npz`` bank a tenth of its size (loaded whole). Each run
   takes ``--memory-steps`` (2000) steps of 256 rows, so it reads past its first
   streaming window: a window's memory must be released before the next is read.

Ratios come from one run. On a 2-core machine two processes or workers can at most
double throughput, and share the cores with everything else running; the JSON records
the machine's load. Prints a table and writes ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vinaflow import __version__
from vinaflow.atomic import atomic_write_json
from vinaflow.evaluation.intervals import format_interval, seed_interval
from vinaflow.problems.shards import ShardedBank
from vinaflow.problems.simulate import simulate_bank
from vinaflow.training.trainer import TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OCEAN = {"name": "ocean-acoustics"}
#: Batch size of the memory runs, and the default streaming window they read through.
MEMORY_BATCH = 256
WINDOW = TrainingConfig().shuffle_window
#: The ocean cINN of examples/ocean_quick.yaml, evaluated as cheaply as possible (the
#: benchmark measures training, not evaluation).
MODEL = {"kind": "cinn", "arch": "coupling", "blocks": 6, "hidden": 128, "embedding_dim": 64}
EVALUATION = {
    "num_observations": 2,
    "num_samples": 500,
    "num_calibration": 20,
    "calibration_samples": 100,
    "c2st": False,
    "plots": False,
    "certificate": False,
}


def _simulation(n: int, repeats: int, tmp: Path) -> dict[str, Any]:
    """Simulations per second by backend; every bank must equal the local one."""
    import ray

    rates: dict[str, list[float]] = {"local": [], "ray_1": [], "ray_2": []}
    reference = None
    for r in range(repeats):
        for name, kwargs in (
            ("local", {}),
            ("ray_1", {"backend": "ray", "workers": 1}),
            ("ray_2", {"backend": "ray", "workers": 2}),
        ):
            out = tmp / f"sim-{name}-{r}"
            if kwargs:
                # Ray is started first: its start-up (seconds) is not simulation time.
                ray.init(num_cpus=kwargs["workers"], include_dashboard=False, log_to_driver=False)
            try:
                t0 = time.perf_counter()
                simulate_bank(OCEAN, n, out, chunk_size=n // 8, seed=r, progress=False, **kwargs)
                rates[name].append(n / (time.perf_counter() - t0))
            finally:
                if kwargs:
                    ray.shutdown()
            x = ShardedBank(out).read("y", 0, n)
            if name == "local":
                reference = x
            elif not np.array_equal(x, reference):
                raise AssertionError(f"{name} bank differs from the local bank")
            shutil.rmtree(out)
    out = {k: {**seed_interval(v), "values": v} for k, v in rates.items()}
    ratio = [b / a for a, b in zip(rates["ray_1"], rates["ray_2"], strict=True)]
    out["ray_2_over_ray_1"] = {**seed_interval(ratio), "values": ratio}
    out["n"] = n
    out["note"] = "wall time of simulate_bank after Ray has started (start-up excluded)"
    return out


def _run_cli(config: dict[str, Any], out: Path, nproc: int) -> dict[str, Any]:
    cfg = out.with_suffix(".yaml")
    cfg.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "vinaflow", "run", str(cfg), "--out", str(out), "--no-progress"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def _ddp(steps: int, repeats: int, tmp: Path) -> dict[str, Any]:
    """Model steps per second with 1 and 2 processes at a global batch of 512."""
    config = {
        "problem": {**OCEAN, "num_simulations": 20_000},
        "model": MODEL,
        "training": {"steps": steps, "batch_size": 512, "max_seconds": None, "val_every": 10**6},
        "evaluation": EVALUATION,
    }
    rates: dict[str, list[float]] = {"1": [], "2": []}
    for r in range(repeats):
        for nproc in (1, 2):
            m = _run_cli(config, tmp / f"ddp-{nproc}-{r}", nproc)
            rates[str(nproc)].append(m["train_steps"] / m["train_seconds"])
    ratio = [b / a for a, b in zip(rates["1"], rates["2"], strict=True)]
    return {
        "steps_per_second": {k: {**seed_interval(v), "values": v} for k, v in rates.items()},
        "two_over_one": {**seed_interval(ratio), "values": ratio},
        "global_batch": 512,
        "steps": steps,
    }


def _precision(steps: int, repeats: int, tmp: Path) -> dict[str, Any]:
    """Steps per second and final validation NLL (always computed in float32) of one
    process training in float32 and under bf16 autocast."""
    config = {
        "problem": {**OCEAN, "num_simulations": 20_000},
        "model": MODEL,
        "training": {"steps": steps, "batch_size": 512, "max_seconds": None, "val_every": steps},
        "evaluation": EVALUATION,
    }
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    nll: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(repeats):
        for prec in ("fp32", "bf16"):
            cfg = {**config, "training": {**config["training"], "precision": prec, "seed": r}}
            out = tmp / f"prec-{prec}-{r}"
            m = _run_cli(cfg, out, 1)
            rates[prec].append(m["train_steps"] / m["train_seconds"])
            nll[prec].append(json.loads((out / "history.json").read_text())["val_loss"][-1])
    ratio = [b / a for a, b in zip(rates["fp32"], rates["bf16"], strict=True)]
    return {
        "steps_per_second": {k: {**seed_interval(v), "values": v} for k, v in rates.items()},
        "bf16_over_fp32": {**seed_interval(ratio), "values": ratio},
        "val_nll": {k: {**seed_interval(v), "values": v} for k, v in nll.items()},
        "steps": steps,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


_PEAK = """
import json, resource, sys
from vinaflow.config import resolve_config
from vinaflow.experiments.pipeline import run
cfg = resolve_config(json.loads(sys.argv[1]))
result = run(cfg, sys.argv[2], progress=False)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "steps": result.train.steps, "seconds": result.train.train_seconds}))
"""


def _peak(bank: Path, steps: int, out: Path, rows: int | None = None) -> dict[str, Any]:
    """Peak RSS of a fresh process that trains on ``rows`` of ``bank`` (all by default)
    with noise augmentation (which reads ``y_clean`` too)."""
    config = {
        "problem": {"bank": str(bank), **({"num_simulations": rows} if rows else {})},
        "model": MODEL,
        "training": {
            "steps": steps,
            "batch_size": MEMORY_BATCH,
            "max_seconds": None,
            "noise_augmentation": True,
        },
        "evaluation": EVALUATION,
    }
    res = subprocess.run(
        [sys.executable, "-c", _PEAK, json.dumps(config), str(out)], capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(f"training on {bank} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _memory(big: Path, target_rows: int, steps: int, repeats: int, npz_rows: int) -> dict[str, Any]:
    """Peak RSS streaming all of the sharded bank ``big`` and a quarter of it (streaming
    memory should not grow with the bank), against loading ``npz_rows`` from a .npz."""
    if not (big / "bank.json").is_file():
        # Resumable: an interrupted simulation continues where it stopped.
        simulate_bank(OCEAN, target_rows, big, progress=False, backend="ray")
    rows = len(ShardedBank(big))
    small = big.with_name(f"{big.name}-npz-{npz_rows}.npz")
    simulate_bank(OCEAN, npz_rows, small, progress=False, backend="ray")  # no-op when complete
    peaks: dict[str, list[float]] = {"sharded": [], "sharded_quarter": [], "npz": []}
    with tempfile.TemporaryDirectory(prefix="vinaflow-scaling-mem-") as d:
        tmp = Path(d)
        for r in range(repeats):
            peaks["sharded"].append(_peak(big, steps, tmp / f"s-{r}")["peak_rss_mb"])
            quarter = _peak(big, steps, tmp / f"q-{r}", rows // 4)
            peaks["sharded_quarter"].append(quarter["peak_rss_mb"])
            peaks["npz"].append(_peak(small, steps, tmp / f"n-{r}")["peak_rss_mb"])
    size = sum(f.stat().st_size for f in big.iterdir()) / 2**30
    return {
        "peak_rss_mb": {k: {**seed_interval(v), "values": v} for k, v in peaks.items()},
        "sharded_rows": rows,
        "sharded_quarter_rows": rows // 4,
        "npz_rows": npz_rows,
        "sharded_bank_gb_on_disk": size,
        "target_mb": 1536,
        "training": {
            "steps": steps,
            "batch_size": MEMORY_BATCH,
            "noise_augmentation": True,
            "shuffle_window": WINDOW,
            # Rows read past the first window show that a window's memory is released
            # before the next is read, not only that one window fits.
            "rows_streamed": steps * MEMORY_BATCH,
            "windows_read": -(-steps * MEMORY_BATCH // WINDOW),
        },
    }


def print_table(results: dict[str, Any]) -> None:
    """The measured sections as one Markdown table."""
    print("| measurement | value (mean, 95% interval) |")
    print("|---|---|")
    if "simulation" in results:
        sim = results["simulation"]
        for k in ("local", "ray_1", "ray_2"):
            print(f"| simulations/s, {k} | {format_interval(sim[k], 0)} |")
        print(f"| Ray 2 workers / 1 worker | {format_interval(sim['ray_2_over_ray_1'], 2)} |")
    if "ddp" in results:
        ddp = results["ddp"]
        for k in ("1", "2"):
            rate = format_interval(ddp["steps_per_second"][k], 1)
            print(f"| DDP steps/s, {k} process(es) | {rate} |")
        print(f"| DDP 2 / 1 | {format_interval(ddp['two_over_one'], 2)} |")
    if "precision" in results:
        prec = results["precision"]
        for k in ("fp32", "bf16"):
            print(f"| steps/s {k}, 1 process | {format_interval(prec['steps_per_second'][k], 1)} |")
            print(f"| validation NLL {k} | {format_interval(prec['val_nll'][k], 3)} |")
        print(f"| bf16 / fp32 steps/s | {format_interval(prec['bf16_over_fp32'], 2)} |")
    if "memory" in results:
        mem, peak = results["memory"], results["memory"]["peak_rss_mb"]
        for key, rows, how in (
            ("sharded", mem["sharded_rows"], "sharded (streamed)"),
            ("sharded_quarter", mem["sharded_quarter_rows"], "of the same bank (streamed)"),
            ("npz", mem["npz_rows"], ".npz (loaded)"),
        ):
            print(f"| peak RSS MB, {rows:,} rows {how} | {format_interval(peak[key], 0)} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small bank and few steps")
    p.add_argument("--bank", type=Path, default=ROOT / "runs" / "scaling" / "ocean-10M")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--npz-rows", type=int, help="rows of the .npz compared (default: a tenth)")
    p.add_argument(
        "--memory-steps", type=int, help="training steps per memory run (default 2000; quick 200)"
    )
    p.add_argument("--only", choices=("simulation", "ddp", "precision", "memory"), action="append")
    p.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    args = p.parse_args(argv)
    rows = 200_000 if args.quick else 10_000_000
    sim_n, ddp_steps, mem_steps = (20_000, 100, 200) if args.quick else (80_000, 300, 2000)
    mem_steps = args.memory_steps or mem_steps
    bank = args.bank.with_name(args.bank.name + "-quick") if args.quick else args.bank
    sections = {
        "simulation": lambda tmp: _simulation(sim_n, args.repeats, tmp),
        "ddp": lambda tmp: _ddp(ddp_steps, args.repeats, tmp),
        "precision": lambda tmp: _precision(ddp_steps, args.repeats, tmp),
        "memory": lambda tmp: _memory(
            bank, rows, mem_steps, args.repeats, args.npz_rows or rows // 10
        ),
    }
    chosen = args.only or list(sections)
    # --only adds sections to an existing results file; each records its own conditions.
    results: dict[str, Any] = {}
    if args.only and args.out.is_file():
        results = json.loads(args.out.read_text())
    results.setdefault("environment", {})
    for name in chosen:
        load = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="vinaflow-scaling-") as d:
            results[name] = sections[name](Path(d))
        results["environment"][name] = {
            "load_average_at_start": load,
            "load_average_at_end": os.getloadavg(),
            "quick": args.quick,
            "repeats": args.repeats,
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    results["gpu"] = (
        "not measured: no GPU on this machine"
        if not torch.cuda.is_available()
        else "not measured by this script"
    )
    results["environment"].update(
        {
            "vinaflow": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "command": "python -m benchmarks.scaling " + " ".join(argv or sys.argv[1:]),
        }
    )
    atomic_write_json(args.out, results)
    print_table(results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
