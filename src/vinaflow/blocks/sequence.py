"""Composition of invertible blocks, and a factory for the standard architectures."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from numbers import Integral
from typing import Any

import torch
from torch import Tensor, nn

from vinaflow.blocks.actnorm import ActNorm
from vinaflow.blocks.base import InvertibleBlock
from vinaflow.blocks.coupling import AffineCoupling
from vinaflow.blocks.iresnet import IResNetBlock
from vinaflow.blocks.permutation import FixedPermutation
from vinaflow.blocks.spline import SplineCoupling
from vinaflow.errors import ConfigError, DataError

__all__ = ["InvertibleSequence", "build_flow", "ARCHITECTURES"]

#: Block class of each architecture of :func:`build_flow`.
_BLOCK_CLASSES: dict[str, type[InvertibleBlock]] = {
    "coupling": AffineCoupling,
    "iresnet": IResNetBlock,
    "spline": SplineCoupling,
}
ARCHITECTURES = tuple(_BLOCK_CLASSES)


class InvertibleSequence(InvertibleBlock):
    """Chain of blocks ``f_n o ... o f_1``; itself an :class:`InvertibleBlock`.

    ``rev=True`` applies the inverses in reverse order. Log-dets add up. The
    condition is handed to every block (unconditional blocks ignore it). All
    blocks must share ``dim``, and the conditional ones must share ``cond_dim``.
    """

    def __init__(self, blocks: Sequence[InvertibleBlock]) -> None:
        blocks = list(blocks)
        if not blocks:
            raise ConfigError("blocks must be a non-empty list of InvertibleBlock, got []")
        for i, b in enumerate(blocks):
            if not isinstance(b, InvertibleBlock):
                raise ConfigError(f"blocks[{i}] must be an InvertibleBlock, got {type(b).__name__}")
        dims = {b.dim for b in blocks}
        if len(dims) != 1:
            raise ConfigError(
                f"all blocks must have the same dim, got dims {[b.dim for b in blocks]}"
            )
        cond_dims = {b.cond_dim for b in blocks if b.cond_dim}
        if len(cond_dims) > 1:
            raise ConfigError(
                f"conditional blocks must share one cond_dim, got {[b.cond_dim for b in blocks]}"
            )
        super().__init__(blocks[0].dim, cond_dims.pop() if cond_dims else 0)
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, x: Tensor, c: Tensor | None = None, rev: bool = False
    ) -> tuple[Tensor, Tensor]:
        self._check_input(x, c)
        if not self.cond_dim and c is not None:
            # silently dropping a condition hides wiring bugs
            raise DataError(
                "this flow is unconditional (cond_dim=0) but a condition c of shape "
                f"{tuple(c.shape)} was passed; pass c=None"
            )
        log_det = self._zeros_like_batch(x)
        for block in reversed(self.blocks) if rev else self.blocks:
            x, ld = block(x, c, rev=rev)
            log_det = log_det + ld
        return x, log_det

    def __len__(self) -> int:
        return len(self.blocks)

    def __iter__(self) -> Iterator[InvertibleBlock]:
        return iter(self.blocks)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> InvertibleBlock:
        return self.blocks[i]  # type: ignore[return-value]


def _kw_allowed(cls: type, taken: set[str]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return sorted(p for p in params if p not in {"self", *taken})


def build_flow(
    dim: int,
    cond_dim: int = 0,
    arch: str = "coupling",
    blocks: int = 4,
    hidden: int = 128,
    layers: int = 2,
    actnorm: bool = False,
    clamp: float = 2.0,
    lipschitz: float = 0.9,
    explicit: str = "forward",
    seed: int = 0,
    **kw: Any,
) -> InvertibleSequence:
    """Build a standard flow on ``R^dim``.

    ``arch="coupling"``: ``[ActNorm?, AffineCoupling, FixedPermutation] x blocks``
    (``clamp`` applies). ``arch="iresnet"``: ``[ActNorm?, IResNetBlock] x blocks``
    (``lipschitz`` and ``explicit`` apply). ``arch="spline"``: ``[ActNorm?,
    SplineCoupling, FixedPermutation] x blocks`` (rational-quadratic splines; ``bins`` and
    ``bound`` are its extra options). Extra keywords go to the block constructor. Weights
    are initialised from ``seed`` (without touching the global RNG), and permutation ``i``
    uses seed ``seed + i``.
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"arch must be one of {list(ARCHITECTURES)}, got {arch!r}")
    if isinstance(blocks, bool) or not isinstance(blocks, Integral) or blocks < 1:
        raise ConfigError(f"blocks must be an integer >= 1, got {blocks!r}")
    cls = _BLOCK_CLASSES[arch]
    common = {"dim": dim, "cond_dim": cond_dim, "hidden": hidden, "layers": layers}
    arch_kw = {
        "coupling": {"clamp": clamp},
        "iresnet": {"lipschitz": lipschitz, "explicit": explicit},
        "spline": {},
    }[arch]
    allowed = _kw_allowed(cls, set(common) | set(arch_kw))
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for arch={arch!r}; allowed extra options: {allowed}"
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        seq: list[InvertibleBlock] = []
        for i in range(blocks):
            if actnorm:
                seq.append(ActNorm(dim))
            seq.append(cls(**common, **arch_kw, **kw))
            if arch in ("coupling", "spline"):
                seq.append(FixedPermutation(dim, seed=seed + i))
    return InvertibleSequence(seq)
