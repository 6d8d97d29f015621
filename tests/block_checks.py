"""Checks shared by the tests of every invertible block family."""

from __future__ import annotations

import torch
from torch import nn

from vinaflow.blocks import ActNorm, InvertibleBlock
from vinaflow.blocks.iresnet import IResNetBlock


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.3) -> nn.Module:
    """Move every parameter away from its (often identity) initialisation; marks ActNorm
    initialised and settles iResNet spectral norms so the block is a fixed map."""
    for p in module.parameters():
        p.add_(scale * torch.randn_like(p))
    for m in module.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
        if isinstance(m, IResNetBlock):
            m.update_spectral_norms(100)
    return module.eval()


def brute_logdet(block: InvertibleBlock, x: torch.Tensor, c: torch.Tensor | None, rev: bool):
    """``log|det d out/d x|`` per sample from the autograd Jacobian."""
    out = []
    for i in range(x.shape[0]):
        ci = None if c is None else c[i : i + 1]
        jac = torch.autograd.functional.jacobian(
            lambda xi, ci=ci: block(xi[None], ci, rev=rev)[0][0], x[i]
        )
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)
