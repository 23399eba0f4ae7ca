"""SRA-CL's semantic retrieval (Cui et al., NeurIPS 2025, arXiv 2503.04162), over training prefixes.

For every training prefix (one sample of ``View.prefixes()``: a user's events before a target, the last
``max_len`` of them encoded) this finds the ``k`` most similar OTHER prefixes by cosine of frozen
semantic vectors, and for every item its ``item_k`` most similar other items. Fixes of the official
code's pitfalls (brief, Sec. 2.3), one line each:
- Self is excluded by identity (and with it every prefix of the same user), not by dropping rank 0,
  which fails when two prefixes have identical vectors.
- A candidate whose encoded window contains the query's target is excluded (the target would leak into
  the positive); only training prefixes are candidates, so validation/test items never enter the pool.
- Padding (item 0) is never an item neighbour, nor is the item itself.
The search is exact: chunked dense cosine, the user's own prefixes masked before top-k, then the
target filter on the top candidates, re-searched wider for the rare rows left with fewer than k.
Results are cached on disk (temp folder + rename), keyed by the data, the source and the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from behaviorseq.models.retrieval.semantic import SemanticSource

FORMAT = 1
WINDOW_CHUNK = 1 << 18  # prefixes whose windows are built at once (ml-100k and Beauty fit in one)


@dataclass
class SemanticIndex:
    """Everything SRA-CL gathers per batch, as arrays (prefix row j = row j of the training view)."""

    events: np.ndarray  # [num_events] int64 item id of every event of the store
    prefix_start: np.ndarray  # [N] int64 first event of the encoded window
    prefix_end: np.ndarray  # [N] int64 one past its last input event (= the target event)
    prefix_vectors: np.ndarray  # [N, dim] float32 frozen semantic vectors
    prefix_neighbours: np.ndarray  # [N, k] int64 neighbour prefix rows, -1 where none is left
    item_neighbours: np.ndarray  # [n_items + 1, item_k] int64 semantic neighbours, 0 = none


def prefix_windows(events: np.ndarray, start: np.ndarray, end: np.ndarray, width: int) -> np.ndarray:
    """[N, width] item ids of the last ``width`` events of each [start, end), left-padded with 0."""
    pos = end[:, None] - width + np.arange(width)[None, :]
    return np.where(pos >= start[:, None], events[np.maximum(pos, 0)], 0)


def item_neighbours(vecs: np.ndarray, k: int, device: str = "cpu", chunk: int = 4096,
                    ties: str = "random") -> np.ndarray:
    """[n + 1, k] top-k cosine neighbours of every item among the others; padding and items without a
    vector get and are no neighbours (0). ``ties="random"``: where more items share the k-th similarity than
    slots are left, each row picks among them at random (a fixed seed per chunk: the index is data, the same
    for every training seed, and cached). Attribute bags
    often coincide (on Beauty 86% of the items tie at their 10th neighbour), and ``"topk"`` (torch.topk's own
    order among equal values, the same for every row) then gives a few items most of the substitutions and
    leaves a third of them never used."""
    if ties not in ("random", "topk"):
        raise ValueError(f"ties must be 'random' or 'topk', got {ties!r}")
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
            kth = val[:, -1:]
            tied = ((sim >= kth).sum(1) > k_eff) & (kth[:, 0] > -torch.inf) & has[rows] if ties == "random" else None
            if tied is not None and tied.any():  # rows whose k-th value is shared beyond the k slots
                sub, t = sim[tied], kth[tied]
                noise = torch.rand(sub.shape, generator=torch.Generator().manual_seed(s)).to(sub.device)
                # above the k-th value: kept, in similarity order (2 + sim > 1); at it: a random pick; below: never
                key = torch.where(sub > t, 2 + sub, torch.where(sub == t, noise, -1.0))
                idx[tied] = key.topk(k_eff, dim=1).indices
                val[tied] = sub.gather(1, idx[tied])
            out[s:s + chunk, :k_eff] = torch.where(val > -torch.inf, idx, 0).cpu()
    out[~has.cpu()] = 0
    return out.numpy()


def prefix_neighbours(vecs: np.ndarray, user: np.ndarray, events: np.ndarray, start: np.ndarray,
                      end: np.ndarray, k: int, device: str = "cpu", chunk: int = 512) -> np.ndarray:
    """[N, k] for every prefix the k nearest prefixes by cosine, excluding the same user's prefixes and
    any prefix whose window [start, end) holds the query's target ``events[end]``; -1 where fewer remain."""
    N = len(vecs)
    v = torch.as_tensor(np.array(vecs, dtype=np.float32), device=device)
    ev, st, en = (torch.as_tensor(np.array(x, dtype=np.int64), device=device) for x in (events, start, end))
    width = int((end - start).max()) if N else 1
    # Each prefix's own user's prefixes (itself included), as ranges of the user-sorted order.
    user = np.asarray(user)
    by_user = np.argsort(user, kind="stable")
    uniq, first, counts = np.unique(user[by_user], return_index=True, return_counts=True)
    slot = np.searchsorted(uniq, user)
    own_lo, own_n = first[slot], counts[slot]
    out = torch.full((N, k), -1, dtype=torch.long)
    buf = torch.empty(min(chunk, N), N, device=v.device)
    for s in range(0, N, chunk):
        rows = torch.arange(s, min(s + chunk, N), device=v.device)
        sim = torch.mm(v[rows], v.T, out=buf[: len(rows)])  # [q, N] cosine (rows are unit vectors)
        n = own_n[s:s + len(rows)]
        r = np.repeat(np.arange(len(rows)), n)
        c = by_user[np.repeat(own_lo[s:s + len(rows)], n) + np.arange(len(r)) - np.repeat(np.cumsum(n) - n, n)]
        sim[torch.as_tensor(r, device=v.device), torch.as_tensor(c, device=v.device)] = -torch.inf  # own prefixes
        target = ev[en[rows]]  # [q]
        todo, c = torch.arange(len(rows), device=v.device), min(N, 4 * k + 16)
        while len(todo):
            val, cand = sim[todo].topk(c, dim=1)  # [t, c]
            p = cand.reshape(-1)
            pos = en[p, None] - width + torch.arange(width, device=v.device)  # window of each candidate
            win = torch.where(pos >= st[p, None], ev[pos.clamp(min=0)], 0).view(len(todo), c, width)
            ok = (val > -torch.inf) & ~(win == target[todo, None, None]).any(-1)  # [t, c]
            # the first k admissible candidates, in similarity order (a stable sort on "not ok")
            order = torch.sort((~ok).to(torch.int8), dim=1, stable=True).indices[:, :k]
            picked = torch.where(ok.gather(1, order), cand.gather(1, order), -1)
            full = (picked >= 0).all(1) | (c >= N)
            out[(rows[todo[full]]).cpu()] = picked[full].cpu() if picked.shape[1] == k else \
                torch.cat([picked[full], picked.new_full((int(full.sum()), k - picked.shape[1]), -1)], 1).cpu()
            todo, c = todo[~full], min(N, 4 * c)
    return out.numpy()


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
              item_ties: str = "random") -> str:
    key = {"format": FORMAT, "source": source.fingerprint(), "k": k, "item_k": item_k}
    if item_ties != "topk":  # the rule before item_ties existed: its cache entries keep their keys
        key["item_ties"] = item_ties
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
                cache_dir: str | Path | None = None, device: str = "cpu", item_ties: str = "random") -> SemanticIndex:
    """The semantic index of the training prefixes ``view`` (``View.prefixes()``: row j = prefix j)."""
    if getattr(view, "shifted", True) or not np.array_equal(view.target_start, view.input_end):
        raise ValueError("SRA-CL's index is built over prefix samples (train.train_windows=prefixes)")
    events = np.array(store.item, dtype=np.int64)  # a writable copy (the store is memory-mapped)
    end = np.asarray(view.input_end, dtype=np.int64)
    start = np.maximum(np.asarray(view.input_start, dtype=np.int64), end - max_len)
    entry = Path(cache_dir or default_cache_dir()) / cache_key(store, source, start, end, k, item_k, item_ties)
    names = ("prefix_vectors", "prefix_neighbours", "item_neighbours")
    if not (entry / "meta.json").exists():
        item_vecs = source.item_vectors(store)
        # windows a chunk of prefixes at a time: all at once cost 8 * max_len bytes per training event
        pvec = np.concatenate([source.prefix_vectors(store, prefix_windows(events, start[s:s + WINDOW_CHUNK],
                                                                           end[s:s + WINDOW_CHUNK], max_len), item_vecs)
                               for s in range(0, max(len(end), 1), WINDOW_CHUNK)])
        arrays = {"prefix_vectors": pvec,
                  "prefix_neighbours": prefix_neighbours(pvec, view.user, events, start, end, k, device),
                  "item_neighbours": item_neighbours(item_vecs, item_k, device, ties=item_ties)}
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
        try:
            for n in names:
                np.save(tmp / f"{n}.npy", arrays[n])
            (tmp / "meta.json").write_text(json.dumps({"source": source.fingerprint(), "k": k, "item_k": item_k,
                                                       "item_ties": item_ties, "max_len": max_len,
                                                       "prefixes": len(end)}))
            try:
                os.rename(tmp, entry)
            except OSError:  # another process finished the same entry first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    arrays = {n: np.load(entry / f"{n}.npy") for n in names}
    return SemanticIndex(events, start, end, **arrays)
