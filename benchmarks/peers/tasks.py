"""sbibm's tasks as vinaflow problems: ``two_moons``, ``gaussian_linear``, ``gaussian_mixture``,
``gaussian_linear_uniform``, ``bernoulli_glm``, ``sir``, ``lotka_volterra`` and ``slcp``.

Implemented from the task definitions in sbibm 1.1.0 (``sbibm/tasks/<task>/task.py``,
Lueckmann et al. 2021, "Benchmarking Simulation-Based Inference"):

- ``two_moons``: ``theta ~ U([-1, 1]^2)``; ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``,
  ``p = (r cos a + 0.25, r sin a)``; with ``z0 = (theta0 + theta1) / sqrt 2`` and
  ``z1 = (theta1 - theta0) / sqrt 2`` (rotation by -pi/4), ``y = p + (-|z0|, z1)``.
- ``gaussian_linear`` (dim 10): ``theta ~ N(0, 0.1 I)`` (covariance), ``y ~ N(theta, 0.1 I)``;
  posterior ``N(y / 2, 0.05 I)``.
- ``gaussian_mixture`` (dim 2): ``theta ~ U([-10, 10]^2)``;
  ``y ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)``; posterior: the same mixture centred on
  ``y``, truncated to the prior box.
- ``gaussian_linear_uniform`` (dim 10): ``theta ~ U([-1, 1]^10)``, ``y ~ N(theta, 0.1 I)``;
  posterior ``N(y, 0.1 I)`` truncated to the prior box.
- ``bernoulli_glm`` (10 parameters, 10 summaries): ``theta ~ N(0, B^-1)`` with a smoothness
  precision ``B`` (:class:`BernoulliGLMTask`); 100 time bins of a white-noise stimulus ``I``
  (seed 42), design matrix ``X = [1, I_t, I_{t-1}, ..., I_{t-8}]``, spikes
  ``s_t ~ Bernoulli(sigmoid(X theta)_t)``; summaries: the spike count and the
  spike-triggered sums ``sum_t s_t I_{t-j}``, ``j = 0..8`` (together ``X^T s``, sufficient).
- ``sir`` (2 parameters, 10 data): ``beta ~ LogNormal(log 0.4, 0.5)``,
  ``gamma ~ LogNormal(log 0.125, 0.2)``; SIR ODE with ``N = 10^6``, ``I(0) = 1``, ``R(0) = 0``;
  ``y_k ~ Binomial(1000, I(t_k) / N)`` at ``t_k = 0, 17, ..., 153`` days.
- ``lotka_volterra`` (4 parameters, 20 data): ``alpha, gamma ~ LogNormal(-0.125, 0.5)``,
  ``beta, delta ~ LogNormal(-3, 0.5)``; ``x' = alpha x - beta x y``, ``y' = -gamma y + delta x y``
  from ``(30, 1)``; ``log y_k ~ N(log clip(u(t_k), 1e-10, 1e4), 0.1^2)`` for prey then
  predators at ``t_k = 0, 2.1, ..., 18.9``.
- ``slcp`` (5 parameters, 8 data; a development task, not in the benchmark):
  :class:`SLCPTask`.

sbibm solves its ODEs with Julia's DifferentialEquations.jl; we use SciPy's ``solve_ivp``
(:func:`solve_batched`), one system for a chunk of parameter rows. A row whose solve fails
is never returned as NaN: :meth:`ODETask.simulate` raises :class:`~vinaflow.errors.DataError`
naming the rows, and :meth:`ODETask.simulate_valid` drops them and counts them.

:func:`posterior_predictive_check` compares simulations at reference posterior samples with
the observation they were drawn for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor
from torch.distributions import Independent, LogNormal, MultivariateNormal, Normal, Uniform

from vinaflow.errors import DataError
from vinaflow.problems.base import Problem

__all__ = [
    "BernoulliGLMTask",
    "GaussianLinearTask",
    "GaussianLinearUniformTask",
    "GaussianMixtureTask",
    "LotkaVolterraTask",
    "ODETask",
    "SIRTask",
    "SLCPTask",
    "TwoMoonsTask",
    "make_task",
    "posterior_predictive_check",
    "solve_batched",
]


class TwoMoonsTask(Problem):
    """sbibm ``two_moons``: a crescent-shaped, bimodal posterior in 2-D."""

    name = "two_moons"

    def __init__(self) -> None:
        self.dim_x = self.dim_y = 2
        self.param_names = ["theta1", "theta2"]
        self.prior = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n = x.shape[0]
        u = torch.rand(n, generator=generator, dtype=x.dtype)
        a = (u - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(n, generator=generator, dtype=x.dtype)
        p = torch.stack((torch.cos(a) * r + 0.25, torch.sin(a) * r), dim=1)
        c = s = 1.0 / math.sqrt(2.0)  # cos(-pi/4) = 1/sqrt2, sin(-pi/4) = -1/sqrt2
        z0 = c * x[:, 0] + s * x[:, 1]
        z1 = -s * x[:, 0] + c * x[:, 1]
        return p + torch.stack((-torch.abs(z0), z1), dim=1)


class GaussianLinearTask(Problem):
    """sbibm ``gaussian_linear``: ``theta ~ N(0, s_p^2 I)``, ``y ~ N(theta, s_n^2 I)``."""

    name = "gaussian_linear"

    def __init__(self, dim: int = 10, prior_var: float = 0.1, noise_var: float = 0.1) -> None:
        self.dim_x = self.dim_y = dim
        self.param_names = [f"theta{i + 1}" for i in range(dim)]
        self.prior_var, self.noise_var = prior_var, noise_var
        self.prior = Independent(
            Normal(torch.zeros(dim), math.sqrt(prior_var) * torch.ones(dim)), 1
        )

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + math.sqrt(self.noise_var) * eps

    def posterior_moments(self, y: Tensor) -> tuple[Tensor, float]:
        """Posterior mean (dim,) and per-coordinate variance for one observation ``y``."""
        var = 1.0 / (1.0 / self.prior_var + 1.0 / self.noise_var)
        return var / self.noise_var * y.reshape(-1), var

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        mean, var = self.posterior_moments(y)
        eps = torch.randn(n, self.dim_x, generator=generator, dtype=mean.dtype)
        return mean + math.sqrt(var) * eps


class GaussianMixtureTask(Problem):
    """sbibm ``gaussian_mixture``: ``y ~ 0.5 N(theta, I) + 0.5 N(theta, 0.1^2 I)``."""

    name = "gaussian_mixture"
    scales = (1.0, 0.1)

    def __init__(self, dim: int = 2, bound: float = 10.0) -> None:
        self.dim_x = self.dim_y = dim
        self.bound = bound
        self.param_names = [f"theta{i + 1}" for i in range(dim)]
        self.prior = Independent(Uniform(-bound * torch.ones(dim), bound * torch.ones(dim)), 1)

    def _scale(self, n: int, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
        idx = torch.rand(n, 1, generator=generator) < 0.5
        return torch.where(idx, self.scales[0], self.scales[1]).to(dtype)

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        scale = self._scale(x.shape[0], generator, x.dtype)
        return x + scale * torch.randn(x.shape, generator=generator, dtype=x.dtype)

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        y = y.reshape(1, -1).to(torch.get_default_dtype())
        out: list[Tensor] = []
        have = 0
        while have < n:
            m = 2 * (n - have) + 16
            s = y + self._scale(m, generator, y.dtype) * torch.randn(
                m, self.dim_x, generator=generator, dtype=y.dtype
            )
            s = s[(s.abs() <= self.bound).all(dim=1)]
            out.append(s)
            have += len(s)
        return torch.cat(out)[:n]


class GaussianLinearUniformTask(Problem):
    """sbibm ``gaussian_linear_uniform``: ``theta ~ U([-b, b]^d)``, ``y ~ N(theta, s_n^2 I)``."""

    name = "gaussian_linear_uniform"

    def __init__(self, dim: int = 10, bound: float = 1.0, noise_var: float = 0.1) -> None:
        self.dim_x = self.dim_y = dim
        self.bound, self.noise_var = bound, noise_var
        self.param_names = [f"theta{i + 1}" for i in range(dim)]
        self.prior = Independent(Uniform(-bound * torch.ones(dim), bound * torch.ones(dim)), 1)

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + math.sqrt(self.noise_var) * eps

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``N(y, s_n^2 I)`` truncated to the prior box, by rejection (as sbibm draws it)."""
        y = y.reshape(1, -1).to(torch.get_default_dtype())
        out: list[Tensor] = []
        have, tried, accepted = 0, 0, 0
        while have < n:
            # draw about twice what the acceptance rate so far says is missing
            rate = max(accepted / tried, 1e-3) if tried else 0.5
            m = min(int(2 * (n - have) / rate) + 16, 1_000_000)
            s = y + math.sqrt(self.noise_var) * torch.randn(
                m, self.dim_x, generator=generator, dtype=y.dtype
            )
            s = s[(s.abs() <= self.bound).all(dim=1)]
            out.append(s)
            have += len(s)
            tried, accepted = tried + m, accepted + len(s)
        return torch.cat(out)[:n]


class BernoulliGLMTask(Problem):
    r"""sbibm ``bernoulli_glm``: a Bernoulli GLM of a spike train with a smoothness prior.

    The stimulus is sbibm's: 100 bins of white noise from ``np.random.RandomState(42)``
    (float32); the design matrix has a column of ones and the stimulus delayed by
    ``0..8`` bins. The prior precision is ``B = diag(0.5, F^T F)`` with
    ``F = D^2 + diag(sqrt(k / 9))``, ``D`` the first-difference matrix on 9 filter taps,
    which favours smooth filters. Summaries are ``X^T s`` (spike count, then the
    spike-triggered stimulus sums), the same numbers sbibm computes with a padded
    ``conv1d``.
    """

    name = "bernoulli_glm"
    n_bins = 100
    n_taps = 9
    stimulus_seed = 42

    def __init__(self) -> None:
        self.dim_x = self.dim_y = self.n_taps + 1
        self.param_names = ["offset"] + [f"filter{i + 1}" for i in range(self.n_taps)]
        rng = np.random.RandomState(self.stimulus_seed)
        self.stimulus = torch.from_numpy(rng.randn(self.n_bins).astype(np.float32))
        design = torch.zeros(self.n_bins, self.n_taps)
        for j in range(self.n_taps):
            design[j:, j] = self.stimulus[: self.n_bins - j]
        self.design = torch.cat((torch.ones(self.n_bins, 1), design), dim=1)
        m = self.n_taps
        diff = torch.eye(m) - torch.diag(torch.ones(m - 1), -1)
        f = diff @ diff + torch.diag(torch.sqrt(torch.arange(m) / m))
        precision = torch.zeros(m + 1, m + 1)
        precision[0, 0] = 0.5
        precision[1:, 1:] = f.T @ f
        self.prior_precision = precision
        self.prior = MultivariateNormal(torch.zeros(m + 1), precision_matrix=precision)

    def spikes(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Spike trains ``(n, 100)`` of 0/1 for parameters ``x`` ``(n, 10)``."""
        rate = torch.sigmoid(x.float() @ self.design.T)
        return (torch.rand(rate.shape, generator=generator) < rate).float()

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return (self.spikes(x, generator) @ self.design).to(x.dtype)


def solve_batched(
    rhs: Callable[[float, np.ndarray, np.ndarray], np.ndarray],
    u0: np.ndarray,
    params: np.ndarray,
    t_eval: np.ndarray,
    chunk: int = 1024,
    rtol: float = 1e-9,
    atol: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``u' = rhs(t, u, p)`` from ``u(t_eval[0]) = u0`` for every row ``p`` of ``params``.

    ``rhs(t, u, p)`` takes the states ``(k, m)`` of ``m`` rows and their parameters
    ``(m, n_params)`` and returns ``(k, m)``. Rows are solved ``chunk`` at a time as one
    system (SciPy's ``DOP853``); its error control is on the root-mean-square over the
    system, so a single row may carry up to ``sqrt(k * chunk)`` times the tolerance: at
    the defaults, about 1e-6 in the log-populations of the tasks here (measured against
    per-row solves at tolerance 1e-12), far below their observation noise. A chunk that
    fails or gives non-finite values is re-solved row by row.

    Returns ``(solutions (n, k, len(t_eval)), ok (n,))``; failed rows are zero, ``ok`` false.
    """
    n, k, steps = len(params), len(u0), len(t_eval)
    out = np.zeros((n, k, steps))
    ok = np.zeros(n, dtype=bool)
    pending = [np.arange(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    while pending:
        rows = pending.pop()
        p = params[rows]
        if not np.isfinite(p).all():
            if len(rows) > 1:
                pending.extend(np.array_split(rows, len(rows)))
            continue
        m = len(rows)

        def f(t: float, v: np.ndarray, p: np.ndarray = p, m: int = m) -> np.ndarray:
            return rhs(t, v.reshape(k, m), p).reshape(-1)

        with np.errstate(over="ignore", invalid="ignore"):  # a failure is reported below
            sol = solve_ivp(
                f,
                (float(t_eval[0]), float(t_eval[-1])),
                np.repeat(u0[:, None], m, axis=1).reshape(-1),
                method="DOP853",
                t_eval=t_eval,
                rtol=rtol,
                atol=atol,
            )
        if sol.status == 0 and sol.y.shape[1] == steps and np.isfinite(sol.y).all():
            out[rows] = sol.y.reshape(k, m, steps).transpose(1, 0, 2)
            ok[rows] = True
        elif m > 1:
            pending.extend(np.array_split(rows, m))
    return out, ok


class ODETask(Problem):
    """A task whose simulator solves an ODE, then draws observation noise.

    Subclasses implement :meth:`solve` (the noise-free state at the observation times,
    per row, and which rows solved) and :meth:`observe` (the noise model).
    """

    def solve(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(states (n, dim_y), ok (n,))``; the states of rows with ``ok`` false are 0."""
        raise NotImplementedError

    def observe(self, states: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noisy observations ``(n, dim_y)`` of the solved states."""
        raise NotImplementedError

    def _simulate(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        states, ok = self.solve(x)
        # Noise for every row, so the draws of the other rows do not depend on failures.
        return self.observe(states, generator).to(x.dtype), ok

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Observations for every row of ``x``; raises :class:`DataError` if a solve failed."""
        y, ok = self._simulate(x, generator)
        if not bool(ok.all()):
            bad = (~ok).nonzero()[:, 0]
            raise DataError(
                f"{self.name}: the ODE solve failed for {len(bad)} of {len(x)} parameter rows "
                f"(first: row {int(bad[0])}, {x[bad[0]].tolist()}); use simulate_valid to "
                "drop and count them"
            )
        return y

    def simulate_valid(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, int]:
        """``(x_kept, y, n_dropped)``: the rows whose ODE solve succeeded, and how many failed."""
        y, ok = self._simulate(x, generator)
        return x[ok], y[ok], int((~ok).sum())


class SIRTask(ODETask):
    r"""sbibm ``sir``: an SIR epidemic, binomial counts of infected at 10 days.

    Solved in log-fractions (:math:`s = S/N`, :math:`i = I/N`):
    :math:`(\log s)' = -\beta i`, :math:`(\log i)' = \beta s - \gamma` (the SIR equations
    divided by the state, so the relative accuracy of :math:`i` holds while it is
    :math:`10^{-6}`). ``R`` is not observed.
    """

    name = "sir"
    population = 1e6
    infected0 = 1.0
    total_count = 1000
    #: sbibm saves days 0..160 and keeps every 17th: days 0, 17, ..., 153.
    times = 17.0 * np.arange(10)

    def __init__(self) -> None:
        self.dim_x, self.dim_y = 2, len(self.times)
        self.param_names = ["beta", "gamma"]
        loc = torch.tensor([math.log(0.4), math.log(0.125)])
        self.prior = Independent(LogNormal(loc, torch.tensor([0.5, 0.2])), 1)

    @staticmethod
    def _rhs(t: float, u: np.ndarray, p: np.ndarray) -> np.ndarray:
        beta, gamma = p[:, 0], p[:, 1]
        return np.stack((-beta * np.exp(u[1]), beta * np.exp(u[0]) - gamma))

    def solve(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Infected fractions ``I(t_k) / N`` ``(n, 10)``."""
        i0 = self.infected0 / self.population
        u0 = np.array([math.log1p(-i0), math.log(i0)])
        sol, ok = solve_batched(self._rhs, u0, x.double().numpy(), self.times)
        return torch.from_numpy(np.exp(sol[:, 1])), torch.from_numpy(ok)

    def observe(self, states: Tensor, generator: torch.Generator | None = None) -> Tensor:
        probs = states.clamp(0.0, 1.0)
        count = torch.full_like(probs, float(self.total_count))
        return torch.binomial(count, probs, generator=generator)


class LotkaVolterraTask(ODETask):
    r"""sbibm ``lotka_volterra``: predator-prey dynamics, log-normal observations.

    Solved in log-populations: :math:`(\log x)' = \alpha - \beta y`,
    :math:`(\log y)' = -\gamma + \delta x` (populations stay positive, and their swings over
    orders of magnitude keep a uniform relative accuracy).
    """

    name = "lotka_volterra"
    u0 = (30.0, 1.0)
    noise_scale = 0.1
    clip = (1e-10, 1e4)  # sbibm clamps the populations before the log
    #: sbibm saves t = 0, 0.1, ..., 20 and keeps every 21st: t = 0, 2.1, ..., 18.9.
    times = 2.1 * np.arange(10)

    def __init__(self) -> None:
        self.dim_x, self.dim_y = 4, 2 * len(self.times)
        self.param_names = ["alpha", "beta", "gamma", "delta"]
        loc = torch.tensor([-0.125, -3.0, -0.125, -3.0])
        self.prior = Independent(LogNormal(loc, torch.full((4,), 0.5)), 1)

    @staticmethod
    def _rhs(t: float, u: np.ndarray, p: np.ndarray) -> np.ndarray:
        alpha, beta, gamma, delta = p.T
        return np.stack((alpha - beta * np.exp(u[1]), -gamma + delta * np.exp(u[0])))

    def solve(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Log-populations ``(n, 20)``: prey at the 10 times, then predators."""
        u0 = np.log(np.array(self.u0))
        sol, ok = solve_batched(self._rhs, u0, x.double().numpy(), self.times)
        return torch.from_numpy(sol.reshape(len(x), -1)), torch.from_numpy(ok)

    def observe(self, states: Tensor, generator: torch.Generator | None = None) -> Tensor:
        log_u = states.clamp(math.log(self.clip[0]), math.log(self.clip[1]))
        eps = torch.randn(log_u.shape, generator=generator, dtype=log_u.dtype)
        return torch.exp(log_u + self.noise_scale * eps)


class SLCPTask(Problem):
    """sbibm ``slcp`` (simple likelihood, complex posterior): ``theta ~ U([-3, 3]^5)``;
    four draws ``y_j ~ N(m, S)`` with ``m = (theta1, theta2)``, ``s1 = theta3^2``,
    ``s2 = theta4^2``, ``rho = tanh(theta5)``, ``S = [[s1^2, rho s1 s2], [rho s1 s2, s2^2]]
    + 1e-6 I``, flattened to 8 values. Its posterior has four symmetric modes (the signs of
    theta3 and theta4). A development task: held out from the peers benchmark's tasks, it
    is where ``vinaflow.fit``'s defaults are tuned (``benchmarks/peers/defaults_dev.py``)."""

    name = "slcp"
    dim_x, dim_y = 5, 8

    def __init__(self) -> None:
        self.param_names = [f"theta{i + 1}" for i in range(5)]
        self.prior = Independent(Uniform(-3.0 * torch.ones(5), 3.0 * torch.ones(5)), 1)

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        s1, s2, rho = x[:, 2] ** 2, x[:, 3] ** 2, torch.tanh(x[:, 4])
        cov = torch.empty(len(x), 2, 2, dtype=x.dtype)
        cov[:, 0, 0] = s1**2 + 1e-6
        cov[:, 1, 1] = s2**2 + 1e-6
        cov[:, 0, 1] = cov[:, 1, 0] = rho * s1 * s2
        chol = torch.linalg.cholesky(cov.double()).to(x.dtype)
        eps = torch.randn(len(x), 4, 2, 1, generator=generator, dtype=x.dtype)
        draws = x[:, None, :2] + (chol[:, None] @ eps)[..., 0]
        return draws.reshape(len(x), 8)


_TASKS: dict[str, type[Problem]] = {
    "two_moons": TwoMoonsTask,
    "gaussian_linear": GaussianLinearTask,
    "gaussian_mixture": GaussianMixtureTask,
    "gaussian_linear_uniform": GaussianLinearUniformTask,
    "bernoulli_glm": BernoulliGLMTask,
    "sir": SIRTask,
    "lotka_volterra": LotkaVolterraTask,
    "slcp": SLCPTask,
}


def make_task(name: str) -> Problem:
    """The task called ``name`` (sbibm's name: a key of ``_TASKS``)."""
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {sorted(_TASKS)}")
    return _TASKS[name]()


def posterior_predictive_check(
    task: Problem,
    samples: np.ndarray | Tensor,
    observation: np.ndarray | Tensor,
    n: int = 2000,
    k: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Is the observation typical of simulations at (reference) posterior samples?

    Simulates ``y_i ~ p(y | theta_i)`` at ``n`` of the ``samples`` and returns

    - ``knn_pvalue``: the fraction of predictive draws whose mean distance to their ``k``
      nearest other draws is at least the observation's (a density-rank p-value; small
      means the observation sits where the predictive puts little mass, as a wrong
      simulator or a wrong reference would make it),
    - ``mahalanobis_pvalue``: the same with the Mahalanobis distance to the predictive
      mean (rougher, for unimodal predictives),
    - ``mean_z``: the largest absolute z-score of the observation per coordinate.

    Under a correct simulator and reference both p-values are roughly uniform over
    observations; values below about 1e-3 flag a mismatch.
    """
    g = torch.Generator().manual_seed(seed)
    theta = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    obs = torch.as_tensor(np.asarray(observation), dtype=torch.float32).reshape(1, -1)
    idx = torch.randperm(len(theta), generator=g)[:n]
    y = task.simulate(theta[idx], generator=g)
    mu, sd = y.mean(0, keepdim=True), y.std(0, keepdim=True).clamp_min(1e-12)
    yz, oz = (y - mu) / sd, (obs - mu) / sd
    d_yy = torch.cdist(yz, yz)
    d_yy.fill_diagonal_(float("inf"))
    knn_y = d_yy.topk(k, largest=False).values.mean(1)
    knn_o = torch.cdist(oz, yz).topk(k, largest=False).values.mean()
    cov = torch.cov(y.T.double()).reshape(y.shape[1], y.shape[1])
    prec = torch.linalg.pinv(cov)
    dy = (y - mu).double()
    m_y = ((dy @ prec) * dy).sum(1)
    do = (obs - mu).double()
    m_o = ((do @ prec) * do).sum()
    return {
        "knn_pvalue": float((knn_y >= knn_o).float().mean()),
        "mahalanobis_pvalue": float((m_y >= m_o).double().mean()),
        "mean_z": float(oz.abs().max()),
    }
