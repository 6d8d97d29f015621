r"""Posterior ensembles: a mixture of independently trained posteriors.

An ensemble of ``K`` members :math:`q_k(x \mid y)` with weights :math:`w_k` (uniform by
default) is the mixture

.. math:: q(x \mid y) = \sum_{k=1}^K w_k\, q_k(x \mid y),

whose log-density is :math:`\operatorname{logsumexp}_k (\log q_k(x \mid y) + \log w_k)`
and whose samples draw, for each sample, a member from the weights and then ``x`` from
it. Independently trained members err in different directions; averaging densities
covers the modes and tails any one member misses, which makes ensembles better
calibrated and rarely overconfident (Lakshminarayanan et al. 2017; for simulation-based
inference Hermans et al. 2022 measured that ensembles of neural posterior estimators
are far less often overconfident than single ones). The design follows sbi's
``EnsemblePosterior``.

References:
    Lakshminarayanan, Pritzel, Blundell. Simple and Scalable Predictive Uncertainty
    Estimation using Deep Ensembles. NeurIPS 2017.

    Hermans, Delaunoy, Rozet, Wehenkel, Begy, Louppe. A Trust Crisis in Simulation-Based
    Inference? Your Posterior Approximations can be Unfaithful. TMLR 2022.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vinaflow._version import __version__
from vinaflow.atomic import atomic_write_json
from vinaflow.errors import ConfigError, DataError, ModelFileError
from vinaflow.models.posterior import (
    NoDensityError,
    Posterior,
    register_folder_loader,
)
from vinaflow.models.support import read_support, write_support

__all__ = ["ENSEMBLE_FILE", "MAX_MEMBERS", "EnsemblePosterior", "member_dir"]

#: The file that marks a folder as an ensemble; members live in ``member-<k>/``.
ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_FORMAT_VERSION = 1
#: Upper bound on members read from a file (a forged count must not loop for ever).
MAX_MEMBERS = 1000


class _Members(nn.ModuleList):
    """The members' models as one module, so ``posterior.model`` moves, counts parameters
    and switches train/eval modes like a single model's."""

    @property
    def kind(self) -> str:
        kinds = sorted({m.kind for m in self})
        return f"ensemble of {len(self)} {'/'.join(kinds)}"

    @property
    def has_log_prob(self) -> bool:
        return all(m.has_log_prob for m in self)

    @property
    def set_shape(self) -> tuple[int, int] | None:
        return self[0].set_shape


class EnsemblePosterior(Posterior):
    """Mixture ``sum_k w_k q_k(x | y)`` of trained posteriors with the same dimensions.

    Args:
        posteriors: the members (:class:`Posterior` objects, e.g. from ``vinaflow.fit`` with
            different seeds); ``vinaflow.fit(..., ensemble=K)`` trains and wraps them.
        weights: mixture weights, one per member (normalised here); uniform by default.

    ``sample`` draws each sample's member from the weights, then the sample from that
    member; ``log_prob`` is the mixture density (it needs every member to have one).

    Example:
        >>> from vinaflow.models import ConditionalINN
        >>> members = [Posterior(ConditionalINN(2, 1, blocks=1, hidden=8, seed=s)) for s in (0, 1)]
        >>> ens = EnsemblePosterior(members)
        >>> ens.sample([0.3], 100, seed=0).shape
        torch.Size([1, 100, 2])
        >>> ens.log_prob(torch.zeros(3, 2), [0.3]).shape
        torch.Size([3])
    """

    def __init__(
        self, posteriors: Sequence[Posterior], weights: Sequence[float] | Tensor | None = None
    ) -> None:
        members = list(posteriors) if isinstance(posteriors, (list, tuple)) else None
        if members is None or not members:
            raise ConfigError(
                "EnsemblePosterior needs a non-empty list of posteriors, got "
                f"{type(posteriors).__name__ if members is None else 'an empty list'}"
            )
        for i, p in enumerate(members):
            if not isinstance(p, Posterior):
                raise ConfigError(
                    f"EnsemblePosterior: member {i} is a {type(p).__name__}, not a Posterior"
                )
            if isinstance(p, EnsemblePosterior):
                raise ConfigError(
                    f"EnsemblePosterior: member {i} is itself an ensemble; pass its members "
                    "(ensemble.members) instead"
                )
        dims = {(p.dim_x, p.dim_y) for p in members}
        if len(dims) > 1:
            raise DataError(
                "EnsemblePosterior: members must have the same dim_x and dim_y, got "
                + ", ".join(f"({p.dim_x}, {p.dim_y})" for p in members)
            )
        shapes = {p.model.set_shape for p in members}
        if len(shapes) > 1:
            raise DataError(
                f"EnsemblePosterior: members take observations of different set shapes {shapes}"
            )
        self.members: list[Posterior] = members
        self.weights = _check_weights(weights, len(members))
        super().__init__(_Members([p.model for p in members]))
        #: The members' training results (``vinaflow.fit(..., ensemble=K)``), in order.
        self.train_result: list[Any] = [p.train_result for p in members]

    def __repr__(self) -> str:
        return (
            f"EnsemblePosterior({len(self.members)} members of "
            f"{sorted({p.model.kind for p in self.members})}, dim_x={self.dim_x}, "
            f"dim_y={self.dim_y})"
        )

    def __len__(self) -> int:
        return len(self.members)

    @property
    def dim_x(self) -> int:
        return self.members[0].dim_x

    @property
    def dim_y(self) -> int:
        return self.members[0].dim_y

    @property
    def has_log_prob(self) -> bool:
        return all(p.has_log_prob for p in self.members)

    def _draw(self, obs: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` mixture samples per observation, ``(n_obs, n, dim_x)``.

        Each sample's member is drawn from the weights (independently per sample and
        observation), then the members draw their share; ``seed``/``generator`` of
        :meth:`sample` make the whole draw reproducible, as for a single
        :class:`Posterior`.
        """
        n_obs = obs.shape[0]
        which = torch.multinomial(
            self.weights.expand(n_obs, -1), n, replacement=True, generator=generator
        )
        out = torch.empty(n_obs, n, self.dim_x)
        for k, member in enumerate(self.members):
            mask = which == k
            counts = mask.sum(1)
            most = int(counts.max())
            if most == 0:
                continue
            # every observation gets the largest count from this member and keeps its own
            # share: ``rank`` numbers each observation's slots for member k
            draws = member.sample(obs, most, generator=generator)
            rank = mask.cumsum(1) - 1
            rows = torch.arange(n_obs)[:, None].expand(-1, n)
            out[mask] = draws[rows[mask], rank[mask]]
        return out

    def _log_density(self, xs: Tensor, obs: Tensor) -> Tensor:
        """Mixture density ``log sum_k w_k q_k(x | y)`` for checked rows."""
        if not self.has_log_prob:
            kinds = sorted({p.model.kind for p in self.members if not p.has_log_prob})
            raise NoDensityError(
                f"log_prob: ensemble members of kind {kinds} have no tractable density"
            )
        per_member = torch.stack([p.log_prob(xs, obs).double() for p in self.members], 1)
        # float64 keeps the mixture of members that disagree by hundreds of nats exact
        return torch.logsumexp(per_member + self.weights.double().log(), 1).float()

    def to(self, device: str | torch.device) -> EnsemblePosterior:
        for p in self.members:
            p.to(device)
        return self

    def save(self, directory: str | Path) -> Path:
        """Write each member to ``directory/member-<k>/`` and the weights to
        ``ensemble.json``; :meth:`Posterior.load` (``vinaflow.load``) reads it back."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"save: {directory} exists and is not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        for k, p in enumerate(self.members):
            p.save(directory / member_dir(k))
        write_support(directory, self.support)
        # written last: a folder is an ensemble only once every member is in place
        atomic_write_json(
            directory / ENSEMBLE_FILE,
            {
                "format_version": ENSEMBLE_FORMAT_VERSION,
                "vinaflow_version": __version__,
                "num_members": len(self.members),
                "weights": self.weights.tolist(),
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> EnsemblePosterior:
        """The ensemble saved in ``directory`` by :meth:`save`, on ``device``."""
        directory = Path(directory)
        path = directory / ENSEMBLE_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ModelFileError(f"ensemble file not found: {path}") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelFileError(f"{path} is not valid JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("format_version") != ENSEMBLE_FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: unsupported ensemble file (format_version "
                f"{meta.get('format_version') if isinstance(meta, dict) else None!r}; this "
                f"vinaflow reads version {ENSEMBLE_FORMAT_VERSION})"
            )
        k = meta.get("num_members")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_MEMBERS:
            raise ModelFileError(
                f"{path}: num_members must be an integer in [1, {MAX_MEMBERS}], got {k!r}"
            )
        members = [Posterior.load(directory / member_dir(i), device=device) for i in range(k)]
        try:
            ensemble = cls(members, meta.get("weights"))
        except (ConfigError, DataError) as err:
            raise ModelFileError(f"{path}: {err}") from err
        ensemble.support = read_support(directory)
        return ensemble


def member_dir(k: int) -> str:
    """Folder of member ``k`` in a saved ensemble (``member-<k>``)."""
    return f"member-{k}"


def _check_weights(weights: Any, k: int) -> Tensor:
    """Normalised mixture weights ``(k,)``: uniform for ``None``, else finite, >= 0, not all 0."""
    if weights is None:
        return torch.full((k,), 1.0 / k)
    try:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"EnsemblePosterior: weights must be numbers, got {weights!r}") from err
    if w.shape != (k,):
        raise ConfigError(
            f"EnsemblePosterior: weights must have one value per member ({k}), got shape "
            f"{tuple(w.shape)}"
        )
    if not torch.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise ConfigError(
            f"EnsemblePosterior: weights must be finite, >= 0 and not all 0, got {w.tolist()}"
        )
    return (w / w.sum()).float()


# ``Posterior.load`` (and ``vinaflow.load``) reads ensemble folders through this entry,
# so the base module never imports this one.
register_folder_loader(ENSEMBLE_FILE, EnsemblePosterior.load)
