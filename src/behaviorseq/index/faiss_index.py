"""Inner-product item index for multi-interest retrieval, as used by ComiRec (Cen et al., KDD 2020, arXiv 2005.09347).

The item table ``[n_items + 1, d]`` has the padding item in row 0; only rows ``1..n_items`` are indexed, so
item 0 is never returned and faiss positions map back to ids by ``+1``. Kinds: ``"flat"`` (exact,
``faiss.IndexFlatIP``, the paper's choice), ``"ivf"`` (``IndexIVFFlat``: ``nlist`` k-means cells, ``nprobe``
visited per query) and ``"hnsw"`` (``IndexHNSWFlat``: ``hnsw_m`` links per node, ``ef_search`` /
``ef_construction`` beam widths). Multi-interest search (brief section 1.3): each of the K interests
retrieves its own top-n, and the K*n candidates are pooled with ``f(u, i) = max_k e_i . v_k``.
Deviation from the official code: it indexes row 0 too, so item 0 can be retrieved (ComiRec issue #29); here it
cannot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import faiss
import numpy as np

from behaviorseq.index.aggregation import SearchResult, as_numpy, dedupe_max, merge_top_n

__all__ = ["KINDS", "IndexConfig", "ItemIndex", "build_index", "default_nlist"]

KINDS = ("flat", "ivf", "hnsw")
_KIND_OPTIONS = {"flat": (), "ivf": ("nlist", "nprobe"), "hnsw": ("hnsw_m", "ef_search", "ef_construction")}


@dataclass(frozen=True)
class IndexConfig:
    """How to build an :class:`ItemIndex`; checked on construction (``ValueError``).

    Attributes:
        kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate).
        nlist: ivf only, number of k-means cells; ``None`` = ``min(sqrt(n_items), n_items // 39)``, at least 1
            (faiss wants about 39 training points per cell). Must be ``<= n_items``.
        nprobe: ivf only, cells visited per query; ``None`` = ``min(nlist, 16)``. ``nprobe == nlist`` is exact.
        hnsw_m: hnsw only, graph links per node; ``None`` = 32.
        ef_search: hnsw only, search beam width (raised to ``n`` by faiss if smaller); ``None`` = 128.
        ef_construction: hnsw only, build beam width; ``None`` = 200.
        seed: seed of the ivf k-means.

    An option of another kind (e.g. ``nprobe`` with ``kind="flat"``) is an error rather than ignored.
    """

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int | None = None
    ef_search: int | None = None
    ef_construction: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_search", "ef_construction"):
            v = getattr(self, name)
            if v is None:
                continue
            if name not in _KIND_OPTIONS[self.kind]:
                owner = next(k for k, opts in _KIND_OPTIONS.items() if name in opts)
                raise ValueError(f"IndexConfig.{name} only applies to kind={owner!r}, not kind={self.kind!r}")
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"IndexConfig.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**31:
            raise ValueError(f"IndexConfig.seed must be an int in [0, 2^31) (FAISS's k-means seed), got {self.seed!r}")
        if self.nlist is not None and self.nprobe is not None and self.nprobe > self.nlist:
            raise ValueError(f"IndexConfig.nprobe ({self.nprobe}) must be <= nlist ({self.nlist})")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexConfig:
        """Build from a plain mapping (e.g. a YAML section); an unknown key is an error listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown index option(s) {unknown}; valid options: {', '.join(valid)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_nlist(n: int) -> int:
    """ivf cells when ``nlist`` is None: ``min(sqrt(n), n // 39)``, at least 1."""
    return max(1, min(math.isqrt(n), n // 39))


def _as_f32(x: Any, name: str, ndim: int) -> np.ndarray:
    a = np.ascontiguousarray(as_numpy(x), dtype=np.float32)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-d, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


class ItemIndex:
    """Inner-product top-n search over item embeddings; returns original item ids (never the padding item 0).

    Usage: ``index = ItemIndex(IndexConfig(kind="hnsw")).fit(item_emb)`` or ``build_index(item_emb, "hnsw")``;
    then :meth:`search` (one vector per user), :meth:`search_multi` (K interests, pooled top-n) or
    :meth:`search_pool` (the whole pooled candidate set, for :func:`controllable_aggregate`).
    """

    def __init__(self, config: IndexConfig | None = None) -> None:
        self.config = config if config is not None else IndexConfig()
        self._index: faiss.Index | None = None

    @property
    def n_items(self) -> int:
        return int(self._built().ntotal)

    @property
    def dim(self) -> int:
        return int(self._built().d)

    def _built(self) -> faiss.Index:
        if self._index is None:
            raise RuntimeError("the index is empty; call fit(item_emb) first")
        return self._index

    def fit(self, item_emb: Any) -> ItemIndex:
        """Index rows ``1..n_items`` of ``item_emb`` ``[n_items + 1, d]`` (row 0 = padding, skipped). Returns self."""
        emb = _as_f32(item_emb, "item_emb", 2)
        x = np.ascontiguousarray(emb[1:])
        n, d = x.shape
        if n < 1:
            raise ValueError(f"item_emb must have at least one real item after the padding row, got shape {emb.shape}")
        c = self.config
        if c.kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
        elif c.kind == "ivf":
            nlist = c.nlist if c.nlist is not None else default_nlist(n)
            if nlist > n:
                raise ValueError(f"IndexConfig.nlist ({nlist}) exceeds the number of items ({n})")
            nprobe = c.nprobe if c.nprobe is not None else min(nlist, 16)
            if nprobe > nlist:
                raise ValueError(f"IndexConfig.nprobe ({nprobe}) must be <= nlist ({nlist})")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(c.seed)
            index.train(x)
            index.nprobe = nprobe
        else:
            index = faiss.IndexHNSWFlat(d, c.hnsw_m if c.hnsw_m is not None else 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = c.ef_construction if c.ef_construction is not None else 200
            index.hnsw.efSearch = c.ef_search if c.ef_search is not None else 128
        index.add(x)
        self._index = index
        return self

    def search(self, queries: Any, n: int) -> SearchResult:
        """Top-``n`` items by inner product for each query.

        Args:
            queries: ``[B, d]`` float (numpy or torch).
            n: results per query, ``>= 1``; slots beyond what the index returns (``n > n_items``, or an ivf
                probe that reaches fewer items) are ``(-inf, 0)``.

        Returns:
            :class:`SearchResult`: scores ``[B, n]`` float32 (best first), items ``[B, n]`` int64 ids in ``1..n_items``.
            Among equal scores FAISS's order: the smallest tied ids are kept, listed by descending id.
        """
        index = self._built()
        q = _as_f32(queries, "queries", 2)
        if q.shape[1] != index.d:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index has {index.d}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if q.shape[0] == 0:
            return SearchResult(np.zeros((0, n), np.float32), np.zeros((0, n), np.int64))
        scores, pos = index.search(q, int(n))
        missing = pos < 0
        scores[missing] = -np.inf
        return SearchResult(scores, np.where(missing, 0, pos + 1).astype(np.int64))

    def search_pool(self, interests: Any, n: int) -> SearchResult:
        """Every interest's own top-``n``, pooled: the candidate set of ComiRec's aggregation.

        Args:
            interests: ``[B, K, d]`` interest vectors ``v_k`` (numpy or torch).
            n: results per interest.

        Returns:
            :class:`SearchResult` ``[B, K * n]``, interest-major (interest k's results in columns
            ``k*n:(k+1)*n``), with duplicates masked: the copy with the best score ``e_i . v_k``, i.e.
            ``f(u, i) = max_k e_i . v_k`` over the interests that retrieved ``i``, is kept, every other copy (and
            every empty slot) is ``(-inf, 0)``.
        """
        v = _as_f32(interests, "interests", 3)
        b, k, d = v.shape
        scores, items = self.search(v.reshape(b * k, d), n)  # one faiss call for all B*K vectors
        return dedupe_max(scores.reshape(b, k * n), items.reshape(b, k * n))

    def search_multi(self, interests: Any, n: int) -> SearchResult:
        """Top-``n`` of the pooled candidates by ``f(u, i) = max_k e_i . v_k`` (ComiRec with lambda = 0).

        With the exact flat index this equals the top-``n`` of the dense scores ``max_k (V @ E.T)``: an item in
        that top-``n`` has at most ``n - 1`` items above it under its best interest, so that interest retrieves it.

        Returns:
            :class:`SearchResult` ``[B, n]``, best first; ``(-inf, 0)`` where fewer than ``n`` distinct items
            were retrieved.
        """
        scores, items = self.search_pool(interests, n)
        return merge_top_n(scores, items, n)


def build_index(item_emb: Any, kind: str = "flat", **options: Any) -> ItemIndex:
    """``ItemIndex(IndexConfig.from_dict({"kind": kind, **options})).fit(item_emb)``."""
    return ItemIndex(IndexConfig.from_dict({"kind": kind, **options})).fit(item_emb)
