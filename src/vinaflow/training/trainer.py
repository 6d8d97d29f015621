"""One trainer for every objective: alternating critic / model updates, checkpoints, resume.

One file on purpose: the step loop, its rollback on non-finite losses, exact resume and the
data-parallel split all read and write the same trainer state (step, batch position, RNG,
learning-rate scale), and keeping them together keeps that state's invariants in one place.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vinaflow.atomic import atomic_path
from vinaflow.errors import ConfigError, ModelFileError, TrainingDivergedError
from vinaflow.objectives.base import global_batch
from vinaflow.objectives.losses import Objective
from vinaflow.training import distributed
from vinaflow.training.streaming import InMemoryBatches, ShardStream

__all__ = ["TrainingConfig", "TrainResult", "Trainer", "LR_SCHEDULES", "progress_total"]

LR_SCHEDULES = ("constant", "cosine", "step", "plateau")
#: Numeric precisions of training (``training.precision``).
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainingConfig:
    """Settings of :class:`Trainer` (the ``training`` config section).

    Training stops after ``steps`` model updates or ``max_seconds`` of wall time,
    whichever comes first. ``critic_steps`` critic updates precede each model
    update of adversarial objectives. ``lr``, ``critic_lr`` and ``critic_steps`` left
    at ``None`` take defaults by objective: ``lr = 1e-3`` without a critic; with a
    critic ``lr = 3e-4``, ``critic_lr = 1e-3`` and ``critic_steps = 5`` (a critic that
    lags behind the model gives it wrong gradients; measured on gaussian-linear, the
    paper INN with KL went from C2ST 0.91 to 0.61 with these settings), or the
    objective's own ``critic_steps`` (the ``mixture`` gradient of
    :class:`~vinaflow.objectives.FDivergenceObjective`).

    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) is where the model, the
    critic, the optimiser state, the normalisation buffers and the training tensors live
    while training; ``auto`` picks CUDA when torch sees a GPU, else the CPU (``mps`` only
    when asked; see :mod:`vinaflow.training.distributed`). Random draws (minibatch order,
    latents, noise augmentation) come from the CPU generator and are moved to the device,
    so a run draws the same numbers on every device and checkpoints resume anywhere.

    Several processes (``vinaflow run --nproc N``, or ``torchrun``) split every global
    minibatch of ``batch_size`` rows between them and average their gradients, so N
    processes take the same steps as one process with the same ``batch_size`` (exactly
    for objectives whose loss is a mean over rows: ``nll`` and the f-divergences with
    their critic; ``mmd`` and ``sinkhorn`` become the mean of per-process estimates on
    ``batch_size / N`` rows each).
    """

    steps: int = 4000
    max_seconds: float | None = None
    batch_size: int = 256
    lr: float | None = None
    critic_lr: float | None = None
    critic_steps: int | None = None
    lr_schedule: str = "cosine"
    lr_min_factor: float = 0.02
    #: ``lr_schedule: plateau``: the learning rate is multiplied by ``lr_decay_factor``
    #: after ``lr_decay_patience`` validations without a new best validation loss (the
    #: rule of ``torch.optim.lr_scheduler.ReduceLROnPlateau``, kept here so that it
    #: composes with the divergence retries' rate reduction and lives in checkpoints).
    lr_decay_patience: int = 4
    lr_decay_factor: float = 0.5
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0
    val_every: int = 200
    patience: int | None = None
    checkpoint_every: int = 1000
    seed: int = 0
    progress: bool = True
    max_retries: int = 3
    retry_lr_factor: float = 0.5
    #: Torch CPU threads while training; small networks train fastest on one thread
    #: (measured: 22 ms vs 200 ms per step of a 6-block cINN on a loaded 2-core machine).
    threads: int | None = 1
    #: Compile every invertible block with ``torch.compile`` while training (reverted
    #: afterwards). Measured on a 6-block coupling INN, hidden 128, batch 512: 1.29x more
    #: steps per second (``benchmarks/peers/speed.py --compile``), after a few seconds of
    #: compilation per block type and input shape; not worth it for short runs.
    compile: bool = False
    #: Train on noise-free simulations with fresh observation noise in every minibatch
    #: (the problem's additive Gaussian noise; see ``Trainer.fit(y_noise_std=...)``).
    #: Measured on the ocean problem against fixed noise (``benchmarks/ocean.py``, 100k
    #: simulations, 600 s): C2ST 0.615 vs 0.629 and 95% coverage 0.938 vs 0.903.
    noise_augmentation: bool = False
    #: Critic-only updates before the first model update (adversarial objectives): a
    #: fresh critic on a pre-trained model otherwise starts at chance and its first
    #: gradients are noise (used when fine-tuning flows with the PR divergence).
    critic_warmup: int = 0
    #: Where training runs: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``,
    #: ``cuda:N`` or ``mps``. The model stays there after training; saved models and
    #: checkpoints hold CPU tensors and load on any device.
    device: str = "auto"
    #: Rows of a sharded bank (a folder from ``vinaflow simulate``) held in memory at
    #: once and shuffled together; minibatches mix the shards of one window (see
    #: :mod:`vinaflow.training.streaming`). Banks in one ``.npz`` are loaded whole.
    shuffle_window: int = 200_000
    #: ``fp32``, or ``bf16``: bfloat16 autocast of the training forward passes (matrix
    #: products in bfloat16, everything stored in float32). Off by default: on this
    #: project's CPU measurements it was slower (``benchmarks/scaling.py``). It is meant
    #: for GPUs with bfloat16 tensor cores, where it has not been measured yet.
    precision: str = "fp32"
    #: Members of a posterior ensemble: ``vinaflow run`` (like ``vinaflow.fit(ensemble=K)``)
    #: trains this many posteriors on the same simulations, member ``k`` with seed
    #: ``seed + k``, and saves their mixture (:class:`vinaflow.models.EnsemblePosterior`).
    #: Read by the run, not by the trainer.
    ensemble: int = 1
    #: Rounds of truncated sequential training for the one observation
    #: ``problem.observation`` (TSNPE, :mod:`vinaflow.training.sequential`): the
    #: simulation budget is split over the rounds, and every round after the first
    #: simulates from the prior truncated to the previous posterior's highest-density
    #: region. Read by the run, not by the trainer.
    rounds: int = 1
    #: The truncated region keeps the prior where the posterior's log-density exceeds
    #: this quantile of it under the posterior (``1e-4``: the region holds all but 0.01%
    #: of the posterior mass; Deistler et al. 2022).
    truncation_quantile: float = 1e-4

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr is None or self.lr > 0,
            "critic_lr": self.critic_lr is None or self.critic_lr > 0,
            "critic_steps": self.critic_steps is None or self.critic_steps >= 1,
            "val_every": self.val_every >= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
            "max_retries": self.max_retries >= 0,
            "critic_warmup": self.critic_warmup >= 0,
            "lr_min_factor": 0 <= self.lr_min_factor <= 1,
            "lr_decay_patience": self.lr_decay_patience >= 1,
            "lr_decay_factor": 0 < self.lr_decay_factor < 1,
            "shuffle_window": self.shuffle_window >= 1,
            "ensemble": self.ensemble >= 1,
            "rounds": self.rounds >= 1,
            "truncation_quantile": 0 < self.truncation_quantile < 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"training.{name} is out of range: {getattr(self, name)!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"training.max_seconds must be > 0, got {self.max_seconds}")
        if self.ensemble > 1 and self.rounds > 1:
            raise ConfigError(
                f"training.ensemble ({self.ensemble}) and training.rounds ({self.rounds}): "
                "sequential rounds train one posterior; set one of them to 1"
            )
        distributed.check_device_spec(self.device)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"training.precision: unknown {self.precision!r}; allowed: {', '.join(PRECISIONS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"training.lr_schedule: unknown {self.lr_schedule!r}; "
                f"allowed: {', '.join(LR_SCHEDULES)}"
            )


def _compile_blocks(model: nn.Module) -> list[nn.Module]:
    """``nn.Module.compile`` (in place: parameter names and checkpoints are unchanged)
    on the outermost invertible blocks of ``model``; returns them."""
    from vinaflow.blocks.base import InvertibleBlock

    if isinstance(model, InvertibleBlock):
        model.compile()
        return [model]
    return [block for child in model.children() for block in _compile_blocks(child)]


@dataclass
class TrainResult:
    history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    steps: int = 0
    stopped: str = "steps"
    retries: int = 0
    #: The device trained on, e.g. ``cpu`` or ``cuda:0``.
    device: str = "cpu"
    #: Processes that trained together (``torch.distributed`` world size).
    world_size: int = 1


def _schedule_factor(cfg: TrainingConfig, progress: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1] of the training budget."""
    t = min(max(progress, 0.0), 1.0)
    if cfg.lr_schedule == "cosine":
        return cfg.lr_min_factor + (1 - cfg.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.lr_schedule == "step":
        return 0.1 ** min(int(t * 3), 2)
    return 1.0


def progress_total(
    steps: int,
    step: int,
    elapsed: float,
    max_seconds: float | None,
    start_step: int = 0,
    start_elapsed: float = 0.0,
) -> int | None:
    """The number of steps training will reach: ``steps``, or fewer when ``max_seconds``
    binds first, projected from the step rate measured since ``start_step``.

    The progress bar counts to this total, so that its length and ETA follow the time
    budget (a bar to ``steps`` would stop part-way when the time runs out). With a time
    budget and no step measured yet the total is unknown (``None``); it is never less
    than ``step``.
    """
    if max_seconds is None:
        return steps
    done, spent = step - start_step, elapsed - start_elapsed
    if done <= 0 or spent <= 0:
        return None
    projected = step + done / spent * max(max_seconds - elapsed, 0.0)
    return max(step, min(steps, math.ceil(projected)))


def _finite_grads(params: list[nn.Parameter]) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (checkpoints load on any device)."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


#: DDP keyword that skips the per-forward buffer broadcast (renamed in newer torch).
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers"
    in inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


class _GeneratorLoss(nn.Module):
    """The model update's loss as a module, so that ``DistributedDataParallel`` sees the
    model's forward pass and all-reduces its gradients.

    The objective is held outside the module tree: the critic's parameters (updated by
    the critic steps, with their own all-reduce) are not DDP's.
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_objective", objective)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        return self._objective.generator_loss(self.model, x, y)


def _needs_actnorm_init(model: nn.Module) -> bool:
    from vinaflow.blocks.actnorm import ActNorm

    return any(isinstance(m, ActNorm) and not bool(m.initialized) for m in model.modules())


class Trainer:
    """Train a model with an objective on ``(x, y)`` simulations in standardised units.

    Example:
        >>> # trainer = Trainer(TrainingConfig(steps=1000))
        >>> # result = trainer.fit(model, objective, x, y, x_val, y_val)
    """

    def __init__(self, config: TrainingConfig | None = None, process_group: Any = None) -> None:
        """``process_group``: the ``torch.distributed`` group to train with; ``None`` uses
        the default group when ``torch.distributed`` is initialised with more than one
        process, and trains alone otherwise."""
        self.config = config or TrainingConfig()
        self.process_group = process_group
        self.ctx = distributed.DistContext()
        self.device = torch.device("cpu")
        self._ddp: nn.Module | None = None

    # -- state -----------------------------------------------------------------------
    def _state(self, detached: bool = False) -> dict[str, Any]:
        """Everything resume needs; ``detached`` copies tensors for in-memory snapshots.

        ``state_dict()`` tensors alias the live parameters and optimizer moments, so a
        snapshot that is not copied would follow training and could not roll back.
        """
        state = {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "opt": self.opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict() if self.critic_opt else {},
            "step": self.step,
            "batch_position": self.batches.position,
            "history": copy.deepcopy(self.history),
            "elapsed": self.elapsed,
            "torch_rng": torch.get_rng_state(),
            "retries": self.retries,
            "lr_scale": self.lr_scale,
            "plateau": [self.plateau_scale, self.plateau_wait],
            "best": self.best,
            "stopped": self.stopped,
            "config": asdict(self.config),
        }
        if detached:
            for key in ("model", "objective", "opt", "critic_opt"):
                state[key] = copy.deepcopy(state[key])
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.opt.load_state_dict(state["opt"])
        if self.critic_opt and state["critic_opt"]:
            self.critic_opt.load_state_dict(state["critic_opt"])
        self.step = int(state["step"])
        self.batches.position = int(state["batch_position"])
        self.history = copy.deepcopy(state["history"])
        self.elapsed = float(state["elapsed"])
        torch.set_rng_state(state["torch_rng"])
        self.retries = int(state.get("retries", 0))
        self.lr_scale = float(state.get("lr_scale", 1.0))
        scale, wait = state.get("plateau", (1.0, 0))
        self.plateau_scale, self.plateau_wait = float(scale), int(wait)
        self.best = state.get("best")
        self.stopped = state.get("stopped")

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the trainer state (CPU tensors, any device loads it) atomically."""
        with atomic_path(path) as tmp:
            torch.save(_to_cpu(self._state()), tmp)

    def _write_checkpoint(self, path: str | Path) -> None:
        """Rank 0 writes the checkpoint (the state is the same on every rank); the
        others wait, so that no rank runs ahead of a checkpoint that may be resumed."""
        if self.ctx.main:
            self.save_checkpoint(path)
        if self.ctx.distributed:
            torch.distributed.barrier(group=self.ctx.group)

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as err:
            raise ModelFileError(f"checkpoint not found: {path}") from err
        except Exception as err:  # noqa: BLE001 - torch raises many kinds for bad files
            raise ModelFileError(f"checkpoint {path} is unreadable or corrupted ({err})") from err
        try:
            self._load_state(state)
        except (KeyError, RuntimeError, ValueError) as err:
            raise ModelFileError(
                f"checkpoint {path} does not match this model/objective ({err})"
            ) from err

    # -- training ----------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        objective: Objective,
        x: Tensor,
        y: Tensor,
        x_val: Tensor | None = None,
        y_val: Tensor | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
        y_noise_std: Tensor | None = None,
        stream: ShardStream | None = None,
    ) -> TrainResult:
        """Train on standardised ``x`` ``(n, dx)`` and ``y`` ``(n, dy)``; returns the history.

        With ``stream`` (a bank larger than memory), minibatches come from the stream
        and ``x``/``y`` are a standardised sample of its rows, used only to initialise
        the objective.

        With ``y_noise_std`` ``(dy,)``, ``y`` holds noise-free observations and every
        minibatch gets a fresh draw of independent Gaussian noise with these standard
        deviations (noise augmentation: each simulation is seen with new noise at every
        epoch, as in DINGO, Dax et al. 2021). Validation data keep their fixed noise.
        """
        cfg = self.config
        self.ctx = distributed.context(self.process_group)
        self.device = distributed.resolve_device(
            cfg.device, self.ctx.local_rank if self.ctx.distributed else None
        )
        if self.device.type != "cpu" and getattr(model, "base_name", "gaussian") != "gaussian":
            raise ConfigError(
                f"training.device={cfg.device}: a model with base {model.base_name!r} trains "
                "on the CPU only (its base distribution lives there); set training.device=cpu"
            )
        n_rows = x.shape[0] if stream is None else stream.n
        if self.ctx.distributed and min(cfg.batch_size, n_rows) < self.ctx.world_size:
            raise ConfigError(
                f"training.batch_size ({cfg.batch_size}) must be at least the number of "
                f"processes ({self.ctx.world_size})"
            )
        if y_noise_std is not None:
            y_noise_std = torch.as_tensor(y_noise_std, dtype=y.dtype).reshape(-1)
            if y_noise_std.shape[0] != y.shape[1] or not torch.isfinite(y_noise_std).all():
                raise ConfigError(
                    f"y_noise_std must hold {y.shape[1]} finite standard deviations, "
                    f"got shape {tuple(y_noise_std.shape)}"
                )
        dev = self.device
        model.to(dev)
        objective.to(dev)
        x, y = x.to(dev), y.to(dev)
        x_val = None if x_val is None else x_val.to(dev)
        y_val = None if y_val is None else y_val.to(dev)
        self.y_noise_std = None if y_noise_std is None else y_noise_std.to(dev)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model, self.objective = model, objective
        adversarial = objective.has_critic
        self.lr = cfg.lr or (3e-4 if adversarial else 1e-3)
        self.critic_lr = cfg.critic_lr or 1e-3
        self.critic_steps = cfg.critic_steps or objective.critic_steps or (5 if adversarial else 1)
        self.opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=cfg.weight_decay)
        critic_params = objective.critic_parameters()
        self.critic_opt = (
            torch.optim.Adam(critic_params, lr=self.critic_lr, betas=(0.5, 0.999))
            if critic_params
            else None
        )
        self.batches: InMemoryBatches | ShardStream = (
            InMemoryBatches(x, y, cfg.batch_size, cfg.seed) if stream is None else stream
        )
        self.step, self.elapsed, self.retries, self.lr_scale = 0, 0.0, 0, 1.0
        #: ``plateau`` schedule: the current factor and validations since the last best.
        self.plateau_scale, self.plateau_wait = 1.0, 0
        self.history: dict[str, list[float]] = {}
        self.best: dict[str, Any] | None = None
        #: Why training ended (``None`` while running); in checkpoints so that resuming a
        #: run killed after early stopping does not train on.
        self.stopped: str | None = None
        objective.prepare(model, x, self._observations(y))
        if resume:
            if checkpoint is None or not Path(checkpoint).exists():
                raise ModelFileError(f"--resume: no checkpoint at {checkpoint}")
            self.load_checkpoint(checkpoint)
            if self.stopped != "early_stopping":
                self.stopped = None  # steps and time limits are rechecked (they may have grown)
        model.train()
        objective.train()
        compiled = _compile_blocks(model) if cfg.compile else []
        self._ddp = None
        if self.ctx.distributed:
            if not objective.trains_sampling and _needs_actnorm_init(model):
                # ActNorm initialises from its first batch: on the whole first global
                # minibatch, as one process does (a rank's slice would differ between
                # ranks). The random state is left as it was.
                with torch.no_grad(), torch.random.fork_rng(devices=[]):
                    xf, yf = self.batches.peek()
                    model.encode(xf.to(dev), self._observations(yf.to(dev)))
            self._ddp = torch.nn.parallel.DistributedDataParallel(
                _GeneratorLoss(model, objective),
                device_ids=[dev.index] if dev.type == "cuda" else None,
                process_group=self.ctx.group,
                # generator losses need not touch every parameter (e.g. a joint INN's
                # y-output path under some objectives); unused ones are marked ready.
                find_unused_parameters=True,
                # buffers (normalisation, ActNorm flags) are equal on every rank already
                **_NO_BUFFER_SYNC,
            )
        if self.step == 0 and cfg.critic_warmup and self.critic_opt is not None:
            self._warm_up_critic(cfg.critic_warmup)
        # Rollback target of divergence recovery: the state at the last validation or
        # checkpoint step (checkpoint steps count whether or not a file is written, so
        # that a resumed run rolls back exactly like an uninterrupted one).
        snapshot = self._state(detached=True)
        stopped = self.stopped or "steps"
        bar = self._progress(start=self.step)
        t0 = time.perf_counter() - self.elapsed
        start_step, start_elapsed = self.step, self.elapsed
        no_improve = 0
        try:
            while self.stopped is None and self.step < cfg.steps:
                now = self._clock(t0)
                if cfg.max_seconds is not None and now >= cfg.max_seconds:
                    stopped = "max_seconds"
                    break
                self._set_lr(now)
                logs = self._update()
                if logs is None:  # non-finite: roll back and retry with a smaller lr
                    self._recover(snapshot)
                    if bar is not None:
                        bar.n = self.step
                    continue
                self.step += 1
                self.elapsed = time.perf_counter() - t0
                for k, v in logs.items():
                    self.history.setdefault(k, []).append(v)
                self.history.setdefault("step", []).append(self.step)
                if bar is not None:
                    bar.total = progress_total(
                        cfg.steps,
                        self.step,
                        self.elapsed,
                        cfg.max_seconds,
                        start_step,
                        start_elapsed,
                    )
                    if self.step % 20 == 0:
                        bar.set_postfix(
                            {k: f"{v:.3g}" for k, v in list(logs.items())[:4]}, refresh=False
                        )
                    bar.update(1)
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    if x_val is not None and y_val is not None:
                        improved = self._validate(x_val, y_val)
                        no_improve = 0 if improved else no_improve + 1
                        self._plateau(improved)
                        if cfg.patience is not None and no_improve >= cfg.patience:
                            stopped = "early_stopping"
                            break
                    snapshot = self._state(detached=True)
                if self.step % cfg.checkpoint_every == 0:
                    self.elapsed = time.perf_counter() - t0
                    snapshot = self._state(detached=True)
                    if checkpoint is not None:
                        self._write_checkpoint(checkpoint)
            if bar is not None:
                # Ended by the time budget or early stopping: the bar ends full, at the
                # step reached.
                bar.total = self.step
                bar.refresh()
        finally:
            self._ddp = None
            if bar is not None:
                bar.close()
            for module in compiled:  # sampling was slower compiled than eager (same benchmark)
                module._compiled_call_impl = None  # noqa: SLF001 - undoes nn.Module.compile
        self.elapsed = time.perf_counter() - t0
        if stopped == "early_stopping" and self.best is not None and self.stopped is None:
            model.load_state_dict(self.best["model"])
        self.stopped = stopped
        if checkpoint is not None:
            self._write_checkpoint(checkpoint)
        model.eval()
        return TrainResult(
            self.history,
            self.elapsed,
            self.step,
            stopped,
            self.retries,
            str(self.device),
            self.ctx.world_size,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast of the training losses under ``training.precision: bf16``
        (matrix products in bfloat16, parameters, optimiser state and validation in
        float32); a no-op otherwise."""
        if self.config.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _clock(self, t0: float) -> float:
        """Seconds since ``t0``; rank 0's clock under several processes, so that every
        rank sets the same learning rate and stops at the same step."""
        elapsed = time.perf_counter() - t0
        if not self.ctx.distributed or self.config.max_seconds is None:
            return elapsed
        t = torch.tensor([elapsed], dtype=torch.float64, device=self._comm_device())
        torch.distributed.broadcast(t, src=self.ctx.src(), group=self.ctx.group)
        return float(t)

    def _comm_device(self) -> torch.device:
        """Where collective tensors live: the GPU under NCCL, the CPU under gloo."""
        backend = torch.distributed.get_backend(self.ctx.group)
        return self.device if backend == "nccl" else torch.device("cpu")

    def _set_lr(self, elapsed: float) -> None:
        """Schedule on the fraction of the budget used: steps, or wall time when it binds."""
        cfg = self.config
        progress = self.step / cfg.steps
        if cfg.max_seconds is not None:
            progress = max(progress, elapsed / cfg.max_seconds)
        factor = _schedule_factor(cfg, progress) * self.lr_scale * self.plateau_scale
        for opt, base in ((self.opt, self.lr), (self.critic_opt, self.critic_lr)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * factor

    def _progress(self, start: int):  # noqa: ANN202
        if not self.config.progress or not self.ctx.main:
            return None
        from tqdm.auto import tqdm

        cfg = self.config
        return tqdm(
            total=progress_total(
                cfg.steps, start, self.elapsed, cfg.max_seconds, start, self.elapsed
            ),
            initial=start,
            desc="training",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def _clip_and_step(
        self, loss: Tensor, params: list[nn.Parameter], opt: torch.optim.Optimizer
    ) -> bool:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not _finite_grads(params):
            return False
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        opt.step()
        return True

    def _observations(self, y: Tensor, rows: slice = slice(None)) -> Tensor:
        """``y[rows]``, with fresh noise under noise augmentation (CPU global RNG, whose
        state is checkpointed, so resumed runs draw the same noise on any device).

        ``y`` is the whole global minibatch and ``rows`` this rank's part of it; the
        noise is drawn for all of ``y`` so that every rank's random state and noise
        match one process's.
        """
        clean = y[rows]
        if self.y_noise_std is None:
            return clean
        noise = torch.randn(y.shape, dtype=clean.dtype)[rows].to(clean.device)
        return clean + self.y_noise_std * noise

    def _minibatch(self) -> tuple[Tensor, Tensor, int, int, int]:
        """The next global minibatch, this rank's rows of it: ``(x, y, start, stop, total)``
        (rows ``start:stop`` of ``total``; all of them when training alone)."""
        xa, ya = self.batches.next()
        xa, ya = xa.to(self.device), ya.to(self.device)
        total = xa.shape[0]
        if not self.ctx.distributed:
            return xa, self._observations(ya), 0, total, total
        sizes = [len(part) for part in torch.arange(total).tensor_split(self.ctx.world_size)]
        start = sum(sizes[: self.ctx.rank])
        rows = slice(start, start + sizes[self.ctx.rank])
        return xa[rows], self._observations(ya, rows), rows.start, rows.stop, total

    def _warm_up_critic(self, steps: int) -> None:
        params = self.objective.critic_parameters()
        for _ in range(steps):
            if self._critic_step(params) is None:
                raise TrainingDivergedError("critic warm-up: non-finite critic loss")

    def _critic_step(self, params: list[nn.Parameter]) -> dict[str, float] | None:
        """One critic update on the next minibatch; ``None`` if it was not finite."""
        assert self.critic_opt is not None
        return self._step("critic", params, self.critic_opt)

    def _update(self) -> dict[str, float] | None:
        logs: dict[str, float] = {}
        if self.critic_opt is not None:
            params = self.objective.critic_parameters()
            for _ in range(self.critic_steps):
                lg = self._critic_step(params)
                if lg is None:
                    return None
                logs.update(lg)
        lg = self._step("generator", list(self.model.parameters()), self.opt)
        if lg is None:
            return None
        logs.update(lg)
        return logs

    def _step(
        self,
        kind: str,
        params: list[nn.Parameter],
        opt: torch.optim.Optimizer,
    ) -> dict[str, float] | None:
        """One ``critic`` or ``generator`` (model) update on the next global minibatch;
        its logs (the generator's with ``loss``), or ``None`` if it was not finite."""
        xb, yb, start, stop, total = self._minibatch()
        if not self.ctx.distributed:
            with self._autocast():
                if kind == "critic":
                    loss, logs = self.objective.critic_loss(self.model, xb, yb)
                else:
                    loss, logs = self.objective.generator_loss(self.model, xb, yb)
            loss = loss.float()
            if not torch.isfinite(loss) or not self._clip_and_step(loss, params, opt):
                return None
            return logs if kind == "critic" else {**logs, "loss": float(loss.detach())}
        return self._distributed_step(kind, xb, yb, start, stop, total, params, opt)

    def _distributed_step(
        self,
        kind: str,
        xb: Tensor,
        yb: Tensor,
        start: int,
        stop: int,
        total: int,
        params: list[nn.Parameter],
        opt: torch.optim.Optimizer,
    ) -> dict[str, float] | None:
        """This rank's part of an update: the loss on rows ``start:stop`` of the global
        minibatch, weighted by their share, and gradients averaged over the ranks (DDP for
        the model, one all-reduce for the critic), so that the step is that of the loss
        on the whole minibatch. Every rank calls backward, also for a non-finite loss
        (DDP's reducer expects one backward per forward), and all of them then agree on
        skipping the step."""
        import torch.distributed as dist

        world, group = self.ctx.world_size, self.ctx.group
        weight = (stop - start) / total
        with (
            distributed.sharded_latents(self.model, start, stop, total),
            global_batch(group, self._comm_device()),
            self._autocast(),
        ):
            if kind == "critic":
                loss, logs = self.objective.critic_loss(self.model, xb, yb)
            else:
                assert self._ddp is not None
                loss, logs = self._ddp(xb, yb)
        loss = loss.float()
        opt.zero_grad(set_to_none=True)
        # DDP and the critic all-reduce average over ranks: scaling by weight * world
        # makes the average the row-weighted mean (1 exactly for equal slices).
        (loss * (weight * world)).backward()
        comm = self._comm_device()
        if kind == "critic":
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads]).to(comm)
            dist.all_reduce(flat, group=group)
            flat /= world
            offset = 0
            for p in params:
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).to(p.device)
                offset += n
        keys = list(logs)
        local_bad = not bool(torch.isfinite(loss.detach())) or not _finite_grads(params)
        values = [float(loss.detach()), *(float(logs[k]) for k in keys)]
        summary = torch.tensor(
            [v * weight for v in values] + [float(local_bad)], dtype=torch.float64, device=comm
        )
        dist.all_reduce(summary, group=group)
        if float(summary[-1]) > 0:
            return None
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        opt.step()
        out = {k: float(v) for k, v in zip(keys, summary[1:-1].tolist(), strict=True)}
        if kind == "generator":
            out["loss"] = float(summary[0])
        return out

    def _recover(self, snapshot: dict[str, Any]) -> None:
        failed_step = self.step + 1
        self.retries += 1
        if self.retries > self.config.max_retries:
            raise TrainingDivergedError(
                f"training diverged: non-finite loss or gradient at step {failed_step}; "
                f"rolled back and retried {self.config.max_retries} time(s) with the learning "
                f"rate reduced by {self.config.retry_lr_factor} each time. Try a smaller "
                "training.lr, stronger training.grad_clip or another divergence."
            )
        # Retries and the lr reduction outlive the rollback, so that reductions compound.
        retries, lr_scale = self.retries, self.lr_scale
        # A copy: optimizers adopt loaded tensors without copying, so training would
        # otherwise mutate the snapshot that a second rollback needs.
        self._load_state(copy.deepcopy(snapshot))
        self.retries = retries
        self.lr_scale = lr_scale * self.config.retry_lr_factor
        # Different random draws on the retry, so that the same overflow is not replayed.
        torch.manual_seed(self.config.seed + 7919 * retries)
        if not self.ctx.main:
            return
        print(
            f"[vinaflow] non-finite loss at step {failed_step}: rolled back to step "
            f"{self.step}, retry {retries}/{self.config.max_retries} with lr x{self.lr_scale:g}",
            file=sys.stderr,
        )

    @torch.no_grad()
    def _val_loss(self, x_val: Tensor, y_val: Tensor) -> float:
        # A fixed seed makes validation losses comparable across evaluations.
        with torch.random.fork_rng():
            torch.manual_seed(12345)
            was = self.model.training
            self.model.eval()
            total, count = 0.0, 0
            for start in range(0, x_val.shape[0], 4096):
                xb, yb = x_val[start : start + 4096], y_val[start : start + 4096]
                if hasattr(self.model, "nll") and not self.objective.trains_sampling:
                    loss = self.model.nll(xb, yb).mean()
                else:
                    with torch.enable_grad():
                        loss, _ = self.objective.generator_loss(self.model, xb, yb)
                total += float(loss.detach()) * xb.shape[0]
                count += xb.shape[0]
            self.model.train(was)
        return total / count

    def _plateau(self, improved: bool) -> None:
        if self.config.lr_schedule != "plateau":
            return
        self.plateau_wait = 0 if improved else self.plateau_wait + 1
        if self.plateau_wait >= self.config.lr_decay_patience:
            self.plateau_scale *= self.config.lr_decay_factor
            self.plateau_wait = 0

    def _validate(self, x_val: Tensor, y_val: Tensor) -> bool:
        val = self._val_loss(x_val, y_val)
        self.history.setdefault("val_loss", []).append(val)
        self.history.setdefault("val_step", []).append(self.step)
        if self.best is None or val < self.best["val"]:
            if self.config.patience is not None:
                self.best = {"val": val, "model": copy.deepcopy(self.model.state_dict())}
            else:
                self.best = {"val": val}
            return True
        return False
