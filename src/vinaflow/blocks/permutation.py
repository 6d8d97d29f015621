"""Fixed random permutation of the features."""

from __future__ import annotations

import torch
from torch import Tensor

from vinaflow.blocks.base import InvertibleBlock

__all__ = ["FixedPermutation"]


class FixedPermutation(InvertibleBlock):
    """Permute features by a random permutation fixed at construction (``log_det = 0``).

    The permutation is drawn from its own ``torch.Generator`` seeded with ``seed``,
    so it does not touch the global RNG (FrEIA's ``PermuteRandom`` reseeds numpy's
    global RNG, hence this re-implementation). Both index vectors are buffers and
    travel with the ``state_dict``. Any condition passed is ignored.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__(dim, 0)
        gen = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(dim, generator=gen)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(
        self, x: Tensor, c: Tensor | None = None, rev: bool = False
    ) -> tuple[Tensor, Tensor]:
        self._check_input(x, None)
        idx = self.inv_perm if rev else self.perm
        return x[:, idx], self._zeros_like_batch(x)
