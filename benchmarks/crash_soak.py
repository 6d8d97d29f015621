"""Crash soak: random SIGKILLs during training runs and bank generation.

Each trial runs a command, SIGKILLs it after a random delay, checks every file in
the output (a file that exists but does not load is *corrupted*), then reruns the
same command (``--resume`` for training) until it finishes. A finished trial must
match an uninterrupted reference bit for bit: the model weights of a run, the
arrays of a bank. Every kill in a trial whose result matches counts as a
successful resume.

    python benchmarks/crash_soak.py --kills 100 --budget 900

A SIGKILL skips the cleanup of a half-written temporary (``.NAME.*`` beside its target);
a finished trial must have none left (``temporaries_left``, with their names in
``temporaries_left_names``): the rerun that resumes a folder removes them.

Writes ``benchmarks/results/crash_soak.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from vinaflow.atomic import atomic_write_json
from vinaflow.errors import VinaflowError
from vinaflow.models.serialization import load_model
from vinaflow.problems import load_bank

__all__ = ["main"]

RUN_SETS = [
    "problem.num_simulations=600",
    "model.blocks=2",
    "model.hidden=16",
    "training.steps=300",
    "training.max_seconds=null",
    "training.batch_size=32",
    "training.checkpoint_every=10",
    "training.val_every=50",
    "evaluation.num_observations=1",
    "evaluation.num_samples=50",
    "evaluation.num_calibration=0",
    "evaluation.c2st=false",
    "evaluation.plots=false",
    "evaluation.certificate=false",
]
SIM_ARGS = ["gaussian-linear", "-n", "300000", "--chunk-size", "10000", "--set", "dim_x=8",
            "--set", "dim_y=6", "--no-progress"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _vinaflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "vinaflow", *args]


def _run_cmd(out: Path, resume: bool) -> list[str]:
    sets = [a for s in RUN_SETS for a in ("--set", s)]
    return _vinaflow("run", "--out", str(out), "--no-progress", *sets, *(["--resume"] * resume))


def _sim_cmd(out: Path) -> list[str]:
    return _vinaflow("simulate", *SIM_ARGS, "--out", str(out))


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if res.returncode != 0:
        raise SystemExit(f"reference command failed: {' '.join(cmd)}\n{res.stderr}")
    return time.perf_counter() - t0


# -- integrity checks -----------------------------------------------------------------------


def _check_run_dir(d: Path) -> list[str]:
    """Names of files in a run folder that exist but do not load."""
    bad = []
    checks = {
        "checkpoint.pt": lambda p: torch.load(p, map_location="cpu", weights_only=True)["step"],
        "config.yaml": lambda p: yaml.safe_load(p.read_text()),
        "metrics.json": lambda p: json.loads(p.read_text()),
        "history.json": lambda p: json.loads(p.read_text()),
        "report.md": lambda p: p.read_text(),
    }
    for name, check in checks.items():
        if (d / name).exists():
            try:
                check(d / name)
            except Exception:  # noqa: BLE001 - any failure means a corrupted file
                bad.append(name)
    if (d / "model.safetensors").exists() or (d / "model.json").exists():
        try:
            load_model(d)
        except (VinaflowError, Exception):  # noqa: BLE001
            bad.append("model.safetensors/model.json")
    return bad


def _check_bank(out: Path, ref: dict[str, np.ndarray]) -> list[str]:
    bad = []
    if out.exists():
        try:
            load_bank(out)
            with np.load(out, allow_pickle=False) as f:
                if not all(np.array_equal(f[k], ref[k]) for k in ("x", "y")):
                    bad.append(f"{out.name} (differs from reference)")
        except Exception:  # noqa: BLE001
            bad.append(out.name)
    parts = out.with_name(out.name + ".parts")
    if parts.is_dir():
        for p in parts.iterdir():
            if p.name.startswith("."):
                continue  # a temporary, never read
            try:
                if p.suffix == ".npz":
                    with np.load(p, allow_pickle=False) as f:
                        f["x"], f["y"]  # noqa: B018
                else:
                    json.loads(p.read_text())
            except Exception:  # noqa: BLE001
                bad.append(f"{parts.name}/{p.name}")
    return bad


def _temporaries(folder: Path) -> list[str]:
    """Hidden files (``atomic_path``'s temporaries) under ``folder``, relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.is_file())


# -- one trial ------------------------------------------------------------------------------


def _trial(
    kind: str,
    work: Path,
    ref: Any,
    max_delay: float,
    kills_left: int,
    rng: random.Random,
    deadline: float,
) -> dict[str, Any]:
    """Kill-and-rerun until the command completes; returns the trial's counts."""
    out = work / ("run" if kind == "train" else "bank.npz")
    kills, corrupted, launches = 0, [], 0
    while True:
        resume = kind == "train" and launches > 0
        cmd = _run_cmd(out, resume) if kind == "train" else _sim_cmd(out)
        launches += 1
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env()
        )
        want_kill = kills < kills_left and time.time() < deadline
        delay = rng.uniform(0.2, max_delay)
        try:
            proc.wait(timeout=delay if want_kill else 600)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            found = _check_run_dir(out) if kind == "train" else _check_bank(out, ref)
            corrupted += found
            continue
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            return {"kills": kills, "corrupted": corrupted, "completed": False, "error": err[-500:]}
        break
    if kind == "train":
        corrupted += _check_run_dir(out)
        got = load_file(str(out / "model.safetensors"))
        identical = got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
        temps = _temporaries(out)
    else:
        corrupted += _check_bank(out, ref)
        with np.load(out, allow_pickle=False) as f:
            identical = all(np.array_equal(f[k], ref[k]) for k in ("x", "y"))
        temps = _temporaries(out.parent)
    return {
        "kills": kills,
        "corrupted": corrupted,
        "completed": True,
        "identical": bool(identical),
        "launches": launches,
        "temporaries_left": len(temps),
        "temporary_names": temps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100, help="total SIGKILLs (half each)")
    parser.add_argument("--budget", type=float, default=900, help="seconds; stops killing after")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="crash_soak.json", help="results file in --out")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    t_start = time.time()
    deadline = t_start + args.budget
    work = Path(tempfile.mkdtemp(prefix="vinaflow-soak-"))
    summary: dict[str, Any] = {}
    try:
        refs = {}
        t_run = _timed(_run_cmd(work / "ref-run", False))
        refs["train"] = load_file(str(work / "ref-run" / "model.safetensors"))
        t_sim = _timed(_sim_cmd(work / "ref-bank.npz"))
        with np.load(work / "ref-bank.npz", allow_pickle=False) as f:
            refs["bank"] = {k: f[k] for k in ("x", "y")}
        durations = {"train": t_run, "bank": t_sim}
        targets = {"train": args.kills - args.kills // 2, "bank": args.kills // 2}
        # Alternate the two kinds so that a budget cut leaves both represented.
        trials: dict[str, list[dict[str, Any]]] = {"train": [], "bank": []}
        n = 0
        while any(sum(t["kills"] for t in trials[k]) < targets[k] for k in trials):
            if time.time() >= deadline:
                break
            kind = ["train", "bank"][n % 2]
            n += 1
            left = targets[kind] - sum(t["kills"] for t in trials[kind])
            if left <= 0:
                continue
            d = work / f"{kind}-{n}"
            d.mkdir()
            res = _trial(kind, d, refs[kind], durations[kind], left, rng, deadline)
            trials[kind].append(res)
            shutil.rmtree(d, ignore_errors=True)
            print(
                f"[{time.time() - t_start:6.0f}s] {kind:5s} trial {len(trials[kind]):3d}: "
                f"{res['kills']} kill(s), identical={res.get('identical')}, "
                f"corrupted={res['corrupted']}",
                flush=True,
            )
        for kind, ts in trials.items():
            kills = sum(t["kills"] for t in ts)
            ok = sum(t["kills"] for t in ts if t["completed"] and t.get("identical"))
            summary[kind] = {
                "kills": kills,
                "corrupted_files": sum(len(t["corrupted"]) for t in ts),
                "successful_resumes": ok,
                "trials": len(ts),
                "trials_identical_to_reference": sum(1 for t in ts if t.get("identical")),
                "trials_failed": [t for t in ts if not t["completed"]],
                "temporaries_left": sum(t.get("temporaries_left", 0) for t in ts),
                # which writers left them (the names carry their targets)
                "temporaries_left_names": sorted(
                    n for t in ts for n in t.get("temporary_names", [])
                ),
                "uninterrupted_seconds": round(durations[kind], 2),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["total"] = {
        k: sum(summary[kind][k] for kind in ("train", "bank"))
        for k in ("kills", "corrupted_files", "successful_resumes")
    }
    summary["requested_kills"] = args.kills
    summary["wall_seconds"] = round(time.time() - t_start, 1)
    summary["seed"] = args.seed
    print()
    print(f"{'':8s} {'kills':>6s} {'corrupted':>10s} {'resumed ok':>11s} {'trials':>7s}")
    for kind in ("train", "bank"):
        s = summary[kind]
        print(
            f"{kind:8s} {s['kills']:6d} {s['corrupted_files']:10d} "
            f"{s['successful_resumes']:11d} {s['trials']:7d}"
        )
    t = summary["total"]
    print(f"{'total':8s} {t['kills']:6d} {t['corrupted_files']:10d} {t['successful_resumes']:11d}")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / args.name, summary)
    print(f"\nwrote {args.out / args.name}")
    left = sum(summary[kind]["temporaries_left"] for kind in ("train", "bank"))
    if left:
        print(f"temporaries left behind: {left}")
    ok = t["corrupted_files"] == 0 and t["successful_resumes"] == t["kills"] and not left
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
