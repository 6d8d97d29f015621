"""Speed of a coupling INN against the bare matmul floor of the same network.

Run::

    python -m benchmarks.peers.speed [--quick] [--threads 2] [--compile]

Network: ``vinaflow.blocks.build_flow(16, blocks=6, hidden=128)`` (GLOW affine coupling,
two subnets ``8 -> 128 -> 128 -> 16`` with SiLU per block, fixed permutations), batch 512.

- ``train``: steps per second of a maximum-likelihood step (forward, ``0.5|z|^2 - log det``,
  backward, Adam) on the flow;
- ``floor``: the same step on the bare subnets only (deep copies of the flow's own
  ``nn.Linear``/SiLU stacks, chained with the same shapes; no coupling arithmetic, no
  permutations, no log-determinants) - the plain-torch matmul floor;
- ``ratio`` = floor steps/s over flow steps/s (framework overhead; the issue's target is
  at most 1.5);
- ``sample``: posterior-style inverse passes ``x = T^{-1}(z)`` per second in batches of
  10,000, under ``torch.no_grad`` and under ``torch.inference_mode``;
- with ``--compile``, the same with ``torch.compile`` (skipped if compilation fails).

Prints a table and writes ``benchmarks/results/peers_speed.json``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["bare_floor", "build", "main", "measure"]

DIM, BLOCKS, HIDDEN, BATCH = 16, 6, 128, 512


def build(seed: int = 0) -> nn.Module:
    """The benchmarked flow: 6 coupling blocks, hidden 128, D = 16."""
    from vinaflow.blocks import build_flow

    return build_flow(DIM, blocks=BLOCKS, hidden=HIDDEN, seed=seed)


def bare_floor(flow: nn.Module) -> nn.Module:
    """The flow's subnets as one plain ``nn.Sequential`` chain with the same matmul shapes.

    Each subnet maps ``D/2 -> D``; the chain feeds the first ``D/2`` outputs of one subnet
    into the next, so every matmul of the flow's forward pass runs once, in order.
    """
    subnets = [m for m in flow.modules() if type(m).__name__ == "MLP"]
    if not subnets:
        raise RuntimeError("no subnets found in the flow")

    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.nets = nn.ModuleList(copy.deepcopy(s) for s in subnets)

        def forward(self, x: Tensor) -> Tensor:
            h = x
            for net in self.nets:
                h = net(h[:, : DIM // 2])
            return h

    return Chain()


def measure(fn: Callable[[], Any], seconds: float, warmup: int = 3) -> float:
    """Calls per second of ``fn`` over about ``seconds`` of wall time (after ``warmup``)."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def _train_step(model: nn.Module, flow_loss: bool) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(BATCH, DIM, generator=g)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if flow_loss:
            z, log_det = model(data)
            loss = (0.5 * z.square().sum(1) - log_det).mean()
        else:
            loss = model(data).square().mean()
        loss.backward()
        opt.step()

    return step


def _sampler(flow: nn.Module, mode: str, n: int) -> Callable[[], None]:
    z = torch.randn(n, DIM)
    ctx = torch.inference_mode if mode == "inference_mode" else torch.no_grad

    def sample() -> None:
        with ctx():
            flow(z, rev=True)

    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per measurement")
    parser.add_argument("--seconds", type=float, default=None, help="per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    parser.add_argument(
        "--out", default=str(Path(__file__).parents[1] / "results" / "peers_speed.json")
    )
    args = parser.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    torch.set_num_threads(args.threads)
    flow = build()
    floor = bare_floor(flow)
    rows: dict[str, Any] = {}
    rows["train_steps_per_s"] = measure(_train_step(flow, True), seconds)
    rows["floor_steps_per_s"] = measure(_train_step(floor, False), seconds)
    rows["train_overhead_ratio"] = rows["floor_steps_per_s"] / rows["train_steps_per_s"]
    n = 10_000
    flow.eval()
    for mode in ("no_grad", "inference_mode"):
        rows[f"samples_per_s_{mode}"] = n * measure(_sampler(flow, mode, n), seconds)
    if args.compile:
        try:
            t0 = time.perf_counter()
            cflow = torch.compile(flow)
            rows["compiled_train_steps_per_s"] = measure(
                _train_step(cflow, True), seconds, warmup=10
            )
            rows["compiled_samples_per_s"] = n * measure(
                _sampler(cflow, "inference_mode", n), seconds, warmup=5
            )
            rows["compile_seconds_total"] = time.perf_counter() - t0
        except Exception as err:  # noqa: BLE001 - compile support varies by platform
            rows["compile_error"] = f"{type(err).__name__}: {str(err)[:300]}"
    print(
        f"coupling INN D={DIM}, {BLOCKS} blocks, hidden {HIDDEN}, batch {BATCH}, "
        f"{args.threads} threads"
    )
    for k, v in rows.items():
        print(f"  {k:<30} {v:>12.1f}" if isinstance(v, float) else f"  {k:<30} {v}")
    from vinaflow.experiments.pipeline import environment
    from vinaflow.training.io import atomic_write_json

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        args.out,
        {
            "settings": {
                "dim": DIM,
                "blocks": BLOCKS,
                "hidden": HIDDEN,
                "batch": BATCH,
                "threads": args.threads,
                "seconds": seconds,
            },
            "results": rows,
            "environment": environment(),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
