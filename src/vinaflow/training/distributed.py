"""Devices and data-parallel training on one machine with ``torch.distributed``.

Devices (``training.device``): ``auto`` picks ``cuda`` when torch sees a CUDA device and
the CPU otherwise; Apple's ``mps`` is used only when asked for (small flows are not
faster there, and MPS lacks float64, which standardisation uses). ``cuda`` means the
current CUDA device (``cuda:LOCAL_RANK`` in a multi-process run), ``cuda:N`` device N.

Processes: ``vinaflow run CONFIG --nproc N`` starts N processes with
:func:`torch.multiprocessing.spawn` (:func:`launch`); ``torchrun --nproc-per-node N -m
vinaflow.cli run CONFIG`` starts them itself, and :func:`init_from_environment` joins the
process group that ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` describe. The backend is gloo
on the CPU and NCCL on CUDA. The :class:`~vinaflow.training.Trainer` finds the group
(:func:`context`) and splits every global minibatch between the ranks.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vinaflow.errors import ConfigError

__all__ = [
    "DEVICE_FORMS",
    "DistContext",
    "available_devices",
    "barrier",
    "check_device_spec",
    "check_nproc",
    "context",
    "init_from_environment",
    "is_main_process",
    "launch",
    "resolve_device",
    "sharded_latents",
    "usable_cpus",
]

#: The forms ``training.device`` accepts.
DEVICE_FORMS = "auto, cpu, cuda, cuda:N, mps"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: How long ranks wait for each other at a collective (rank 0 may be writing a large
#: checkpoint or simulating while the others wait).
TIMEOUT = timedelta(minutes=60)


def check_device_spec(spec: Any) -> str:
    """``spec`` if it has one of the forms of :data:`DEVICE_FORMS` (availability is
    checked by :func:`resolve_device`, when training starts)."""
    if not isinstance(spec, str) or not _DEVICE_RE.match(spec):
        raise ConfigError(f"training.device must be one of {DEVICE_FORMS}, got {spec!r}")
    return spec


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> str:
    """The devices of this machine in ``training.device`` form, e.g. ``cpu, cuda:0``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return ", ".join(names)


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """The ``torch.device`` of ``training.device = spec`` on this machine.

    ``local_rank`` (the process's index on its machine in a multi-process run) picks
    ``cuda:LOCAL_RANK`` for ``auto`` and ``cuda``.

    Raises:
        ConfigError: naming ``training.device`` and the available devices, for a device
            this machine does not have.
    """
    spec = check_device_spec(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise ConfigError(
                f"training.device: mps is not available here; available: {available_devices()}"
            )
        return torch.device("mps")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "cuda":
        index = local_rank if local_rank is not None else 0
        if local_rank is None and count:
            index = torch.cuda.current_device()
    else:
        if local_rank is not None and local_rank > 0:
            raise ConfigError(
                f"training.device: {spec} names one GPU, but several processes train; use "
                "training.device=cuda (process i takes cuda:i)"
            )
        index = int(spec.split(":")[1])
    if index >= count:
        what = "no CUDA device" if count == 0 else f"{count} CUDA device(s)"
        raise ConfigError(
            f"training.device: {spec if spec != 'cuda' else f'cuda:{index}'} is not available "
            f"(torch sees {what}); available: {available_devices()}"
        )
    return torch.device("cuda", index)


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_nproc(nproc: Any, device: str) -> None:
    """Refuse more processes than the machine has cores (CPU) or GPUs (CUDA)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc must be an integer >= 1, got {nproc!r}")
    check_device_spec(device)
    if nproc == 1:
        return
    if device == "mps":
        raise ConfigError("--nproc > 1 needs training.device cpu or cuda (mps is one device)")
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_cuda:
        if device.startswith("cuda:"):
            raise ConfigError(
                f"--nproc {nproc} with training.device={device}: one GPU cannot hold "
                "several processes' models; use training.device=cuda (process i takes cuda:i)"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if nproc > count:
            raise ConfigError(
                f"--nproc {nproc}: this machine has {count} CUDA device(s); give at most {count}"
            )
    else:
        cores = usable_cpus()
        if nproc > cores:
            raise ConfigError(
                f"--nproc {nproc}: this process may use {cores} CPU core(s); give at most {cores}"
            )


@dataclass(frozen=True)
class DistContext:
    """This process's place in a process group (``group=None``: training alone)."""

    group: Any = None
    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def src(self) -> int:
        """The global rank of this group's rank 0 (the source of broadcasts)."""
        if self.group is None or self.group is dist.group.WORLD:
            return 0
        return dist.get_global_rank(self.group, 0)


def _local_rank() -> int | None:
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None


def context(group: Any = None) -> DistContext:
    """The process group training uses: ``group``, else the default group when
    ``torch.distributed`` is initialised with more than one process, else none."""
    if not dist.is_available() or not dist.is_initialized():
        if group is not None:
            raise ConfigError(
                "Trainer: a process group was given but torch.distributed is not initialised"
            )
        return DistContext()
    group = group if group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    if world == 1:
        return DistContext()
    rank = dist.get_rank(group)
    local = _local_rank()
    return DistContext(group, rank, world, local if local is not None else rank)


def is_main_process() -> bool:
    """``True`` unless this is a rank other than 0 of an initialised process group."""
    return context().main


def barrier() -> None:
    """Wait for every rank (no-op when training alone)."""
    ctx = context()
    if ctx.distributed:
        dist.barrier(group=ctx.group)


def _backend(device: str) -> str:
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if on_cuda else "gloo"


def init_from_environment(device: str = "auto") -> bool:
    """Join the process group of a ``torchrun`` launch (``RANK`` and ``WORLD_SIZE`` set,
    ``WORLD_SIZE > 1``); ``True`` if this process is now part of one."""
    if dist.is_initialized():
        return dist.get_world_size() > 1
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if "RANK" not in os.environ or world <= 1:
        return False
    dist.init_process_group(_backend(device), init_method="env://", timeout=TIMEOUT)
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int, nproc: int, port: int, backend: str, fn: Callable[..., Any], args: tuple
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=nproc,
        timeout=TIMEOUT,
    )
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], nproc: int, device: str, *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes that form one process group (gloo on the
    CPU, NCCL on CUDA), with :func:`torch.multiprocessing.spawn`; ``fn`` and ``args``
    must be picklable. Raises ``torch.multiprocessing.ProcessRaisedException`` (with the
    failing rank's traceback) when a process fails."""
    import torch.multiprocessing as mp

    mp.spawn(
        _worker,
        args=(nproc, _free_port(), _backend(device), fn, args),
        nprocs=nproc,
        join=True,
    )


@contextmanager
def sharded_latents(model: nn.Module, start: int, stop: int, total: int) -> Iterator[None]:
    """While active, ``model.sample_latent(stop - start)`` draws ``total`` latents and
    returns rows ``start:stop``.

    Every rank draws the latents of the whole global minibatch from the same random
    stream and keeps its slice, so that N processes use exactly the latents one process
    would (and their random states stay equal).
    """
    original = model.sample_latent
    n_local = stop - start

    def sample_latent(n: int, generator: torch.Generator | None = None) -> Tensor:
        if n != n_local:
            return original(n, generator)
        return original(total, generator)[start:stop]

    model.sample_latent = sample_latent  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model.sample_latent
