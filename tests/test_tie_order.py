"""nn.tie_order.best_k: each row's k best by value, equal values by the pair's counter_uniform number; the numba
pass and the numpy form against the rule written out row by row, on inputs full of ties."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorseq.data.sampling import counter_uniform
from behaviorseq.nn.tie_order import best_k
from behaviorseq.nn.topk import HAVE_NUMBA

PATHS = [False] + ([True] if HAVE_NUMBA else [])


def by_hand(val, cand, rows, k, seed, stream):
    out = np.full((len(val), k), -1)
    for r in range(len(val)):
        keys = [(-val[r, j], -counter_uniform(seed, np.array(rows[r]), np.array(cand[r, j]), stream), j)
                for j in range(val.shape[1]) if val[r, j] > -np.inf]
        picked = [j for _, _, j in sorted(keys)[:k]]
        out[r, :len(picked)] = picked
    return out


@pytest.mark.parametrize("use_numba", PATHS)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_best_k_is_the_rule_written_out(use_numba, k):
    rng = np.random.default_rng(k)
    t, c = 40, 60
    val = rng.integers(0, 4, (t, c)).astype(np.float64) / 4  # four values: big tie groups everywhere
    val[rng.random((t, c)) < 0.2] = -np.inf  # not candidates
    val[0] = -np.inf  # a row without candidates
    val[1, 5:] = -np.inf  # a row with fewer than k
    val[2, ::7] = np.nan  # NaN is no candidate either
    cand = np.stack([rng.permutation(1000)[:c] for _ in range(t)])
    rows = rng.integers(0, 10**9, t)
    for stream in (0, 1):
        got = best_k(val, cand, rows, k, 17, stream, use_numba=use_numba)
        assert np.array_equal(got, by_hand(val, cand, rows, k, 17, stream))
    assert not np.array_equal(best_k(val, cand, rows, k, 17, 0, use_numba=use_numba),
                              best_k(val, cand, rows, k, 17, 1, use_numba=use_numba)) or k == 1


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_and_numpy_agree_for_any_seed():
    """The mixed seed is passed as uint64 whatever its size (a Python int below 2**63 once compiled an int64
    variant: other numbers for about half the seeds, then OverflowError for the rest)."""
    rng = np.random.default_rng(0)
    val = rng.integers(0, 3, (30, 40)).astype(np.float64)
    cand, rows = rng.integers(0, 10**6, (30, 40)), np.arange(30)
    for seed in (3, 4, 5, 17, 0, 2**63 + 5, 2**64 - 1):
        assert np.array_equal(best_k(val, cand, rows, 5, seed, 0, use_numba=True),
                              best_k(val, cand, rows, 5, seed, 0, use_numba=False)), seed


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_and_numpy_agree_on_a_large_tie_group_and_with_fewer_columns_than_k():
    rng = np.random.default_rng(0)
    val = np.zeros((50, 3000))
    val[:, :7] = 0.5  # 7 better, then a tie group of 2,993
    cand = np.tile(np.arange(3000), (50, 1))
    rows = np.arange(50)
    a, b = best_k(val, cand, rows, 10, 17, 0, use_numba=True), best_k(val, cand, rows, 10, 17, 0, use_numba=False)
    assert np.array_equal(a, b) and (np.sort(a[:, :7], 1) == np.arange(7)).all()
    assert len(np.unique(a[:, 7:])) > 100  # the tie group's picks differ between rows
    small = rng.random((5, 3))
    assert np.array_equal(best_k(small, cand[:5, :3], rows[:5], 6, 1, 0, use_numba=True),
                          best_k(small, cand[:5, :3], rows[:5], 6, 1, 0, use_numba=False))


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_calls_leave_torch_and_faiss_thread_counts_alone():
    """A numba pass once set OpenMP's shared count back to all cores: torch and FAISS then ran with 2 threads in a
    one-thread process, and FAISS's ivf training gave other lists than before the pass."""
    import subprocess
    import sys

    code = ("import numpy as np, torch\n"
            "torch.set_num_threads(1)\n"
            "from behaviorseq.index.faiss_index import IndexConfig, ItemIndex\n"
            "import faiss\n"
            "x = np.random.default_rng(0).standard_normal((3001, 16)).astype(np.float32)\n"
            "ItemIndex(IndexConfig(kind='ivf')).fit(x).search(x[1:100], 5)  # OpenMP's pools in use\n"
            "(torch.rand(200, 200, dtype=torch.float64) @ torch.rand(200, 200, dtype=torch.float64)).sum()\n"
            "from behaviorseq.nn.tie_order import best_k\n"
            "from behaviorseq.nn.topk import topk_rows\n"
            "best_k(np.zeros((3, 5)), np.zeros((3, 5), dtype=np.int64), np.arange(3), 2, 1, 0, use_numba=True)\n"
            "topk_rows(torch.rand(300, 1000), 5)\n"
            "print(torch.get_num_threads(), faiss.omp_get_max_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"})
    assert out.stdout.split() == ["1", "1"], out.stdout + out.stderr


@pytest.mark.parametrize("use_numba", PATHS)
def test_a_shared_candidate_row_is_the_same_as_repeating_it(use_numba):
    import torch

    rng = np.random.default_rng(1)
    val = rng.integers(0, 3, (20, 50)).astype(np.float64)
    cols = np.arange(100, 150)
    full = best_k(val, np.tile(cols, (20, 1)), np.arange(20), 4, 17, 0, use_numba=use_numba)
    assert np.array_equal(best_k(val, cols, np.arange(20), 4, 17, 0, use_numba=use_numba), full)
    expanded = torch.from_numpy(cols).expand(20, -1).numpy()  # stride 0: not copied to [20, 50]
    assert np.array_equal(best_k(val, expanded, np.arange(20), 4, 17, 0, use_numba=use_numba), full)
