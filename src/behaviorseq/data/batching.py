"""From split views to batches of tensors, by vectorised gathers from the store's flat arrays.

Batch fields (B samples, L <= max_len: the batch's longest sequence, last max_len events kept):
    index      [B]        the samples' row numbers in the view
    user       [B]        encoded user ids
    item       [B, L]     input item ids, 0 = padding (left or right padded, as the model declares)
    <field>    [B, L]     any other event field asked for (timestamp, behavior, ...)
    length     [B]        number of real input positions (<= L)
    target     [B, L]     shifted views: next item at each position (0 on padding)
               [B]        single-target views
    targets    [B, T]     set views (user holdout): target items, 0-padded
    negative   [B, L, n] / [B, n]   sampled negatives (when a sampler is given)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from behaviorseq.data.sampling import UniformSampler
from behaviorseq.data.schema import Kind
from behaviorseq.data.splits import View
from behaviorseq.data.store import SequenceStore, ragged_arange


def window_index(start: np.ndarray, end: np.ndarray, max_len: int, padding: str = "left") -> tuple[np.ndarray, np.ndarray]:
    """Flat event indices [B, L] of the last ``max_len`` events of each range, and the valid mask."""
    start, end = np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64)
    lo = np.maximum(start, end - max_len)
    pos = np.arange(max_len, dtype=np.int64)[None, :]
    if padding == "left":
        idx = end[:, None] - max_len + pos
        valid = idx >= lo[:, None]
    elif padding == "right":
        idx = lo[:, None] + pos
        valid = idx < end[:, None]
    else:
        raise ValueError(f"padding must be 'left' or 'right', got {padding!r}")
    return np.where(valid, idx, 0), valid


class SeqBatcher:
    """Builds batches for one view. ``fields`` are event fields gathered beside ``item``."""

    def __init__(self, store: SequenceStore, view: View, max_len: int, padding: str = "left",
                 fields: Sequence[str] = (), sampler: UniformSampler | None = None, n_neg: int = 1,
                 max_targets: int | None = None, trim: bool = True):
        missing = [f for f in fields if f not in store.events]
        if missing:
            raise KeyError(f"batch fields {missing} are not in the store; it has {sorted(store.events)}")
        per_event = [f for f in fields if store.events[f].offsets is not None or store.events[f].kind == Kind.TEXT]
        if per_event:  # one value per event is gathered by event number: a list or text field would be misread
            raise ValueError(f"batch fields {per_event} are list or text fields; a batch field holds one category "
                             "or number per event")
        self.store, self.view, self.max_len, self.padding = store, view, max_len, padding
        self.fields, self.sampler, self.n_neg, self.max_targets = tuple(fields), sampler, n_neg, max_targets
        # trim: cut the batch to its longest sequence (width <= max_len). Models place positions
        # relative to the latest item and mask padding, so this changes speed, not results.
        self.trim = trim
        self._item = np.asarray(store.item)

    def __len__(self) -> int:
        return len(self.view)

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        v = self.view
        idx = np.asarray(idx, dtype=np.int64)
        s, e = v.input_start[idx], v.input_end[idx]
        flat, valid = window_index(s, e, self.max_len, self.padding)
        if self.trim and len(idx):
            w = max(1, int(valid.sum(1).max()))
            cols = slice(self.max_len - w, None) if self.padding == "left" else slice(0, w)
            flat, valid = flat[:, cols], valid[:, cols]
        out = {
            "index": torch.from_numpy(idx.copy()),  # the samples' rows in the view (e.g. prefix ids)
            "user": torch.from_numpy(v.user[idx].astype(np.int64)),
            "item": torch.from_numpy(np.where(valid, self._item[flat], 0)),
            "length": torch.from_numpy(valid.sum(1)),
        }
        for f in self.fields:
            col = np.asarray(self.store.events[f].data)
            out[f] = torch.from_numpy(np.where(valid, col[flat], 0))
        if v.shifted:
            # Shifted targets: target ranges equal input ranges moved by one, so offset the indices.
            tgt = np.where(valid, self._item[np.minimum(flat + 1, len(self._item) - 1)], 0)
            out["target"] = torch.from_numpy(tgt)
            pos = tgt
        elif (v.target_end[idx] - v.target_start[idx] == 1).all() and self.max_targets is None:
            pos = self._item[v.target_start[idx]]
            out["target"] = torch.from_numpy(pos.astype(np.int64))
        else:
            n = v.target_end[idx] - v.target_start[idx]
            tflat, tvalid = window_index(v.target_start[idx], v.target_start[idx] + n,
                                         int(self.max_targets or n.max()), "right")
            out["targets"] = torch.from_numpy(np.where(tvalid, self._item[tflat], 0))
            pos = None
        if self.sampler is not None and pos is not None:
            if rng is None:
                raise ValueError("negative sampling needs an rng")
            users = np.broadcast_to(v.user[idx].reshape((-1,) + (1,) * (pos.ndim - 1)), pos.shape)
            neg = self.sampler.sample(pos, self.n_neg, rng, users)
            neg = np.where((pos > 0)[..., None], neg, 0)
            out["negative"] = torch.from_numpy(neg[..., 0] if self.n_neg == 1 and v.shifted else neg)
        return out

    def history(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs of each sample's whole input history (not only the last L), for masking
        seen items in full ranking."""
        v = self.view
        n = v.input_end[idx] - v.input_start[idx]
        rows = np.repeat(np.arange(len(idx)), n)
        ev = np.repeat(v.input_start[idx], n) + ragged_arange(n)
        return rows, self._item[ev]


def batch_indices(n: int, batch_size: int, shuffle: bool, seed: int, epoch: int,
                  drop_last: bool = False) -> list[np.ndarray]:
    """The epoch's batches; with shuffle, a permutation from (seed, epoch) so a resumed run repeats it."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


class _BatchDataset(torch.utils.data.Dataset):
    def __init__(self, batcher: SeqBatcher, batches: list[np.ndarray], seed: int, epoch: int, start: int):
        self.batcher, self.batches, self.seed, self.epoch, self.start = batcher, batches, seed, epoch, start

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        step = self.start + k
        rng = np.random.default_rng([self.seed, self.epoch, step, 1])  # negatives: a function of the step
        return self.batcher.batch(self.batches[step], rng)


def epoch_loader(batcher: SeqBatcher, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                 start_step: int = 0, drop_last: bool = False, num_workers: int = 0) -> Iterator[dict]:
    """A torch DataLoader over whole batches (each built by one vectorised gather), starting at
    ``start_step`` of the epoch so that resume continues with the exact batches and negatives."""
    batches = batch_indices(len(batcher), batch_size, shuffle, seed, epoch, drop_last)
    ds = _BatchDataset(batcher, batches, seed, epoch, start_step)
    # Its own generator: a DataLoader draws a base seed per iterator, which must not consume the
    # global torch RNG (dropout's), or a resumed run would drift from an uninterrupted one.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=num_workers,
                                       persistent_workers=False, generator=gen)


def item_field(store: SequenceStore, name: str) -> torch.Tensor:
    """A dense item feature as a tensor indexed by item id (e.g. category per item)."""
    col = store.items[name]
    if col.offsets is not None:
        raise ValueError(f"item field {name!r} is list-valued; use its offsets and values")
    return torch.from_numpy(np.asarray(col.data).copy())


