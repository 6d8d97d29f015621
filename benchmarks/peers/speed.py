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
- ``sample``: inverse passes ``x = T^{-1}(z)`` per second in batches of 10,000, under
  ``torch.no_grad`` and under ``torch.inference_mode``, against the bare subnet chain's
  forward pass on the same batch (``floor_samples_per_s``). The flow is unconditional
  (no observation ``y``, no embedding network, no conditioning inputs to the subnets):
  a posterior's sampling rate, which also runs the summary network and feeds ``y`` to
  every subnet, is not measured here;
- every number is the median of ``--repeats`` alternating measurements (flow, floor,
  flow, ...), so both sides of a ratio see the same machine load;
- ``vinaflow.runtime.tune_allocator`` is applied first (as the ``vinaflow`` command does);
  ``VINAFLOW_NO_MALLOC_TUNING=1`` measures glibc's defaults instead;
- with ``--compile``, the training step of the flow and of the floor, each compiled
  with ``torch.compile``, and the compiled flow's sampling (skipped if compilation
  fails); ``compiled_train_overhead_ratio`` is compiled floor over compiled flow, so
  both sides of it are compiled.

The same measurements run for two more models (``--models``, default all three):

- ``spline``: ``build_flow(16, arch="spline", blocks=6, hidden=128)`` (rational-quadratic
  spline couplings from zuko, 8 bins); the floor is again its subnets chained in bare torch,
  so the ratio includes the spline arithmetic itself (bin search, rational-quadratic map);
- ``cnf``: ``ContinuousFlow(dim_x=16, hidden=128, layers=3)`` trained by flow matching; the
  training floor is the same velocity MLP on the same inputs with a squared-error loss
  (no path sampling, no time embedding); sampling solves the ODE with zuko's adaptive
  solver, and its floor is the velocity MLP's forward pass run as many times as the solve
  evaluated it (counted, ``function_evaluations``), so the ratio is the solver's overhead
  per evaluation, not the cost of the solve. The CNF is untrained, so its evaluation count
  is that of a freshly initialised field, not of a trained posterior.

Prints a table and writes ``benchmarks/results/peers_speed.json`` (the coupling INN under
``results``, every model under ``models``).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["MODELS", "bare_floor", "build", "main", "measure"]

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


class _Timed:
    """What one model's measurements need: its training step, its floor's, and samplers."""

    def __init__(
        self,
        model: nn.Module,
        floor: nn.Module,
        train: Callable[[], None],
        floor_train: Callable[[], None],
        samplers: dict[str, Callable[[], None]],
        floor_sample: Callable[[], None],
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.floor, self.train, self.floor_train = model, floor, train, floor_train
        self.samplers, self.floor_sample, self.extra = samplers, floor_sample, extra or {}


def _invertible(arch: str, n: int) -> _Timed:
    from vinaflow.blocks import build_flow

    flow = build_flow(DIM, arch=arch, blocks=BLOCKS, hidden=HIDDEN, seed=0)
    floor = bare_floor(flow)
    samplers = {mode: _sampler(flow, mode, n) for mode in ("no_grad", "inference_mode")}
    return _Timed(
        flow,
        floor,
        _train_step(flow, True),
        _train_step(floor, False),
        samplers,
        _sampler(floor, "floor", n),
    )


def _cnf(n: int) -> _Timed:
    from vinaflow.models.cnf import ContinuousFlow
    from vinaflow.objectives.flow_matching import flow_matching_loss

    cnf = ContinuousFlow(dim_x=DIM, hidden=HIDDEN, layers=3, seed=0)
    net = copy.deepcopy(cnf.field.net)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(BATCH, DIM, generator=g)
    opt = torch.optim.Adam(cnf.parameters(), lr=1e-4)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        flow_matching_loss(cnf, data, None, 1e-4).backward()
        opt.step()

    floor_in = torch.randn(BATCH, net[0].in_features, generator=g)
    floor_opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def floor_train() -> None:
        floor_opt.zero_grad(set_to_none=True)
        (net(floor_in) - data).square().mean().backward()
        floor_opt.step()

    z = torch.randn(n, DIM, generator=g)
    calls = [0]
    hook = cnf.field.net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with torch.no_grad():
        cnf.generate(None, z)
    hook.remove()
    evaluations = calls[0]
    batch_in = torch.randn(n, net[0].in_features, generator=g)

    def sampler(ctx: Callable[[], Any]) -> Callable[[], None]:
        def sample() -> None:
            with ctx():
                cnf.generate(None, z)

        return sample

    def floor_sample() -> None:
        with torch.inference_mode():
            for _ in range(evaluations):
                net(batch_in)

    samplers = {"no_grad": sampler(torch.no_grad), "inference_mode": sampler(torch.inference_mode)}
    return _Timed(
        cnf, net, train, floor_train, samplers, floor_sample, {"function_evaluations": evaluations}
    )


#: The benchmarked models: name -> builder of its measurements for ``n`` samples per call.
MODELS: dict[str, Callable[[int], _Timed]] = {
    "coupling": lambda n: _invertible("coupling", n),
    "spline": lambda n: _invertible("spline", n),
    "cnf": _cnf,
}


def _measure_model(timed: _Timed, n: int, seconds: float, repeats: int) -> dict[str, Any]:
    # Model and floor are measured alternately, ``repeats`` times each, and the median is
    # kept: on a shared machine the load drifts over seconds, and alternating exposes
    # both sides of each ratio to the same drift.
    series: dict[str, list[float]] = {}
    for _ in range(repeats):
        series.setdefault("train_steps_per_s", []).append(measure(timed.train, seconds))
        series.setdefault("floor_steps_per_s", []).append(measure(timed.floor_train, seconds))
        timed.model.eval()
        for mode, sampler in timed.samplers.items():
            series.setdefault(f"samples_per_s_{mode}", []).append(n * measure(sampler, seconds))
        series.setdefault("floor_samples_per_s", []).append(
            n * measure(timed.floor_sample, seconds)
        )
        timed.model.train()
    rows: dict[str, Any] = {k: float(np.median(v)) for k, v in series.items()}
    rows["train_overhead_ratio"] = rows["floor_steps_per_s"] / rows["train_steps_per_s"]
    rows["sample_overhead_ratio"] = (
        rows["floor_samples_per_s"] / rows["samples_per_s_inference_mode"]
    )
    return {**rows, **timed.extra}


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
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode

    def sample() -> None:
        with ctx():
            if mode == "floor":
                flow(z)
            else:
                flow(z, rev=True)

    return sample


def _compiled(seconds: float, repeats: int, n: int) -> dict[str, Any]:
    """The coupling INN's training step and sampling under ``torch.compile``, against the
    compiled floor (both sides compiled, measured alternately)."""
    rows: dict[str, Any] = {}
    flow = build()
    floor = bare_floor(flow)
    try:
        t0 = time.perf_counter()
        cflow = torch.compile(flow)
        ctrain = _train_step(cflow, True)
        for _ in range(10):
            ctrain()
        rows["compile_seconds_train"] = time.perf_counter() - t0
        cfloor_train = _train_step(torch.compile(floor), False)
        for _ in range(10):
            cfloor_train()
        compiled, compiled_floor = [], []
        for _ in range(repeats):
            compiled.append(measure(ctrain, seconds))
            compiled_floor.append(measure(cfloor_train, seconds))
        rows["compiled_train_steps_per_s"] = float(np.median(compiled))
        rows["compiled_floor_steps_per_s"] = float(np.median(compiled_floor))
        rows["compiled_train_overhead_ratio"] = (
            rows["compiled_floor_steps_per_s"] / rows["compiled_train_steps_per_s"]
        )
        cflow.eval()
        csample = _sampler(cflow, "inference_mode", n)
        compiled = [n * measure(csample, seconds, warmup=5) for _ in range(repeats)]
        rows["compiled_samples_per_s"] = float(np.median(compiled))
        rows["compile_seconds_total"] = time.perf_counter() - t0
    except Exception as err:  # noqa: BLE001 - compile support varies by platform
        rows["compile_error"] = f"{type(err).__name__}: {str(err)[:300]}"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.5 s per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats (median)")
    parser.add_argument("--seconds", type=float, default=None, help="per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models measured"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parents[1] / "results" / "peers_speed.json")
    )
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.5 if args.quick else 2.0)
    torch.set_num_threads(args.threads)
    from vinaflow.runtime import tune_allocator

    rows_tuned = tune_allocator()
    n = 10_000
    models = {
        name: _measure_model(MODELS[name](n), n, seconds, args.repeats) for name in args.models
    }
    rows: dict[str, Any] = dict(models.get("coupling", {}))
    rows["allocator_tuned"] = rows_tuned
    if args.compile:
        rows.update(_compiled(seconds, args.repeats, n))
    for name, r in models.items():
        print(f"{name}: D={DIM}, batch {BATCH}, {args.threads} threads")
        for k, v in r.items():
            print(f"  {k:<30} {v:>12.1f}" if isinstance(v, float) else f"  {k:<30} {v}")
    if args.compile:
        print("coupling, torch.compile")
        for k, v in rows.items():
            if k.startswith("compile"):
                print(f"  {k:<30} {v:>12.1f}" if isinstance(v, float) else f"  {k:<30} {v}")
    from vinaflow.atomic import atomic_write_json
    from vinaflow.experiments.pipeline import environment

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
                "repeats": args.repeats,
                "flow": "unconditional",
                "models": list(args.models),
            },
            "results": rows,
            "models": models,
            "environment": environment(),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
