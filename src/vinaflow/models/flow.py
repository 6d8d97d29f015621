r"""Normalizing flow ``Q: z -> x`` for generative modelling.

:math:`x = Q(z)`, :math:`z \sim p_Z` (Gaussian, uniform on a box, or Student-t), with
density :math:`q(x) = p_Z(Q^{-1}(x))\,|\det J_{Q^{-1}}(x)|` (Papamakarios et al. 2021).

Two design choices matter for the support-mismatch and heavy-tail studies:

* **Normalization of x.** ``"standard"`` (mean / std, the default) suits most data;
  ``"robust"`` (median / IQR) suits heavy-tailed data, whose sample standard deviation
  is dominated by a few extreme points (and infinite in the limit for a Pareto tail
  index :math:`\alpha \le 2`); ``"none"`` trains in data units, which is what the
  support-mismatch study needs: there a base :math:`U(d, d + 1)` is *displaced by d data
  units* from the target :math:`U(0, 1)`, whereas standardising would rescale the target
  (by :math:`1/\mathrm{std} \approx 3.5`) and change the meaning of ``d``.
* **1-D data.** Coupling layers cannot split one coordinate, so a 1-D coupling flow is
  only affine and could not fit, e.g., a Pareto density. For ``dim == 1`` the flow stacks
  :class:`MonotoneElementwise` blocks instead: strictly increasing maps
  :math:`h(z) = a z + t + \sum_k b_k \tanh(c_k z + d_k)`, explicit in the sampling
  direction. Their slope is bounded above and below, so -- like coupling flows with
  clamped scales -- they keep the tail class of the base: a Gaussian base cannot produce
  a power-law tail (Jaini et al. 2020), which is what the heavy-tails study measures.

References:
    Papamakarios, Nalisnick, Rezende, Mohamed, Lakshminarayanan. Normalizing Flows for
    Probabilistic Modeling and Inference. JMLR 2021.

    Jaini, Kobyzev, Yu, Brubaker. Tails of Lipschitz Triangular Flows. ICML 2020.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, StudentT, Uniform

from vinaflow.blocks import build_flow
from vinaflow.blocks.base import InvertibleBlock
from vinaflow.blocks.sequence import InvertibleSequence
from vinaflow.errors import ConfigError, DataError
from vinaflow.models.normalization import Standardizer

__all__ = [
    "BASE_DISTRIBUTIONS",
    "NORMALIZATIONS",
    "MonotoneElementwise",
    "NormalizingFlow",
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


class NormalizingFlow(nn.Module):
    r"""Unconditional flow: ``x = Q(z)``, ``z ~ base``; density by change of variables.

    Internally ``x`` is normalised (see ``normalization``) and the bijection maps
    ``x_s -> z`` in its density direction (``rev=False``), so :math:`\log q(x) =
    \log p_Z(T(x_s)) + \log|\det J_T| + \log|\det J_{norm}|`; sampling runs ``rev=True``.

    Arguments:
        dim: Data dimension.
        arch: ``coupling`` or ``iresnet`` (``dim >= 2``); 1-D flows always use
            :class:`MonotoneElementwise` blocks with ``hidden`` tanh units.
        blocks, hidden, layers: Size of the bijection.
        base: ``gaussian``, ``uniform`` (``U(base_offset, base_offset + base_width)``) or
            ``student-t`` (``base_df`` degrees of freedom).
        normalization: ``standard``, ``robust`` or ``none`` (module docstring).
        seed: Initialisation seed.

    Example:
        >>> flow = NormalizingFlow(dim=2, blocks=2, hidden=16)
        >>> flow.sample(10).shape
        torch.Size([10, 2])
    """

    kind = "nf"

    def __init__(
        self,
        dim: int,
        arch: str = "coupling",
        blocks: int = 6,
        hidden: int = 128,
        layers: int = 2,
        base: str = "gaussian",
        base_offset: float = 0.0,
        base_df: float = 5.0,
        base_width: float = 1.0,
        normalization: str = "standard",
        seed: int = 0,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"model.dim must be an integer >= 1, got {dim!r}")
        if normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"model.normalization: unknown {normalization!r}; allowed: "
                f"{', '.join(NORMALIZATIONS)}"
            )
        self.dim = int(dim)
        self.normalization = normalization
        self.base = make_base(self.dim, base, base_offset, base_df, base_width)
        self._config = dict(
            dim=dim,
            arch=arch,
            blocks=blocks,
            hidden=hidden,
            layers=layers,
            base=base,
            base_offset=base_offset,
            base_df=base_df,
            base_width=base_width,
            normalization=normalization,
            seed=seed,
            **block_kwargs,
        )
        torch.manual_seed(seed)
        self.x_norm = Standardizer(self.dim)
        # The bijection acts on z - c (c = centre of the base) and adds c back: a fresh
        # flow still outputs the displaced base, but scales act about the base's centre.
        # Acting about 0 instead, a base at offset d gives the scale parameters a lever
        # arm d (dx/dlog a = a z ~ d), an ill-conditioned valley in which we measured the
        # fit stalling (std 0.08 instead of 0.29 for U(0, 1) at d = 5, any objective).
        center = base_offset + 0.5 * base_width if base == "uniform" else 0.0
        self.register_buffer("base_center", torch.full((self.dim,), float(center)))
        if self.dim == 1:
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
                self.dim,
                0,
                arch=arch,
                blocks=blocks,
                hidden=hidden,
                layers=layers,
                seed=seed,
                **block_kwargs,
            )

    @torch.no_grad()
    def fit_normalization(self, x: Tensor) -> None:
        """Fit the normalization of ``x`` ``(n, dim)`` to training data."""
        if self.normalization == "standard":
            self.x_norm.fit(x)
        elif self.normalization == "robust":
            self.x_norm.fit(x)  # validates shape and finiteness
            q = torch.quantile(x.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), 0)
            # IQR / 1.349 is the standard deviation for Gaussian data
            scale = (q[2] - q[0]) / 1.349
            scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
            self.x_norm.mean.copy_(q[1].float())
            self.x_norm.std.copy_(scale.float())

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if generator is None:
            return self.base.rsample((n,))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.base.rsample((n,))

    def generate_standardized(self, z: Tensor) -> Tensor:
        """Sampling direction ``z -> x_s`` (normalised units), differentiable."""
        x_s, _ = self.flow(z - self.base_center, rev=True)
        return x_s + self.base_center

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``(n, dim)`` in data units."""
        if int(n) < 1:
            raise DataError(f"number of samples n must be >= 1, got {n}")
        with torch.no_grad():
            return self.x_norm.inverse(self.generate_standardized(self.sample_base(n, generator)))

    def log_prob_standardized(self, x_s: Tensor) -> Tensor:
        z, log_det = self.flow(x_s - self.base_center)
        return self.base.log_prob(z + self.base_center) + log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """``log q(x)`` in data units for ``x`` ``(n, dim)``."""
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        with torch.no_grad():
            return self.log_prob_standardized(self.x_norm(x)) + self.x_norm.log_abs_det()

    def nll(self, x_s: Tensor, y_s: Tensor | None = None) -> Tensor:
        """Per-sample negative log-likelihood per dimension in normalised units.

        ``y_s`` is ignored: it lets the amortized-model trainer pass a zero-width ``y``.
        """
        return -self.log_prob_standardized(x_s) / self.dim

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._config}
