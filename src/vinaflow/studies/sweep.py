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
    DIR/runs/ID/         full run folders, only with ``save_runs`` (shared filesystem)

``results.jsonl`` is only ever written by the driver process, and always as a whole
(temporary file + ``fsync`` + :func:`os.replace`), so a crash leaves either the old or
the new file, never a half line; re-running the same command skips every run whose
``id`` is already recorded. A record is::

    {"id", "params": {axis: label}, "seed", "status": "ok"|"failed", "error",
     "metrics": {resim_error, c2st, w1, mmd, mean_error, train_seconds, ...},
     "wall_seconds", "base_hash", "worker"}

Backends: ``local`` (a process pool, one single-threaded torch process per core by
default) and ``ray`` (``ray.init(address=...)`` on a cluster, or a local Ray instance;
``pip install "vinaflow[ray]"``). With ``save_runs`` on a multi-node Ray cluster,
``DIR`` must be on a filesystem shared by the nodes; the default needs none, since
workers return their results to the driver.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vinaflow.errors import ConfigError, DataError, VinaflowError
from vinaflow.runtime import tune_allocator

__all__ = [
    "Axis",
    "RESULTS_FILE",
    "RECORD_METRICS",
    "Sweep",
    "SweepTask",
    "load_results",
    "parse_grid",
    "parse_seeds",
    "run_sweep",
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


# -- parsing -----------------------------------------------------------------------------
def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so ``[1,2],[3,4]`` gives two list values."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_grid(items: Sequence[str]) -> list[Axis]:
    """Axes from ``--grid section.key=v1,v2`` strings (values parsed as YAML scalars)."""
    axes: list[Axis] = []
    seen: set[str] = set()
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects section.key=v1,v2,..., got {item!r}")
        key, values = item.split("=", 1)
        key = key.strip()
        if key.count(".") < 1:
            raise ConfigError(f"--grid {key!r}: the key must be section.key (e.g. model.hidden)")
        if key in seen:
            raise ConfigError(f"--grid {key!r} is given twice")
        seen.add(key)
        texts = [t for t in _split_top_level(values) if t != ""]
        if not texts:
            raise ConfigError(f"--grid {key!r}: no values after '='")
        axes.append(Axis(key, [(t, {key: _parse_value(t)}) for t in texts]))
    return axes


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """Seeds from ``"A..B"`` (inclusive), ``"A,B,C"`` or ``"A"``; an empty range is an error."""
    if not isinstance(text, str):
        seeds = [int(s) for s in text]
    else:
        t = text.strip()
        try:
            if ".." in t:
                a, b = t.split("..", 1)
                lo, hi = int(a), int(b)
                seeds = list(range(lo, hi + 1))
            else:
                seeds = [int(s) for s in t.split(",") if s.strip()]
        except ValueError as err:
            raise ConfigError(f"--seeds expects A..B or A,B,C with integers, got {text!r}") from err
        if ".." in t and not seeds:
            raise ConfigError(f"--seeds {text!r} is an empty range: A..B needs A <= B (inclusive)")
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} repeats a seed")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: seeds must be >= 0")
    return seeds


# -- model -------------------------------------------------------------------------------
@dataclass
class Axis:
    """A named list of ``(label, patch)`` values; see the module docstring."""

    name: str
    values: list[tuple[str, Mapping[str, Any]]]

    @classmethod
    def of(cls, key: str, values: Iterable[Any]) -> Axis:
        """The axis of one config key, ``Axis.of("model.latent_dim", [2, 4])``."""
        return cls(key, [(_label(v), {key: v}) for v in values])


def _label(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


@dataclass
class SweepTask:
    """One run: its id, axis labels, seed and fully resolved config."""

    id: str
    params: dict[str, str]
    seed: int
    config: dict[str, Any]


@dataclass
class Sweep:
    """A base config (raw mapping, resolved per run), axes and seeds.

    ``exclude(params)`` may drop combinations that make no sense (labels by axis).
    ``demo_observations``: observations at which each run saves ``demo_samples``
    posterior samples to ``DIR/samples/ID.npz`` (for figures such as arm plots).
    """

    base: Mapping[str, Any]
    axes: list[Axis]
    seeds: list[int]
    exclude: Callable[[Mapping[str, str]], bool] | None = None
    demo_observations: list[list[float]] = field(default_factory=list)
    demo_samples: int = 200

    @property
    def base_hash(self) -> str:
        return _hash(self.base)

    def tasks(self) -> list[SweepTask]:
        """All runs, in a stable order (grid points outer, seeds inner)."""
        from vinaflow.config import resolve_config

        self.validate()
        out = []
        for combo in itertools.product(*[a.values for a in self.axes]):
            params = {a.name: label for a, (label, _) in zip(self.axes, combo, strict=True)}
            if self.exclude is not None and self.exclude(params):
                continue
            for seed in self.seeds:
                raw = copy.deepcopy(dict(self.base))
                for _, patch in combo:
                    _apply_patch(raw, patch)
                raw.setdefault("training", {})
                raw["training"] = {**(raw["training"] or {}), "seed": seed}
                cfg = resolve_config(raw)
                rid = _hash({"base": self.base_hash, "params": params, "seed": seed})
                out.append(SweepTask(rid, params, seed, cfg))
        if not out:
            raise ConfigError("the sweep is empty: every grid combination was excluded")
        return out

    def validate(self) -> None:
        """Check every axis key against the config schema; errors name the key."""
        from vinaflow.config import SECTIONS, resolve_config

        if not self.seeds:
            raise ConfigError("the sweep has no seeds")
        base = resolve_config(copy.deepcopy(dict(self.base)))
        for axis in self.axes:
            if not axis.values:
                raise ConfigError(f"grid axis {axis.name!r} has no values")
            for label, patch in axis.values:
                for key in patch:
                    section = key.split(".", 1)[0]
                    if section not in SECTIONS:
                        raise ConfigError(
                            f"--grid {key}: unknown section {section!r}; "
                            f"allowed: {', '.join(SECTIONS)}"
                        )
                    if key.count(".") > 1 and section != "objective":
                        raise ConfigError(f"--grid {key}: keys are section.key (one dot)")
                    if section == "problem" and "." in key:
                        _check_problem_key(base["problem"], key)
                raw = copy.deepcopy(dict(self.base))
                _apply_patch(raw, patch)
                try:
                    resolve_config(raw)
                except ConfigError as err:
                    raise ConfigError(f"--grid {axis.name}={label}: {err}") from err


def _check_problem_key(problem: Mapping[str, Any], key: str) -> None:
    from vinaflow.problems.registry import BUILTIN_PROBLEMS, DATA_KEYS, problem_parameters

    sub = key.split(".", 1)[1]
    name = problem.get("name")
    if name in BUILTIN_PROBLEMS:
        allowed = set(problem_parameters(name)) | set(DATA_KEYS) | {"name"}
        if sub not in allowed:
            raise ConfigError(
                f"--grid {key}: problem {name!r} has no parameter {sub!r}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )


def _apply_patch(raw: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        parts = key.split(".")
        if len(parts) == 1:
            raw[key] = copy.deepcopy(value)  # a whole section
            continue
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {} if nxt is None else nxt
                if not isinstance(nxt, dict):
                    raise ConfigError(f"--grid {key}: {p!r} is not a section")
                node[p] = nxt
            node = nxt
        node[parts[-1]] = copy.deepcopy(value)


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- results file ------------------------------------------------------------------------
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


def _write_results(directory: Path, records: Sequence[Mapping[str, Any]]) -> None:
    from vinaflow.atomic import atomic_write_text

    text = "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in records)
    atomic_write_text(directory / RESULTS_FILE, text)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


# -- one run (executed in a worker) --------------------------------------------------------
def execute_task(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Train and evaluate one run; a failure is recorded (``status: failed``), not raised."""
    import torch

    from vinaflow.experiments.pipeline import run

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
        if out is not None:
            resume = (Path(out) / "checkpoint.pt").exists()
            result = run(payload["config"], out, resume=resume, progress=False)
        else:
            result = run(payload["config"], None, progress=False)
        m = result.metrics
        rec["metrics"] = {
            k: v for k, v in m.items() if k in RECORD_METRICS or k.startswith("sq_error_")
        }
        imp = m.get("importance") or {}
        for k in ("c2st", "coverage", "efficiency"):  # flat keys for the study tables
            if imp.get(k) is not None:
                rec["metrics"][f"is_{k}"] = imp[k]
        rec["status"] = "ok"
        demo = payload.get("demo_observations") or []
        if demo:
            y = torch.tensor(demo, dtype=torch.get_default_dtype())
            g = torch.Generator().manual_seed(int(payload["seed"]))
            s = result.posterior.sample(y, int(payload.get("demo_samples", 200)), generator=g)
            rec["_demo"] = s.numpy().astype(np.float32)
    except VinaflowError as err:
        rec["status"], rec["error"] = "failed", f"{type(err).__name__}: {err}"
    except Exception as err:  # a bug in one configuration must not stop a long sweep
        import traceback

        rec["status"], rec["error"] = "failed", f"{type(err).__name__}: {err}"
        rec["traceback"] = traceback.format_exc(limit=8)
    rec["wall_seconds"] = time.perf_counter() - t0
    return rec


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    tune_allocator()


# -- backends ----------------------------------------------------------------------------
def default_workers() -> int:
    """Cores available to this process (the local pool size)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


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
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn: forking a process that holds torch's thread pools can deadlock.
    ctx = mp.get_context("spawn")
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


def _check_ray_address(address: str) -> None:
    """Fail fast with a clear message instead of Ray's long connection retries."""
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        port_n = int(port)
    except ValueError as err:
        raise ConfigError(
            f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto"
        ) from err
    try:
        with socket.create_connection((host or "127.0.0.1", port_n), timeout=5):
            pass
    except OSError as err:
        raise ConfigError(
            f"--ray-address {address!r}: cannot reach a Ray cluster there ({err}); "
            "start one with `ray start --head` or omit --ray-address for a local instance"
        ) from err


def _run_ray(
    payloads: list[dict[str, Any]],
    workers: int | None,
    address: str | None,
    on_done: Callable,
) -> None:
    try:
        import ray
    except ImportError as err:
        raise ConfigError(
            '--backend ray needs Ray: pip install "vinaflow[ray]" (or "ray[default]")'
        ) from err
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = workers or default_workers()
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        kwargs["runtime_env"] = {"env_vars": env}
        try:
            ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError) as err:
            raise ConfigError(f"cannot start or reach Ray (address={address!r}): {err}") from err
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(execute_task)
        limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = list(payloads)
        inflight: list[Any] = []
        while queue or inflight:
            while queue and len(inflight) < limit:
                inflight.append(remote.remote(queue.pop(0)))
            done, inflight = ray.wait(inflight, num_returns=1)
            for ref in done:
                on_done(ray.get(ref))
    finally:
        if started:
            ray.shutdown()


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
    from vinaflow.atomic import atomic_path, atomic_write_json

    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend: unknown {backend!r}; allowed: local, ray")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if ray_address and backend != "ray":
        raise ConfigError("--ray-address needs --backend ray")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise ConfigError(
                '--backend ray needs Ray: pip install "vinaflow[ray]" (or "ray[default]")'
            ) from err
        if ray_address:
            _check_ray_address(ray_address)
    out = Path(out)
    tasks = sweep.tasks()
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
            "num_tasks": len(tasks),
            **(dict(meta) if meta else {}),
        },
    )
    if retry_failed:
        _write_results(out, records)
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
        }
        if save_runs:
            p["run_dir"] = str((out / "runs" / t.id).resolve())
        payloads.append(p)
    t_start = time.perf_counter()
    count = [0]

    def on_done(rec: dict[str, Any]) -> None:
        demo = rec.pop("_demo", None)
        if demo is not None:
            with atomic_path(out / "samples" / f"{rec['id']}.npz", suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, samples=demo, observations=np.asarray(sweep.demo_observations))
        rec["base_hash"] = sweep.base_hash
        records.append(rec)
        _write_results(out, records)
        count[0] += 1
        if progress:
            m = rec.get("metrics") or {}
            extra = (
                f"resim={m.get('resim_error'):.4f}"
                if m.get("resim_error") is not None
                else rec.get("error", "")
            )
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
            _run_ray(payloads, workers, ray_address, on_done)
    if progress and todo:
        print(f"sweep: finished in {time.perf_counter() - t_start:.1f}s", file=sys.stderr)
    return records


def _describe(params: Mapping[str, str]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in params.items())
