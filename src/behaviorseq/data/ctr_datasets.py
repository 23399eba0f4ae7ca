"""Real data sets as pointwise CTR samples (:class:`~behaviorseq.data.ctr.CTRData`), and their registry.

* ``ml-100k-ctr``: every rating of MovieLens 100K is a sample; click = rating >= 4; the history is all
  earlier ratings of the user (the store sorts each user's events stably by time, so ratings with the
  same timestamp count in file order). Item fields: id, ``category`` (the first genre listed in the
  item's ``class``) and ``year`` (``release_year``). Roles by a per-user last-k or a global temporal
  split (:class:`ML100KCTRConfig`), recorded in ``CTRData.report``.
* ``taobao-ctr``: Taobao UserBehavior (``read_taobao``) through DARE's protocol (``data.ctr.dare_protocol``):
  "pv" behaviours only, users with >= L + 10 of them, 1:2 frequency-sampled negatives (:class:`TaobaoCTRConfig`).
* ``synthetic-long-ctr``: the planted generator (``data.synthetic.long_ctr``).

Everything is vectorised over events; no Python loop visits an event or a sample. History rows are the
store's users 1..n shifted to 0..n-1 (CTRData has no padding row); ``report["user_vocab"]`` says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from behaviorseq.config import ConfigError, StrictConfig
from behaviorseq.data.ctr import TEST, TRAIN, VALID, CTRData, dare_protocol
from behaviorseq.data.events import EventTable
from behaviorseq.data.preprocess import run
from behaviorseq.data.store import SequenceStore, cached_store, ragged_arange


class ML100KCTRConfig(StrictConfig):
    """How ml-100k ratings become CTR samples and roles."""

    click_threshold: float = 4.0  # click = rating >= this
    min_history: int = Field(1, ge=0)  # samples with fewer earlier ratings are dropped (their events stay history)
    # "user_last": each user's last n_test samples are test, the n_valid before them valid, the rest train.
    # "temporal": by global time, the latest test_fraction of samples test, the valid_fraction before valid.
    split: Literal["user_last", "temporal"] = "user_last"
    n_valid: int = Field(5, ge=0)
    n_test: int = Field(5, ge=1)
    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)


class TaobaoCTRConfig(StrictConfig):
    """DARE's Taobao protocol (brief 1.3); ``max_len`` None takes the model's ``max_len``."""

    behaviors: tuple[str, ...] = ("pv",)  # DARE: page views only
    max_len: int | None = Field(None, gt=0)  # history length L; users need >= L + 10 behaviours
    train_offsets: tuple[int, ...] = tuple(range(3, 94, 5))  # training targets at -3, -8, ..., -93
    n_negatives: int = Field(2, ge=0)  # frequency-sampled negatives per positive
    seed: int = 0  # of the negative sampler


# ---------------------------------------------------------------- shared pieces


def store_csr(store: SequenceStore, fields: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(offsets [n_users + 1], events) of a store without its empty padding row 0: history row r is user
    r + 1. ``fields`` maps a CTR event field to its [n_events] int64 values (``item`` is added)."""
    offsets = np.asarray(store.offsets[1:], dtype=np.int64)  # store.offsets[0] = store.offsets[1] = 0
    return offsets, {"item": np.asarray(store.item, dtype=np.int64), **fields}


def dense_ids(codes: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    """Item-table codes (0 = missing) with missing values given their own id ``max + 1``, so that a
    real item never shares the padding id 0. Returns (table, report)."""
    codes = np.asarray(codes, dtype=np.int64).copy()
    missing = np.flatnonzero(codes[1:] == 0) + 1
    none_id = int(codes.max(initial=0)) + 1
    if len(missing):
        codes[missing] = none_id
    return codes, {f"{name}_missing_items": int(len(missing)), f"{name}_missing_id": none_id if len(missing) else None}


def _first_of_lists(offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[n_rows] the first value of each CSR list, 0 where a list is empty."""
    offsets = np.asarray(offsets, dtype=np.int64)
    out = np.zeros(len(offsets) - 1, dtype=np.int64)
    has = np.diff(offsets) > 0
    out[has] = np.asarray(values, dtype=np.int64)[offsets[:-1][has]]
    return out


# ---------------------------------------------------------------- ml-100k


def ml100k_ctr(store: SequenceStore, cfg: ML100KCTRConfig | None = None, name: str = "ml-100k-ctr") -> CTRData:
    """CTR samples from an ml-100k :class:`SequenceStore` (see the module docstring).

    Raises ``KeyError`` naming the missing store field (``rating``, item ``class`` or ``release_year``)."""
    cfg = cfg or ML100KCTRConfig()
    src = store.meta.get("sources") or [store.meta.get("name")]
    for scope, cols, key in (("event", store.events, "rating"), ("item", store.items, "class"),
                             ("item", store.items, "release_year")):
        if key not in cols:
            raise KeyError(f"{src}: the ml-100k store has no {scope} field {key!r}; it has {sorted(cols)}")
    genre = store.items["class"]
    category, rep_c = dense_ids(_first_of_lists(genre.offsets, genre.data), "category")
    year, rep_y = dense_ids(np.asarray(store.items["release_year"].data), "year")
    item = np.asarray(store.item, dtype=np.int64)
    offsets, events = store_csr(store, {"category": category[item], "year": year[item]})

    rating = np.asarray(store.events["rating"].data, dtype=np.float64)
    if np.isnan(rating).any():
        bad = int(np.flatnonzero(np.isnan(rating))[0])
        raise ValueError(f"{src}: event {bad} (store order) has no rating; click labels need one per event")
    lens = np.diff(offsets)
    row = np.repeat(np.arange(len(lens), dtype=np.int64), lens)  # history row of each event
    pos = ragged_arange(lens)  # earlier ratings of the same user = history length
    keep = pos >= cfg.min_history
    ev = np.flatnonzero(keep)  # one sample per kept event: its own flat index is the history end
    user, hist_end, target = row[ev], ev, item[ev]
    label = (rating[ev] >= cfg.click_threshold).astype(np.int8)

    role = np.full(len(ev), TRAIN, dtype=np.int8)
    if cfg.split == "user_last":
        back = (offsets[user + 1] - ev)  # 1 = the user's last event
        role[back <= cfg.n_test] = TEST
        role[(back > cfg.n_test) & (back <= cfg.n_test + cfg.n_valid)] = VALID
        split = {"split": "user_last", "n_valid": cfg.n_valid, "n_test": cfg.n_test,
                 "rule": "per user: last n_test samples test, the n_valid before them valid, the rest train"}
    else:
        t = np.asarray(store.timestamp)[ev]
        t_test = np.quantile(t, 1.0 - cfg.test_fraction)
        t_valid = np.quantile(t, 1.0 - cfg.test_fraction - cfg.valid_fraction)
        role[t >= t_valid] = VALID
        role[t >= t_test] = TEST
        split = {"split": "temporal", "valid_from": float(t_valid), "test_from": float(t_test),
                 "valid_fraction": cfg.valid_fraction, "test_fraction": cfg.test_fraction,
                 "rule": "global time: timestamp >= test_from test, >= valid_from valid, else train"}
    report = {"protocol": "ml-100k-ctr", "click": f"rating >= {cfg.click_threshold}",
              "history": "all earlier ratings of the user (same timestamp: file order)",
              "min_history": cfg.min_history, "item_fields": {"category": "first genre of 'class'",
                                                             "year": "release_year"},
              **split, **rep_c, **rep_y, "user_vocab": "history row r = store user r + 1",
              "source": src}
    return CTRData(offsets, events, {"category": category, "year": year}, user, hist_end, target, label, role,
                   name, report, store.events["item"].vocab[1:])


# ---------------------------------------------------------------- Taobao


def taobao_store(table: EventTable, behaviors: tuple[str, ...] = ("pv",), name: str = "taobao-ctr") -> SequenceStore:
    """The ``behaviors`` events of a Taobao UserBehavior :class:`EventTable` as a store: users and items
    numbered 1..n, each user's events sorted stably by time (ties: file order; DARE trusts the file order, the
    brief asks to sort), the event ``category`` kept. What ``taobao_ctr`` builds on; cached by ``open_taobao``."""
    src = table.sources or [table.name]
    for key in ("category", "behavior"):
        if key not in table.events.column_names:
            raise KeyError(f"{src}: Taobao events need a {key!r} column; they have {table.events.column_names}")
    kept = table.events.filter(pc.is_in(table.events["behavior"], value_set=pa.array(list(behaviors))))
    if kept.num_rows == 0:
        raise ValueError(f"{src}: no event has behavior in {list(behaviors)}")
    store = SequenceStore.build(run(table.replace(kept)), name=name)
    store.meta["taobao"] = {"behaviors": list(behaviors), "events_kept": int(kept.num_rows),
                            "events_read": int(table.events.num_rows), "source": src}
    return store


def open_taobao(path: str | Path, behaviors: tuple[str, ...] = ("pv",), *, root: str | Path | None = None,
                cache_dir: str | Path | None = None) -> SequenceStore:
    """``taobao_store`` of a UserBehavior.csv (or its folder, or the registered name), through the store
    cache keyed by the file and the behaviours: the 100M-event log is parsed once, later runs map the cache."""
    from behaviorseq.data.datasets import load_events, resolve, source_files

    fmt, resolved, _ = resolve(path, root)
    config = {"dataset": "taobao-ctr", "format": fmt, "behaviors": list(behaviors)}
    return cached_store(source_files(resolved, fmt), config,
                        lambda: taobao_store(load_events(resolved), behaviors), cache_dir)


def taobao_ctr(source: EventTable | SequenceStore, cfg: TaobaoCTRConfig | None = None, max_len: int = 200,
               name: str = "taobao-ctr") -> CTRData:
    """DARE's protocol on Taobao UserBehavior: a :class:`EventTable` (``read_taobao``'s output) or the store
    ``taobao_store`` / ``open_taobao`` made of it with ``cfg.behaviors``, then :func:`dare_protocol`. An item's
    category in ``item_fields`` is the one of its first event in the store's (user, time) order, that is of its
    lowest user id's earliest event (the DARE code keeps the last in file order); events keep their own category
    (``report["items_with_several_categories"]`` counts the difference)."""
    cfg = cfg or TaobaoCTRConfig()
    max_len = cfg.max_len or max_len
    store = source if isinstance(source, SequenceStore) else taobao_store(source, cfg.behaviors, name)
    meta = store.meta.get("taobao")
    if meta is None:  # e.g. open_dataset("taobao"): every behaviour, unfiltered
        raise ValueError(f"{store.path or store.meta.get('name')}: not a store made by taobao_store / open_taobao "
                         "(its behaviours are unknown); pass the EventTable, or open_taobao(path, behaviors)")
    if meta["behaviors"] != list(cfg.behaviors):
        raise ValueError(f"the store holds behaviors {meta['behaviors']}, the config asks for {list(cfg.behaviors)}")
    src = meta["source"]
    cat = np.asarray(store.events["category"].data, dtype=np.int64)
    offsets, events = store_csr(store, {"category": cat})
    item = events["item"]
    n_items = store.num_items
    uniq_items, first = np.unique(item, return_index=True)
    table_c = np.zeros(n_items + 1, dtype=np.int64)
    table_c[uniq_items] = cat[first]
    n_pairs = len(np.unique(item * (int(cat.max(initial=0)) + 1) + cat))
    lens = np.diff(offsets)
    if not (lens >= max_len + 10).any():
        raise ValueError(f"{src}: no user has >= max_len + 10 = {max_len + 10} {'/'.join(cfg.behaviors)} "
                         f"behaviours (longest: {int(lens.max(initial=0))}); lower model.max_len (and data.ctr.train_offsets, "
                         "which must stay below it)")
    data = dare_protocol(offsets, events, {"category": table_c}, max_len=max_len,
                         train_offsets=cfg.train_offsets, n_negatives=cfg.n_negatives, seed=cfg.seed, name=name)
    data.raw_items = store.events["item"].vocab[1:]
    data.report.update({"behaviors": list(cfg.behaviors), "events_kept": meta["events_kept"],
                        "events_read": meta["events_read"], "order": "(user, timestamp), ties in file order",
                        "items_with_several_categories": int(n_pairs - len(uniq_items)),
                        "user_vocab": "history row r = store user r + 1", "source": src})
    return data


# ---------------------------------------------------------------- registry


def _open_ml100k(args: dict[str, Any], root, cache_dir, max_len: int) -> CTRData:
    from behaviorseq.data.datasets import open_dataset

    cfg = ML100KCTRConfig.from_dict(args)
    return ml100k_ctr(open_dataset("ml-100k", root=root, cache_dir=cache_dir), cfg)  # type: ignore[arg-type]


def _open_taobao(args: dict[str, Any], root, cache_dir, max_len: int) -> CTRData:
    cfg = TaobaoCTRConfig.from_dict(args)
    return taobao_ctr(open_taobao("taobao", cfg.behaviors, root=root, cache_dir=cache_dir), cfg, max_len)  # type: ignore[arg-type]


def _open_synthetic(args: dict[str, Any], root, cache_dir, max_len: int) -> CTRData:
    from behaviorseq.data.synthetic import LongCTRConfig, generate_long_ctr

    try:
        return generate_long_ctr(LongCTRConfig(**args))[0]
    except TypeError as e:
        raise ConfigError(f"LongCTRConfig: {e}") from None


CTR_DATASETS = {"ml-100k-ctr": _open_ml100k, "taobao-ctr": _open_taobao, "synthetic-long-ctr": _open_synthetic}


def open_ctr_dataset(name: str, args: dict[str, Any] | None = None, *, root: str | Path | None = None,
                     cache_dir: str | Path | None = None, max_len: int = 200) -> CTRData:
    """A registered CTR data set by name; ``args`` go to its typed config (unknown keys are errors)."""
    key = str(name).lower()
    if key not in CTR_DATASETS:
        path = Path(name)
        if path.exists() and (path.name == "UserBehavior.csv" or (path / "UserBehavior.csv").exists()):
            cfg = TaobaoCTRConfig.from_dict(dict(args or {}))
            return taobao_ctr(open_taobao(path, cfg.behaviors, cache_dir=cache_dir), cfg, max_len)
        hint = " (MovieLens 100K as CTR is 'ml-100k-ctr')" if key == "ml-100k" else ""
        raise ConfigError(f"unknown CTR dataset {name!r}{hint}; registered: {sorted(CTR_DATASETS)}, or the path of "
                          "a Taobao UserBehavior.csv or its folder")
    return CTR_DATASETS[key](dict(args or {}), root, cache_dir, max_len)


__all__ = ["CTR_DATASETS", "ML100KCTRConfig", "TaobaoCTRConfig", "dense_ids", "ml100k_ctr", "open_ctr_dataset",
           "open_taobao", "store_csr", "taobao_ctr", "taobao_store"]
