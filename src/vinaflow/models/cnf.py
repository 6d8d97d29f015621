r"""Continuous normalizing flow ``x <-> z`` given ``y``, trained by flow matching.

The bijection is the flow of an ODE :math:`\dot x_t = v_\phi(t, x_t; h(y))` on
:math:`t \in [0, 1]`: time 0 is the data (``x`` in standardised units), time 1 the
Gaussian base (Chen et al. 2018; Grathwohl et al. 2019). Sampling integrates from
``z ~ N(0, I)`` at ``t = 1`` back to ``t = 0``; the log-density follows from the
instantaneous change of variables

.. math:: \log q(x | y) = \log \mathcal N(z; 0, I) + \int_0^1 \operatorname{tr}
   \frac{\partial v_\phi}{\partial x}(t, x_t)\, dt,

with the trace computed exactly (``trace: exact``, one vector-Jacobian product per
coordinate; the default, cheap for the low-dimensional parameters of posterior
estimation) or by Hutchinson's unbiased estimator (``trace: hutchinson``, one product
per evaluation, for many parameters).

The velocity :math:`v_\phi` is trained by conditional flow matching
(:mod:`vinaflow.objectives.flow_matching`; Lipman et al. 2023, and for posteriors
Wildberger et al. 2023), which needs no ODE solve during training: the CNF is refused
with objectives that would differentiate through the solver (maximum likelihood,
sample-based and variational objectives), see
:func:`vinaflow.objectives.build.check_objective_model`.

Why zuko's :class:`~zuko.transforms.FreeFormJacobianTransform` and not
:class:`zuko.flows.CNF`: the transform is the well-kept part we need (adaptive
Dormand-Prince solve, adjoint gradients, exact and Hutchinson traces), while
``zuko.flows.CNF`` bundles its own base distribution, a network that takes the raw
context and no handle on per-call tolerances. Here the velocity network is vinaflow's
:class:`~vinaflow.nets.MLP` (its activation table and the in-place no-grad path that
sampling benefits from), the observation can pass through the same learned embedding
as the conditional INN, and standardisation and the ``Posterior`` contract are those
of every :class:`~vinaflow.models.base.AmortizedModel`.

References:
    Chen, Rubanova, Bettencourt, Duvenaud. Neural Ordinary Differential Equations.
    NeurIPS 2018.

    Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud. FFJORD: Free-form Continuous
    Dynamics for Scalable Reversible Generative Models. ICLR 2019.

    Lipman, Chen, Ben-Hamu, Nickel, Le. Flow Matching for Generative Modeling. ICLR 2023.

    Wildberger, Dax, Buchholz, Green, Macke, Schölkopf. Flow Matching for Scalable
    Simulation-Based Inference. NeurIPS 2023.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from zuko.transforms import FreeFormJacobianTransform

from vinaflow.errors import ConfigError, ConvergenceError
from vinaflow.models.base import AmortizedModel, Encoding
from vinaflow.models.summary import EMBEDDINGS, build_summary
from vinaflow.nets import ACTIVATIONS, MLP

__all__ = ["TRACES", "ContinuousFlow", "VelocityField"]

#: How the log-density's trace integral is computed.
TRACES = ("exact", "hutchinson")
#: Time of the data and of the base distribution on the ODE's time axis.
T_DATA, T_BASE = 0.0, 1.0


class VelocityField(nn.Module):
    r"""``v(t, x; c)``: an MLP of ``x``, a Fourier time embedding and the condition ``c``.

    The time enters as :math:`(\cos k\pi t, \sin k\pi t)_{k=1..K}` (the embedding of
    zuko's CNF): smooth in ``t`` and on the scale of the unit interval, so the network
    can bend the field near the data end without a large first-layer weight on ``t``.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        hidden: int,
        layers: int,
        activation: str,
        time_frequencies: int,
    ) -> None:
        super().__init__()
        if isinstance(time_frequencies, bool) or not isinstance(time_frequencies, int):
            raise ConfigError(
                f"model.time_frequencies must be an integer, got {time_frequencies!r}"
            )
        if time_frequencies < 1:
            raise ConfigError(f"model.time_frequencies must be >= 1, got {time_frequencies}")
        # Derived from the config, so not stored in model files.
        freqs = torch.arange(1, time_frequencies + 1, dtype=torch.float32) * math.pi
        self.register_buffer("freqs", freqs, persistent=False)
        self.net = MLP(dim + cond_dim + 2 * time_frequencies, dim, hidden, layers, activation)

    def forward(self, t: Tensor, x: Tensor, c: Tensor | None = None) -> Tensor:
        t = t.to(x).reshape(-1, 1).expand(x.shape[0], 1)
        emb = t * self.freqs
        parts = [x, emb.cos(), emb.sin()]
        if c is not None:
            parts.append(c)
        return self.net(torch.cat(parts, 1))


class ContinuousFlow(AmortizedModel):
    r"""A conditional CNF ``q(x | y)`` (``model.kind: cnf``); module docstring for the maths.

    Arguments:
        dim_x, dim_y: Dimensions of the parameters and of the observation (0: none, an
            unconditional flow).
        hidden, layers, activation: Width, depth and activation of the velocity MLP.
        time_frequencies: Number ``K`` of Fourier features of the time.
        embedding_dim, embedding_hidden, embedding, set_dim: Optional learned summary of
            ``y``, an MLP or a permutation-invariant set summary (as in the cINN).
        trace: ``exact`` or ``hutchinson`` trace of the log-density integral.
        atol, rtol: Tolerances of the adaptive ODE solver (sampling and log-density).
        max_evaluations: Velocity evaluations after which one ODE solve is declared
            failed (a stiff or diverging field would otherwise shrink the step forever).
        seed: Initialisation seed.

    Example:
        >>> cnf = ContinuousFlow(dim_x=2, dim_y=3, hidden=16)
        >>> cnf.generate(torch.zeros(5, 3), cnf.sample_latent(5)).shape
        torch.Size([5, 2])
    """

    kind = "cnf"
    #: What objectives train: the velocity field (flow matching), not the bijection.
    interfaces: ClassVar[tuple[str, ...]] = ("velocity",)
    #: The objective ``vinaflow.fit`` and ``vinaflow run`` use when none is given.
    default_objective: ClassVar[str] = "flow_matching"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "activation": tuple(ACTIVATIONS),
        "trace": TRACES,
        "embedding": EMBEDDINGS,
    }

    def __init__(
        self,
        dim_x: int,
        dim_y: int = 0,
        hidden: int = 128,
        layers: int = 3,
        activation: str = "elu",
        time_frequencies: int = 3,
        embedding_dim: int | None = None,
        embedding_hidden: int = 128,
        embedding: str = "mlp",
        set_dim: int | None = None,
        trace: str = "exact",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        max_evaluations: int = 20_000,
        seed: int = 0,
    ) -> None:
        for name, v, low in (("dim_x", dim_x, 1), ("dim_y", dim_y, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ConfigError(f"model.{name} must be an integer >= {low}, got {v!r}")
        if trace not in TRACES:
            raise ConfigError(f"model.trace: unknown value {trace!r}; allowed: {', '.join(TRACES)}")
        for name, tol in (("atol", atol), ("rtol", rtol)):
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
                raise ConfigError(f"model.{name} must be a number in (0, 1), got {tol!r}")
        if isinstance(max_evaluations, bool) or not isinstance(max_evaluations, int):
            raise ConfigError(f"model.max_evaluations must be an integer, got {max_evaluations!r}")
        if max_evaluations < 100:
            raise ConfigError(f"model.max_evaluations must be >= 100, got {max_evaluations}")
        super().__init__(int(dim_x), int(dim_y), int(dim_x))
        torch.manual_seed(seed)  # one seed for the summary, then the velocity field
        summary, cond_dim, embedding_dim = build_summary(
            embedding, int(dim_y), embedding_dim, embedding_hidden, set_dim
        )
        self.trace = trace
        self.atol, self.rtol = float(atol), float(rtol)
        self.max_evaluations = int(max_evaluations)
        self._config = dict(
            dim_x=int(dim_x),
            dim_y=int(dim_y),
            hidden=hidden,
            layers=layers,
            activation=activation,
            time_frequencies=time_frequencies,
            embedding_dim=embedding_dim,
            embedding_hidden=embedding_hidden,
            embedding=embedding,
            set_dim=getattr(summary, "set_dim", set_dim),
            trace=trace,
            atol=self.atol,
            rtol=self.rtol,
            max_evaluations=self.max_evaluations,
            seed=seed,
        )
        self.embedding: nn.Module = summary
        self.field = VelocityField(
            self.dim_x, cond_dim, hidden, layers, activation, time_frequencies
        )

    @property
    def has_log_prob(self) -> bool:
        return True

    def _condition(self, y_s: Tensor | None) -> Tensor | None:
        # An unconditional flow takes no condition at all, not a zero-width one.
        return self.embedding(y_s) if self.dim_y and y_s is not None else None

    def velocity(self, t: Tensor, x_s: Tensor, y_s: Tensor | None = None) -> Tensor:
        """The velocity at times ``t`` ``(n,)`` (or a scalar) and states ``x_s`` ``(n, dim_x)``."""
        return self.field(t, x_s, self._condition(y_s))

    def _transform(
        self, y_s: Tensor | None, exact: bool | None = None, tol: tuple[float, float] | None = None
    ) -> FreeFormJacobianTransform:
        """The data-to-base map ``x (t=0) -> z (t=1)`` for the observations ``y_s``."""
        c = self._condition(y_s)
        atol, rtol = tol if tol is not None else (self.atol, self.rtol)
        return FreeFormJacobianTransform(
            f=self._guarded(c),
            t0=T_DATA,
            t1=T_BASE,
            # the adjoint differentiates the parameters and the embedded condition
            phi=(*self.parameters(), *(() if c is None else (c,))),
            atol=atol,
            rtol=rtol,
            exact=self.trace == "exact" if exact is None else exact,
        )

    def _guarded(self, c: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
        """The velocity as the solver calls it, stopping a solve that cannot finish.

        zuko's adaptive solver shrinks the step until the error estimate passes; a
        non-finite velocity never passes and a diverging field shrinks it without end,
        so both end here with an error instead of a hang or NaN samples.
        """
        count = [0]

        def f(t: Tensor, x: Tensor) -> Tensor:
            count[0] += 1
            if count[0] > self.max_evaluations:
                raise ConvergenceError(
                    f"cnf: the ODE solve took more than model.max_evaluations="
                    f"{self.max_evaluations} velocity evaluations (a stiff or diverging "
                    "field, e.g. an input far outside the training data); raise "
                    "model.max_evaluations or loosen model.atol/model.rtol"
                )
            dx = self.field(t, x, c)
            if not bool(torch.isfinite(dx).all()):
                raise ConvergenceError(
                    f"cnf: non-finite velocity at t={float(t):.4g} during the ODE solve "
                    "(an input far outside the training data, or a diverged model)"
                )
            return dx

        return f

    def encode(self, x_s: Tensor, y_s: Tensor | None = None) -> Encoding:
        z, log_det = self._transform(y_s).call_and_ladj(x_s)
        return Encoding(z=z, log_det=log_det)

    def generate(self, y_s: Tensor | None, z: Tensor) -> Tensor:
        return self._transform(y_s).inv(z)

    def log_prob_standardized(self, x_s: Tensor, y_s: Tensor | None = None) -> Tensor:
        enc = self.encode(x_s, y_s)
        log_norm = -0.5 * self.dim_x * math.log(2 * math.pi)
        return log_norm - 0.5 * enc.z.pow(2).sum(1) + enc.log_det

    def nll(self, x_s: Tensor, y_s: Tensor | None = None) -> Tensor:
        """Per-coordinate negative log-likelihood (the trainer's validation loss).

        Flow matching trains the model; this is the held-out likelihood by which
        training keeps the best weights and stops.
        """
        return -self.log_prob_standardized(x_s, y_s) / self.dim_x

    def config(self) -> dict[str, Any]:
        cfg = {"kind": self.kind, **self._config}
        if not cfg["embedding_dim"]:
            # unused without an embedding; model files read sizes as lower bounds
            cfg.pop("embedding_hidden")
        if cfg["embedding"] == "mlp":
            # the default; files written before set summaries existed stay identical
            cfg.pop("embedding")
            cfg.pop("set_dim")
        return cfg
