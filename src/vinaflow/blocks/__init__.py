"""Invertible building blocks: couplings (affine, spline), permutations, ActNorm, i-ResNet and
their sequences."""

from __future__ import annotations

from vinaflow.blocks.actnorm import ActNorm
from vinaflow.blocks.base import InvertibleBlock
from vinaflow.blocks.coupling import AffineCoupling, soft_clamp
from vinaflow.blocks.iresnet import IResNetBlock, SpectralLinear
from vinaflow.blocks.permutation import FixedPermutation
from vinaflow.blocks.sequence import ARCHITECTURES, InvertibleSequence, build_flow
from vinaflow.blocks.spline import SplineCoupling

__all__ = [
    "ARCHITECTURES",
    "ActNorm",
    "AffineCoupling",
    "FixedPermutation",
    "IResNetBlock",
    "InvertibleBlock",
    "InvertibleSequence",
    "SpectralLinear",
    "SplineCoupling",
    "build_flow",
    "soft_clamp",
]
