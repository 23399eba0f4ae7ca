"""SRA-CL's prefix neighbours (Cui et al., NeurIPS 2025, arXiv 2503.04162): for every training prefix the ``k``
most similar OTHER prefixes by cosine of frozen semantic vectors, the positives of user semantic retrieval.

Never the user's own prefixes (by identity, not by dropping rank 0, which fails for duplicate vectors) and never
a prefix whose encoded window holds the query's target (it would leak into the positive).
Ties: prefix vectors coincide far more than item vectors (short windows of the same items, attribute bags that
differ only outside the kept components): on Beauty a third of the prefixes share their k-th similarity with
more prefixes than slots are left. ``ties="random"`` applies the item rule (``semantic_items``): float64
similarities compared on a 2^-16 grid, equal ones ordered by a fixed pseudo-random number per (prefix,
candidate) pair. The search ranks in float32 and rescores its candidates in float64; a row is settled once
a grid cell lies between its k-th admissible value and the farthest candidate in hand (so every prefix of the
k-th value's cell is in hand), otherwise searched 4x wider. The argument needs float32 ranking errors below half
a cell (~7.6e-6) per similarity: true of CPU and plain cuBLAS float32, not of TF32 matmuls, which nothing here switches on.
Under this rule a prefix without a vector (all zero: e.g. no item of its window has one) is never a neighbour and gets none:
its cosine 0 with everything would make all N prefixes one tie group. ``"topk"`` (float32, torch.topk's order among
equal values, the same for every row, so a few prefixes are everybody's neighbour: Beauty's largest in-degree
477 against a mean of 10) was the rule up to session 21, kept verbatim to reproduce those runs.
The exact search is O(N^2) in training prefixes (1M, ml-1m's size: about 1.3 hours on 2 cores, measured with
``topk``; the random rule took 1.2x its time on Beauty, one timing on a busy machine), so an
approximate FAISS index (ivf, hnsw) can supply the candidates instead, with the same filters and tie rule
(``prefix_neighbours_approx``).
"""

from __future__ import annotations

import numpy as np
import torch

from behaviorseq.index.faiss_index import IndexConfig, ItemIndex
from behaviorseq.models.retrieval.semantic_items import TIE_GRID, TIE_SEED, _on_grid, _rescore
from behaviorseq.nn.tie_order import best_k

SEARCH_BUDGET = 1 << 22  # query rows x (candidates + kept x window) per step (~100 MB)
TIE_STREAM = 1  # counter_uniform's round for prefix pairs (items use 0)


def prefix_windows(events: np.ndarray, start: np.ndarray, end: np.ndarray, width: int) -> np.ndarray:
    """[N, width] item ids of the last ``width`` events of each [start, end), left-padded with 0."""
    pos = end[:, None] - width + np.arange(width)[None, :]
    return np.where(pos >= start[:, None], events[np.maximum(pos, 0)], 0)


def _own_user_ranges(user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each prefix's own user's prefixes (itself included) as ranges of the user-sorted order:
    (by_user, first position in it, count)."""
    user = np.asarray(user)
    by_user = np.argsort(user, kind="stable")
    uniq, first, counts = np.unique(user[by_user], return_index=True, return_counts=True)
    slot = np.searchsorted(uniq, user)
    return by_user, first[slot], counts[slot]


def _admissible(val: torch.Tensor, cand: torch.Tensor, target: torch.Tensor, ev: torch.Tensor, st: torch.Tensor,
                en: torch.Tensor, width: int) -> torch.Tensor:
    """[t, c] candidates ``cand`` (-1 or value -inf = none) whose window does not hold the query's ``target`` [t]."""
    t, c = cand.shape
    p = cand.clamp(min=0).reshape(-1)
    pos = en[p, None] - width + torch.arange(width, device=cand.device)  # window of each candidate
    win = torch.where(pos >= st[p, None], ev[pos.clamp(min=0)], 0).view(t, c, width)
    return (val > -torch.inf) & (cand >= 0) & ~(win == target[:, None, None]).any(-1)


def _pad(picked: torch.Tensor, k: int) -> torch.Tensor:
    """[t, <= k] picks padded with -1 to k columns (fewer candidates than k were fetched)."""
    return torch.cat([picked, picked.new_full((len(picked), k - picked.shape[1]), -1)], 1) if picked.shape[1] < k else picked


def _first_admissible(val: torch.Tensor, cand: torch.Tensor, target: torch.Tensor, ev: torch.Tensor,
                      st: torch.Tensor, en: torch.Tensor, width: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ties="topk": of candidates ``cand`` [t, c] (similarity order, -inf = none), the first ``k`` whose window
    does not hold the query's ``target`` [t]; -1 where fewer remain. Returns (picked [t, k], found k [t])."""
    ok = _admissible(val, cand, target, ev, st, en, width)
    # the first k admissible candidates, in similarity order (a stable sort on "not ok")
    order = torch.sort((~ok).to(torch.int8), dim=1, stable=True).indices[:, :k]
    picked = _pad(torch.where(ok.gather(1, order), cand.gather(1, order), -1), k)
    return picked, (picked >= 0).all(1)


def _settle(vecs: np.ndarray, rows: torch.Tensor, cand: torch.Tensor, val32: torch.Tensor, ok: torch.Tensor,
            every: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ties="random": query prefixes ``rows`` [t] with candidates ``cand`` [t, c] (float32 scores ``val32``,
    -inf = none; ``ok`` admissible; ``every`` [t]: every other prefix is among them). Returns (picked [t, k] -1
    padded, settled [t]): the k best admissible by float64 similarity on the grid, equal ones by the pair's fixed
    number; a row is settled when all of it is in hand or a grid cell lies between its k-th admissible value and
    the farthest candidate (unfetched prefixes rank at most as high in float32, so none falls in that cell)."""
    t, c = cand.shape
    val = _on_grid(_rescore(vecs, rows.numpy(), torch.where(val32 > -torch.inf, cand, -1)))
    okv = torch.where(ok, val, -torch.inf)
    kth = okv.topk(min(k, c), dim=1).values[:, -1] if c else torch.full((t,), -torch.inf, dtype=val.dtype)
    lowest = torch.where(val > -torch.inf, val, torch.inf).min(1).values if c else kth
    settled = every | ((ok.sum(1) >= k) & (lowest < kth - TIE_GRID))
    pos = torch.from_numpy(best_k(okv.numpy(), cand.clamp(min=0).numpy(), rows.numpy(), k, TIE_SEED, TIE_STREAM))
    return torch.where(pos >= 0, cand.gather(1, pos.clamp(min=0)), -1), settled


def prefix_neighbours(vecs: np.ndarray, user: np.ndarray, events: np.ndarray, start: np.ndarray,
                      end: np.ndarray, k: int, device: str = "cpu", chunk: int = 512,
                      queries: np.ndarray | None = None, ties: str = "random") -> np.ndarray:
    """[N, k] for every prefix the k nearest prefixes by cosine, excluding the same user's prefixes and
    any prefix whose window [start, end) holds the query's target ``events[end]``; -1 where fewer remain.
    Exact (all pairs). ``queries``: only these prefix rows (the result is then [len(queries), k]). ``ties``: the
    order among equal similarities, "random" (a fixed random order; prefixes without a vector are left out) or
    "topk" (torch.topk's, the rule up to session 21)."""
    if ties not in ("random", "topk"):
        raise ValueError(f"ties must be 'random' or 'topk', got {ties!r}")
    N = len(vecs)
    q_all = np.arange(N) if queries is None else np.asarray(queries, dtype=np.int64)
    vecs = np.asarray(vecs, dtype=np.float32)
    v = torch.as_tensor(np.array(vecs), device=device)
    ev, st, en = (torch.as_tensor(np.array(x, dtype=np.int64), device=device) for x in (events, start, end))
    width = int((end - start).max()) if N else 1
    by_user, own_lo, own_n = _own_user_ranges(user)
    no_vec = ~(v != 0).any(1)
    out = torch.full((len(q_all), k), -1, dtype=torch.long)
    buf = torch.empty(min(chunk, len(q_all)), N, device=v.device)
    for s in range(0, len(q_all), chunk):
        qs = q_all[s:s + chunk]
        rows = torch.as_tensor(qs, device=v.device)
        sim = torch.mm(v[rows], v.T, out=buf[: len(rows)])  # [q, N] cosine (rows are unit vectors)
        n = own_n[qs]
        r = np.repeat(np.arange(len(rows)), n)
        c = by_user[np.repeat(own_lo[qs], n) + np.arange(len(r)) - np.repeat(np.cumsum(n) - n, n)]
        sim[torch.as_tensor(r, device=v.device), torch.as_tensor(c, device=v.device)] = -torch.inf  # own prefixes
        target = ev[en[rows]]  # [q]
        todo, c = torch.arange(len(rows), device=v.device), min(N, 4 * k + 16)
        if ties == "random":
            sim[:, no_vec] = -torch.inf  # never a neighbour, and no neighbours of their own
            todo = todo[~no_vec[rows]]
        while len(todo):
            if ties == "topk":  # the rule up to session 21, as it was
                val, cand = sim[todo].topk(c, dim=1)  # [t, c]
                picked, full = _first_admissible(val, cand, target[todo], ev, st, en, width, k)
                full |= c >= N
                out[s + todo[full].cpu()] = picked[full].cpu()
                todo, c = todo[~full], min(N, 4 * c)
                continue
            short = []
            # windows and float64 vectors of c candidates per row bounded (one row per part at the widest: its
            # [c, width] windows and [c, d] vectors, d and width small, are then the peak)
            for part in todo.split(max(1, SEARCH_BUDGET // (c * (width + 1 + vecs.shape[1])))):
                val, cand = sim[part].topk(c, dim=1)
                ok = _admissible(val, cand, target[part], ev, st, en, width)
                every = torch.full((len(part),), c >= N, device=v.device) | (val == -torch.inf).any(1)
                picked, done = _settle(vecs, rows[part].cpu(), cand.cpu(), val.cpu(), ok.cpu(), every.cpu(), k)
                out[s + part[done.to(part.device)].cpu()] = picked[done]
                short.append(part[~done.to(part.device)])
            todo, c = torch.cat(short), min(N, 4 * c)
    return out.numpy()


def prefix_neighbours_approx(vecs: np.ndarray, user: np.ndarray, events: np.ndarray, start: np.ndarray,
                             end: np.ndarray, k: int, index: IndexConfig, chunk: int = 4096,
                             exact_device: str = "cpu", ties: str = "random") -> tuple[np.ndarray, int]:
    """As :func:`prefix_neighbours`, the candidates from an approximate FAISS index (``index.kind`` ivf or
    hnsw) instead of all pairs: for large N, where the exact search is O(N^2). The user's own prefixes are
    the nearest ones, so each query over-fetches the largest user prefix count among the rows searched together
    plus ``4k + 16`` and filters; a row left with fewer than k (random ties: or not settled) is searched 4x
    wider (up to 64x), and rows the index cannot serve further (it returned fewer candidates than asked: its
    probed cells are exhausted) are searched exactly. The lists are the exact ones where the index returns every
    prefix as near as the k-th (with random ties; ``topk`` keeps the index's order among equal values).
    Returns (neighbours [N, k], number of rows searched exactly)."""
    if index.kind == "flat":
        raise ValueError("prefix_neighbours_approx takes an ivf or hnsw index; the exact search is prefix_neighbours")
    if ties not in ("random", "topk"):
        raise ValueError(f"ties must be 'random' or 'topk', got {ties!r}")
    N, d = vecs.shape
    if N == 0:
        return np.full((0, k), -1, dtype=np.int64), 0
    vecs = np.asarray(vecs, dtype=np.float32)
    ix = ItemIndex(index).fit(np.vstack([np.zeros((1, d), np.float32), vecs]))  # row 0 = padding, never returned
    ev, st, en = (torch.as_tensor(np.array(x, dtype=np.int64)) for x in (events, start, end))
    codes, counts = np.unique(np.asarray(user), return_inverse=True, return_counts=True)[1:]
    user_t, own_n = torch.as_tensor(codes.reshape(-1)), counts[codes.reshape(-1)]  # any id type; prefixes per user
    width = int((end - start).max())
    has = torch.from_numpy((vecs != 0).any(1)) if ties == "random" else torch.ones(N, dtype=torch.bool)
    out = torch.full((N, k), -1, dtype=torch.long)
    leftover = []
    first_keep = 4 * k + 16  # candidates kept after dropping the user's own
    for s in range(0, N, chunk):
        todo, keep = torch.arange(s, min(s + chunk, N)), first_keep
        todo = todo[has[todo]]  # random ties: a prefix without a vector gets no neighbours
        while len(todo):
            fetch = min(N, int(own_n[todo.numpy()].max()) + keep)
            short, exhausted = [], []
            # rows per FAISS call: its results and the [rows, keep, width] windows of the filter stay bounded
            for part in todo.split(max(1, SEARCH_BUDGET // (fetch + keep * width))):
                scores, ids = ix.search(vecs[part.numpy()], fetch)
                val, cand = torch.from_numpy(scores), torch.from_numpy(ids) - 1  # prefix rows; -1 = none
                other = (cand >= 0) & (user_t[cand.clamp(min=0)] != user_t[part, None]) & has[cand.clamp(min=0)]
                order = torch.sort((~other).to(torch.int8), dim=1, stable=True).indices[:, :keep]
                val = torch.where(other.gather(1, order), val.gather(1, order), -torch.inf)
                # fewer candidates than asked: ivf's probed cells are exhausted (hnsw might reach more with a wider
                # beam, but the exact search is the sure answer for these few rows)
                gave_all = (cand < 0).any(1)
                if ties == "topk":
                    picked, full = _first_admissible(val, cand.gather(1, order), ev[en[part]], ev, st, en, width, k)
                else:
                    every = ~gave_all & (fetch >= N) & (other.sum(1) <= keep)  # every other prefix in hand
                    ok = _admissible(val, cand.gather(1, order), ev[en[part]], ev, st, en, width)
                    picked, full = _settle(vecs, part, cand.gather(1, order), val, ok, every, k)
                out[part[full]] = picked[full]
                short.append(part[~full & ~gave_all])
                exhausted.append(part[~full & gave_all])
            leftover += [x.numpy() for x in exhausted]
            todo, keep = torch.cat(short), 4 * keep
            if fetch >= N or keep > 64 * first_keep:  # all it can reach, or far enough: the rest searched exactly
                leftover.append(todo.numpy())
                break
    rest = np.sort(np.concatenate(leftover)) if leftover else np.zeros(0, np.int64)
    if len(rest):
        out[torch.as_tensor(rest)] = torch.as_tensor(
            prefix_neighbours(vecs, user, events, start, end, k, exact_device, queries=rest, ties=ties))
    return out.numpy(), len(rest)
