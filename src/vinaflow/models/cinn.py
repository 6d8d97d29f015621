r"""Conditional INN ``x <-> z`` given ``y`` (Ardizzone et al. 2019b, "Guided image generation").

With ``dim_y = 0`` the same model is an unconditional normalizing flow ``x = Q(z)``
(Papamakarios et al. 2021): there is no observation, ``sample(n)`` draws from the
model and ``log_prob(x)`` is its density. Three options serve that case in particular
(they apply to any ``dim_y``):

* **Base distribution.** ``gaussian`` (the default), ``uniform`` on the box
  ``[base_offset, base_offset + base_width]^d`` (the support-mismatch study displaces it
  from the data) or ``student-t`` with ``base_df`` degrees of freedom (heavy tails).
* **Normalization of x.** ``standard`` (mean / std, the default); ``robust`` (median /
  IQR) for heavy-tailed data, whose sample standard deviation is dominated by a few
  extreme points (and infinite in the limit for a Pareto tail index
  :math:`\alpha \le 2`); ``none`` trains in data units, which the support-mismatch
  study needs: there a base :math:`U(d, d + 1)` is *displaced by d data units* from the
  target :math:`U(0, 1)`, whereas standardising would rescale the target (by
  :math:`1/\mathrm{std} \approx 3.5`) and change the meaning of ``d``. The observation
  ``y`` is always standardised.
* **1-D unconditional data.** Coupling layers cannot split one coordinate, so a 1-D
  coupling flow is only affine and could not fit, e.g., a Pareto density. For
  ``dim_x == 1`` and ``dim_y == 0`` (with ``arch`` other than ``spline``, whose 1-D splines
  are not affine) the model stacks :class:`MonotoneElementwise` blocks instead: strictly
  increasing maps :math:`h(z) = a z + t + \sum_k b_k \tanh(c_k z + d_k)`,
  explicit in the sampling direction. Their slope is bounded above and below, so -- like
  coupling flows with clamped scales -- they keep the tail class of the base: a Gaussian
  base cannot produce a power-law tail (Jaini et al. 2020), which the heavy-tails study
  measures.

References:
    Ardizzone, Lüth, Kruse, Rother, Köthe. Guided Image Generation with Conditional
    Invertible Neural Networks. arXiv:1907.02392, 2019.

    Papamakarios, Nalisnick, Rezende, Mohamed, Lakshminarayanan. Normalizing Flows for
    Probabilistic Modeling and Inference. JMLR 2021.

    Jaini, Kobyzev, Yu, Brubaker. Tails of Lipschitz Triangular Flows. ICML 2020.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, StudentT, Uniform

from vinaflow.blocks import build_flow
from vinaflow.blocks.base import InvertibleBlock
from vinaflow.blocks.sequence import InvertibleSequence
from vinaflow.errors import ConfigError, DataError
from vinaflow.models.base import AmortizedModel, Encoding
from vinaflow.models.summary import EMBEDDINGS, build_summary

__all__ = [
    "BASE_DISTRIBUTIONS",
    "NORMALIZATIONS",
    "ConditionalINN",
    "MonotoneElementwise",
    "make_base",
]

BASE_DISTRIBUTIONS = ("gaussian", "uniform", "student-t")
NORMALIZATIONS = ("standard", "robust", "none")


def make_base(
    dim: int, name: str = "gaussian", offset: float = 0.0, df: float = 5.0, width: float = 1.0
) -> Distribution:
    """Base distribution on ``R^dim``.

    ``uniform`` is ``U(offset, offset + width)^dim`` (a displaced support, used in the
    support-mismatch study); ``student-t`` has ``df`` degrees of freedom (heavy tails).
    Densities are ``-inf`` outside the support (no argument validation), so a data point
    the flow maps outside a uniform base's box gets zero likelihood instead of an error.
    """
    zeros, ones = torch.zeros(dim), torch.ones(dim)
    if name == "gaussian":
        return Independent(Normal(zeros, ones, validate_args=False), 1, validate_args=False)
    if name == "uniform":
        if not (math.isfinite(width) and width > 0):
            raise ConfigError(f"model.base_width must be a finite number > 0, got {width}")
        if not math.isfinite(offset):
            raise ConfigError(f"model.base_offset must be finite, got {offset}")
        box = Uniform(zeros + offset, zeros + offset + width, validate_args=False)
        return Independent(box, 1, validate_args=False)
    if name == "student-t":
        if not (math.isfinite(df) and df > 0):
            raise ConfigError(f"model.base_df must be a finite number > 0, got {df}")
        return Independent(StudentT(df * ones, zeros, ones, validate_args=False), 1)
    raise ConfigError(
        f"model.base: unknown base {name!r}; allowed: {', '.join(BASE_DISTRIBUTIONS)}"
    )


class MonotoneElementwise(InvertibleBlock):
    r"""Strictly increasing elementwise map, explicit in the *sampling* direction.

    Sampling (``rev=True``): :math:`x = h(z) = a z + t + \sum_{k=1}^K b_k \tanh(c_k z +
    d_k)` per coordinate, with :math:`a = e^{\alpha} > 0`, :math:`b_k = \mathrm{softplus}
    \ge 0`, :math:`c_k = e^{\gamma_k} > 0`, so :math:`h' \in [a, a + \sum_k b_k c_k]`.

    Density (``rev=False``): :math:`z = h^{-1}(x)` by bisection on the bracket
    :math:`[(x - t - B)/a, (x - t + B)/a]`, :math:`B = \sum_k b_k`, in float64 (60 halvings:
    exact to float32), followed by one Newton step whose gradient is the implicit-function
    gradient :math:`\partial z/\partial\theta = -(\partial h/\partial\theta) / h'(z)`; so
    maximum likelihood trains it without backpropagating through the bisection.

    Arguments:
        dim: Number of coordinates (each gets its own map).
        units: Number :math:`K` of tanh units per coordinate.
    """

    def __init__(self, dim: int, units: int = 16, seed: int = 0) -> None:
        super().__init__(dim, 0)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ConfigError(f"model.hidden (tanh units of a 1-D flow) must be >= 1, got {units}")
        g = torch.Generator().manual_seed(seed)
        self.log_a = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))
        # Start close to the identity (small b) with knots spread over the unit range.
        self.raw_b = nn.Parameter(torch.full((dim, units), -4.0))
        self.log_c = nn.Parameter(0.3 * torch.randn(dim, units, generator=g))
        self.d = nn.Parameter(torch.linspace(-2.5, 2.5, units).repeat(dim, 1))

    def _params(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.log_a.exp(), self.shift, F.softplus(self.raw_b), self.log_c.exp(), self.d

    def _h(self, z: Tensor) -> tuple[Tensor, Tensor]:
        a, t, b, c, d = self._params()
        th = torch.tanh(z[..., None] * c + d)
        x = a * z + t + (b * th).sum(-1)
        slope = a + (b * c * (1.0 - th * th)).sum(-1)
        return x, slope

    def forward(
        self, x: Tensor, c: Tensor | None = None, rev: bool = False
    ) -> tuple[Tensor, Tensor]:
        self._check_input(x, None)
        if rev:
            out, slope = self._h(x)
            return out, slope.log().sum(-1)
        z0 = self._invert(x.detach())
        h0, slope0 = self._h(z0)
        # One Newton step at the root: value z0, gradient of the implicit function.
        z = z0 - (h0 - x) / slope0.detach()
        _, slope = self._h(z)
        return z, -slope.log().sum(-1)

    @torch.no_grad()
    def _invert(self, x: Tensor) -> Tensor:
        a, t, b, c, d = (p.double() for p in self._params())
        xd = x.double()
        big = b.sum(-1)
        lo, hi = (xd - t - big) / a, (xd - t + big) / a
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            val = a * mid + t + (b * torch.tanh(mid[..., None] * c + d)).sum(-1)
            above = val > xd
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        return (0.5 * (lo + hi)).to(x.dtype)


class ConditionalINN(AmortizedModel):
    r"""A conditional normalizing flow ``z = T(x; h(y))`` with ``z ~ base``.

    ``h`` is the identity or, with ``embedding_dim``, a learned MLP summary of ``y``
    (useful for long observation vectors). With ``latent_dim > dim_x`` the
    parameters are padded with Gaussian noise (scale ``pad_noise``) and samples
    drop the padding; the log-density is then not available. ``dim_y = 0`` is an
    unconditional flow (module docstring).

    The log-density is :math:`\log p(x|y) = \log p_Z(T(x;y)) + \log|\det J_T|`. With a
    uniform base the bijection acts on ``x_s - c`` and adds ``c`` back, ``c`` the centre
    of the base box: a fresh model still outputs the displaced base, but scales act about
    the base's centre. Acting about 0 instead, a base at offset d gives the scale
    parameters a lever arm d (dx/dlog a = a z ~ d), an ill-conditioned valley in which we
    measured the fit stalling (std 0.08 instead of 0.29 for U(0, 1) at d = 5, any
    objective).

    Arguments:
        dim_x, dim_y: Dimensions of the parameters and of the observation (0: none).
        latent_dim: Latent dimension (``>= dim_x``; default ``dim_x``).
        arch: ``coupling``, ``spline`` (rational-quadratic spline couplings) or
            ``iresnet``; 1-D unconditional models use :class:`MonotoneElementwise` blocks
            with ``min(hidden, 64)`` tanh units unless ``arch`` is ``spline`` (a 1-D spline
            is not limited to affine maps, so it needs no replacement).
        blocks, hidden, layers: Size of the bijection.
        embedding_dim, embedding_hidden: Size and width of a learned summary of ``y``.
        embedding: ``mlp`` (an MLP summary when ``embedding_dim`` is set) or ``set`` (a
            permutation-invariant Deep Sets summary of ``y`` as a set of i.i.d. elements of
            ``set_dim`` values; :mod:`vinaflow.models.summary`).
        set_dim: Values per set element (``embedding: set``; default 1).
        pad_noise: Scale of the latent padding noise.
        base: ``gaussian``, ``uniform`` (``U(base_offset, base_offset + base_width)``) or
            ``student-t`` (``base_df`` degrees of freedom).
        normalization: ``standard``, ``robust`` or ``none`` (for ``x``).
        seed: Initialisation seed.

    Example:
        >>> cinn = ConditionalINN(dim_x=2, dim_y=3, blocks=2, hidden=16)
        >>> cinn.generate(torch.zeros(5, 3), cinn.sample_latent(5)).shape
        torch.Size([5, 2])
        >>> ConditionalINN(dim_x=2, dim_y=0, blocks=2, hidden=16).sample(10).shape
        torch.Size([10, 2])
    """

    kind = "cinn"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"embedding": EMBEDDINGS}

    def __init__(
        self,
        dim_x: int,
        dim_y: int = 0,
        latent_dim: int | None = None,
        arch: str = "coupling",
        blocks: int = 6,
        hidden: int = 128,
        layers: int = 2,
        embedding_dim: int | None = None,
        embedding_hidden: int = 128,
        embedding: str = "mlp",
        set_dim: int | None = None,
        pad_noise: float = 0.05,
        base: str = "gaussian",
        base_offset: float = 0.0,
        base_df: float = 5.0,
        base_width: float = 1.0,
        normalization: str = "standard",
        seed: int = 0,
        **block_kwargs: Any,
    ) -> None:
        for name, v, low in (("dim_x", dim_x, 1), ("dim_y", dim_y, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ConfigError(f"model.{name} must be an integer >= {low}, got {v!r}")
        latent_dim = int(latent_dim) if latent_dim is not None else int(dim_x)
        if latent_dim < dim_x:
            raise ConfigError(
                f"model.latent_dim of a cinn must be >= dim_x={dim_x} (a conditional flow "
                f"over x cannot have fewer latent coordinates), got {latent_dim}"
            )
        if normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"model.normalization: unknown {normalization!r}; allowed: "
                f"{', '.join(NORMALIZATIONS)}"
            )
        if base != "gaussian" and latent_dim != dim_x:
            raise ConfigError(
                f"model.base={base!r} needs latent_dim == dim_x (the padding noise is Gaussian)"
            )
        super().__init__(dim_x, dim_y, latent_dim)
        # One seed for the summary and then the flow, in that order: the initialisation
        # of saved models (MLP summary or none) is unchanged.
        torch.manual_seed(seed)
        summary, cond_dim, embedding_dim = build_summary(
            embedding, int(dim_y), embedding_dim, embedding_hidden, set_dim
        )
        self.pad_noise = float(pad_noise)
        self.normalization = normalization
        self.base_name = base
        self._config = dict(
            dim_x=dim_x,
            dim_y=dim_y,
            latent_dim=latent_dim,
            arch=arch,
            blocks=blocks,
            hidden=hidden,
            layers=layers,
            embedding_dim=embedding_dim,
            embedding_hidden=embedding_hidden,
            embedding=embedding,
            set_dim=getattr(summary, "set_dim", set_dim),
            pad_noise=pad_noise,
            base=base,
            base_offset=base_offset,
            base_df=base_df,
            base_width=base_width,
            normalization=normalization,
            seed=seed,
            **block_kwargs,
        )
        self.base = make_base(latent_dim, base, base_offset, base_df, base_width)
        center = base_offset + 0.5 * base_width if base == "uniform" else 0.0
        self._centered = center != 0.0
        # Derived from the config, so not stored in model files (persistent=False).
        self.register_buffer(
            "base_center", torch.full((latent_dim,), float(center)), persistent=False
        )
        self.embedding: nn.Module = summary
        if latent_dim == 1 and dim_y == 0 and arch != "spline":
            if block_kwargs:
                raise ConfigError(f"1-D flows take no block options, got {sorted(block_kwargs)}")
            if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
                raise ConfigError(f"model.blocks must be an integer >= 1, got {blocks!r}")
            units = min(int(hidden), 64)  # beyond ~64 units a 1-D map gains nothing
            self.flow = InvertibleSequence(
                [MonotoneElementwise(1, units, seed=seed + i) for i in range(blocks)]
            )
        else:
            self.flow = build_flow(
                latent_dim,
                cond_dim,
                arch=arch,
                blocks=blocks,
                hidden=hidden,
                layers=layers,
                seed=seed,
                **block_kwargs,
            )

    @property
    def n_pad(self) -> int:
        return self.latent_dim - self.dim_x

    @property
    def has_log_prob(self) -> bool:
        return self.n_pad == 0

    @torch.no_grad()
    def fit_normalization(self, x: Tensor, y: Tensor | None = None) -> None:
        """Fit the normalization of ``x`` (per ``normalization``) and ``y`` to training data."""
        y = self._observations_of(y, x.shape[0])
        if self.dim_y:  # nothing to fit without an observation
            self._fit_y_norm(y)
        if self.normalization == "none":
            return
        self.x_norm.fit(x)  # also validates shape and finiteness
        if self.normalization == "robust":
            q = torch.quantile(x.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), 0)
            # IQR / 1.349 is the standard deviation for Gaussian data
            scale = (q[2] - q[0]) / 1.349
            scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
            self.x_norm.mean.copy_(q[1].float())
            self.x_norm.std.copy_(scale.float())

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` latent draws ``(n, latent_dim)`` from the base.

        A conditional Gaussian model draws ``torch.randn`` from ``generator``; every other
        model draws from the base distribution under a seed taken from ``generator``
        (the random stream unconditional flows have always used, so saved flows sample
        as they did).
        """
        if self.base_name == "gaussian" and self.dim_y:
            return torch.randn(n, self.latent_dim, generator=generator)
        if generator is None:
            return self.base.rsample((n,))
        # torch distributions take no generator: draw under a seed taken from it.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.base.rsample((n,))

    def _condition(self, y_s: Tensor | None) -> Tensor | None:
        # An unconditional flow takes no condition at all (c=None), not a zero-width one.
        return self.embedding(y_s) if self.dim_y else None

    def encode(self, x_s: Tensor, y_s: Tensor | None = None) -> Encoding:
        if self.n_pad:
            # drawn on the CPU generator (the same draws on every device), then moved
            noise = self.pad_noise * torch.randn(x_s.shape[0], self.n_pad, dtype=x_s.dtype).to(x_s)
            x_s = torch.cat([x_s, noise], dim=1)
        if self._centered:
            x_s = x_s - self.base_center
        z, log_det = self.flow(x_s, self._condition(y_s))
        if self._centered:
            z = z + self.base_center
        return Encoding(z=z, log_det=log_det)

    def generate(self, y_s: Tensor | None, z: Tensor) -> Tensor:
        if self._centered:
            z = z - self.base_center
        x, _ = self.flow(z, self._condition(y_s), rev=True)
        x = x[:, : self.dim_x]
        return x + self.base_center if self._centered else x

    def log_prob_standardized(self, x_s: Tensor, y_s: Tensor | None = None) -> Tensor:
        if self.n_pad:
            raise NotImplementedError("log_prob is not tractable with padded latent dimensions")
        enc = self.encode(x_s, y_s)
        if self.base_name != "gaussian":
            return self.base.log_prob(enc.z) + enc.log_det
        log_norm = -0.5 * self.latent_dim * math.log(2 * math.pi)
        return log_norm - 0.5 * enc.z.pow(2).sum(1) + enc.log_det

    def nll(self, x_s: Tensor, y_s: Tensor | None = None) -> Tensor:
        if self.base_name != "gaussian":
            return -self.log_prob_standardized(x_s, y_s) / self.latent_dim
        enc = self.encode(x_s, y_s)
        return (0.5 * enc.z.pow(2).sum(1) - enc.log_det) / self.latent_dim

    def _observations_of(self, y: Any, n: int) -> Tensor:
        """``(n, dim_y)`` observations: ``y`` one observation or ``n``; none for ``dim_y = 0``."""
        if y is None:
            if self.dim_y:
                raise DataError(f"this model is conditional: pass y with {self.dim_y} values")
            return torch.zeros(n, 0)
        y = torch.as_tensor(y, dtype=torch.float32)
        if y.ndim == 1:
            y = y[None]
        if y.ndim != 2 or y.shape[1] != self.dim_y or y.shape[0] not in (1, n):
            raise DataError(
                f"y must have shape ({self.dim_y},) or ({n}, {self.dim_y}), got {tuple(y.shape)}"
            )
        return y.expand(n, -1)

    def sample(self, n: int, generator: torch.Generator | None = None, y: Any = None) -> Tensor:
        """``n`` samples ``(n, dim_x)`` in data units (given one observation ``y``, if any).

        Non-finite samples are returned as they are (counted by the evaluation);
        :class:`~vinaflow.models.Posterior` is the checked, batched interface.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"number of samples n must be an integer >= 1, got {n!r}")
        y_s = self.y_norm(self._observations_of(y, int(n)))
        with torch.no_grad():
            return self.x_norm.inverse(self.generate(y_s, self.sample_latent(int(n), generator)))

    def log_prob(self, x: Any, y: Any = None) -> Tensor:
        """``log q(x | y)`` (``log q(x)`` for ``dim_y = 0``) in data units, ``x`` ``(n, dim_x)``."""
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.dim_x:
            raise DataError(f"x must have shape (n, {self.dim_x}), got {tuple(x.shape)}")
        y_s = self.y_norm(self._observations_of(y, x.shape[0]))
        with torch.no_grad():
            return self.log_prob_standardized(self.x_norm(x), y_s) + self.x_norm.log_abs_det()

    def config(self) -> dict[str, Any]:
        cfg = {"kind": self.kind, **self._config}
        if not cfg["embedding_dim"]:
            # Unused without an embedding; the model-file check reads every size setting
            # as a lower bound on the stored weights, which a small flow would fail.
            cfg.pop("embedding_hidden")
        if cfg["embedding"] == "mlp":
            # the default; files written before set summaries existed stay identical
            cfg.pop("embedding")
            cfg.pop("set_dim")
        return cfg
