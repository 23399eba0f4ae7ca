"""SRA-CL's semantic retrieval (Cui et al., NeurIPS 2025, arXiv 2503.04162), over training prefixes.

For every training prefix (one sample of ``View.prefixes()``: a user's events before a target, the last
``max_len`` of them encoded) the ``k`` most similar OTHER prefixes by cosine of frozen semantic vectors
(``semantic_prefixes``), and for every item its ``item_k`` most similar other items (``semantic_items``). Fixes
of the official code's pitfalls (brief, Sec. 2.3), one line each:
- Self is excluded by identity (and with it every prefix of the same user), not by dropping rank 0,
  which fails when two prefixes have identical vectors.
- A candidate whose encoded window contains the query's target is excluded (the target would leak into
  the positive); only training prefixes are candidates, so validation/test items never enter the pool.
- Padding (item 0) is never an item neighbour, nor is the item itself.
- Equal similarities are broken in a fixed random order (``prefix_ties`` / ``item_ties``), not by index order.
Both searches are exact by default and can take their candidates from an approximate FAISS index (ivf, hnsw).
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

from behaviorseq.index.faiss_index import IndexConfig
from behaviorseq.llm import LLMDryRun
from behaviorseq.models.retrieval.semantic import SemanticSource, _raw_item_ids
from behaviorseq.models.retrieval.semantic_items import _with_vectors, item_neighbours, item_neighbours_approx
from behaviorseq.models.retrieval.semantic_prefixes import (
    prefix_neighbours,
    prefix_neighbours_approx,
    prefix_windows,
)
from behaviorseq.models.retrieval.semantic_prompts import item_sequences

__all__ = ["SemanticIndex", "build_index", "item_neighbours", "prefix_neighbours", "prefix_neighbours_approx",
           "prefix_windows"]

FORMAT = 1
WINDOW_CHUNK = 1 << 18  # prefixes whose windows are built at once (ml-100k and Beauty fit in one)
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
              item_search: IndexConfig | None = None, prefix_ties: str = "random") -> str:
    key = {"format": FORMAT, "source": source.fingerprint(), "k": k, "item_k": item_k}
    if item_ties != "topk":  # the rule before item_ties existed: its cache entries keep their keys
        key["item_ties"] = item_ties
        key["tie_rule"] = 3  # session 21: float64 on a 2^-16 grid, a fixed number per (item, candidate) pair
    if prefix_ties != "topk":  # the rule up to session 21: its cache entries keep their keys
        key["prefix_ties"] = prefix_ties
        # session 22: the item rule (grid, a fixed number per pair) for prefixes; 2: prefixes without a vector left
        # out (commit bc171cb's 1 kept them; the lists differ only on data that has such prefixes)
        key["prefix_tie_rule"] = 2
    if search is not None and search.kind != "flat":  # exact entries keep their keys
        key["search"] = search.to_dict()
    if item_search is not None and item_search.kind != "flat":
        key["item_search"] = item_search.to_dict()
        key["item_search_rule"] = 2  # session 23: a group of equal vectors always has its own members as candidates
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    _hash_arrays(h, np.asarray(store.offsets), np.asarray(store.item), start, end)
    if key["source"].get("source") == "vectors":  # its vectors are looked up by raw id: other raw ids, other vectors
        h.update("\n".join(_raw_item_ids(store).tolist()).encode())
    for name in sorted(store.items):
        c = store.items[name]
        h.update(name.encode())
        _hash_arrays(h, c.data, c.offsets, c.vocab)
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("BEHAVIORSEQ_CACHE", Path.home() / ".cache" / "behaviorseq")) / "semantic"


def build_index(store, view, source: SemanticSource, max_len: int, k: int = 10, item_k: int = 10,
                cache_dir: str | Path | None = None, device: str = "cpu", item_ties: str = "random",
                search: IndexConfig | None = None, item_search: IndexConfig | None = None,
                prefix_ties: str = "random") -> SemanticIndex:
    """The semantic index of the training prefixes ``view`` (``View.prefixes()``: row j = prefix j).
    ``search`` / ``item_search``: how prefix / item neighbours are found; None or kind flat = exact, ivf / hnsw
    = approximate. ``prefix_ties`` / ``item_ties``: "random" (a fixed random order among equal similarities)
    or "topk" (the rules before sessions 22 / 17)."""
    if getattr(view, "shifted", True) or not np.array_equal(view.target_start, view.input_end):
        raise ValueError("SRA-CL's index is built over prefix samples (train.train_windows=prefixes)")
    events = np.array(store.item, dtype=np.int64)  # a writable copy (the store is memory-mapped)
    end = np.asarray(view.input_end, dtype=np.int64)
    start = np.maximum(np.asarray(view.input_start, dtype=np.int64), end - max_len)
    entry = Path(cache_dir or default_cache_dir()) / cache_key(store, source, start, end, k, item_k, item_ties, search,
                                                               item_search, prefix_ties)
    names = ("prefix_vectors", "prefix_neighbours", "item_neighbours")
    summariser = getattr(source, "summariser", None)
    if (entry / "meta.json").exists() and getattr(summariser, "dry_run", False):
        raise LLMDryRun(f"dry run, nothing sent: the semantic index {entry} is cached, so the run would send no prompt; "
                        f"{summariser.setting}.dry_run=false runs it")
    if not (entry / "meta.json").exists():
        sequences = None
        if getattr(source, "uses_item_sequences", False):  # LLM item prompts: sequences from the training prefixes
            sequences = item_sequences(events, start, end, store.num_items)
        if hasattr(source, "preflight"):  # an LLM's spending guard sees every prompt before one is sent
            source.preflight(store, sequences, (prefix_windows(events, start[s:s + WINDOW_CHUNK], end[s:s + WINDOW_CHUNK],
                                                               max_len) for s in range(0, len(end), WINDOW_CHUNK)))
        item_vecs = source.item_vectors(store, sequences) if sequences is not None else source.item_vectors(store)
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
                              "prefixes (benchmarks/README.md, section 7; measured with prefix_ties=topk)",
                              stacklevel=2)
            nbr, exact_rows = prefix_neighbours(pvec, view.user, events, start, end, k, device,
                                                ties=prefix_ties), len(end)
        else:
            nbr, exact_rows = prefix_neighbours_approx(pvec, view.user, events, start, end, k, search,
                                                       exact_device=device, ties=prefix_ties)
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
                                                       "item_ties": item_ties, "prefix_ties": prefix_ties,
                                                       "max_len": max_len,
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
