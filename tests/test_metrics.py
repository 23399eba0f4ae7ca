"""Metrics against hand-computed cases, brute-force references and property checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorseq.metrics import (
    auc,
    comirec_official_metrics,
    gauc,
    logloss,
    per_group_auc,
    per_sample_ranking_metrics,
    ranking_metrics,
    set_metrics,
    summarize,
    target_ranks,
    topk_with_exclusion,
)

INF = float("inf")


def d(i: int) -> float:
    """Discount of 0-based position i: 1 / log2(i + 2)."""
    return 1.0 / math.log2(i + 2)


def assert_close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------------- target_ranks


def test_target_ranks_basic_and_padding_never_counts() -> None:
    # row 0: item 4 (0.7) is beaten only by item 2 (0.9); the padding column (9.0) is ignored -> 1
    # row 1: item 1 (0.5) is beaten by items 2 (0.9), 4 (0.7) -> 2 (padding +inf ignored)
    # row 2: item 2 is the best real item; padding ties it (0.9) but never counts as a tie -> 0
    scores = torch.tensor(
        [
            [9.0, 0.5, 0.9, 0.1, 0.7],
            [INF, 0.5, 0.9, 0.1, 0.7],
            [0.9, 0.5, 0.9, 0.1, 0.7],
        ]
    )
    targets = torch.tensor([4, 1, 2])
    for ties in ("pessimistic", "optimistic"):
        r = target_ranks(scores, targets, ties=ties)
        assert r.dtype == torch.int64
        assert r.tolist() == [1, 2, 0]
    assert target_ranks(scores, targets, ties="average").tolist() == [1.0, 2.0, 0.0]


def test_target_ranks_ties_each_mode() -> None:
    # row 0: target 3 (2.0); nothing higher; tied others = items 2, 4 -> pess 0+2, opt 0, avg 0+1
    # row 1: target 1 (1.0); higher = items 2 (3.0), 5 (4.0) -> 2; tied = items 3, 4 (pad 1.0 ignored)
    #        -> pess 4, opt 2, avg 3
    # row 2: target 5 (0.0); higher = items 1..4 -> 4; tied: none -> 4 in every mode
    scores = torch.tensor(
        [
            [0.0, 1.0, 2.0, 2.0, 2.0, 0.5],
            [1.0, 1.0, 3.0, 1.0, 1.0, 4.0],
            [0.0, 1.0, 1.0, 2.0, 3.0, 0.0],
        ]
    )
    targets = torch.tensor([3, 1, 5])
    assert target_ranks(scores, targets).tolist() == [2, 4, 4]  # pessimistic is the default
    assert target_ranks(scores, targets, ties="optimistic").tolist() == [0, 2, 4]
    avg = target_ranks(scores, targets, ties="average")
    assert avg.dtype == torch.float64
    assert avg.tolist() == [1.0, 3.0, 4.0]
    # odd number of tied others -> half-integer average rank: target 2 (2.0) ties items 3, 4, 6 -> 1.5
    r = target_ranks(torch.tensor([[0.0, 1.0, 2.0, 2.0, 2.0, 0.5, 2.0]]), torch.tensor([2]), ties="average")
    assert r.tolist() == [1.5]


def test_target_ranks_exclusion_dense_and_sparse() -> None:
    # target 3 (0.5); higher: items 1 (0.9), 2 (0.8), 5 (0.6) -> 3; tied: item 4 -> pessimistic 4.
    # Excluding items 1 and 4 (and the target itself, which must be ignored) -> higher 2, tied 0 -> 2.
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.5, 0.5, 0.6]])
    targets = torch.tensor([3])
    assert target_ranks(scores, targets).tolist() == [4]
    dense = torch.zeros(1, 6, dtype=torch.bool)
    dense[0, [1, 3, 4]] = True
    assert target_ranks(scores, targets, exclude=dense).tolist() == [2]
    sparse = (torch.tensor([0, 0, 0]), torch.tensor([1, 3, 4]))
    assert target_ranks(scores, targets, exclude=sparse).tolist() == [2]
    assert target_ranks(scores, targets, exclude=(np.array([0, 0, 0]), np.array([1, 3, 4]))).tolist() == [2]
    assert target_ranks(scores, targets, exclude=dense, ties="optimistic").tolist() == [2]


def test_target_ranks_exclusion_never_removes_target() -> None:
    # Excluding every item including the target leaves the target alone -> rank 0 in every row.
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(4, 7, generator=g)
    targets = torch.tensor([1, 3, 6, 2])
    everything = torch.ones(4, 7, dtype=torch.bool)
    for ties in ("pessimistic", "optimistic", "average"):
        assert target_ranks(scores, targets, exclude=everything, ties=ties).tolist() == [0, 0, 0, 0]
    # Excluding only the target changes nothing.
    only_target = torch.zeros(4, 7, dtype=torch.bool)
    only_target[torch.arange(4), targets] = True
    torch.testing.assert_close(
        target_ranks(scores, targets, exclude=only_target), target_ranks(scores, targets)
    )


def test_target_ranks_unmasked_path_equals_masked_path() -> None:
    # Without `exclude` ranks are counted over all columns and then corrected; an all-False mask takes the
    # masked path. Both must agree, with padding scores drawn from the same tie-heavy grid.
    g = torch.Generator().manual_seed(6)
    scores = torch.randint(0, 4, (200, 12), generator=g).float()
    targets = torch.randint(1, 12, (200,), generator=g)
    none = torch.zeros(200, 12, dtype=torch.bool)
    for ties in ("pessimistic", "optimistic", "average"):
        assert torch.equal(
            target_ranks(scores, targets, ties=ties), target_ranks(scores, targets, exclude=none, ties=ties)
        )


def test_target_ranks_accepts_numpy_and_validates() -> None:
    # target 2 (0.3) is beaten by item 1 (0.4) -> 1
    assert target_ranks(np.array([[5.0, 0.4, 0.3]]), np.array([2])).tolist() == [1]
    with pytest.raises(ValueError, match="padding"):
        target_ranks(torch.rand(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        target_ranks(torch.rand(2, 4), torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[0.0, float("nan"), 1.0]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="ties"):
        target_ranks(torch.rand(1, 3), torch.tensor([1]), ties="random")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        target_ranks(torch.rand(1, 3), torch.tensor([1]), exclude=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="out of range"):
        target_ranks(torch.rand(1, 3), torch.tensor([1]), exclude=(torch.tensor([0]), torch.tensor([3])))


# ------------------------------------------------------------------------------------ per-sample ranking metrics


def test_per_sample_ranking_metrics_hand() -> None:
    ranks = torch.tensor([0, 1, 4, 5, 19, 20])
    m = per_sample_ranking_metrics(ranks, ks=(5, 20))
    assert list(m) == ["hr@5", "ndcg@5", "mrr@5", "hr@20", "ndcg@20", "mrr@20", "mrr"]
    assert all(v.dtype == torch.float64 and v.shape == (6,) for v in m.values())
    # HR@5: rank < 5 -> ranks 0, 1, 4
    assert_close(m["hr@5"], [1, 1, 1, 0, 0, 0])
    # NDCG@5: 1/log2(rank+2): 1/log2(2)=1, 1/log2(3)=0.63093, 1/log2(6)=0.38685, then 0
    assert_close(m["ndcg@5"], [1.0, 1 / math.log2(3), 1 / math.log2(6), 0, 0, 0])
    # MRR@5: 1/(rank+1) = 1, 1/2, 1/5, then 0
    assert_close(m["mrr@5"], [1.0, 0.5, 0.2, 0, 0, 0])
    # @20: rank 19 is in (1/log2(21) = 0.22767, 1/20), rank 20 is out
    assert_close(m["hr@20"], [1, 1, 1, 1, 1, 0])
    assert_close(
        m["ndcg@20"], [1.0, 1 / math.log2(3), 1 / math.log2(6), 1 / math.log2(7), 1 / math.log2(21), 0]
    )
    assert_close(m["mrr@20"], [1.0, 0.5, 0.2, 1 / 6, 1 / 20, 0])
    # full MRR keeps rank 20: 1/21
    assert_close(m["mrr"], [1.0, 0.5, 0.2, 1 / 6, 1 / 20, 1 / 21])


def test_per_sample_ranking_metrics_average_ranks() -> None:
    # rank 1.5 < 2 -> hit@2, ndcg = 1/log2(3.5) = 0.55328, rr = 1/2.5 = 0.4; rank 2.5 misses @2
    m = per_sample_ranking_metrics(torch.tensor([1.5, 2.5], dtype=torch.float64), ks=(2,))
    assert_close(m["hr@2"], [1, 0])
    assert_close(m["ndcg@2"], [1 / math.log2(3.5), 0])
    assert_close(m["mrr@2"], [0.4, 0])
    assert_close(m["mrr"], [0.4, 1 / 3.5])


def test_ties_feed_through_to_metrics() -> None:
    # Target tied with 2 others, nothing higher: pessimistic rank 2 misses HR@2, optimistic 0 hits,
    # average 1 hits with ndcg 1/log2(3).
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.2]])
    t = torch.tensor([2])
    hr = {
        ties: per_sample_ranking_metrics(target_ranks(scores, t, ties=ties), (2,))
        for ties in ("pessimistic", "optimistic", "average")
    }
    assert hr["pessimistic"]["hr@2"].tolist() == [0.0]
    assert hr["optimistic"]["hr@2"].tolist() == [1.0]
    assert_close(hr["average"]["ndcg@2"], [1 / math.log2(3)])


def test_ranking_metrics_reductions_and_summarize() -> None:
    ranks = torch.tensor([0, 3])
    # hr@1 = [1, 0]; mrr = [1, 1/4]
    mean = ranking_metrics(ranks, ks=(1,))
    assert mean == pytest.approx({"hr@1": 0.5, "ndcg@1": 0.5, "mrr@1": 0.5, "mrr": 0.625}, abs=1e-15)
    total = ranking_metrics(ranks, ks=(1,), reduction="sum")
    assert total == pytest.approx({"hr@1": 1.0, "ndcg@1": 1.0, "mrr@1": 1.0, "mrr": 1.25}, abs=1e-15)
    assert summarize(total, 2) == pytest.approx(mean, abs=1e-15)
    assert summarize({"x": torch.tensor(3.0)}, torch.tensor(4)) == {"x": 0.75}
    per = ranking_metrics(ranks, ks=(1,), reduction="none")
    assert isinstance(per["mrr"], torch.Tensor)
    assert ranking_metrics(ranks, ks=(1,), n_items=4)["mrr"] == pytest.approx(0.625)
    with pytest.raises(ValueError, match="n_items"):
        ranking_metrics(ranks, n_items=3)  # rank 3 impossible among 3 candidates
    with pytest.raises(ValueError):
        summarize({"x": 1.0}, 0)
    with pytest.raises(ValueError):
        per_sample_ranking_metrics(ranks, ks=(0,))


def test_chunk_additivity() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 6, (50, 30), generator=g).float()  # coarse scores -> many ties
    targets = torch.randint(1, 30, (50,), generator=g)
    exclude = torch.rand(50, 30, generator=g) < 0.2
    ks = (1, 5, 10)
    for ties in ("pessimistic", "optimistic", "average"):
        whole = per_sample_ranking_metrics(target_ranks(scores, targets, exclude=exclude, ties=ties), ks)
        sums = {k: torch.zeros((), dtype=torch.float64) for k in whole}
        for sl in (slice(0, 17), slice(17, 50)):
            part = per_sample_ranking_metrics(
                target_ranks(scores[sl], targets[sl], exclude=exclude[sl], ties=ties), ks
            )
            for k, v in part.items():
                torch.testing.assert_close(v, whole[k][sl], rtol=0, atol=0)
                sums[k] += v.sum()
        for k in whole:
            torch.testing.assert_close(sums[k], whole[k].sum(), rtol=1e-14, atol=1e-14)
        means = summarize(sums, 50)
        ref = ranking_metrics(target_ranks(scores, targets, exclude=exclude, ties=ties), ks)
        assert means == pytest.approx(ref, rel=1e-13)


# ------------------------------------------------------------------------------------- topk_with_exclusion


def test_topk_with_exclusion() -> None:
    # row 0: padding 9.0 and excluded item 3 (0.8) removed -> order 1 (0.7), 2 (0.5), 4 (0.1)
    # row 1: only items 2 and 4 remain -> [4, 2, then 0-filled]
    scores = torch.tensor([[9.0, 0.7, 0.5, 0.8, 0.1], [9.0, 0.7, 0.5, 0.8, 0.6]])
    excl = torch.tensor([[False, False, False, True, False], [False, True, False, True, False]])
    assert topk_with_exclusion(scores, 3, excl).tolist() == [[1, 2, 4], [4, 2, 0]]
    sparse = (torch.tensor([0, 1, 1]), torch.tensor([3, 1, 3]))
    assert topk_with_exclusion(scores, 3, sparse).tolist() == [[1, 2, 4], [4, 2, 0]]
    assert topk_with_exclusion(scores, 2).tolist() == [[3, 1], [3, 1]]  # no exclusion; padding still out
    assert excl[0, 0].item() is False  # the caller's mask is not modified
    with pytest.raises(ValueError):
        topk_with_exclusion(scores, 6)


def test_topk_agrees_with_target_ranks() -> None:
    # Continuous scores (no ties): target in top-K after exclusion  <=>  rank < K.
    g = torch.Generator().manual_seed(2)
    scores = torch.rand(64, 40, generator=g, dtype=torch.float64)
    targets = torch.randint(1, 40, (64,), generator=g)
    exclude = torch.rand(64, 40, generator=g) < 0.3
    exclude[torch.arange(64), targets] = False
    ranks = target_ranks(scores, targets, exclude=exclude)
    top = topk_with_exclusion(scores, 10, exclude)
    in_top = (top == targets[:, None]).any(1)
    assert torch.equal(in_top, ranks < 10)
    hit_pos = (top == targets[:, None]).float().argmax(1)
    assert torch.equal(hit_pos[in_top], ranks[in_top])


# ------------------------------------------------------------------------------------------------ set_metrics


def test_set_metrics_hand() -> None:
    # row 0: top [3, 7, 1, 9, 4], targets {7, 4, 8} (|T| = 3); hits at positions 1 and 4.
    #   @2: recall 1/3, hr 1, dcg = d(1), idcg = d(0) + d(1) -> 0.63093 / 1.63093 = 0.38685
    #   @5: recall 2/3, hr 1, dcg = d(1) + d(4), idcg = d(0) + d(1) + d(2) = 2.13093
    # row 1: top [5, 6, 0, 0, 0] (0 = empty slot, never a hit although 0 pads the targets), targets {2}
    #   no hit anywhere -> all 0
    top = torch.tensor([[3, 7, 1, 9, 4], [5, 6, 0, 0, 0]])
    targets = torch.tensor([[7, 4, 8, 0], [2, 0, 0, 0]])
    m = set_metrics(top, targets, ks=(2, 5))
    assert list(m) == ["recall@2", "hr@2", "ndcg@2", "recall@5", "hr@5", "ndcg@5"]
    assert_close(m["recall@2"], [1 / 3, 0])
    assert_close(m["hr@2"], [1, 0])
    assert_close(m["ndcg@2"], [d(1) / (d(0) + d(1)), 0])
    assert_close(m["recall@5"], [2 / 3, 0])
    assert_close(m["hr@5"], [1, 0])
    assert_close(m["ndcg@5"], [(d(1) + d(4)) / (d(0) + d(1) + d(2)), 0])
    # the same targets as a bool mask over 10 items
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, [7, 4, 8]] = True
    mask[1, 2] = True
    for k, v in set_metrics(top, mask, ks=(2, 5)).items():
        torch.testing.assert_close(v, m[k], rtol=0, atol=0)


def test_set_metrics_idcg_capped_at_k() -> None:
    # |targets| = 4 > K = 2 and both top-2 items are targets: DCG = d(0) + d(1) = IDCG (capped at 2) -> 1.0.
    # (Uncapped, over all |targets|, IDCG would be d(0)+d(1)+d(2)+d(3) = 2.56161 and NDCG 0.63669.)
    top = torch.tensor([[1, 2, 9]])
    targets = torch.tensor([[1, 2, 3, 4]])
    m = set_metrics(top, targets, ks=(2, 3))
    assert_close(m["ndcg@2"], [1.0])
    assert_close(m["recall@2"], [0.5])
    # @3: DCG = d(0) + d(1), IDCG = d(0) + d(1) + d(2)
    assert_close(m["ndcg@3"], [(d(0) + d(1)) / (d(0) + d(1) + d(2))])


def test_set_metrics_duplicates_and_validation() -> None:
    # target list [5, 5, 3] is the set {5, 3}: recall@1 of top [5] = 1/2
    m = set_metrics(torch.tensor([[5, 1]]), torch.tensor([[5, 5, 3]]), ks=(1,))
    assert_close(m["recall@1"], [0.5])
    assert_close(m["ndcg@1"], [1.0])
    with pytest.raises(ValueError, match="at least one target"):
        set_metrics(torch.tensor([[5, 1]]), torch.tensor([[0, 0]]), ks=(1,))
    with pytest.raises(ValueError, match="exceeds"):
        set_metrics(torch.tensor([[5, 1]]), torch.tensor([[5]]), ks=(3,))
    # mask column 0 (padding) never counts as a target
    mask = torch.tensor([[True, False, True]])
    assert_close(set_metrics(torch.tensor([[2, 1]]), mask, ks=(2,))["recall@2"], [1.0])


def test_comirec_official_ndcg_variants_hand() -> None:
    # top [3, 7, 1, 9, 4]; target list [8, 4, 7, 4] in held-out order, 4 repeated (len 4).
    # master (over top positions): hits at i = 1 (7) and i = 4 (4) -> n = 2, DCG d(1) + d(4), IDCG d(0) + d(1).
    # paper (over the target list): j = 1 (4), 2 (7), 3 (4) are in the top-5 set -> n = 3,
    #   DCG d(1) + d(2) + d(3), IDCG d(0) + d(1) + d(2).
    # @2, top {3, 7}: master hit at i = 1 -> d(1) / d(0); paper j = 2 -> d(2) / d(0).
    # row 1: no hit -> 0 everywhere (its 0 slot is empty, never a hit)
    top = torch.tensor([[3, 7, 1, 9, 4], [5, 6, 0, 2, 2]])
    targets = torch.tensor([[8, 4, 7, 4], [1, 0, 0, 0]])
    m = comirec_official_metrics(top, targets, ks=(2, 5))
    assert_close(m["recall_master@5"], [2 / 4, 0])
    assert_close(m["ndcg_master@5"], [(d(1) + d(4)) / (d(0) + d(1)), 0])
    assert_close(m["recall_paper@5"], [3 / 4, 0])
    assert_close(m["ndcg_paper@5"], [(d(1) + d(2) + d(3)) / (d(0) + d(1) + d(2)), 0])
    assert_close(m["recall_master@2"], [1 / 4, 0])
    assert_close(m["ndcg_master@2"], [d(1) / d(0), 0])
    assert_close(m["ndcg_paper@2"], [d(2) / d(0), 0])
    # the corrected metric on the same row: the set {8, 4, 7}, IDCG over min(3, 5) ranks
    fixed = set_metrics(top[:1], targets[:1], ks=(5,))
    assert_close(fixed["recall@5"], [2 / 3])
    assert_close(fixed["ndcg@5"], [(d(1) + d(4)) / (d(0) + d(1) + d(2))])
    # a target repeated beyond K: the paper branch counts each occurrence (n = 3 > K = 1), the master one once
    rep = comirec_official_metrics(torch.tensor([[4, 9]]), torch.tensor([[4, 4, 4]]), ks=(1,))
    assert_close(rep["recall_paper@1"], [1.0])
    assert_close(rep["ndcg_paper@1"], [1.0])
    assert_close(rep["recall_master@1"], [1 / 3])
    with pytest.raises(ValueError, match="held-out order"):
        comirec_official_metrics(top, torch.ones(2, 10, dtype=torch.bool), ks=(2,))
    with pytest.raises(ValueError, match="at least one target"):
        comirec_official_metrics(top, torch.zeros(2, 3, dtype=torch.long), ks=(2,))


def test_comirec_official_matches_the_loops() -> None:
    # Both branches' loops over one user, written out from the module docstring, on random lists.
    g = np.random.default_rng(0)
    tops, tgts = [], []
    for _ in range(60):
        tops.append(g.permutation(np.arange(1, 40))[:12])
        n = int(g.integers(1, 9))
        tgts.append(np.r_[g.integers(1, 40, n), np.zeros(8 - n, dtype=np.int64)])
    m = comirec_official_metrics(np.stack(tops), np.stack(tgts), ks=(5, 12))
    for k in (5, 12):
        for b, (top, tg) in enumerate(zip(tops, tgts, strict=True)):
            lst = [int(x) for x in tg if x != 0]
            top_k = [int(x) for x in top[:k]]
            for name, loop in (("master", top_k), ("paper", lst)):
                other = set(lst) if name == "master" else set(top_k)
                hits = [i for i, x in enumerate(loop) if x in other]
                idcg = sum(d(i) for i in range(len(hits)))
                ndcg = sum(d(i) for i in hits) / idcg if hits else 0.0
                assert m[f"ndcg_{name}@{k}"][b].item() == pytest.approx(ndcg, abs=1e-12)
                assert m[f"recall_{name}@{k}"][b].item() == pytest.approx(len(hits) / len(lst), abs=1e-12)
            # never below the corrected NDCG
            fixed = set_metrics(top[None], tg[None], ks=(k,))[f"ndcg@{k}"][0].item()
            assert m[f"ndcg_master@{k}"][b].item() >= fixed - 1e-12


def test_set_metrics_one_target_matches_ranking_metrics() -> None:
    # With a single target and no ties, set metrics reduce to the single-target ones.
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(32, 25, generator=g, dtype=torch.float64)
    targets = torch.randint(1, 25, (32,), generator=g)
    ranks = target_ranks(scores, targets)
    single = per_sample_ranking_metrics(ranks, (3, 10))
    sets = set_metrics(topk_with_exclusion(scores, 10), targets[:, None], (3, 10))
    for k in (3, 10):
        torch.testing.assert_close(sets[f"recall@{k}"], single[f"hr@{k}"])
        torch.testing.assert_close(sets[f"hr@{k}"], single[f"hr@{k}"])
        torch.testing.assert_close(sets[f"ndcg@{k}"], single[f"ndcg@{k}"])


# ---------------------------------------------------------------------------------------------------- AUC


def brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_auc_hand() -> None:
    # pos {0.9, 0.3}, neg {0.8, 0.1}: pairs (0.9>0.8), (0.9>0.1), (0.3<0.8), (0.3>0.1) -> 3/4
    assert auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == 0.75
    # ties: pos {0.5, 0.7}, neg {0.5, 0.2}: (0.5=0.5) 1/2, (0.5>0.2) 1, (0.7>0.5) 1, (0.7>0.2) 1 -> 3.5/4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.7, 0.2])) == 0.875
    # all scores equal -> every pair ties -> 1/2
    assert auc([1, 0, 0], [0.3, 0.3, 0.3]) == 0.5
    # torch inputs, bool labels; perfect reverse ranking -> 0
    assert auc(torch.tensor([True, False]), torch.tensor([0.1, 0.9])) == 0.0
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert math.isnan(auc([], []))
    with pytest.raises(ValueError):
        auc([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        auc([1, 0], [0.1, float("nan")])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=0, max_size=40))
def test_auc_matches_brute_force(pairs: list[tuple[bool, int]]) -> None:
    y = np.array([p[0] for p in pairs], dtype=np.int64)
    s = np.array([p[1] for p in pairs], dtype=np.float64) / 4  # small integer grid -> many ties
    got, ref = auc(y, s), brute_auc(y, s)
    assert (math.isnan(got) and math.isnan(ref)) or got == pytest.approx(ref, abs=1e-12)


def test_auc_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 20, 500) / 10.0
    assert auc(y, s) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)


# --------------------------------------------------------------------------------------------------- GAUC


def loop_gauc(y: np.ndarray, s: np.ndarray, g: np.ndarray, weight: str) -> float:
    num = den = 0.0
    for key in np.unique(g):
        m = g == key
        a = brute_auc(y[m], s[m])
        if math.isnan(a):
            continue
        w = {"samples": m.sum(), "positives": y[m].sum(), "uniform": 1}[weight]
        num += w * a
        den += w
    return num / den if den else float("nan")


def test_gauc_hand() -> None:
    # group 7: y [1, 0], s [0.9, 0.1] -> AUC 1, n = 2, n_pos = 1
    # group 3: y [1, 1, 0], s [0.2, 0.5, 0.2] -> (0.2=0.2) 1/2 + (0.5>0.2) 1 = 1.5 / 2 = 0.75, n = 3, n_pos = 2
    # group 5: y [1, 1] single class -> skipped (its score 0.5 equals one in group 3; groups never mix)
    # samples:   (2*1 + 3*0.75) / 5 = 4.25 / 5 = 0.85
    # positives: (1*1 + 2*0.75) / 3 = 2.5 / 3 = 0.83333
    # uniform:   (1 + 0.75) / 2 = 0.875
    y = [1, 1, 1, 0, 0, 1, 1]
    s = [0.2, 0.5, 0.9, 0.2, 0.1, 0.5, 0.4]
    g = [3, 5, 7, 3, 7, 3, 5]
    assert gauc(y, s, g) == pytest.approx(0.85, abs=1e-15)
    assert gauc(y, s, g, weight="positives") == pytest.approx(2.5 / 3, abs=1e-15)
    assert gauc(y, s, g, weight="uniform") == pytest.approx(0.875, abs=1e-15)
    keys, aucs, n, n_pos = per_group_auc(y, s, g)
    assert keys.tolist() == [3, 5, 7]
    assert aucs[0] == 0.75 and math.isnan(aucs[1]) and aucs[2] == 1.0
    assert n.tolist() == [3, 2, 2] and n_pos.tolist() == [2, 2, 1]
    # string group keys and torch inputs work too
    assert gauc(
        torch.tensor(y), torch.tensor(s), np.array(["c", "e", "g", "c", "g", "c", "e"])
    ) == pytest.approx(0.85)
    assert math.isnan(gauc([1, 0], [0.1, 0.2], [1, 2]))  # every group single-class
    with pytest.raises(ValueError):
        gauc(y, s, g, weight="users")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 4), st.integers(0, 6)), min_size=1, max_size=60),
    st.sampled_from(["samples", "positives", "uniform"]),
)
def test_gauc_matches_loop(rows: list[tuple[bool, int, int]], weight: str) -> None:
    y = np.array([r[0] for r in rows], dtype=np.int64)
    s = np.array([r[1] for r in rows], dtype=np.float64)
    g = np.array([r[2] for r in rows], dtype=np.int64)
    got, ref = gauc(y, s, g, weight=weight), loop_gauc(y, s, g, weight)  # type: ignore[arg-type]
    assert (math.isnan(got) and math.isnan(ref)) or got == pytest.approx(ref, abs=1e-12)


def test_gauc_single_group_equals_auc() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 10, 300).astype(float)
    assert gauc(y, s, np.zeros(300, dtype=int)) == pytest.approx(auc(y, s), abs=1e-15)


# ------------------------------------------------------------------------------------------------ logloss


def test_logloss_hand() -> None:
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.22314 + 0.51083) / 2 = 0.36698
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx((-math.log(0.8) - math.log(0.6)) / 2, rel=1e-12)
    # confidently wrong predictions are clipped to eps: -ln(1e-7) = 16.11810 each
    assert logloss(torch.tensor([0, 1]), torch.tensor([1.0, 0.0])) == pytest.approx(-math.log(1e-7), rel=1e-9)
    # perfect predictions are clipped too: -ln(1 - 1e-7) ~ 1e-7
    assert logloss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log1p(-1e-7), rel=1e-9)
    assert logloss([1], [0.5], eps=0.1) == pytest.approx(math.log(2), rel=1e-12)
    with pytest.raises(ValueError):
        logloss([1, 0], [0.5])


def test_set_ranks_resolve_ties_like_target_ranks_and_match_set_metrics_without_ties() -> None:
    from behaviorseq.metrics import set_metrics_from_ranks, set_target_ranks

    const = torch.zeros(2, 10)  # 9 items, all tied; column 0 is padding
    t = torch.tensor([[1, 2, 2, 0], [3, 0, 0, 0]])  # a repeated id counts once
    assert set_target_ranks(const, t, "pessimistic").tolist() == [[7, 8, math.inf, math.inf], [8] + [math.inf] * 3]
    assert set_target_ranks(const, t, "optimistic").tolist() == [[0, 1, math.inf, math.inf], [0] + [math.inf] * 3]
    assert set_target_ranks(const, t, "average").tolist() == [[3.5, 4.5, math.inf, math.inf], [4] + [math.inf] * 3]
    one = torch.tensor([[1], [3]])  # one target: the same ranks as target_ranks
    for ties in ("pessimistic", "optimistic", "average"):
        torch.testing.assert_close(set_target_ranks(const, one, ties)[:, 0],
                                   target_ranks(const, one[:, 0], ties=ties).double())
    m = set_metrics_from_ranks(set_target_ranks(const, t, "pessimistic"), [8, 9])
    assert m["recall@8"].tolist() == [0.5, 0.0] and m["recall@9"].tolist() == [1.0, 1.0]
    g = torch.Generator().manual_seed(0)  # untied scores: the top-K list's metrics exactly
    s = torch.randn(32, 200, generator=g)
    s[torch.rand(32, 200, generator=g) < 0.1] = -torch.inf  # excluded items
    tg = torch.randint(1, 200, (32, 6), generator=g)
    tg[:, 4:] = 0
    s.scatter_(1, tg.clamp(min=1), torch.randn(32, 6, generator=g))  # targets are never excluded
    a = set_metrics(topk_with_exclusion(s, 20), tg, [5, 20])
    b = set_metrics_from_ranks(set_target_ranks(s, tg), [5, 20])
    for k in a:
        torch.testing.assert_close(a[k], b[k])
