r"""The fresh critic of a certificate: its settings, its starting points and its fit.

:func:`fit_critic` trains a new :class:`~vinaflow.objectives.critic.Critic` on the
critic-training pairs by maximising the f-GAN bound, early-stopped on a validation
slice. It starts at the null critic :math:`g_f(v) = f'(1)` (:func:`null_output`, bound
exactly 0) and may instead start from a fixed function fitted on the same samples, kept
only when it does better on validation: the critic that is optimal for two Gaussians
(:class:`GaussianOffset`) or a quadratic maximising the bound (:class:`QuadraticOffset`);
the MLP then learns only the residual. :class:`CertificateConfig` holds these settings
and those of the held-out estimate (:func:`vinaflow.evaluation.certificate.certify_samples`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vinaflow.errors import ConfigError
from vinaflow.objectives.critic import Critic
from vinaflow.objectives.divergences import Divergence

__all__ = [
    "OFFSET_DIVERGENCES",
    "CertificateConfig",
    "GaussianOffset",
    "QuadraticOffset",
    "critic_terms",
    "fit_critic",
    "null_output",
]


@dataclass
class CertificateConfig:
    """Settings of the fresh critic and of the bootstrap.

    ``test_fraction`` of the held-out pairs estimate the bound; of the rest,
    ``val_fraction`` select the critic's best checkpoint (early stopping).
    """

    hidden: int = 64
    layers: int = 2
    steps: int = 3000
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    eval_every: int = 100
    patience: int = 8
    test_fraction: float = 0.5
    val_fraction: float = 0.2
    bootstrap: int = 1000
    level: float = 0.95
    seed: int = 0
    #: Start the critic at the Gaussian-fit critic (:class:`GaussianOffset`) when it beats
    #: the null critic on validation; the MLP learns the residual.
    gaussian_offset: bool = True
    #: Then try a quadratic critic fitted by maximising the bound (:class:`QuadraticOffset`)
    #: and keep it, instead, when it does better on validation; only up to
    #: ``quadratic_max_dim`` features (it has d(d+3)/2 + 1 parameters).
    quadratic_offset: bool = True
    quadratic_max_dim: int = 24
    #: Clamp the fitted critic's raw output to the range it took on the critic-training
    #: pairs (:func:`fit_critic`'s ``output_range``) before the held-out estimate.
    clip_output: bool = True

    def __post_init__(self) -> None:
        checks = {
            "hidden": self.hidden >= 1,
            "layers": self.layers >= 0,
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "eval_every": self.eval_every >= 1,
            "patience": self.patience >= 1,
            "test_fraction": 0 < self.test_fraction < 1,
            "val_fraction": 0 < self.val_fraction < 1,
            "bootstrap": self.bootstrap >= 0,
            "level": 0 < self.level < 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"certificate.{name} is out of range: {getattr(self, name)!r}")


#: Members whose estimator stays well-behaved from the Gaussian start. Reverse KL and
#: Pearson weigh P's tails by q/p (resp. Q's by p/q); from the Gaussian critic of two
#: unit Gaussians 2 apart the held-out reverse-KL value was -1.7 (tests/test_certificate.py).
OFFSET_DIVERGENCES = ("kl", "js", "hellinger", "gan")


class GaussianOffset:
    r"""Fixed critic part from Gaussian fits of P and Q: the optimal critic of two Gaussians.

    With moments :math:`(\mu_P, \Sigma_P)` and :math:`(\mu_Q, \Sigma_Q)` of the
    critic-training samples, :math:`\hat\ell(u) = \log N(u; \mu_P, \Sigma_P) -
    \log N(u; \mu_Q, \Sigma_Q)` estimates :math:`\log dP/dQ` from
    :math:`O(d^2)` numbers, and the raw output with :math:`g_f(v) = f'(e^{\hat\ell})` is
    the critic that would be optimal if both were Gaussian. The MLP critic then learns
    only the residual, and the offset is kept only if it beats the null critic on the
    validation slice. Measured on gaussian-linear with 200k held-out pairs: a cINN with
    exact KL 0.0059 was estimated at 0.0006 without it and 0.0016 with it; an
    over-dispersed posterior (exact 0.190) at 0.177 and 0.180.
    """

    def __init__(self, p: Tensor, q: Tensor, divergence: Divergence, ridge: float = 1e-6):
        self.divergence = divergence
        self.p = self._moments(p.double(), ridge)
        self.q = self._moments(q.double(), ridge)

    @staticmethod
    def _moments(u: Tensor, ridge: float) -> tuple[Tensor, Tensor, Tensor]:
        mean = u.mean(0)
        cov = torch.cov(u.T).reshape(u.shape[1], u.shape[1])
        cov = cov + ridge * torch.eye(u.shape[1], dtype=u.dtype)
        chol = torch.linalg.cholesky(cov)
        return mean, chol, 2.0 * chol.diagonal().log().sum()

    @staticmethod
    def _log_density(u: Tensor, moments: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        mean, chol, logdet = moments
        w = torch.linalg.solve_triangular(chol, (u - mean).T, upper=False)
        return -0.5 * (w.square().sum(0) + logdet)

    def log_ratio(self, u: Tensor) -> Tensor:
        r""":math:`\hat\ell(u)` (float64)."""
        u = u.double()
        return self._log_density(u, self.p) - self._log_density(u, self.q)

    def __call__(self, u: Tensor) -> Tensor:
        """Raw critic output ``v`` with ``g_f(v) = f'(exp(log_ratio(u)))`` (by bisection)."""
        div = self.divergence
        target = div.f_prime(self.log_ratio(u).clamp(-30.0, 30.0).exp())
        lo = torch.full_like(target, -30.0)
        hi = torch.full_like(target, 30.0)
        for _ in range(60):  # g_f is increasing; its range caps extreme ratios
            mid = 0.5 * (lo + hi)
            below = div.g(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).to(u.dtype)


class QuadraticOffset:
    r"""Fixed critic part :math:`v(u) = c + b^\top u + u^\top A u`, fitted by maximising
    the variational bound on the critic-training samples (full-batch L-BFGS).

    :math:`O(d^2)` parameters, so its estimate has little variance -- what a divergence of
    a few thousandths of a nat needs. On gaussian-linear the exact log-ratio of a
    well-trained cINN is 98% quadratic in the certificate's features ``(x, y, z)``
    (least-squares R^2). Measured there with 200k held-out pairs
    (``benchmarks/certificates.py``): exact KL 0.0059, estimated 0.0054 with this
    critic and 0.0016 with the moment-matched :class:`GaussianOffset` start.
    """

    def __init__(
        self,
        p: Tensor,
        q: Tensor,
        divergence: Divergence,
        max_iter: int = 300,
    ) -> None:
        self.divergence = divergence
        d = p.shape[1]
        self._iu = torch.triu_indices(d, d)
        fp, fq = self._features(p.double()), self._features(q.double())
        # Start at the null critic (bound 0), as the MLP critic does.
        w = torch.zeros(fp.shape[1], dtype=torch.float64, requires_grad=True)
        w0 = torch.tensor([null_output(divergence)], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, w0], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            vp, vq = w0 + fp @ w, w0 + fq @ w
            loss = -(divergence.g(vp).mean() - divergence.f_star_g(vq).mean())
            loss.backward()
            return loss

        opt.step(closure)
        self.w, self.w0 = w.detach(), w0.detach()

    def _features(self, u: Tensor) -> Tensor:
        quad = (u[:, :, None] * u[:, None, :])[:, self._iu[0], self._iu[1]]
        return torch.cat([u, quad], 1)

    def __call__(self, u: Tensor) -> Tensor:
        return (self.w0 + self._features(u.double()) @ self.w).to(u.dtype)


def null_output(div: Divergence) -> float:
    """Raw output ``v`` with ``g_f(v) = f'(1)``: the optimal critic when ``P = Q``."""
    target = float(div.f_prime(torch.tensor(1.0, dtype=torch.float64)))
    lo, hi = torch.tensor(-30.0, dtype=torch.float64), torch.tensor(30.0, dtype=torch.float64)
    if not float(div.g(lo)) <= target <= float(div.g(hi)):
        return 0.0  # f'(1) at the edge of g's range (e.g. a kink): no interior null point
    for _ in range(100):  # g is increasing: bisection
        mid = 0.5 * (lo + hi)
        if float(div.g(mid)) < target:
            lo = mid
        else:
            hi = mid
    return float(0.5 * (lo + hi))


def critic_terms(
    critic: Critic,
    div: Divergence,
    p: Tensor,
    q: Tensor,
    offset: GaussianOffset | QuadraticOffset | None = None,
    clip: tuple[float, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample terms ``g_f(V(p))`` and ``f*(g_f(V(q)))`` of the bound (no gradients);
    with ``clip``, the raw output ``V`` is clamped to that range first."""
    with torch.no_grad():
        vp, vq = critic(p), critic(q)
        if offset is not None:
            vp, vq = vp + offset(p), vq + offset(q)
        if clip is not None:
            vp, vq = vp.clamp(*clip), vq.clamp(*clip)
        return div.g(vp), div.f_star_g(vq)


def fit_critic(
    p: Tensor, q: Tensor, divergence: Divergence, config: CertificateConfig
) -> tuple[Critic, GaussianOffset | QuadraticOffset | None, dict[str, Any]]:
    """Fit a fresh critic on ``(p, q)`` (standardised), early-stopped on a validation slice.

    Returns the critic, the fixed :class:`GaussianOffset` added to its raw output (or
    ``None``) and diagnostics.
    """
    g = torch.Generator().manual_seed(config.seed)
    n_p, n_q = p.shape[0], q.shape[0]
    vp, vq = max(1, int(config.val_fraction * n_p)), max(1, int(config.val_fraction * n_q))
    perm_p, perm_q = torch.randperm(n_p, generator=g), torch.randperm(n_q, generator=g)
    p_val, p_tr = p[perm_p[:vp]], p[perm_p[vp:]]
    q_val, q_tr = q[perm_q[:vq]], q[perm_q[vq:]]
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        critic = Critic(
            p.shape[1], hidden=config.hidden, layers=config.layers, divergence=divergence
        )
    # Start at the null critic g(v) = f'(1) (bound exactly 0) and keep it unless a trained
    # critic beats it on validation: with P ~ Q an overfitted critic would otherwise give
    # a spuriously negative held-out value.
    last = [m for m in critic.net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(null_output(divergence))
    opt = torch.optim.Adam(critic.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    bs = min(config.batch_size, p_tr.shape[0], q_tr.shape[0])
    a, b = critic_terms(critic, divergence, p_val, q_val)
    best = float(a.mean() - b.mean())
    offset = None
    offset_val = None
    if config.gaussian_offset and divergence.name in OFFSET_DIVERGENCES:
        try:
            candidate = GaussianOffset(p_tr, q_tr, divergence)
        except torch.linalg.LinAlgError:  # degenerate samples: no Gaussian fit
            candidate = None
        if candidate is not None:
            with torch.no_grad():
                last.bias.zero_()
            a, b = critic_terms(critic, divergence, p_val, q_val, candidate)
            offset_val = float(a.mean() - b.mean())
            if offset_val > best:
                best, offset = offset_val, candidate
            else:
                with torch.no_grad():
                    last.bias.fill_(null_output(divergence))
    quad_val = None
    if (
        config.quadratic_offset
        and divergence.name in OFFSET_DIVERGENCES
        and p.shape[1] <= config.quadratic_max_dim
    ):
        with torch.no_grad():
            last.bias.zero_()
        # From the null critic, not on top of the Gaussian fit: measured on gaussian-linear
        # (200k pairs), a quadratic refit on top of it reached 0.0040 of an exact 0.0059,
        # from the null critic 0.0054.
        quad = QuadraticOffset(p_tr, q_tr, divergence)
        a, b = critic_terms(critic, divergence, p_val, q_val, quad)
        quad_val = float(a.mean() - b.mean())
        if quad_val > best:
            best, offset = quad_val, quad
        elif offset is None:
            with torch.no_grad():
                last.bias.fill_(null_output(divergence))
    off_p = offset(p_tr) if offset is not None else None
    off_q = offset(q_tr) if offset is not None else None
    best_state, best_step, stale, step = copy.deepcopy(critic.state_dict()), 0, 0, 0
    t0 = time.perf_counter()
    for step in range(1, config.steps + 1):
        ip = torch.randint(0, p_tr.shape[0], (bs,), generator=g)
        iq = torch.randint(0, q_tr.shape[0], (bs,), generator=g)
        vp, vq = critic(p_tr[ip]), critic(q_tr[iq])
        if off_p is not None and off_q is not None:
            vp, vq = vp + off_p[ip], vq + off_q[iq]
        a, b = divergence.g(vp), divergence.f_star_g(vq)
        loss = -(a.mean() - b.mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(critic.parameters(), 10.0)
        opt.step()
        if step % config.eval_every == 0 or step == config.steps:
            a, b = critic_terms(critic, divergence, p_val, q_val, offset)
            val = float(a.mean() - b.mean())
            if val > best:
                best, best_state, best_step, stale = (
                    val,
                    copy.deepcopy(critic.state_dict()),
                    step,
                    0,
                )
            else:
                stale += 1
                if stale >= config.patience:
                    break
    if best_state is not None:
        critic.load_state_dict(best_state)
    critic.eval()
    # The range the critic took where it was fitted. A held-out model draw beyond it (far
    # in the flow's tail, where the critic only extrapolates) would otherwise enter the
    # bound through f*(g_f(V)), for KL exp(V - 1): one such draw can swing the estimate by
    # nats. The clamped critic is still a fixed function, so the bound stays a bound.
    output_range = None
    if config.clip_output:
        with torch.no_grad():
            v_fit = torch.cat([critic(p_tr), critic(q_tr)]).flatten()
            if off_p is not None and off_q is not None:
                v_fit = v_fit + torch.cat([off_p, off_q]).flatten()
        output_range = [float(v_fit.min()), float(v_fit.max())]
    info = {
        "critic_output_range": output_range,
        "critic_steps": step,
        "critic_best_step": best_step,
        "critic_val_bound": best,
        "critic_seconds": time.perf_counter() - t0,
        "gaussian_offset_val_bound": offset_val,
        "gaussian_offset_used": isinstance(offset, GaussianOffset),
        "quadratic_offset_val_bound": quad_val,
        "quadratic_offset_used": isinstance(offset, QuadraticOffset),
    }
    return critic, offset, info
