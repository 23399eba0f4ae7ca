"""SRA-CL's item neighbours (Cui et al., NeurIPS 2025, arXiv 2503.04162): for every item its ``k`` most similar
other items by cosine of frozen semantic vectors, the candidates of intra-sequence semantic substitution.

Padding (item 0) and items without a vector (zero rows) are never neighbours and get none; an item is never
its own neighbour (by identity, not by dropping rank 0, which fails for duplicate vectors).
Ties: attribute bags often coincide (on Beauty 86% of the items share their 10th-neighbour similarity with
more items than slots are left). ``ties="random"`` computes similarities in float64, compares them on a
2^-16 grid and orders equal ones by a fixed pseudo-random number per (item, candidate) pair
(``counter_uniform``). LSA vectors of bags that differ only outside the kept components are equal up to float
rounding; without the grid those last bits picked the same few items every time (Beauty: largest in-degree about
130, 53 with it). In float64 the rounding of different chunkings, devices and searches (about 1e-15) moves a
similarity across a grid boundary with a chance of about 1e-10 (an estimate), so the lists do not depend on them
(tested for chunking, query subsets and ivf with every cell probed), and the approximate search below gives the
exact lists wherever it returns every item as near as the k-th.
``"topk"`` (float32, torch.topk's order among equal values, the same for every row: a few items get most
substitutions) was the rule up to session 16, kept verbatim to reproduce those runs (a nonzero row 0 is a
candidate there, as it was).
The exact search is O(n_items^2) (chunks bounded in memory); ``item_neighbours_approx`` takes the candidates
from a FAISS ivf / hnsw index for catalogues of hundreds of thousands of items and more. Both draw a number per
(item, tie member), so a group of G identical vectors costs G^2 draws (quadratic, like the exact search, however
the candidates were found); ``nn/tie_order.py`` draws them in one compiled pass (numba; 3-3.6x faster than drawing
and sorting in numpy at G = 20,000, benchmarks README section 7).
"""

from __future__ import annotations

import numpy as np
import torch

from behaviorseq.index.faiss_index import IndexConfig, ItemIndex
from behaviorseq.nn.tie_order import best_k
from behaviorseq.nn.topk import HAVE_NUMBA

ITEM_BUDGET = 1 << 24  # exact search: similarities per chunk; ~75 bytes each at the peak of numpy's tie handling (~1.2 GB), less with numba
SEARCH_BUDGET = 1 << 22  # approximate search: (queries or member rows) x candidates per step
RESCORE_BUDGET = 1 << 24  # approximate search: candidate vector entries gathered at once to rescore in float64
TIE_SEED = 17  # the tie rule's pseudo-random numbers: data, the same for every training seed
TIE_GRID = 2.0 ** -16  # random ties: similarities compared on this grid (below it, float rounding would decide)


def _with_vectors(vecs: np.ndarray) -> np.ndarray:
    has = np.linalg.norm(vecs, axis=1) > 0
    has[:1] = False  # row 0 is padding, whatever its vector
    return has


def _on_grid(val: torch.Tensor) -> torch.Tensor:
    """Similarities rounded to ``TIE_GRID`` (-inf kept)."""
    return torch.round(val / TIE_GRID) * TIE_GRID


def _pick(val: torch.Tensor, cand: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """Of candidates ``cand`` [t, c] of items ``rows`` [t] with similarities ``val`` on the grid (-inf = not a
    candidate; at least k finite per row), the k best: by similarity, equal similarities by the pair's fixed
    random number (within the top k as well as at the k-th value, so the order is the same in every search)."""
    if HAVE_NUMBA and val.device.type == "cpu":  # one compiled pass over each whole row (nn/tie_order.py)
        v, c = val, cand
    else:  # the candidates down to the widest row's k-th value's whole tie group, then every pair drawn
        kth = val.topk(k, dim=1).values[:, -1:]
        v, i = val.topk(int((val >= kth).sum(1).max()), dim=1)
        c = cand.gather(1, i)
    pos = best_k(v.cpu().numpy(), c.cpu().numpy(), rows.cpu().numpy(), k, TIE_SEED, 0)
    return c.gather(1, torch.from_numpy(pos).to(c.device))


def _topk_rule(vecs: np.ndarray, k: int, device: str, chunk: int) -> np.ndarray:
    """The rule up to session 16, as it was (its float32 arithmetic and chunking included)."""
    v = torch.from_numpy(vecs).to(device)
    has = v.norm(dim=1) > 0
    out = torch.zeros(len(v), k, dtype=torch.long)
    k_eff = min(k, int(has.sum()) - 1)
    for s in range(0, len(v), chunk):
        sim = v[s:s + chunk] @ v.T  # [q, n + 1]
        sim[:, ~has] = -torch.inf
        rows = torch.arange(s, min(s + chunk, len(v)), device=v.device)
        sim[rows - s, rows] = -torch.inf  # never itself (by identity)
        if k_eff > 0:
            val, idx = sim.topk(k_eff, dim=1)
            out[s:s + chunk, :k_eff] = torch.where(val > -torch.inf, idx, 0).cpu()
    out[~has.cpu()] = 0
    return out.numpy()


def item_neighbours(vecs: np.ndarray, k: int, device: str = "cpu", chunk: int = 4096, ties: str = "random",
                    queries: np.ndarray | None = None) -> np.ndarray:
    """[n + 1, k] top-k cosine neighbours of every item (rows of ``vecs``, unit or zero vectors) among the
    others, 0 where none. Exact: all pairs, ``chunk`` query rows at a time (fewer where the catalogue is large).
    ``queries`` (random ties only): just these rows (the result is then [len(queries), k])."""
    if ties == "topk":
        if queries is not None:
            raise ValueError("ties='topk' (the rule up to session 16) searches every row; queries need ties='random'")
        return _topk_rule(vecs, k, device, chunk)
    if ties != "random":
        raise ValueError(f"ties must be 'random' or 'topk', got {ties!r}")
    has = _with_vectors(vecs)
    q = np.arange(len(vecs)) if queries is None else np.asarray(queries, dtype=np.int64)
    keep = np.flatnonzero(has[q])  # output rows with a vector; the others stay 0
    out = torch.zeros(len(q), k, dtype=torch.long)
    k_eff = min(k, int(has.sum()) - 1)
    if k_eff <= 0:
        return out.numpy()
    v = torch.from_numpy(np.asarray(vecs, dtype=np.float64)).to(device)
    no_vec = torch.from_numpy(~has).to(device)
    chunk = max(1, min(chunk, ITEM_BUDGET // len(v)))
    cols = torch.arange(len(v), device=v.device)
    for s in range(0, len(keep), chunk):
        pos = keep[s:s + chunk]
        rows = torch.from_numpy(q[pos]).to(v.device)
        sim = v[rows] @ v.T  # [q, n + 1], float64
        sim[:, no_vec] = -torch.inf
        sim[torch.arange(len(rows), device=v.device), rows] = -torch.inf  # never itself (by identity)
        out[pos, :k_eff] = _pick(_on_grid(sim), cols.expand(len(rows), -1), rows, k_eff).cpu()
    return out.numpy()


def _rescore(vecs: np.ndarray, query: np.ndarray, cand: torch.Tensor) -> torch.Tensor:
    """Float64 cosines [g, c] of items ``query`` [g] with their candidates ``cand`` [g, c] (-1: -inf)."""
    out = torch.full(cand.shape, -torch.inf, dtype=torch.float64)
    cols = max(1, min(cand.shape[1], RESCORE_BUDGET // vecs.shape[1]))  # a very wide row: its columns in slices
    step = max(1, RESCORE_BUDGET // (cols * vecs.shape[1]))
    for s in range(0, len(query), step):
        q = torch.from_numpy(vecs[query[s:s + step]]).double()  # [g, d]
        for a in range(0, cand.shape[1], cols):
            c = cand[s:s + step, a:a + cols]
            cv = torch.from_numpy(vecs[c.clamp(min=0).numpy()]).double()  # [g, c, d]
            out[s:s + step, a:a + cols] = torch.where(c >= 0, torch.bmm(cv, q[:, :, None])[..., 0], -torch.inf)
    return out


def item_neighbours_approx(vecs: np.ndarray, k: int, index: IndexConfig, exact_device: str = "cpu"
                           ) -> tuple[np.ndarray, int]:
    """As :func:`item_neighbours` with random ties, the candidates from an approximate FAISS index
    (``index.kind`` ivf or hnsw), rescored in float64. Items with the same vector (same attribute bag) share one
    query, which fetches the size of its group plus ``5k + 17`` candidates; a row is settled once it holds k
    others and a value more than one grid cell below its k-th, so that the whole tie group at the k-th value is
    in hand; otherwise its group fetches 4x more (up to 64x). Rows the index cannot serve further (it returned
    fewer than asked while the row is unsettled) and rows still unsettled after that are searched exactly. An
    approximate index may miss neighbours, tie-group members in cells it did not probe among them; the lists are
    the exact ones where it returns every item as near as the k-th.
    Returns (neighbours [n + 1, k], number of rows searched exactly)."""
    if index.kind == "flat":
        raise ValueError("item_neighbours_approx takes an ivf or hnsw index; the exact search is item_neighbours")
    has = _with_vectors(vecs)
    ids = np.flatnonzero(has)
    out = np.zeros((len(vecs), k), dtype=np.int64)
    k_eff = min(k, len(ids) - 1)
    if k_eff <= 0:
        return out, 0
    v32 = np.ascontiguousarray(vecs, dtype=np.float32)  # FAISS's copy; grouping, rescoring and fallback use vecs
    ix = ItemIndex(index).fit(np.vstack([np.zeros((1, v32.shape[1]), np.float32), v32[ids]]))  # j + 1 = ids[j]
    id_of = torch.from_numpy(np.concatenate([[-1], ids]))
    _, rep, group, size = np.unique(vecs[ids], axis=0, return_index=True, return_inverse=True, return_counts=True)
    members = ids[np.argsort(group.reshape(-1), kind="stable")]  # items of group 0, then of group 1, ...
    group_of = np.full(len(vecs), -1, dtype=np.int64)  # item -> its group (-1: no vector)
    group_of[ids] = group.reshape(-1)
    lo = np.cumsum(size) - size
    first = 5 * k + 17
    todo, wide, rest = np.argsort(size, kind="stable"), 1, []  # small groups first: each part fetches its largest's
    while len(todo):
        fetch = np.minimum(len(ids), size[todo] + wide * first)
        short, a = [], 0
        while a < len(todo):  # a part: its queries x its largest fetch within the budget (sizes ascend)
            n_q = max(1, int(np.searchsorted(np.arange(1, len(todo) - a + 1) * fetch[a:], SEARCH_BUDGET, "right")))
            part, f = todo[a:a + n_q], int(fetch[a + n_q - 1])
            a += n_q
            _, pos = ix.search(v32[ids[rep[part]]], f)
            cand_g = id_of[torch.from_numpy(pos)]  # [g, f] item ids, -1 where the index gave none
            gave_less_g = (cand_g < 0).any(1)  # the index cannot give more (probed cells or graph walk exhausted)
            gave_every_g = ~gave_less_g & (f >= len(ids))  # every item: the exact answer
            n = size[part]
            local = np.repeat(np.arange(len(part)), n)  # member row -> its group's query
            within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # member row -> its place in the group
            rows_all = members[np.repeat(lo[part], n) + within]
            # the group's own members are known: always candidates (an hnsw walk returns few of a large group of
            # equal vectors), and dropped from what the index gave so that none is listed twice
            own = torch.from_numpy(group_of[cand_g.clamp(min=0).numpy()]) == torch.from_numpy(part)[:, None]
            mem = np.full((len(part), int(n.max())), -1, dtype=np.int64)
            mem[local, within] = rows_all
            cand_g = torch.cat([torch.from_numpy(mem), torch.where(own & (cand_g >= 0), -1, cand_g)], 1)
            val_g = _on_grid(_rescore(vecs, ids[rep[part]], cand_g))
            step = max(1, SEARCH_BUDGET // cand_g.shape[1])
            for r in range(0, len(rows_all), step):  # member rows in bounded slices
                rows, loc = torch.from_numpy(rows_all[r:r + step]), local[r:r + step]
                cand = cand_g[loc]
                other = (cand >= 0) & (cand != rows[:, None])
                val = torch.where(other, val_g[loc], -torch.inf)
                full = other.sum(1) >= k_eff
                kth = val.topk(k_eff, dim=1).values[:, -1]
                lowest = torch.where(other, val, torch.inf).min(1).values
                # FAISS ranks by float32, so an item it left out may round into the k-th value's grid cell only if
                # the lowest fetched is within one cell of it: settled when a cell lies between, or all is in hand
                settled = full & ((lowest < kth - TIE_GRID) | gave_every_g[loc])
                if settled.any():
                    out[rows[settled].numpy(), :k_eff] = _pick(val[settled], cand[settled], rows[settled], k_eff).numpy()
                # unsettled where the index cannot give more (under k others, or a tie group maybe cut): exact
                cannot = ~settled & gave_less_g[loc]
                rest.append(rows[cannot].numpy())
                short.append(part[np.unique(loc[(~settled & ~cannot).numpy()])])
        todo, wide = np.unique(np.concatenate(short)), 4 * wide
        todo = todo[np.argsort(size[todo], kind="stable")]
        if len(todo) and wide > 64:  # far enough: the rest searched exactly
            rest.append(np.concatenate([members[lo[g]:lo[g] + size[g]] for g in todo]))
            break
    rest = np.sort(np.concatenate(rest)) if rest else np.zeros(0, np.int64)
    if len(rest):
        out[rest] = item_neighbours(vecs, k, exact_device, queries=rest)
    return out, len(rest)
