"""The CPU fast paths in nn/: the fused linear + cross-entropy and the rand-mask dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from behaviorseq.nn.dropout import Dropout, dropout
from behaviorseq.nn.losses import _LinearCrossEntropy, linear_cross_entropy
from behaviorseq.nn.transformer import attention


@pytest.mark.parametrize("block", [128, 8])  # one block, and 5 blocks with a remainder of 5 rows
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_cross_entropy_equals_torch_loss_and_gradients(bias, dtype, block, monkeypatch):
    monkeypatch.setattr(_LinearCrossEntropy, "BLOCK", block)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 8, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(50, 8, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(50, generator=g, dtype=dtype, requires_grad=True) if bias else None
    t = torch.randint(0, 50, (37,), generator=g)
    t[:5] = t[5]  # repeated targets
    ref = F.cross_entropy(h @ w.T + (b if bias else 0), t)
    ref_grads = torch.autograd.grad(3.0 * ref, [h, w] + ([b] if bias else []))  # a non-unit upstream grad
    got = linear_cross_entropy(h, w, t, b)
    got_grads = torch.autograd.grad(3.0 * got, [h, w] + ([b] if bias else []))
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
    torch.testing.assert_close(got, ref, **tol)
    for a, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, r, **tol)


def test_linear_cross_entropy_gradient_to_one_input_only_and_no_reuse():
    h, w = torch.randn(6, 4), torch.randn(9, 4, requires_grad=True)
    t = torch.tensor([0, 8, 3, 3, 1, 2])
    (gw,) = torch.autograd.grad(linear_cross_entropy(h, w, t), [w])
    torch.testing.assert_close(gw, torch.autograd.grad(F.cross_entropy(h @ w.T, t), [w])[0])
    loss = linear_cross_entropy(h, w, t)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_dropout_keeps_1_minus_p_scaled_and_its_gradient_is_the_mask():
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = dropout(x, 0.3)
    kept = y.detach() != 0
    n, rate = kept.numel(), kept.float().mean().item()
    assert abs(rate - 0.7) < 5 * (0.7 * 0.3 / n) ** 0.5  # Binomial(n, 0.7), 5 sigma
    torch.testing.assert_close(y.detach()[kept], torch.full((int(kept.sum()),), 1 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d y / d x = mask / (1 - p) = y for x = 1
    z = torch.randn(5, 3)
    assert dropout(z, 0.5, training=False) is z and dropout(z, 0.0) is z
    m = Dropout(0.25)
    assert repr(m) == "Dropout(p=0.25)" and m.eval()(z) is z
    with pytest.raises(ValueError, match="between 0 and 1"):
        Dropout(1.5)


def test_attention_with_dropout_is_sdpa_in_expectation():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 6, 4, generator=g) for _ in range(3))
    mask = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask, 0.0), ref)
    torch.manual_seed(0)
    mean = torch.stack([attention(q, k, v, mask, 0.2) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, ref, atol=0.05, rtol=0)
    causal_only = attention(q, k, v, mask, 0.5)[..., 0, :]  # query 0 sees key 0 only: v_0 or 0, times 2
    assert torch.all((causal_only == 0) | torch.isclose(causal_only, 2 * v[..., 0, :]))


def test_malloc_tuning_is_recorded_and_can_be_switched_off(monkeypatch):
    from behaviorseq.train import allocator

    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("BEHAVIORSEQ_MALLOC_TUNING", "0")
    assert allocator.tune_malloc() == {"tuned": False, "reason": "BEHAVIORSEQ_MALLOC_TUNING=0"}
    assert allocator.tune_malloc() is allocator._applied  # once per process
    assert allocator.malloc_env() == {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
                                      "MALLOC_TOP_PAD_": str(512 << 20)}
