"""nn.topk.topk_rows (the serving top-K of TWIN / DARE) against torch.topk."""

from __future__ import annotations

import pytest
import torch

from behaviorseq.nn.topk import HAVE_NUMBA, topk_rows


def _check(S: torch.Tensor, k: int) -> None:
    v, i = topk_rows(S, k)
    ref = S.topk(min(k, S.shape[-1]), dim=-1)
    torch.testing.assert_close(v, ref.values, rtol=0, atol=0)
    torch.testing.assert_close(S.gather(1, i), v, rtol=0, atol=0)  # the indices point at those values
    assert (i.sort(dim=1).values.diff(dim=1) > 0).all()  # no index twice


@pytest.mark.parametrize("order", ["random", "increasing", "decreasing", "ties", "constant"])
@pytest.mark.parametrize("L,k", [(1024, 20), (8192, 20), (300, 64), (90, 20), (257, 1)])
def test_topk_rows_equals_torch_topk(order, L, k):
    g = torch.Generator().manual_seed(L + k)
    S = torch.randn(37, L, generator=g)
    if order == "increasing":  # the worst order for a plain threshold scan: every element would insert
        S = S.sort(dim=1).values
    elif order == "decreasing":
        S = S.sort(dim=1, descending=True).values
    elif order == "ties":
        S = torch.randint(0, 5, (37, L), generator=g).float()
    elif order == "constant":
        S = torch.zeros(37, L)
    _check(S, k)
    _check(S.double(), k)


def test_topk_rows_small_rows_and_large_k_fall_back_to_torch():
    S = torch.randn(4, 10)
    _check(S, 20)  # k > L: all of the row
    _check(torch.randn(4, 1000), 100)  # k > MAX_K
    x = torch.randn(3, 500, requires_grad=True)
    v, _ = topk_rows(x, 5)
    assert v.requires_grad  # with gradients, torch.topk (differentiable)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba path")
def test_topk_rows_with_infinities_and_nan():
    S = torch.randn(5, 2000)
    S[0, 7] = float("inf")
    S[1, :] = float("-inf")
    S[1, 3] = 2.0
    _check(S, 8)
    v, i = topk_rows(S, 8)
    assert i[0, 0] == 7 and v[0, 0] == float("inf") and v[1, 0] == 2.0 and i[1, 0] == 3
    S[2, 11] = float("nan")  # torch's order (NaN first), through the fallback
    v, i = topk_rows(S, 8)
    assert torch.isnan(v[2, 0]) and i[2, 0] == 11
