"""Tests of the faiss item index, multi-interest pooling and ComiRec's controllable aggregation."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorseq.index import (
    IndexConfig,
    ItemIndex,
    build_index,
    controllable_aggregate,
    dedupe_max,
    merge_top_n,
)
from behaviorseq.metrics import diversity_at_n

N_ITEMS, DIM = 1500, 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((N_ITEMS + 1, DIM)).astype(np.float32)
    interests = rng.standard_normal((40, 4, DIM)).astype(np.float32)
    return emb, interests


def _dense_top(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n of dense [B, n_items + 1] scores, item 0 excluded."""
    s = scores.astype(np.float64).copy()
    s[:, 0] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(s, top, axis=1), top


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)]))


# --- search ---------------------------------------------------------------------------------------------------


def test_flat_search_equals_dense_top_n(data) -> None:
    emb, interests = data
    q = interests[:, 0]
    scores, items = build_index(emb).search(q, 25)
    ref_s, ref_i = _dense_top(q @ emb.T, 25)
    assert items.dtype == np.int64 and items.shape == (40, 25) and scores.shape == (40, 25)
    assert np.array_equal(items, ref_i)
    assert np.allclose(scores, ref_s, atol=1e-4)


def test_search_multi_flat_equals_dense_max_over_interests(data) -> None:
    emb, interests = data
    index = build_index(emb, "flat")
    scores, items = index.search_multi(interests, 30)
    ref_s, ref_i = _dense_top((interests @ emb.T).max(axis=1), 30)  # f(u, i) = max_k e_i . v_k
    assert np.array_equal(items, ref_i)
    assert np.allclose(scores, ref_s, atol=1e-4)
    # torch input, with grad and float64, gives the same answer
    t_s, t_i = index.search_multi(torch.tensor(interests, dtype=torch.float64, requires_grad=True), 30)
    assert np.array_equal(t_i, items) and np.allclose(t_s, scores)


def test_search_pool_keeps_best_copy_of_each_retrieved_item(data) -> None:
    emb, interests = data
    index = build_index(emb)
    b, k, _ = interests.shape
    n = 15
    scores, items = index.search_pool(interests, n)
    assert scores.shape == items.shape == (b, k * n)
    per = [index.search(interests[:, j], n) for j in range(k)]
    for u in range(b):
        best: dict[int, float] = {}
        for s_k, i_k in per:
            for s, i in zip(s_k[u], i_k[u]):
                best[int(i)] = max(best.get(int(i), -np.inf), float(s))
        kept = items[u] != 0
        assert kept.sum() == len(best)  # each retrieved item once
        assert dict(zip(items[u][kept].tolist(), scores[u][kept].tolist())) == pytest.approx(best)
        assert np.all(scores[u][~kept] == -np.inf)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_padding_item_is_never_returned(data, kind) -> None:
    emb, interests = data
    emb = emb.copy()
    emb[0] = 1e3 * interests[0, 0]  # row 0 would win every search if it were indexed
    index = build_index(emb, kind)
    _, items = index.search(interests[:, 0], 50)
    _, multi = index.search_multi(interests, 50)
    assert items.min() >= 1 and multi.min() >= 1
    assert index.n_items == N_ITEMS and index.dim == DIM


def test_more_results_than_items_are_padded() -> None:
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((6, 4)).astype(np.float32)
    index = build_index(emb)
    scores, items = index.search(rng.standard_normal((3, 4)), 8)
    assert np.all(np.sort(items[:, :5], axis=1) == np.arange(1, 6))
    assert np.all(items[:, 5:] == 0) and np.all(scores[:, 5:] == -np.inf)
    scores, items = index.search_multi(rng.standard_normal((3, 2, 4)), 8)
    assert np.all(np.sort(items[:, :5], axis=1) == np.arange(1, 6)) and np.all(items[:, 5:] == 0)


def test_ivf_and_hnsw_approximate_flat(data) -> None:
    emb, interests = data
    _, ref = build_index(emb).search_multi(interests, 20)
    _, exact_ivf = build_index(emb, "ivf", nlist=16, nprobe=16).search_multi(interests, 20)
    assert _overlap(exact_ivf, ref) == 1.0  # visiting every cell is exhaustive
    _, ivf = build_index(emb, "ivf", nlist=16, nprobe=6).search_multi(interests, 20)
    _, hnsw = build_index(emb, "hnsw", hnsw_m=16, ef_search=64).search_multi(interests, 20)
    assert _overlap(ivf, ref) > 0.7
    assert _overlap(hnsw, ref) > 0.95


def test_config_is_strict() -> None:
    with pytest.raises(ValueError, match="valid kinds: flat, ivf, hnsw"):
        IndexConfig(kind="annoy")
    with pytest.raises(ValueError, match="valid options:.*nprobe"):
        IndexConfig.from_dict({"kind": "ivf", "n_probe": 4})
    with pytest.raises(ValueError, match="only applies to kind='ivf'"):
        IndexConfig(kind="flat", nprobe=4)
    with pytest.raises(ValueError, match="only applies to kind='hnsw'"):
        IndexConfig(kind="ivf", ef_search=4)
    with pytest.raises(ValueError, match="nprobe"):
        IndexConfig(kind="ivf", nlist=4, nprobe=8)
    with pytest.raises(ValueError, match="nlist"):
        build_index(np.ones((5, 3), np.float32), "ivf", nlist=10)
    assert IndexConfig.from_dict(IndexConfig(kind="hnsw", hnsw_m=8).to_dict()) == IndexConfig(kind="hnsw", hnsw_m=8)


def test_search_checks_inputs(data) -> None:
    emb, interests = data
    with pytest.raises(RuntimeError, match="fit"):
        ItemIndex().search(interests[:, 0], 5)
    index = build_index(emb)
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((2, DIM + 1), np.float32), 5)
    with pytest.raises(ValueError, match="3-d"):
        index.search_multi(interests[:, 0], 5)
    with pytest.raises(ValueError, match="n must be"):
        index.search(interests[:, 0], 0)


# --- pooling and controllable aggregation ---------------------------------------------------------------------


def _random_pool(seed: int, b: int, c: int, n_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """Random [b, c] candidates with duplicate ids and some empty slots (item 0 / -inf)."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_ids + 1, size=(b, c))
    scores = rng.standard_normal((b, c))
    empty = rng.random((b, c)) < 0.15
    items[empty] = 0
    scores[empty] = -np.inf
    return scores, items


def _best_per_item(scores_row, items_row) -> list[tuple[int, float]]:
    best: dict[int, float] = {}
    for s, i in zip(scores_row.tolist(), items_row.tolist()):
        if i != 0 and s > -np.inf and s > best.get(i, -np.inf):
            best[i] = s
    return sorted(best.items(), key=lambda kv: -kv[1])


def _greedy_reference(scores_row, items_row, cate, n: int, lam: float) -> tuple[list[float], list[int]]:
    """Alg. 2 for one user, written plainly: repeatedly take argmax of f(u, i) - lam * #chosen in cate(i)."""
    cands = _best_per_item(scores_row, items_row)
    chosen_s, chosen_i = [], []
    count: dict[int, int] = defaultdict(int)
    while cands and len(chosen_i) < n:
        gains = [s - lam * count[int(cate[i])] for i, s in cands]
        j = int(np.argmax(gains))
        i, s = cands.pop(j)
        chosen_i.append(i)
        chosen_s.append(s)
        count[int(cate[i])] += 1
    pad = n - len(chosen_i)
    return chosen_s + [-np.inf] * pad, chosen_i + [0] * pad


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 6), c=st.integers(1, 30), n=st.integers(1, 12))
def test_lambda_zero_equals_plain_merge(seed, b, c, n) -> None:
    scores, items = _random_pool(seed, b, c, n_ids=max(2, c // 2))
    cate = np.random.default_rng(seed).integers(0, 3, size=max(2, c // 2) + 1)
    for out_s, out_i in (controllable_aggregate(scores, items, cate, n, 0.0), merge_top_n(scores, items, n)):
        assert out_s.shape == out_i.shape == (b, n)
        for u in range(b):
            ref = _best_per_item(scores[u], items[u])[:n]
            ref_i = [i for i, _ in ref] + [0] * (n - len(ref))
            ref_s = [s for _, s in ref] + [-np.inf] * (n - len(ref))
            assert out_i[u].tolist() == ref_i
            assert out_s[u].tolist() == ref_s


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 6), c=st.integers(1, 40), n=st.integers(1, 15),
       n_cate=st.integers(1, 6), lam=st.floats(0.001, 3.0))
def test_vectorised_greedy_equals_per_user_reference(seed, b, c, n, n_cate, lam) -> None:
    scores, items = _random_pool(seed, b, c, n_ids=max(2, c // 2))
    cate = np.random.default_rng(seed + 1).integers(0, n_cate, size=max(2, c // 2) + 1)
    out_s, out_i = controllable_aggregate(torch.tensor(scores), torch.tensor(items), cate, n, lam)
    for u in range(b):
        ref_s, ref_i = _greedy_reference(scores[u], items[u], cate, n, lam)
        assert out_i[u].tolist() == ref_i
        assert out_s[u].tolist() == ref_s


def test_diversity_grows_with_lambda() -> None:
    rng = np.random.default_rng(3)
    b, c, n, g = 64, 40, 10, 5
    items = np.stack([rng.permutation(c) + 1 for _ in range(b)])
    cate = np.concatenate([[0], np.arange(c) % g])  # every category has c / g = 8 candidates
    scores = rng.standard_normal((b, c)) + 0.8 * (cate[items] == 0)  # category 0 scores higher on average
    lams = [0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 1e6]
    div = [float(diversity_at_n(controllable_aggregate(scores, items, cate, n, lam).items, cate).mean())
           for lam in lams]
    assert all(a <= b + 1e-12 for a, b in zip(div, div[1:])), div
    assert div[-1] > div[0] + 0.05
    assert div[-1] == pytest.approx(1 - g * 1 / (n * (n - 1) / 2))  # 2 per category: 5 same pairs of 45
    # recall-type cost: the summed raw score of the chosen items can only fall as lambda grows
    total = [controllable_aggregate(scores, items, cate, n, lam).scores.sum() for lam in (0.0, 1e6)]
    assert total[1] < total[0]


def test_dedupe_and_aggregation_check_inputs() -> None:
    scores, items = _random_pool(0, 2, 5, 3)
    s, i = dedupe_max(scores, items)
    assert s.shape == i.shape == (2, 5)
    for u in range(2):
        kept = i[u] != 0
        assert len(set(i[u][kept].tolist())) == kept.sum()
    # a -inf score marks an empty slot even when its id is not 0
    s, i = merge_top_n(np.array([[0.5, -np.inf, 0.1]]), np.array([[3, 4, 0]]), 3)
    assert i.tolist() == [[3, 0, 0]] and s.tolist() == [[0.5, -np.inf, -np.inf]]
    with pytest.raises(ValueError, match="lam"):
        controllable_aggregate(scores, items, np.zeros(4, np.int64), 3, -0.1)
    with pytest.raises(ValueError, match="no category"):
        controllable_aggregate(scores, items, np.zeros(2, np.int64), 3, 0.5)
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        merge_top_n(scores, items[:, :3], 3)
    with pytest.raises(ValueError, match="NaN"):
        merge_top_n(np.full((1, 2), np.nan), np.ones((1, 2), np.int64), 1)
