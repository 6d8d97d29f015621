"""Throughput of the Pekeris forward model for the ocean-acoustics observation.

Run::

    python -m benchmarks.physics_throughput              # 20,000 prior draws
    python -m benchmarks.physics_throughput --n 100000   # a full simulation bank

Times the 70-number observation (5 receivers x 7 tones, all trapped and leaky modes) for
parameters drawn from the prior, with 1 and 2 worker threads, and ``problem.simulate``
end to end. Prints a table and writes ``benchmarks/results/physics_throughput.json``.
Target: at least 2,000 samples/s on 2 cores, i.e. a 100,000-sample bank in
under a minute. The best of ``--repeats`` runs is reported, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vinaflow.atomic import atomic_write_json
from vinaflow.physics import PekerisWaveguide
from vinaflow.problems.ocean_acoustics import (
    DEFAULT_FREQUENCIES,
    DEFAULT_RECEIVER_DEPTHS,
    OceanAcousticsProblem,
)

__all__ = ["main", "measure"]

TARGET = 2000.0
RESULTS = Path(__file__).parent / "results" / "physics_throughput.json"


def measure(n: int, workers: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Best-of-``repeats`` time of ``PekerisWaveguide.pressure`` for ``n`` prior draws."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(200.5, 236.5, n)
    speed = rng.uniform(1532.0, 1592.0, n)
    wg = PekerisWaveguide(workers=workers)
    args = (DEFAULT_FREQUENCIES, 54.0, 3000.0, DEFAULT_RECEIVER_DEPTHS)
    wg.pressure(depth[:64], speed[:64], *args)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        p = wg.pressure(depth, speed, *args)
        times.append(time.perf_counter() - t)
    assert p.shape == (n, 7, 5) and np.isfinite(p).all()
    best = min(times)
    return {
        "n": n,
        "workers": workers,
        "seconds": best,
        "samples_per_s": n / best,
        "all_seconds": times,
    }


def mode_counts(n: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Mean numbers of trapped and leaky modes summed per tone over prior draws."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(200.5, 236.5, n)
    speed = rng.uniform(1532.0, 1592.0, n)
    wg = PekerisWaveguide()
    rows = []
    for f in DEFAULT_FREQUENCIES:
        md = wg.modes(depth, speed, f, max_range=3000.0)
        used = md.weight > 0
        rows.append(
            {
                "freq": f,
                "trapped": float((used & ~md.leaky).sum(1).mean()),
                "leaky": float((used & md.leaky).sum(1).mean()),
            }
        )
    return rows


def simulate_rate(n: int, repeats: int) -> dict[str, Any]:
    """``OceanAcousticsProblem.simulate`` end to end (noise and tensors included)."""
    problem = OceanAcousticsProblem()
    g = torch.Generator().manual_seed(0)
    x = problem.sample_prior(n, g)
    problem.simulate(x[:64], g)  # warm-up (mean received power per tone)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        problem.simulate(x, g)
        times.append(time.perf_counter() - t)
    return {"n": n, "seconds": min(times), "samples_per_s": n / min(times)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="prior draws per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    runs = [measure(args.n, w, args.repeats) for w in (1, 2)]
    sim = simulate_rate(args.n, args.repeats)
    modes = mode_counts()
    best = max(r["samples_per_s"] for r in runs)

    print(f"{'workers':>8} {'samples':>8} {'seconds':>8} {'samples/s':>10} {'100k bank (s)':>14}")
    for r in runs:
        print(
            f"{r['workers']:>8} {r['n']:>8} {r['seconds']:>8.2f} {r['samples_per_s']:>10.0f} "
            f"{1e5 / r['samples_per_s']:>14.1f}"
        )
    print(
        f"{'simulate':>8} {sim['n']:>8} {sim['seconds']:>8.2f} {sim['samples_per_s']:>10.0f} "
        f"{1e5 / sim['samples_per_s']:>14.1f}"
    )
    print(f"\n{'tone (Hz)':>10} {'trapped':>8} {'leaky':>8}   (mean modes summed at 3 km)")
    for m in modes:
        print(f"{m['freq']:>10.0f} {m['trapped']:>8.1f} {m['leaky']:>8.1f}")
    ok = best >= TARGET
    print(
        f"\nbest {best:.0f} samples/s vs target {TARGET:.0f}: {'PASS' if ok else 'FAIL'}"
        f"  (load average at start {load[0]:.1f} on {os.cpu_count()} cpus)"
    )

    result = {
        "target_samples_per_s": TARGET,
        "best_samples_per_s": best,
        "pass": ok,
        "runs": runs,
        "simulate": sim,
        "modes_per_tone": modes,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": list(load),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
