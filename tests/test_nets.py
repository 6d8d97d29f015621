"""MLP inference fast path and process allocator tuning."""

from __future__ import annotations

import pytest
import torch

import vinaflow.runtime as runtime
from vinaflow.blocks import build_flow
from vinaflow.nets import MLP
from vinaflow.runtime import tune_allocator


@pytest.mark.parametrize("activation", ["silu", "relu", "elu", "leaky_relu", "tanh", "gelu"])
def test_mlp_inference_path_matches_autograd_path(activation: str) -> None:
    torch.manual_seed(0)
    net = MLP(5, 3, hidden=16, layers=3, activation=activation)
    x = torch.randn(64, 5)
    with torch.enable_grad():
        reference = net(x)
    with torch.no_grad():
        fast_no_grad = net(x)
    with torch.inference_mode():
        fast_inference = net(x)
    torch.testing.assert_close(fast_no_grad, reference.detach())
    torch.testing.assert_close(fast_inference, reference.detach())


def test_mlp_inference_path_leaves_input_untouched() -> None:
    # layers=0: the input goes straight into a Linear; in-place activations must never
    # write into the caller's tensor.
    net = MLP(4, 4, hidden=8, layers=0)
    x = torch.randn(10, 4)
    before = x.clone()
    with torch.no_grad():
        net(x)
        MLP(4, 4, hidden=8, layers=2)(x)
    torch.testing.assert_close(x, before)


def test_flow_sampling_unchanged_by_fast_path() -> None:
    flow = build_flow(6, blocks=3, hidden=16, seed=1)
    for p in flow.parameters():  # leave the zero-initialised identity
        p.data.add_(0.1 * torch.randn_like(p))
    z = torch.randn(200, 6)
    with torch.enable_grad():
        x_ref, _ = flow(z, rev=True)
    with torch.inference_mode():
        x_fast, _ = flow(z, rev=True)
        z_back, _ = flow(x_fast)
    torch.testing.assert_close(x_fast, x_ref.detach())
    torch.testing.assert_close(z_back, z, atol=1e-4, rtol=1e-4)


def test_tune_allocator_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    first = tune_allocator()
    assert tune_allocator() == first
    monkeypatch.setattr(runtime, "_tuned", False)
    monkeypatch.setenv("VINAFLOW_NO_MALLOC_TUNING", "1")
    assert tune_allocator() is False
