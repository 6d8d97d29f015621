"""Ray tasks on a cluster or a local Ray instance, shared by sweeps and ``vinaflow simulate``.

Ray is an optional dependency (``pip install "vinaflow[ray]"``): :func:`require_ray`
says how to install it, :func:`check_ray_address` fails fast on an address that does
not answer (Ray itself retries for minutes), and :func:`run_on_ray` maps a function
over payloads as Ray tasks, at most one per CPU at a time.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from vinaflow.errors import ConfigError
from vinaflow.runtime import available_cpus

__all__ = ["check_ray_address", "require_ray", "run_on_ray"]


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
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = workers or available_cpus()
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        kwargs["runtime_env"] = {"env_vars": env}
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
