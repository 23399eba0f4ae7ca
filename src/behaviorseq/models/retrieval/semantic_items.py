"""SRA-CL's item neighbours (Cui et al., NeurIPS 2025, arXiv 2503.04162): for every item its ``k`` most similar
other items by cosine of frozen semantic vectors, the candidates of intra-sequence semantic substitution.

Padding (item 0) and items without a vector (zero rows) are never neighbours and get none; an item is never
its own neighbour (by identity, not by dropping rank 0, which fails for duplicate vectors).
Ties: attribute bags often coincide (on Beauty 86% of the items share their 10th-neighbour similarity with
more items than slots are left). ``ties="random"`` fills those slots by a fixed pseudo-random number per
(item, candidate) pair (``counter_uniform``), so the picks do not depend on chunking, device or search order,
and compares similarities on a 2^-16 grid: LSA vectors of bags that differ only outside the kept components
are equal up to float rounding, and without the grid those last bits picked the same few items every time
(Beauty: largest in-degree 129, 53 with it). The approximate search below makes the same picks as the exact
one wherever it reaches the whole tie group and no similarity sits within rounding of a grid boundary.
``"topk"`` (torch.topk's own order among equal values, the same for every row) hands a few items most of the
substitutions; it was the rule up to session 16 and is kept to reproduce those runs.
The exact search is O(n_items^2) (chunks bounded in memory); ``item_neighbours_approx`` takes the candidates
from a FAISS ivf / hnsw index for catalogues of hundreds of thousands of items and more.
"""

from __future__ import annotations

import numpy as np
import torch

from behaviorseq.data.sampling import counter_uniform
from behaviorseq.index.faiss_index import IndexConfig, ItemIndex

ITEM_BUDGET = 1 << 25  # exact search: similarity entries per chunk (bounds the tie handling's arrays too)
SEARCH_BUDGET = 1 << 22  # approximate search: query rows x candidates per FAISS call
TIE_SEED = 17  # the tie rule's pseudo-random numbers: data, the same for every training seed
TIE_GRID = 2.0 ** -16  # random ties: similarities compared on this grid (below it, float rounding decides)


def _on_grid(val: torch.Tensor) -> torch.Tensor:
    """Similarities rounded to ``TIE_GRID`` (exact in float32; -inf kept): vectors equal up to rounding tie."""
    return torch.round(val / TIE_GRID) * TIE_GRID


def _with_vectors(vecs: np.ndarray) -> np.ndarray:
    has = np.linalg.norm(vecs, axis=1) > 0
    has[:1] = False  # row 0 is padding, whatever its vector
    return has


def _pick(val: torch.Tensor, cand: torch.Tensor, rows: torch.Tensor, k: int, ties: str) -> torch.Tensor:
    """Of candidates ``cand`` [t, c] of items ``rows`` [t] with similarities ``val`` (-inf = not a candidate; at
    least k finite per row), the k best. ``random``: by similarity, equal similarities by the pair's fixed
    random number (within the top k as well as at the k-th value, so the order is the same in every search)."""
    if ties == "topk":
        return cand.gather(1, val.topk(k, dim=1).indices)
    val = _on_grid(val)
    kth = val.topk(k, dim=1).values[:, -1:]
    m = int((val >= kth).sum(1).max())  # the widest row: its k-th value's whole tie group
    v, i = val.topk(m, dim=1)
    c = cand.gather(1, i)
    u = counter_uniform(TIE_SEED, rows[:, None].expand_as(c).cpu().numpy(), c.cpu().numpy(), 0)
    by_u = torch.from_numpy(np.argsort(-u, axis=1, kind="stable")).to(c.device)
    v, c = v.gather(1, by_u), c.gather(1, by_u)
    return c.gather(1, torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k])


def item_neighbours(vecs: np.ndarray, k: int, device: str = "cpu", chunk: int = 4096, ties: str = "random",
                    queries: np.ndarray | None = None) -> np.ndarray:
    """[n + 1, k] top-k cosine neighbours of every item (rows of ``vecs``, unit or zero vectors) among the
    others, 0 where none. Exact: all pairs, ``chunk`` query rows at a time (fewer where the catalogue is large).
    ``queries``: only these rows (the result is then [len(queries), k])."""
    if ties not in ("random", "topk"):
        raise ValueError(f"ties must be 'random' or 'topk', got {ties!r}")
    v = torch.from_numpy(np.ascontiguousarray(vecs, dtype=np.float32)).to(device)
    has = torch.from_numpy(_with_vectors(vecs)).to(device)
    q_all = torch.arange(len(v)) if queries is None else torch.as_tensor(np.asarray(queries, dtype=np.int64))
    out = torch.zeros(len(q_all), k, dtype=torch.long)
    k_eff = min(k, int(has.sum()) - 1)
    if k_eff <= 0:
        return out.numpy()
    chunk = max(1, min(chunk, ITEM_BUDGET // len(v)))
    cols = torch.arange(len(v), device=v.device)
    for s in range(0, len(q_all), chunk):
        rows = q_all[s:s + chunk].to(v.device)
        rows = rows[has[rows]]  # items without a vector keep their zero rows
        if not len(rows):
            continue
        sim = v[rows] @ v.T  # [q, n + 1]
        sim[:, ~has] = -torch.inf
        sim[torch.arange(len(rows), device=v.device), rows] = -torch.inf  # never itself (by identity)
        picked = _pick(sim, cols.expand(len(rows), -1), rows, k_eff, ties)
        out[torch.nonzero(has[q_all[s:s + chunk].to(v.device)]).view(-1).cpu() + s, :k_eff] = picked.cpu()
    return out.numpy()


def item_neighbours_approx(vecs: np.ndarray, k: int, index: IndexConfig, ties: str = "random",
                           exact_device: str = "cpu") -> tuple[np.ndarray, int]:
    """As :func:`item_neighbours`, the candidates from an approximate FAISS index (``index.kind`` ivf or hnsw).
    Items with the same vector (same attribute bag) share one query. Each query fetches the size of its group
    plus ``5k + 17`` candidates; a row is settled once it holds k others and (random ties) a value below its k-th,
    so that the whole tie group at the k-th value is in hand; otherwise it fetches 4x more (up to 64x). Rows the
    index cannot fill (fewer candidates than asked, under k others), and rows still unsettled, are searched
    exactly. A tie group is complete among what the index returns, not beyond: an approximate index may miss
    members, as it may miss any neighbour.
    Returns (neighbours [n + 1, k], number of rows searched exactly)."""
    if ties not in ("random", "topk"):
        raise ValueError(f"ties must be 'random' or 'topk', got {ties!r}")
    if index.kind == "flat":
        raise ValueError("item_neighbours_approx takes an ivf or hnsw index; the exact search is item_neighbours")
    has = _with_vectors(vecs)
    ids = np.flatnonzero(has)
    out = np.zeros((len(vecs), k), dtype=np.int64)
    k_eff = min(k, len(ids) - 1)
    if k_eff <= 0:
        return out, 0
    d = vecs.shape[1]
    ix = ItemIndex(index).fit(np.vstack([np.zeros((1, d), np.float32), vecs[ids]]))  # position j + 1 = item ids[j]
    id_of = torch.from_numpy(np.concatenate([[-1], ids]))
    _, rep, group, size = np.unique(vecs[ids], axis=0, return_index=True, return_inverse=True, return_counts=True)
    members = ids[np.argsort(group.reshape(-1), kind="stable")]  # items of group 0, then of group 1, ...
    lo = np.cumsum(size) - size
    first = 5 * k + 17
    todo, wide, rest = np.arange(len(size)), 1, []
    while len(todo):
        fetch = min(len(ids), int(size[todo].max()) + wide * first)
        # groups per FAISS call: their member rows x candidates stay within the budget
        cuts = np.searchsorted(np.cumsum(size[todo]), np.arange(1, len(todo) + 1) * max(1, SEARCH_BUDGET // fetch))
        short = []
        for part in np.split(todo, np.unique(cuts[cuts + 1 < len(todo)] + 1)):
            scores, pos = ix.search(vecs[ids[rep[part]]], fetch)
            n = size[part]
            local = np.repeat(np.arange(len(part)), n)  # member row -> its group's query
            rows = torch.from_numpy(members[np.repeat(lo[part], n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)])
            cand = id_of[torch.from_numpy(pos)][local]  # -1 where the index gave none
            other = (cand >= 0) & (cand != rows[:, None])
            val = torch.where(other, torch.from_numpy(scores)[local], -torch.inf)
            full = other.sum(1) >= k_eff
            gave_all = (cand < 0).any(1) | (fetch >= len(ids))
            settled = full
            if ties == "random":
                val = _on_grid(val)
                kth = val.topk(k_eff, dim=1).values[:, -1]
                lowest = torch.where(other, val, torch.inf).min(1).values
                settled = full & ((lowest < kth) | gave_all)
            if settled.any():
                out[rows[settled].numpy(), :k_eff] = _pick(val[settled], cand[settled], rows[settled], k_eff,
                                                           ties).numpy()
            rest.append(rows[~full & gave_all].numpy())
            short.append(np.unique(part[local[(~settled & ~(~full & gave_all)).numpy()]]))
        todo, wide = np.concatenate(short), 4 * wide
        if len(todo) and wide > 64:  # far enough: the rest searched exactly
            rest.append(np.concatenate([members[lo[g]:lo[g] + size[g]] for g in todo]))
            break
    rest = np.sort(np.concatenate(rest)) if rest else np.zeros(0, np.int64)
    if len(rest):
        out[rest] = item_neighbours(vecs, k, exact_device, ties=ties, queries=rest)
    return out, len(rest)
