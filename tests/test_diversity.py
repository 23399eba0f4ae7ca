"""Tests of Diversity@N (ComiRec)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorseq.metrics import diversity_at_n

# item -> category: items 1, 2 in category 7; item 3 in category 8; item 4 in category -2; item 5 in 9
CATE = np.array([-1, 7, 7, 8, -2, 9])


def _reference(row: list[int], cate: np.ndarray) -> float:
    real = [i for i in row if i != 0]
    pairs = list(combinations(real, 2))
    return sum(cate[a] != cate[b] for a, b in pairs) / len(pairs) if pairs else 0.0


def test_hand_computed_values() -> None:
    out = diversity_at_n([[1, 2, 3], [1, 2, 1], [3, 4, 5], [4, 3, 5]], CATE)
    assert out.dtype == torch.float64 and out.shape == (4,)
    assert out.tolist() == pytest.approx([2 / 3, 0.0, 1.0, 1.0])  # [a, a, b], all same, all distinct (x2)
    assert diversity_at_n([[1, 3, 4, 3]], CATE).tolist() == pytest.approx([5 / 6])  # one same pair of six


def test_empty_slots_are_left_out() -> None:
    out = diversity_at_n(np.array([[1, 3, 0, 0], [1, 0, 2, 3], [3, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]]), CATE)
    # N is the number of real items: [a, b] -> 1, [a, a, b] -> 2/3, fewer than two items -> 0
    assert out.tolist() == pytest.approx([1.0, 2 / 3, 0.0, 0.0, 0.0])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 8), n=st.integers(1, 12), n_items=st.integers(1, 20),
       n_cate=st.integers(1, 6))
def test_vectorised_equals_pairwise_reference(seed, b, n, n_items, n_cate) -> None:
    rng = np.random.default_rng(seed)
    cate = rng.integers(-3, n_cate, size=n_items + 1)
    items = rng.integers(0, n_items + 1, size=(b, n))  # repeats and empty slots included
    out = diversity_at_n(torch.from_numpy(items), torch.from_numpy(cate))
    assert out.tolist() == pytest.approx([_reference(r, cate) for r in items.tolist()])
    assert np.array_equal(out.numpy(), diversity_at_n(items, cate).numpy())


def test_checks_inputs() -> None:
    with pytest.raises(ValueError, match="0..5"):
        diversity_at_n([[1, 6]], CATE)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        diversity_at_n([1, 2], CATE)
    with pytest.raises(ValueError, match="integer"):
        diversity_at_n([[1.0, 2.0]], CATE)
    assert diversity_at_n(np.zeros((0, 5), np.int64), CATE).shape == (0,)
