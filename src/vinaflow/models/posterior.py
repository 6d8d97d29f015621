"""The user-facing posterior: ``sample(y, n)``, ``log_prob(x, y)`` in the problem's units,
``save(dir)`` and ``Posterior.load(dir)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vinaflow.errors import ConfigError, DataError, ModelFileError
from vinaflow.models.base import AmortizedModel
from vinaflow.models.serialization import load_model, save_model
from vinaflow.models.summary import flatten_sets
from vinaflow.models.support import BoxSupport, read_support, write_support

__all__ = [
    "NoDensityError",
    "Posterior",
    "as_observations",
    "register_folder_loader",
]

#: Draws per observation that estimate the mass of the unrestricted posterior inside the
#: support (:meth:`Posterior.support_mass`): a standard error of at most 0.005.
SUPPORT_MASS_DRAWS = 10_000
#: The support mass is estimated in rounds of this many draws per observation, until
#: the standard error of its log is at most :data:`SUPPORT_MASS_LOG_SE` (or all
#: :data:`SUPPORT_MASS_DRAWS` are spent).
SUPPORT_MASS_ROUND = 1_000
SUPPORT_MASS_LOG_SE = 0.005
#: Posterior draws held in memory at once while estimating the support mass.
SUPPORT_MASS_CHUNK = 1_000_000
#: Rejection sampling gives up below this acceptance: the posterior then has almost no
#: mass inside the prior's support, and that is reported instead of looping for long.
MIN_ACCEPTANCE = 1e-3

#: Loaders of saved-posterior folders that are not one model's files, by the file that
#: marks such a folder (e.g. ``ensemble.json``). The modules that define those formats
#: register here (:func:`register_folder_loader`), so that :meth:`Posterior.load` reads
#: every format without importing the modules that build on this one.
FolderLoader = Callable[[Path, "str | torch.device"], "Posterior"]
_FOLDER_LOADERS: dict[str, FolderLoader] = {}


def register_folder_loader(marker: str, loader: FolderLoader) -> None:
    """Make :meth:`Posterior.load` read folders holding the file ``marker`` with
    ``loader(directory, device)``."""
    if not marker or "/" in marker:
        raise ConfigError(f"register_folder_loader: marker must be a file name, got {marker!r}")
    _FOLDER_LOADERS[marker] = loader


class NoDensityError(ConfigError, NotImplementedError):
    """The model has no tractable density (``Posterior.log_prob``)."""


def as_observations(y: Any, dim_y: int, name: str = "observations") -> Tensor:
    """Validate one observation ``(dim_y,)`` or a batch ``(n_obs, dim_y)``; returns 2-D float32."""
    try:
        arr = y if isinstance(y, Tensor) else np.asarray(y)
        is_complex = arr.is_complex() if isinstance(arr, Tensor) else np.iscomplexobj(arr)
        if not is_complex:
            t = torch.as_tensor(arr if isinstance(arr, Tensor) else arr.astype(np.float64))
    except (TypeError, ValueError, OverflowError) as err:
        raise DataError(f"{name} must be a numeric array, got {type(y).__name__}") from err
    if is_complex:
        raise DataError(f"{name} must be real numbers, got complex values")
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != dim_y:
        raise DataError(
            f"{name} must have shape ({dim_y},) or (n_obs, {dim_y}), got {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise DataError(f"{name} is empty")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contain NaN or inf")
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contain values beyond the float32 range (|v| > 3.4e38)")
    return t


def _sample_arguments(
    n: Any, seed: Any, generator: torch.Generator | None
) -> tuple[int, torch.Generator | None]:
    """``sample``'s checked sample count and the generator of its draws: a new one
    seeded by ``seed``, the given ``generator``, or ``None`` (torch's global state)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"number of samples n must be an integer >= 1, got {n!r}")
    if seed is None:
        return int(n), generator
    if generator is not None:
        raise ConfigError("sample: give seed or generator, not both")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"sample: seed must be an integer, got {seed!r}")
    return int(n), torch.Generator().manual_seed(int(seed))


class Posterior:
    """Amortized posterior ``q(x | y)`` of a trained model.

    Example:
        >>> from vinaflow.models import ConditionalINN
        >>> post = Posterior(ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8))
        >>> post.sample([0.3], 100).shape
        torch.Size([1, 100, 2])
    """

    def __init__(
        self,
        model: AmortizedModel,
        batch_size: int = 65536,
        train_result: Any = None,
        support: BoxSupport | None = None,
    ) -> None:
        self.model = model
        self.batch_size = int(batch_size)
        #: Where the prior has mass (:class:`vinaflow.models.support.BoxSupport`): samples
        #: outside it are rejected and have density ``-inf``. ``vinaflow.fit`` sets it from
        #: its ``prior`` (or the simulator's); ``None`` leaves the flow unrestricted.
        self.support = support
        #: How training went (a ``vinaflow.training.TrainResult``: history, steps, seconds,
        #: why it stopped) for posteriors from ``vinaflow.fit``; ``None`` otherwise.
        self.train_result = train_result
        #: Each round of sequential training (``vinaflow.fit(rounds=R)``): simulations,
        #: truncation threshold and acceptance; ``None`` for other posteriors.
        self.rounds: list[dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"Posterior({self.model.kind}, dim_x={self.dim_x}, dim_y={self.dim_y})"

    @property
    def device(self) -> torch.device:
        """Where the model lives and sampling runs (``vinaflow.fit`` leaves the model on
        its ``training.device``)."""
        for t in (*self.model.parameters(), *self.model.buffers()):
            return t.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> Posterior:
        """Move the model to ``device`` (e.g. ``"cuda"``, ``"cpu"``); returns ``self``.

        Inputs are moved to the model's device and results returned on the CPU (or the
        ``device`` given to :meth:`sample`); latent draws come from the CPU generator, so a
        seed gives the same samples on every device up to floating-point rounding.
        """
        self.model.to(torch.device(device))
        return self

    @property
    def dim_x(self) -> int:
        return self.model.dim_x

    @property
    def dim_y(self) -> int:
        return self.model.dim_y

    @torch.inference_mode()
    def sample(
        self,
        y: Any,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> Tensor:
        """Draw ``n`` samples for each observation; returns ``(n_obs, n, dim_x)``.

        For ``dim_y = 0`` (no observation) ``y`` is ``None`` or empty: ``(1, n, dim_x)``.
        ``seed`` (or a ``generator``) makes the draws reproducible: the same seed gives the
        same samples, also from a saved and reloaded posterior. Without either, torch's
        global random state is used. Sampling runs on the model's device
        (:attr:`device`, :meth:`to`); the samples are returned on ``device`` (the CPU
        unless asked otherwise). With a :attr:`support`, draws outside it are rejected and
        replaced by new ones.
        """
        n, generator = _sample_arguments(n, seed, generator)
        obs = self._observations(y)
        x = self._draw(obs, n, generator).reshape(obs.shape[0], n, self.dim_x)
        if self.support is not None:
            x = self._reject_outside(obs, x, generator)
        bad = (~torch.isfinite(x)).flatten(1).any(1)
        if bad.any():
            raise DataError(
                f"posterior samples overflow for observation(s) {bad.nonzero()[:5, 0].tolist()}: "
                "the observations lie far outside the range of the training data"
            )
        return x.to(device)

    def _reject_outside(self, obs: Tensor, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Replace the draws of ``x`` ``(n_obs, n, dim_x)`` outside :attr:`support` by new
        draws inside it (rejection sampling, each observation until it has ``n``)."""
        assert self.support is not None
        n = x.shape[1]
        kept = [row[self.support.contains(row)] for row in x]
        drawn = [n] * len(kept)
        while short := [i for i, k in enumerate(kept) if k.shape[0] < n]:
            rates = [kept[i].shape[0] / drawn[i] for i in short]
            worst = min(rates)
            i = short[rates.index(worst)]
            if worst < MIN_ACCEPTANCE and drawn[i] >= 10 / MIN_ACCEPTANCE:
                raise DataError(
                    f"posterior samples for observation {i}: {kept[i].shape[0]} of "
                    f"{drawn[i]} draws lie inside the prior's support; the posterior puts "
                    f"almost no mass there (acceptance below {MIN_ACCEPTANCE:g})"
                )
            # enough draws for the observation with the lowest acceptance, with a margin
            missing = max(n - kept[i].shape[0] for i in short)
            m = min(int(1.2 * missing / max(worst, MIN_ACCEPTANCE)) + 16, 100 * n + 16)
            more = self._draw(obs[short], m, generator).reshape(len(short), m, self.dim_x)
            for j, i in enumerate(short):
                kept[i] = torch.cat([kept[i], more[j][self.support.contains(more[j])]])
                drawn[i] += m
        return torch.stack([k[:n] for k in kept])

    def support_mass(self, y: Any, n: int = SUPPORT_MASS_DRAWS, seed: int = 0) -> Tensor:
        r"""``(n_obs,)``: the fraction of the unrestricted posterior's mass inside
        :attr:`support` at each observation (all ones without a support). One minus it is
        what sbi calls the leakage.

        Draws come in rounds of :data:`SUPPORT_MASS_ROUND` per observation, up to ``n``;
        an observation stops once the standard error of its log mass,
        :math:`\sqrt{(1 - \hat m) / (\hat m k)}` after ``k`` draws, is at most
        :data:`SUPPORT_MASS_LOG_SE`. One whose first round lies wholly inside stops there
        (its leakage is below 0.3% at 95%, the rule of three), so a test set of many
        distinct observations costs a tenth of the draws of a fixed ``n``. Observations
        are drawn in chunks, so memory does not grow with their number.
        """
        n, generator = _sample_arguments(n, seed, None)
        obs = self._observations(y)
        if self.support is None:
            return torch.ones(obs.shape[0])
        inside = torch.zeros(obs.shape[0], dtype=torch.float64)
        drawn = torch.zeros(obs.shape[0], dtype=torch.float64)
        rows = torch.arange(obs.shape[0])
        with torch.inference_mode():
            while rows.numel():
                k = int(min(SUPPORT_MASS_ROUND, n - drawn[rows[0]]))
                chunk = max(1, SUPPORT_MASS_CHUNK // k)
                for start in range(0, rows.numel(), chunk):
                    idx = rows[start : start + chunk]
                    x = self._draw(obs[idx], k, generator).reshape(-1, self.dim_x)
                    ok = self.support.contains(x).reshape(idx.numel(), k)
                    inside[idx] += ok.sum(1, dtype=torch.float64)
                    drawn[idx] += k
                m = inside[rows] / drawn[rows]
                var_log = (1 - m) / (m * drawn[rows])  # inf where nothing was inside
                rows = rows[(drawn[rows] < n) & (var_log > SUPPORT_MASS_LOG_SE**2)]
        return (inside / drawn).float()

    def _draw(self, obs: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` samples for each of the checked observations ``obs`` ``(n_obs, dim_y)``,
        ``(n_obs * n, dim_x)`` or ``(n_obs, n, dim_x)``; subclasses (mixtures) draw here
        and :meth:`sample` keeps the argument checks in one place."""
        model_device = self.device
        was_training = self.model.training
        self.model.eval()
        try:
            y_s = self.model.y_norm(obs.to(model_device))
            flat_y = y_s.repeat_interleave(n, dim=0)
            out = []
            for start in range(0, flat_y.shape[0], self.batch_size):
                yb = flat_y[start : start + self.batch_size]
                # drawn on the CPU (where generators live), the same on every device
                z = self.model.sample_latent(yb.shape[0], generator)
                out.append(self.model.generate(yb, z.to(model_device)))
            return self.model.x_norm.inverse(torch.cat(out))
        finally:
            self.model.train(was_training)

    @property
    def has_log_prob(self) -> bool:
        return self.model.has_log_prob

    def _observations(self, y: Any) -> Tensor:
        # A model without observation (dim_y = 0, an unconditional flow) takes y=None.
        if y is None and self.dim_y == 0:
            return torch.zeros(1, 0)
        set_shape = self.model.set_shape
        if set_shape is not None:
            # a set model also takes sets shaped (m, set_dim) or (n_obs, m, set_dim)
            y = flatten_sets(y, set_shape)
        return as_observations(y, self.dim_y)

    @torch.no_grad()
    def log_prob(self, x: Any, y: Any = None, *, normalize: bool = True) -> Tensor:
        """``log q(x | y)`` for ``x`` ``(n, dim_x)`` and one ``y`` or ``n`` of them.

        For ``dim_y = 0`` (no observation) ``y`` is ``None``. Raises
        :class:`NoDensityError` for models without a tractable density (the joint INN, a
        conditional INN with ``latent_dim > dim_x``).

        With a :attr:`support`, ``x`` outside it has ``-inf``, and ``normalize`` divides
        the density by its mass inside the support (:meth:`support_mass`, estimated from
        1,000 to 10,000 draws per distinct observation) so that it integrates to one, as the
        samples are distributed; ``normalize=False`` skips that estimate (the density is
        then right up to one constant per observation: enough for self-normalised
        importance weights, not for an evidence estimate).
        """
        xs = as_observations(x, self.dim_x, name="x")
        obs = self._observations(y)
        if obs.shape[0] == 1:
            obs = obs.expand(xs.shape[0], -1)
        elif obs.shape[0] != xs.shape[0]:
            raise DataError(f"x has {xs.shape[0]} rows but observations have {obs.shape[0]}")
        lp = self._log_density(xs, obs)
        if self.support is None:
            return lp
        lp = lp.masked_fill(~self.support.contains(xs), -torch.inf)
        if normalize:
            distinct, index = torch.unique(obs, dim=0, return_inverse=True)
            mass = self.support_mass(distinct)
            if (mass == 0).any():
                i = int((mass == 0).nonzero()[0, 0])
                raise DataError(
                    f"log_prob: none of {SUPPORT_MASS_DRAWS} posterior draws at observation "
                    f"{distinct[i].tolist()} lies inside the prior's support, so the "
                    "restricted density cannot be normalised; pass normalize=False"
                )
            lp = lp - mass.log()[index]
        return lp

    def _log_density(self, xs: Tensor, obs: Tensor) -> Tensor:
        """The unrestricted ``log q(xs | obs)`` for checked rows; subclasses (mixtures)
        compute theirs here and :meth:`log_prob` keeps the checks and the support."""
        if not self.has_log_prob:
            raise NoDensityError(
                f"log_prob: model kind {self.model.kind!r} has no tractable density "
                "(a conditional INN with latent_dim = dim_x has one)"
            )
        self.model.eval()
        dev = self.device
        xs, obs = xs.to(dev), obs.to(dev)
        lp = self.model.log_prob_standardized(self.model.x_norm(xs), self.model.y_norm(obs))
        return (lp + self.model.x_norm.log_abs_det()).cpu()

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``model.json`` (and ``support.json`` with a
        :attr:`support`) to ``directory`` (created if needed), each file atomically;
        :meth:`load` (or ``vinaflow.load``) reads it back."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"save: {directory} exists and is not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.model, directory)
        write_support(directory, self.support)
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> Posterior:
        """The posterior saved in ``directory``: by :meth:`save` or a ``vinaflow run`` folder,
        on ``device`` (files are device-independent: loaded on the CPU, then moved).
        A folder of another registered format (:func:`register_folder_loader`; e.g. one
        written by :meth:`EnsemblePosterior.save`) loads as that posterior."""
        directory = Path(directory)
        for marker, loader in _FOLDER_LOADERS.items():
            if (directory / marker).is_file():
                return loader(directory, device)
        model, meta = load_model(directory)
        if not isinstance(model, AmortizedModel):
            kind = (meta.get("model") or {}).get("kind")
            raise ModelFileError(
                f"{directory} holds a model of kind {kind!r}, not a conditional posterior; "
                "unconditional flows load with vinaflow.models.serialization.load_model"
            )
        post = cls(model, support=read_support(directory))
        return post if str(device) == "cpu" else post.to(device)
