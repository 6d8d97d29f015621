"""Ray tasks on a cluster or a local Ray instance, shared by sweeps and ``vinaflow simulate``.

Ray is an optional dependency (``pip install "vinaflow[ray]"``): :func:`require_ray`
says how to install it, :func:`check_ray_address` fails fast on an address that does
not answer (Ray itself retries for minutes), and :func:`run_on_ray` maps a function
over payloads as Ray tasks, at most one per CPU at a time.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from vinaflow.errors import ConfigError, VinaflowError
from vinaflow.runtime import available_cpus

__all__ = ["check_ray_address", "require_ray", "run_on_ray", "run_ray_train"]


#: One BLAS thread per task: each task holds one CPU of the Ray instance.
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def check_ray_address(address: str, flag: str = "--ray-address") -> None:
    """Fail fast with a clear message instead of Ray's long connection retries; ``flag``
    is the option the user gave the address with."""
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        port_n = int(port)
    except ValueError as err:
        raise ConfigError(
            f"{flag} {address!r}: expected HOST:PORT, ray://HOST:PORT or auto"
        ) from err
    try:
        with socket.create_connection((host or "127.0.0.1", port_n), timeout=5):
            pass
    except OSError as err:
        raise ConfigError(
            f"{flag} {address!r}: cannot reach a Ray cluster there ({err}); "
            f"start one with `ray start --head` or omit {flag} for a local instance"
        ) from err


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` that says how to install it."""
    try:
        import ray  # optional dependency (the "ray" extra)
    except ImportError as err:
        raise ConfigError(
            '--backend ray needs Ray: pip install "vinaflow[ray]" (or "ray[default]")'
        ) from err
    return ray


def run_on_ray(
    fn: Callable[[Any], Any],
    payloads: Sequence[Any],
    workers: int | None,
    address: str | None,
    on_done: Callable[[Any], None],
) -> None:
    """``on_done(fn(p))`` for every payload, in completion order, as Ray tasks.

    Connects to ``address`` (or starts a local instance with ``workers`` CPUs, shut down
    afterwards); at most ``workers`` tasks (default: the cluster's CPUs) run at once.
    """
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            # No runtime_env of ours: it would replace that of a Ray job this command
            # runs in (e.g. `ray job submit --working-dir`, which ships user code).
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = workers or available_cpus()
            kwargs["runtime_env"] = {"env_vars": _ONE_THREAD}
        try:
            ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError) as err:
            raise ConfigError(f"cannot start or reach Ray (address={address!r}): {err}") from err
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(fn)
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


def _train_worker(payload: dict[str, Any]) -> None:
    """One Ray Train worker: Ray has formed the torch.distributed group; on a GPU the
    device Ray assigned becomes ``LOCAL_RANK``, which the trainer turns into ``cuda:i``."""
    import ray.train.torch

    if os.path.isdir(payload["cwd"]):
        # Relative paths in the config (a bank, the run folder) mean what they meant to
        # the user: on this machine or a shared file system, the driver's directory.
        os.chdir(payload["cwd"])
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        os.environ["LOCAL_RANK"] = str(device.index or 0)
    try:
        payload["fn"](*payload["args"])
    except VinaflowError as err:
        # Ray wraps worker exceptions in its own types; the message travels as text.
        raise RuntimeError(f"{_USER_ERROR}{err}") from None


_USER_ERROR = "vinaflow user error: "


def run_ray_train(
    fn: Callable[..., Any],
    args: Sequence[Any],
    workers: int,
    use_gpu: bool,
    address: str | None,
) -> None:
    """``fn(*args)`` on ``workers`` Ray Train workers (``TorchTrainer``) forming one
    ``torch.distributed`` group (gloo on CPUs, NCCL with one GPU each), on the cluster
    at ``address`` or a local Ray instance. A :class:`VinaflowError` raised by ``fn`` on
    any worker is raised here as a :class:`ConfigError` with its message."""
    ray = require_ray()
    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as err:
        raise ConfigError(
            '--backend ray needs Ray Train: pip install "vinaflow[ray]" (or "ray[train]")'
        ) from err
    if address:
        check_ray_address(address)
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if address:
            kwargs["address"] = address  # no runtime_env of ours (see run_on_ray)
        else:
            kwargs["runtime_env"] = {"env_vars": _ONE_THREAD}
        ray.init(**kwargs)
        started = True
    try:
        resource = "GPU" if use_gpu else "CPU"
        have = int(ray.cluster_resources().get(resource, 0))
        if have < workers:
            # Ray Train would wait for them indefinitely.
            raise ConfigError(
                f"--nproc {workers}: the Ray cluster has {have} {resource}(s); ask for at "
                f"most {have} workers or add nodes"
            )
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"fn": fn, "args": tuple(args), "cwd": os.getcwd()},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            run_config=RunConfig(name="vinaflow"),
        )
        try:
            trainer.fit()
        except Exception as err:  # noqa: BLE001 - Ray's error types differ across versions
            text = str(err)
            if _USER_ERROR in text:
                message = text.split(_USER_ERROR, 1)[1].strip().splitlines()[0]
                raise ConfigError(message) from None
            raise
    finally:
        if started:
            ray.shutdown()
