"""SRA-CL's semantic retrieval (Cui et al., NeurIPS 2025, arXiv 2503.04162), over training prefixes.

For every training prefix (one sample of ``View.prefixes()``: a user's events before a target, the last
``max_len`` of them encoded) this finds the ``k`` most similar OTHER prefixes by cosine of frozen
semantic vectors, and for every item its ``item_k`` most similar other items (``semantic_items``). Fixes of the official
code's pitfalls (brief, Sec. 2.3), one line each:
- Self is excluded by identity (and with it every prefix of the same user), not by dropping rank 0,
  which fails when two prefixes have identical vectors.
- A candidate whose encoded window contains the query's target is excluded (the target would leak into
  the positive); only training prefixes are candidates, so validation/test items never enter the pool.
- Padding (item 0) is never an item neighbour, nor is the item itself.
The search is exact by default: chunked dense cosine, the user's own prefixes masked before top-k, then
the target filter on the top candidates, re-searched wider for the rare rows left with fewer than k. It is
O(N^2) in training prefixes (1M, ml-1m's size: about 1.3 hours on 2 cores), so an approximate FAISS index (ivf,
hnsw) can supply the candidates instead, with the same filters (``prefix_neighbours_approx``).
Results are cached on disk (temp folder + rename), keyed by the data, the source and the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from behaviorseq.index.faiss_index import IndexConfig, ItemIndex
from behaviorseq.models.retrieval.semantic import SemanticSource
from behaviorseq.models.retrieval.semantic_items import _with_vectors, item_neighbours, item_neighbours_approx

__all__ = ["SemanticIndex", "build_index", "item_neighbours", "prefix_neighbours", "prefix_neighbours_approx"]

FORMAT = 1
WINDOW_CHUNK = 1 << 18  # prefixes whose windows are built at once (ml-100k and Beauty fit in one)
SEARCH_BUDGET = 1 << 22  # approximate search: query rows x (candidates + kept x window) per call (~100 MB)
EXACT_WARN = 500_000  # prefixes from which the exact search warns that an approximate index is much faster


@dataclass
class SemanticIndex:
    """Everything SRA-CL gathers per batch, as arrays (prefix row j = row j of the training view)."""

    events: np.ndarray  # [num_events] int64 item id of every event of the store
    prefix_start: np.ndarray  # [N] int64 first event of the encoded window
    prefix_end: np.ndarray  # [N] int64 one past its last input event (= the target event)
    prefix_vectors: np.ndarray  # [N, dim] float32 frozen semantic vectors
    prefix_neighbours: np.ndarray  # [N, k] int64 neighbour prefix rows, -1 where none is left
    item_neighbours: np.ndarray  # [n_items + 1, item_k] int64 semantic neighbours, 0 = none
    key: str = ""  # the disk cache's key: data, source, settings and the rules' versions ("" = not from the cache)

    def digest(self) -> str:
        """A hash of the lists and vectors themselves: what a resumed run must find unchanged."""
        h = hashlib.sha256()
        _hash_arrays(h, self.prefix_vectors, self.prefix_neighbours, self.item_neighbours)
        return h.hexdigest()[:24]


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


def _first_admissible(val: torch.Tensor, cand: torch.Tensor, target: torch.Tensor, ev: torch.Tensor,
                      st: torch.Tensor, en: torch.Tensor, width: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Of candidates ``cand`` [t, c] (similarity order, -inf = none), the first ``k`` whose window does not
    hold the query's ``target`` [t]; -1 where fewer remain. Returns (picked [t, k], found k [t])."""
    t, c = cand.shape
    p = cand.clamp(min=0).reshape(-1)
    pos = en[p, None] - width + torch.arange(width, device=cand.device)  # window of each candidate
    win = torch.where(pos >= st[p, None], ev[pos.clamp(min=0)], 0).view(t, c, width)
    ok = (val > -torch.inf) & (cand >= 0) & ~(win == target[:, None, None]).any(-1)  # [t, c]
    # the first k admissible candidates, in similarity order (a stable sort on "not ok")
    order = torch.sort((~ok).to(torch.int8), dim=1, stable=True).indices[:, :k]
    picked = torch.where(ok.gather(1, order), cand.gather(1, order), -1)
    if picked.shape[1] < k:
        picked = torch.cat([picked, picked.new_full((t, k - picked.shape[1]), -1)], 1)
    return picked, (picked >= 0).all(1)


def prefix_neighbours(vecs: np.ndarray, user: np.ndarray, events: np.ndarray, start: np.ndarray,
                      end: np.ndarray, k: int, device: str = "cpu", chunk: int = 512,
                      queries: np.ndarray | None = None) -> np.ndarray:
    """[N, k] for every prefix the k nearest prefixes by cosine, excluding the same user's prefixes and
    any prefix whose window [start, end) holds the query's target ``events[end]``; -1 where fewer remain.
    Exact (all pairs). ``queries``: only these prefix rows (the result is then [len(queries), k])."""
    N = len(vecs)
    q_all = np.arange(N) if queries is None else np.asarray(queries, dtype=np.int64)
    v = torch.as_tensor(np.array(vecs, dtype=np.float32), device=device)
    ev, st, en = (torch.as_tensor(np.array(x, dtype=np.int64), device=device) for x in (events, start, end))
    width = int((end - start).max()) if N else 1
    by_user, own_lo, own_n = _own_user_ranges(user)
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
        while len(todo):
            val, cand = sim[todo].topk(c, dim=1)  # [t, c]
            picked, full = _first_admissible(val, cand, target[todo], ev, st, en, width, k)
            full |= c >= N
            out[s + todo[full].cpu()] = picked[full].cpu()
            todo, c = todo[~full], min(N, 4 * c)
    return out.numpy()


def prefix_neighbours_approx(vecs: np.ndarray, user: np.ndarray, events: np.ndarray, start: np.ndarray,
                             end: np.ndarray, k: int, index: IndexConfig, chunk: int = 4096,
                             exact_device: str = "cpu") -> tuple[np.ndarray, int]:
    """As :func:`prefix_neighbours`, the candidates from an approximate FAISS index (``index.kind`` ivf or
    hnsw) instead of all pairs: for large N, where the exact search is O(N^2). The user's own prefixes are
    the nearest ones, so each query over-fetches the largest user prefix count among the rows searched together
    plus ``4k + 16`` and filters; a row left with fewer than k is searched 4x wider (up to 64x), and rows the
    index cannot fill (it returned fewer candidates than asked: its probed cells are exhausted) are searched
    exactly.
    Returns (neighbours [N, k], number of rows searched exactly)."""
    if index.kind == "flat":
        raise ValueError("prefix_neighbours_approx takes an ivf or hnsw index; the exact search is prefix_neighbours")
    N, d = vecs.shape
    if N == 0:
        return np.full((0, k), -1, dtype=np.int64), 0
    ix = ItemIndex(index).fit(np.vstack([np.zeros((1, d), np.float32), vecs]))  # row 0 = padding, never returned
    ev, st, en = (torch.as_tensor(np.array(x, dtype=np.int64)) for x in (events, start, end))
    codes, counts = np.unique(np.asarray(user), return_inverse=True, return_counts=True)[1:]
    user_t, own_n = torch.as_tensor(codes.reshape(-1)), counts[codes.reshape(-1)]  # any id type; prefixes per user
    width = int((end - start).max())
    out = torch.full((N, k), -1, dtype=torch.long)
    leftover = []
    first_keep = 4 * k + 16  # candidates kept after dropping the user's own
    for s in range(0, N, chunk):
        todo, keep = torch.arange(s, min(s + chunk, N)), first_keep
        while len(todo):
            fetch = min(N, int(own_n[todo.numpy()].max()) + keep)
            short, exhausted = [], []
            # rows per FAISS call: its results and the [rows, keep, width] windows of the filter stay bounded
            for part in todo.split(max(1, SEARCH_BUDGET // (fetch + keep * width))):
                scores, ids = ix.search(vecs[part.numpy()], fetch)
                val, cand = torch.from_numpy(scores), torch.from_numpy(ids) - 1  # prefix rows; -1 = none
                other = (cand >= 0) & (user_t[cand.clamp(min=0)] != user_t[part, None])
                order = torch.sort((~other).to(torch.int8), dim=1, stable=True).indices[:, :keep]
                val = torch.where(other.gather(1, order), val.gather(1, order), -torch.inf)
                picked, full = _first_admissible(val, cand.gather(1, order), ev[en[part]], ev, st, en, width, k)
                out[part[full]] = picked[full]
                # fewer candidates than asked: ivf's probed cells are exhausted (hnsw might reach more with a wider
                # beam, but the exact search is the sure answer for these few rows)
                gave_all = (cand < 0).any(1)
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
            prefix_neighbours(vecs, user, events, start, end, k, exact_device, queries=rest))
    return out.numpy(), len(rest)


def index_for_batch(batch: dict, n_items: int, dim: int, k: int = 10, item_k: int = 10) -> SemanticIndex:
    """A self-contained index for a hand-made single-target batch (tests): prefix j is row j, each row its
    own user, with fixed random item vectors (numpy's generator: the torch RNG is left alone).
    Set ``batch["index"] = torch.arange(B)`` to train on it."""
    item, target = batch["item"].cpu().numpy(), batch["target"].cpu().numpy()
    seqs = [np.append(row[row > 0], t) for row, t in zip(item, target)]
    events = np.concatenate(seqs).astype(np.int64)
    start = np.concatenate([[0], np.cumsum([len(x) for x in seqs])[:-1]]).astype(np.int64)
    end = start + np.array([len(x) - 1 for x in seqs], dtype=np.int64)
    vecs = np.random.default_rng(0).standard_normal((n_items + 1, dim)).astype(np.float32)
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[0] = 0
    win = prefix_windows(events, start, end, int((end - start).max()))
    pvec = vecs[win].sum(1)
    pvec = (pvec / np.maximum(np.linalg.norm(pvec, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return SemanticIndex(events, start, end, pvec, prefix_neighbours(pvec, np.arange(len(seqs)), events, start, end, k),
                         item_neighbours(vecs, item_k))


def _hash_arrays(h, *arrays) -> None:
    for a in arrays:
        if a is None:
            continue
        if hasattr(a, "buffers"):  # pyarrow
            for b in a.buffers():
                if b is not None:
                    h.update(memoryview(b))
        else:
            h.update(np.ascontiguousarray(a).view(np.uint8).data)


def cache_key(store, source: SemanticSource, start: np.ndarray, end: np.ndarray, k: int, item_k: int,
              item_ties: str = "random", search: IndexConfig | None = None,
              item_search: IndexConfig | None = None) -> str:
    key = {"format": FORMAT, "source": source.fingerprint(), "k": k, "item_k": item_k}
    if item_ties != "topk":  # the rule before item_ties existed: its cache entries keep their keys
        key["item_ties"] = item_ties
        key["tie_rule"] = 3  # session 21: float64 on a 2^-16 grid, a fixed number per (item, candidate) pair
    if search is not None and search.kind != "flat":  # exact entries keep their keys
        key["search"] = search.to_dict()
    if item_search is not None and item_search.kind != "flat":
        key["item_search"] = item_search.to_dict()
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    _hash_arrays(h, np.asarray(store.offsets), np.asarray(store.item), start, end)
    for name in sorted(store.items):
        c = store.items[name]
        h.update(name.encode())
        _hash_arrays(h, c.data, c.offsets, c.vocab)
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("BEHAVIORSEQ_CACHE", Path.home() / ".cache" / "behaviorseq")) / "semantic"


def build_index(store, view, source: SemanticSource, max_len: int, k: int = 10, item_k: int = 10,
                cache_dir: str | Path | None = None, device: str = "cpu", item_ties: str = "random",
                search: IndexConfig | None = None, item_search: IndexConfig | None = None) -> SemanticIndex:
    """The semantic index of the training prefixes ``view`` (``View.prefixes()``: row j = prefix j).
    ``search`` / ``item_search``: how prefix / item neighbours are found; None or kind flat = exact, ivf / hnsw
    = approximate."""
    if getattr(view, "shifted", True) or not np.array_equal(view.target_start, view.input_end):
        raise ValueError("SRA-CL's index is built over prefix samples (train.train_windows=prefixes)")
    events = np.array(store.item, dtype=np.int64)  # a writable copy (the store is memory-mapped)
    end = np.asarray(view.input_end, dtype=np.int64)
    start = np.maximum(np.asarray(view.input_start, dtype=np.int64), end - max_len)
    entry = Path(cache_dir or default_cache_dir()) / cache_key(store, source, start, end, k, item_k, item_ties, search,
                                                               item_search)
    names = ("prefix_vectors", "prefix_neighbours", "item_neighbours")
    if not (entry / "meta.json").exists():
        item_vecs = source.item_vectors(store)
        bad = ~np.isfinite(item_vecs).all(1)
        if bad.any():  # both searches would go wrong (FAISS refuses them; the exact one would rank NaN)
            raise ValueError(f"semantic source {source.fingerprint()}: the vector of item row {int(np.flatnonzero(bad)[0])} "
                             "holds NaN or inf")
        # windows a chunk of prefixes at a time: all at once cost 8 * max_len bytes per training event
        pvec = np.concatenate([source.prefix_vectors(store, prefix_windows(events, start[s:s + WINDOW_CHUNK],
                                                                           end[s:s + WINDOW_CHUNK], max_len), item_vecs)
                               for s in range(0, max(len(end), 1), WINDOW_CHUNK)])
        if search is None or search.kind == "flat":
            if len(end) >= EXACT_WARN:
                warnings.warn(f"SRA-CL: the exact prefix-neighbour search over {len(end):,} training prefixes is O(N^2) "
                              "(1M prefixes: about 1.3 hours on 2 CPU cores); model.semantic.neighbour_index.kind=ivf "
                              "found the same lists up to ties in 99.9% of the slots, 34x faster, on 1M planted "
                              "prefixes (benchmarks/README.md, section 7)",
                              stacklevel=2)
            nbr, exact_rows = prefix_neighbours(pvec, view.user, events, start, end, k, device), len(end)
        else:
            nbr, exact_rows = prefix_neighbours_approx(pvec, view.user, events, start, end, k, search,
                                                       exact_device=device)
        if item_search is None or item_search.kind == "flat":
            inbr = item_neighbours(item_vecs, item_k, device, ties=item_ties)
            exact_items = int(_with_vectors(item_vecs).sum())  # rows with a vector, all exact
        elif item_ties != "random":
            raise ValueError("semantic.item_index ivf / hnsw applies the random tie rule; item_ties='topk' (the rule "
                             "up to session 16) is exact only")
        else:
            inbr, exact_items = item_neighbours_approx(item_vecs, item_k, item_search, device)
        arrays = {"prefix_vectors": pvec, "prefix_neighbours": nbr, "item_neighbours": inbr}
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
        try:
            for n in names:
                np.save(tmp / f"{n}.npy", arrays[n])
            (tmp / "meta.json").write_text(json.dumps({"source": source.fingerprint(), "k": k, "item_k": item_k,
                                                       "item_ties": item_ties, "max_len": max_len,
                                                       "prefixes": len(end), "exact_rows": exact_rows,
                                                       "search": (search or IndexConfig()).to_dict(),
                                                       "exact_item_rows": exact_items,
                                                       "item_search": (item_search or IndexConfig()).to_dict()}))
            try:
                os.rename(tmp, entry)
            except OSError:  # another process finished the same entry first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    arrays = {n: np.load(entry / f"{n}.npy") for n in names}
    return SemanticIndex(events, start, end, **arrays, key=entry.name)
