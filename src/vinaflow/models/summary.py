r"""Summary networks ``h(y)`` that condition a posterior on a learned summary of ``y``.

Two kinds, chosen by the ``model.embedding`` setting of the models that take a
summary (``cinn``, ``cnf``):

* ``mlp`` (the default): with ``embedding_dim`` set, an MLP ``R^{dim_y} -> R^{embedding_dim}``
  of the whole observation vector (useful for long observation vectors); without it the
  observation itself conditions the flow.
* ``set``: a permutation-invariant summary of a *set* of ``m`` i.i.d. observations of
  ``set_dim`` values each (Deep Sets, Zaheer et al. 2017): a per-element MLP
  :math:`\phi`, a mean over the elements and an MLP :math:`\rho`,
  :math:`h(y) = \rho\big(\frac{1}{m}\sum_{j=1}^m \phi(y_j)\big)`. Every permutation-
  invariant function of a set can be written in this form (their Theorem 2), and the
  posterior of i.i.d. data is permutation invariant, so nothing is lost by the
  constraint while the network never has to learn the symmetry from data. The mean
  (rather than the sum) keeps the pooled features at the scale of one element.

Sets travel through the library flattened: an observation of ``m`` elements is a row of
``dim_y = m * set_dim`` values, element after element, so banks, batching and the
evaluation are those of vectors. :class:`vinaflow.models.Posterior` also takes sets
shaped ``(m, set_dim)`` or ``(n_obs, m, set_dim)``.

References:
    Zaheer, Kottur, Ravanbakhsh, Póczos, Salakhutdinov, Smola. Deep Sets. NeurIPS 2017.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vinaflow.errors import ConfigError, DataError
from vinaflow.models.normalization import Standardizer
from vinaflow.nets import MLP

__all__ = [
    "EMBEDDINGS",
    "SET_EMBEDDING_DIM",
    "SetSummary",
    "build_summary",
    "flatten_sets",
    "tie_set_normalization",
]

#: Values of the ``model.embedding`` setting.
EMBEDDINGS = ("mlp", "set")
#: Summary size of a ``set`` embedding without ``embedding_dim`` (a few numbers per
#: parameter are enough for the sufficient statistics of the common i.i.d. models).
SET_EMBEDDING_DIM = 32


class SetSummary(nn.Module):
    r"""Deep Sets summary :math:`\rho(\mathrm{mean}_j\, \phi(y_j))` of flattened sets.

    Arguments:
        set_size: Number ``m`` of elements per set.
        set_dim: Values per element.
        out_dim: Size of the summary.
        hidden: Width of :math:`\phi` (also the pooled feature size) and of :math:`\rho`.
        layers: Hidden layers of each of :math:`\phi` and :math:`\rho`.

    Example:
        >>> h = SetSummary(set_size=10, set_dim=2, out_dim=4, hidden=16)
        >>> h(torch.randn(3, 20)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self, set_size: int, set_dim: int, out_dim: int, hidden: int = 128, layers: int = 2
    ) -> None:
        super().__init__()
        self.set_size, self.set_dim = int(set_size), int(set_dim)
        self.phi = MLP(self.set_dim, hidden, hidden, layers)
        self.rho = MLP(hidden, out_dim, hidden, layers)

    def forward(self, y: Tensor) -> Tensor:
        """``(n, set_size * set_dim)`` flattened sets -> ``(n, out_dim)`` summaries."""
        if y.ndim != 2 or y.shape[1] != self.set_size * self.set_dim:
            raise DataError(
                f"set summary: observations must have shape (n, {self.set_size * self.set_dim})"
                f" (sets of {self.set_size} elements of {self.set_dim} values, flattened), "
                f"got {tuple(y.shape)}"
            )
        elements = y.reshape(y.shape[0], self.set_size, self.set_dim)
        return self.rho(self.phi(elements).mean(dim=1))


def build_summary(
    embedding: str,
    dim_y: int,
    embedding_dim: int | None,
    embedding_hidden: int,
    set_dim: int | None,
) -> tuple[nn.Module, int, int | None]:
    """The summary network of a model's settings: ``(module, summary size, embedding_dim)``.

    The returned ``embedding_dim`` is the one in effect (``set`` fills in its default), to
    be stored in the model's config so that a saved model rebuilds identically. Settings
    that do not fit the observation are config errors naming the field.
    """
    if embedding not in EMBEDDINGS:
        raise ConfigError(
            f"model.embedding: unknown value {embedding!r}; allowed: {', '.join(EMBEDDINGS)}"
        )
    if embedding_dim is not None and (
        isinstance(embedding_dim, bool) or not isinstance(embedding_dim, (int, np.integer))
    ):
        raise ConfigError(f"model.embedding_dim must be an integer >= 1, got {embedding_dim!r}")
    if embedding != "set":
        if set_dim is not None:
            raise ConfigError("model.set_dim applies only to model.embedding: set")
        if not embedding_dim:
            return nn.Identity(), dim_y, embedding_dim
        if not dim_y:
            raise ConfigError("model.embedding_dim needs an observation (dim_y >= 1)")
        mlp = MLP(dim_y, int(embedding_dim), embedding_hidden, layers=2)
        return mlp, int(embedding_dim), embedding_dim
    if not dim_y:
        raise ConfigError("model.embedding: set needs an observation (dim_y >= 1)")
    d = 1 if set_dim is None else set_dim
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ConfigError(f"model.set_dim must be an integer >= 1, got {set_dim!r}")
    if dim_y % d:
        raise ConfigError(
            f"model.set_dim={d} does not divide dim_y={dim_y}: model.embedding: set expects "
            f"each observation to be a set of m elements of set_dim values, flattened to "
            f"m * set_dim columns (shape (m, {d}) per observation)"
        )
    out = int(embedding_dim or SET_EMBEDDING_DIM)
    return SetSummary(dim_y // int(d), int(d), out, embedding_hidden), out, out


def tie_set_normalization(norm: Standardizer, y: Tensor, set_size: int, set_dim: int) -> None:
    """Give every element of a flattened set the same standardisation.

    Column-wise statistics differ slightly between set positions (sampling noise), which
    would make the standardised input, and so the summary, depend on the order of the
    elements; pooling the statistics over elements keeps the whole model exactly
    permutation invariant (the elements are i.i.d., so the pooled statistics are also
    the better estimates).
    """
    elements = y.double().reshape(-1, set_dim)
    mean = elements.mean(0)
    std = elements.std(0) if elements.shape[0] > 1 else torch.ones(set_dim, dtype=torch.float64)
    scale = mean.abs().clamp_min(1.0)
    std = torch.where(std > 1e-12 * scale, std, torch.ones_like(std))
    with torch.no_grad():
        norm.mean.copy_(mean.float().repeat(set_size))
        norm.std.copy_(std.float().repeat(set_size))


def flatten_sets(y: Any, set_shape: tuple[int, int], name: str = "observations") -> Any:
    """Observations of a set model as rows of ``m * set_dim`` values.

    Accepts one set ``(m, set_dim)``, a batch ``(n_obs, m, set_dim)`` or the flattened
    forms ``(m * set_dim,)`` / ``(n_obs, m * set_dim)``; anything else is an error naming
    the expected shapes. Non-array inputs are returned unchanged for the usual checks.
    """
    m, d = set_shape
    try:
        arr = y if isinstance(y, Tensor) else np.asarray(y)
    except (TypeError, ValueError):
        return y
    shape = tuple(arr.shape)
    if len(shape) == 3 and shape[1:] == (m, d):
        return arr.reshape(shape[0], m * d)
    if len(shape) == 2 and shape == (m, d) and d != m * d:
        return arr.reshape(1, m * d)
    if (len(shape) == 1 and shape[0] == m * d) or (len(shape) == 2 and shape[1] == m * d):
        return arr
    raise DataError(
        f"{name} of this set model must be sets of m={m} elements of set_dim={d} values: "
        f"shape ({m}, {d}) for one observation, (n_obs, {m}, {d}) for several (or flattened "
        f"({m * d},) / (n_obs, {m * d})), got {shape}"
    )
