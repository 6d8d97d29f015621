r"""Truncated sequential neural posterior estimation (TSNPE) for one observation.

Amortized training spends simulations on the whole prior; when only one observation
:math:`y_o` matters, most of them teach the network about parameters far from its
posterior. TSNPE (Deistler, Gonçalves, Macke 2022) trains in rounds:

1. round 1 simulates from the prior :math:`p(x)` and trains :math:`q_1(x \mid y)`;
2. round :math:`r + 1` truncates the prior to the highest-probability region of the
   current posterior at :math:`y_o`,

   .. math:: \mathcal{T}_r = \{x \in \operatorname{supp} p :
             \log q_r(x \mid y_o) \ge \tau_r\},

   where :math:`\tau_r` is the :math:`\epsilon`-quantile (``truncation_quantile``,
   ``1e-4``) of :math:`\log q_r(X \mid y_o)` for :math:`X \sim q_r(\cdot \mid y_o)`, so that
   :math:`\mathcal{T}_r` holds all but a fraction :math:`\epsilon` of the posterior mass;
   it draws new simulations from :math:`p(x)` restricted to :math:`\mathcal{T}_r`
   (rejection sampling: prior draws kept where the inequality holds), appends them to
   all earlier ones and retrains.

The proposal of every round is the prior times an indicator, so on :math:`\mathcal{T}_r`
the pooled training distribution is proportional to the prior and the plain maximum-
likelihood loss still targets the true posterior there, for any :math:`y` whose
posterior lies in :math:`\mathcal{T}_r` (in particular :math:`y_o`). Unlike SNPE-C
(APT) no loss correction, atomic proposals or importance weights are needed, which is
what makes the method stable ("hassle-free") and why it is implemented here with the
same trainer as the amortized case. The posterior is only accurate near :math:`y_o`
afterwards: it is no longer amortized.

Rejection sampling costs ``1 / acceptance`` prior draws and posterior log-densities per
accepted draw, the acceptance being the prior mass of :math:`\mathcal{T}_r`. When that
mass is too small (``min_acceptance``) sampling stops with a
:class:`TruncationError` naming the measured acceptance; sbi's fallbacks
(sampling-importance-resampling, a bounding box) are not implemented.

References:
    Deistler, Gonçalves, Macke. Truncated proposals for scalable and hassle-free
    simulation-based inference. NeurIPS 2022 (arXiv:2210.04815).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vinaflow.atomic import atomic_path
from vinaflow.errors import ConfigError, DataError, VinaflowError
from vinaflow.models import MODEL_KINDS, AmortizedModel
from vinaflow.models.posterior import Posterior, as_observations
from vinaflow.problems.base import Problem
from vinaflow.training.fitting import dataset_from_arrays, member_job, train_members
from vinaflow.training.trainer import TrainingConfig

__all__ = [
    "DEFAULT_MIN_ACCEPTANCE",
    "DEFAULT_SUPPORT_SAMPLES",
    "RoundRecord",
    "TruncationError",
    "check_observation",
    "check_sequential",
    "density_kinds",
    "round_sizes",
    "run_rounds",
    "train_round",
    "sample_truncated_prior",
    "truncation_threshold",
]

#: Posterior samples whose log-densities estimate the threshold's quantile (sbi's
#: estimator, with fewer samples): at the default ``1e-4`` quantile the estimate lies
#: near the lowest of them, whose expected quantile is ``1 / 20,001``, i.e. the region
#: errs on the large side. 100,000 samples took 6 s for a small cINN on 2 loaded cores.
DEFAULT_SUPPORT_SAMPLES = 20_000
#: Rejection sampling gives up below this acceptance (prior mass of the region): each
#: accepted draw would cost over 10,000 prior draws and posterior log-densities.
DEFAULT_MIN_ACCEPTANCE = 1e-4
#: Acceptance below which sampling goes on but says it is slow.
WARN_ACCEPTANCE = 1e-2
#: Prior draws judged at once (bounds the memory of one log-density batch).
CANDIDATE_BATCH = 200_000
#: Candidates drawn before a too-low acceptance is trusted enough to stop on it.
MIN_CANDIDATES_TO_STOP = 1_000_000


class TruncationError(VinaflowError, RuntimeError):
    """The truncated region holds too little prior mass for rejection sampling."""


@dataclass
class RoundRecord:
    """What one round did: its simulations and, after the first, its truncation."""

    round: int
    #: Simulations drawn in this round and in all rounds so far.
    num_simulations: int
    total_simulations: int
    #: ``log q(x | y_o)`` threshold of this round's proposal (``None`` in round 1).
    threshold: float | None = None
    #: Fraction of prior draws inside the region (its prior mass), and draws made.
    acceptance: float | None = None
    candidates: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Objectives a round may train with: maximum likelihood (or flow matching, a CNF's
#: likelihood-based objective). Their optimum on the pooled simulations is the posterior
#: wherever the proposal is the prior times a constant; a prior penalty or a critic
#: objective would need the proposal corrected for.
SEQUENTIAL_OBJECTIVES = ("nll", "flow_matching")


def density_kinds() -> tuple[str, ...]:
    """Model kinds with a log-density (the truncation is a level set of it)."""
    base = AmortizedModel.log_prob_standardized
    return tuple(k for k, cls in MODEL_KINDS.items() if cls.log_prob_standardized is not base)


def check_sequential(model_kind: Any, objective: Any, where: str = "training.rounds") -> None:
    """Refuse a model without a log-density or an objective other than the likelihood
    for sequential rounds, before anything is simulated."""
    kinds = density_kinds()
    if model_kind not in kinds:
        raise ConfigError(
            f"{where} > 1 needs a model with a log-density (the truncated region is where "
            f"it exceeds a threshold); model kind {model_kind!r} has none; valid kinds: "
            f"{', '.join(kinds)}"
        )
    if isinstance(objective, dict):
        name, terms = objective.get("name"), objective.get("terms")
        prior = objective.get("prior", "none") not in (None, "none")
        if name not in SEQUENTIAL_OBJECTIVES or terms or prior:
            raise ConfigError(
                f"{where} > 1 trains each round by maximum likelihood (objective "
                f"{' or '.join(SEQUENTIAL_OBJECTIVES)}, without extra terms or a prior "
                f"penalty), got objective {name!r}"
                + (" with terms" if terms else "")
                + (" with a prior penalty" if prior else "")
            )


def check_observation(observation: Any, dim_y: int, field: str = "observation") -> Tensor:
    """The one observation of sequential training as ``(1, dim_y)`` float32; errors name
    ``field`` (``problem.observation`` in configs)."""
    if observation is None:
        raise ConfigError(
            f"{field} is required for sequential rounds (rounds > 1): the rounds focus the "
            "simulations on this one observation"
        )
    try:
        obs = as_observations(observation, dim_y, name=field)
    except DataError as err:
        raise ConfigError(str(err)) from err
    if obs.shape[0] != 1:
        raise ConfigError(
            f"{field}: sequential rounds focus on one observation of shape ({dim_y},), got "
            f"{obs.shape[0]} observations"
        )
    return obs


def round_sizes(total: int, rounds: int) -> list[int]:
    """``total`` simulations split over ``rounds`` (the first rounds take the remainder),
    so that a sequential run costs as many simulations as an amortized one."""
    if rounds < 1 or total < rounds:
        raise ConfigError(f"{total} simulations cannot be split over {rounds} rounds")
    base, extra = divmod(total, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


@torch.no_grad()
def truncation_threshold(
    posterior: Posterior,
    observation: Tensor,
    quantile: float,
    num_samples: int = DEFAULT_SUPPORT_SAMPLES,
    generator: torch.Generator | None = None,
) -> float:
    """The ``quantile`` of ``log q(X | y_o)`` for ``X ~ q(. | y_o)``: the threshold whose
    superlevel set holds all but ``quantile`` of the posterior mass."""
    samples = posterior.sample(observation, num_samples, generator=generator)[0]
    # a normaliser shifts the threshold and the candidates' densities alike
    lp = posterior.log_prob(samples, observation, normalize=False).double()
    lp = lp[torch.isfinite(lp)]
    if lp.numel() == 0:
        raise TruncationError("the posterior's log-density is not finite at any of its samples")
    return float(torch.quantile(lp, quantile))


@torch.no_grad()
def sample_truncated_prior(
    problem: Problem,
    posterior: Posterior,
    observation: Tensor,
    threshold: float,
    n: int,
    generator: torch.Generator | None = None,
    min_acceptance: float = DEFAULT_MIN_ACCEPTANCE,
) -> tuple[Tensor, float, int]:
    """``n`` draws of the prior restricted to ``log q(x | y_o) >= threshold``, by rejection.

    Returns the draws ``(n, dim_x)``, the acceptance (accepted / drawn: the region's prior
    mass) and the number of prior draws made. Raises :class:`TruncationError` once the
    acceptance is measured below ``min_acceptance``.
    """
    kept: list[Tensor] = []
    count = candidates = 0
    budget = math.ceil(n / min_acceptance)
    warned = False
    while count < n:
        accepted_so_far = count / candidates if candidates else None
        if candidates >= budget or (
            candidates >= MIN_CANDIDATES_TO_STOP
            and accepted_so_far is not None
            and accepted_so_far < min_acceptance
        ):
            raise TruncationError(
                f"truncated prior: only {count} of {candidates} prior draws (acceptance "
                f"{count / max(candidates, 1):.2e}, below min_acceptance {min_acceptance:g}) lie "
                f"in the region where log q(x | y_o) >= {threshold:.4g}; the posterior is "
                "far narrower than the prior (or misses it): use fewer rounds, more "
                "simulations in the first round, or a prior closer to the posterior"
            )
        # Size the next batch from the acceptance so far: a narrow region needs many
        # candidates per accepted draw, and one batch per round is fastest.
        rate = max(accepted_so_far or 1.0, min_acceptance)
        size = min(CANDIDATE_BATCH, max(1000, math.ceil(1.2 * (n - count) / rate)))
        cand = problem.sample_prior(size, generator).float()
        inside = _in_support(problem, cand)
        lp = torch.full((size,), -torch.inf)
        if inside.any():
            lp[inside] = posterior.log_prob(cand[inside], observation, normalize=False)
        # ``>=`` with a finite log-density: NaNs and -inf (outside the model) are rejected
        chosen = cand[torch.isfinite(lp) & (lp >= threshold)]
        kept.append(chosen)
        count += chosen.shape[0]
        candidates += size
        if not warned and candidates >= 10_000 and count / candidates < WARN_ACCEPTANCE:
            warned = True
            print(
                f"[vinaflow] truncated prior: acceptance {count / candidates:.1e}; rejection "
                f"sampling draws about {candidates / max(count, 1):.0f} prior samples per "
                "simulation",
                file=sys.stderr,
            )
    return torch.cat(kept)[:n], count / candidates, candidates


def _in_support(problem: Problem, x: Tensor) -> Tensor:
    """Rows inside the prior's support (prior draws are, up to float32 rounding at the
    edges of a bounded prior)."""
    return torch.isfinite(problem.log_prior(x))


def train_round(
    r: int,
    x: Tensor,
    y: Tensor,
    clean: Tensor | None,
    n_val: int,
    model_cfg: dict[str, Any],
    objective_cfg: dict[str, Any],
    training: TrainingConfig,
    problem: Problem,
    checkpoint: Path | None = None,
    resume: bool = False,
    where: str = "training.rounds",
) -> Posterior:
    """Round ``r``'s posterior: a fresh model (seed ``training.seed + r``) trained on all
    simulations so far, ``n_val`` of them for validation; what ``vinaflow.fit(rounds=R)``
    and ``vinaflow run`` (``training.rounds``) both pass to :func:`run_rounds`."""
    # round 1's simulations are split as an amortized run splits them; later rounds
    # appended their truncated draws after the prior ones, so they reshuffle (seed + r)
    shuffle = None if r == 0 else training.seed + r
    data = dataset_from_arrays(x, y, n_val, seed=shuffle, y_clean=clean)
    job = member_job(r, model_cfg, objective_cfg, objective_cfg, training, data, problem)
    if not job.model.has_log_prob:
        raise ConfigError(
            f"{where} > 1 needs a model with a log-density; {job.model.kind!r} with these "
            f"settings has none (a cinn needs latent_dim = dim_x = {problem.dim_x})"
        )
    return train_members(1, lambda _k: job, lambda _k: checkpoint, resume)[0]


#: ``train(round, x, y, y_clean) -> posterior``: trains on all simulations so far.
TrainRound = Callable[[int, Tensor, Tensor, "Tensor | None"], Posterior]


def run_rounds(
    problem: Problem,
    observation: Tensor,
    sizes: Sequence[int],
    train: TrainRound,
    seed: int,
    quantile: float = 1e-4,
    support_samples: int = DEFAULT_SUPPORT_SAMPLES,
    min_acceptance: float = DEFAULT_MIN_ACCEPTANCE,
    store: Path | None = None,
) -> tuple[Posterior, list[RoundRecord]]:
    """TSNPE: ``len(sizes)`` rounds of ``sizes[r]`` new simulations each for ``observation``.

    Round 1 draws from the prior with the generator of ``seed``, exactly as an amortized
    run with that seed does; round ``r + 1`` truncates with the posterior of round ``r``
    and draws with seed ``seed + r`` (as ensemble member ``k`` trains with ``seed + k``).
    ``train`` trains a fresh posterior on all simulations so far (plain maximum
    likelihood: the proposal is a truncated prior). With ``store`` (a run folder), every
    round's simulations are written to ``store/round-<r>/simulations.npz`` before its
    training and read back when present, so a resumed run repeats no simulation and
    draws no different one. Returns the last posterior, whose ``rounds`` lists the
    records as dicts, and one record per round.
    """
    obs = observation.reshape(1, -1)
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    cleans: list[Tensor | None] = []
    records: list[RoundRecord] = []
    posterior: Posterior | None = None
    for r, n in enumerate(sizes):
        g = torch.Generator().manual_seed(seed + r)
        cached = _read_round(store, r)
        record = RoundRecord(r + 1, n, sum(sizes[: r + 1]))
        if cached is not None:
            x, y, clean, meta = cached
            record.threshold, record.acceptance = meta.get("threshold"), meta.get("acceptance")
            record.candidates = meta.get("candidates")
        else:
            if posterior is None:
                x = problem.sample_prior(n, g)
            else:
                # the region of the latest posterior, not the intersection with earlier
                # ones: each round's posterior is the best estimate of where mass lies
                record.threshold = truncation_threshold(
                    posterior, obs, quantile, support_samples, generator=g
                )
                x, record.acceptance, record.candidates = sample_truncated_prior(
                    problem, posterior, obs, record.threshold, n, g, min_acceptance
                )
            y, clean = problem.simulate_with_clean_checked(x, g)
            _write_round(store, r, x, y, clean, record)
        xs.append(x.float())
        ys.append(y.float())
        cleans.append(None if clean is None else clean.float())
        clean_all = None if any(c is None for c in cleans) else torch.cat(cleans)  # type: ignore[misc]
        posterior = train(r, torch.cat(xs), torch.cat(ys), clean_all)
        records.append(record)
    assert posterior is not None
    posterior.rounds = [rec.to_dict() for rec in records]
    return posterior, records


def round_dir(store: Path, r: int) -> Path:
    """Folder of round ``r`` (0-based) in a run folder: its simulations and checkpoint."""
    return store / f"round-{r}"


def _read_round(
    store: Path | None, r: int
) -> tuple[Tensor, Tensor, Tensor | None, dict[str, Any]] | None:
    if store is None or not (round_dir(store, r) / "simulations.npz").is_file():
        return None
    path = round_dir(store, r) / "simulations.npz"
    try:
        with np.load(path, allow_pickle=False) as d:
            x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
            clean = torch.from_numpy(d["y_clean"]) if "y_clean" in d.files else None
            meta = {
                k: (None if np.isnan(d[k]) else d[k].item())
                for k in ("threshold", "acceptance", "candidates")
                if k in d.files
            }
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path} is unreadable ({err}); delete it to simulate round again") from err
    return x, y, clean, meta


def _write_round(
    store: Path | None,
    r: int,
    x: Tensor,
    y: Tensor,
    clean: Tensor | None,
    record: RoundRecord,
) -> None:
    if store is None:
        return
    arrays = {"x": x.numpy(), "y": y.numpy()}
    if clean is not None:
        arrays["y_clean"] = clean.numpy()
    for k in ("threshold", "acceptance", "candidates"):
        v = getattr(record, k)
        arrays[k] = np.array(np.nan if v is None else float(v))
    with atomic_path(round_dir(store, r) / "simulations.npz", suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
