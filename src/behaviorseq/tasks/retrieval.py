"""Next-item retrieval: how a SequenceStore and a split become training batches, a loss, and metrics.

Evaluation is vectorised over chunks of users: the model scores every item, the user's history items
are removed when asked (never the target), and each target's rank gives HR/NDCG/MRR@K. Sampled-N
evaluation ranks the target among N distinct negatives, each row's a function of (seed, row) only, so
neither eval.batch_size nor the number of ranks changes them. Per-sample metric sums and
counts are all-reduced under DDP, so several processes give the same numbers as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from behaviorseq.config import EvalConfig, TrainConfig
from behaviorseq.data.batching import SeqBatcher, epoch_loader
from behaviorseq.data.sampling import InteractionSet, make_sampler
from behaviorseq.data.splits import TRAIN, Split, View
from behaviorseq.data.store import SequenceStore
from behaviorseq.metrics import (
    per_sample_ranking_metrics,
    set_metrics_from_ranks,
    set_target_ranks,
    target_ranks,
)
from behaviorseq.utils import code_version


def _move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class RetrievalTask:
    store: SequenceStore
    split: Split
    max_len: int
    padding: str
    fields: tuple[str, ...]
    n_negatives: int
    train_cfg: TrainConfig
    eval_cfg: EvalConfig
    exclude_history: bool
    train_windows: str = "last"  # resolved: the config's choice, else the model's default

    @classmethod
    def create(cls, store: SequenceStore, split: Split, model, train_cfg: TrainConfig,
               eval_cfg: EvalConfig) -> RetrievalTask:
        ex = eval_cfg.exclude_history
        if ex is None:
            ex = bool(store.meta.get("dataset", {}).get("exclude_history_default", True))
        windows = train_cfg.train_windows or getattr(model, "train_windows", "last")
        return cls(store, split, int(model.cfg.max_len), model.padding, tuple(getattr(model, "fields", ())),
                   int(model.n_negatives), train_cfg, eval_cfg, ex, windows)

    # ---- training -------------------------------------------------------------------------------
    def train_batcher(self, epoch: int = 0) -> SeqBatcher:
        sampler = None
        if self.n_negatives > 0:
            train_events = np.flatnonzero(self.split.roles == TRAIN) if self.train_cfg.negatives_exclude_history else None
            sampler = make_sampler("uniform", self.store)
            if train_events is not None:
                sampler.exclude = InteractionSet(self.store, train_events)
        return SeqBatcher(self.store, self.train_view(epoch), self.max_len, self.padding, self.fields, sampler,
                          max(1, self.n_negatives))

    def train_view(self, epoch: int = 0) -> View:
        """The epoch's training samples (see ``TrainConfig.train_windows``); a function of (seed, epoch)
        only, so a resumed run sees the same samples."""
        view, w = self.split.train, self.train_windows
        if w == "all":
            return view.windows(self.max_len)
        if w == "prefixes":
            return view.prefixes()
        if w == "random_target":
            return view.random_targets(np.random.default_rng([self.train_cfg.seed, epoch, 7]))
        if w != "last":
            raise ValueError(f"train_windows must be last|all|prefixes|random_target, got {w!r}")
        return view

    def train_loader(self, epoch: int, start_step: int = 0, rank: int = 0, world: int = 1):
        batcher = self.train_batcher(epoch)
        loader = epoch_loader(batcher, self.train_cfg.batch_size, shuffle=True, seed=self.train_cfg.seed,
                              epoch=epoch, start_step=start_step, num_workers=self.train_cfg.num_workers)
        return loader, batcher

    def steps_per_epoch(self) -> int:
        n = -(-len(self.train_view(0)) // self.train_cfg.batch_size)
        return min(n, self.train_cfg.max_steps_per_epoch or n)

    # ---- evaluation -----------------------------------------------------------------------------
    def _is_set(self, role: str) -> bool:
        """Whether ``role`` holds target sets (user holdout), which set metrics rank by their top K: decided by
        the split, so the metric names (recall@K) never depend on whether some user happens to have two targets."""
        view = self.split.view(role)
        return self.split.name == "user_holdout" or (bool(len(view)) and bool((view.target_end - view.target_start
                                                                                 > 1).any()))

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, role: str, device: torch.device,
                 rank: int = 0, world: int = 1) -> dict[str, float]:
        view: View = self.split.view(role)
        ec = self.eval_cfg
        ks = sorted(ec.ks)
        batcher = SeqBatcher(self.store, view, self.max_len, self.padding, self.fields)
        is_set = self._is_set(role)
        sampler = None
        if ec.negatives != "full" and is_set:
            raise ValueError(f"eval.negatives={ec.negatives}: sampled ranking is for one-target views; "
                             f"{role!r} holds target sets (user holdout), which are ranked in full")
        if ec.negatives != "full":
            sampler = make_sampler(ec.negative_sampler, self.store, np.flatnonzero(self.split.roles == TRAIN))
            sampler.exclude = InteractionSet(self.store)  # sampled negatives are items the user never touched
        was_training = model.training
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), dtype=torch.float64)
        # Chunks of similar length: batches are trimmed to their longest sequence, so sorting by
        # length saves most of the padding work; metrics are sums, so the order does not matter.
        order = np.argsort(np.minimum(view.input_end - view.input_start, self.max_len), kind="stable")
        idx_all = order[rank::world]
        for start in range(0, len(idx_all), ec.batch_size):
            idx = idx_all[start:start + ec.batch_size]
            batch = batcher.batch(idx)
            scores = model.score(_move(batch, device)).float().cpu()  # [B, n_items + 1]
            # a model's -inf becomes the lowest finite score: it then ties with the model's other -inf items
            # (counted by the tie rule), never with padding or excluded items, which are -inf below it (NaN stays)
            scores.clamp_(min=torch.finfo(scores.dtype).min)
            scores[:, 0] = -torch.inf
            exclude = None
            if self.exclude_history:
                rows, items = batcher.history(idx)
                exclude = (torch.from_numpy(rows), torch.from_numpy(items.astype(np.int64)))
                if not is_set:  # excluded items drop to -inf, the target keeps its score (never excluded)
                    tgt = batch["target"]
                    s_t = scores[torch.arange(len(idx)), tgt]
                    scores[exclude] = -torch.inf
                    scores[torch.arange(len(idx)), tgt] = s_t
                    exclude = None
            if is_set:
                if "targets" not in batch:  # a chunk of one-target users only: the batcher gave "target"
                    batch["targets"] = batch.pop("target")[:, None]
                if exclude is not None:  # a target is never removed, even if the user had it before
                    r, it = exclude
                    keep = ~(batch["targets"][r] == it[:, None]).any(1)
                    scores[r[keep], it[keep]] = -torch.inf
                per = set_metrics_from_ranks(set_target_ranks(scores, batch["targets"], ec.ties), ks)
            elif sampler is not None:
                # keyed by view row: the same negatives whatever eval.batch_size or the number of ranks
                neg = torch.from_numpy(sampler.sample_rows(batch["target"].numpy(), int(ec.negatives), ec.seed,
                                                           idx, view.user[idx], distinct=True))
                cand = torch.cat([batch["target"][:, None], neg], 1)  # target first
                sub = scores.gather(1, cand)
                ranks = target_ranks(torch.cat([torch.full((len(idx), 1), -torch.inf), sub], 1),
                                     torch.ones(len(idx), dtype=torch.long), ties=ec.ties)
                per = per_sample_ranking_metrics(ranks, ks)
            else:
                ranks = target_ranks(scores, batch["target"], exclude=exclude, ties=ec.ties)
                per = per_sample_ranking_metrics(ranks, ks)
            for k, v in per.items():
                sums[k] = sums.get(k, torch.zeros((), dtype=torch.float64)) + v.double().sum()
            count += len(idx)
        if world > 1:
            names = sorted(sums) if sums else []
            vec = torch.stack([sums[k] for k in names] + [count]) if names else count.reshape(1)
            dist.all_reduce(vec)
            sums, count = dict(zip(names, vec[:-1])), vec[-1]
        if was_training:
            model.train()
        out = {k: float(v / count) for k, v in sorted(sums.items())} if count > 0 else {}
        out["n"] = int(count)
        return out

    def protocol(self, role: str = "test") -> dict:
        """Everything a reader needs to compare this result with another."""
        st = self.store.meta["stats"]
        ec = self.eval_cfg
        return {
            "task": "next_item_retrieval",
            "dataset": self.store.meta.get("name"),
            "dataset_stats_after_preprocessing": {k: st[k] for k in ("users", "items", "events")},
            "data_fingerprint": self.store.fingerprint(),
            "preprocessing": self.store.meta.get("preprocess"),
            **({"skipped_bad_rows": {"count": rep["skipped_rows"], "first": rep.get("bad_rows", [])[:5]}}
               if (rep := self.store.meta.get("load_report") or {}).get("skipped_rows") else {}),
            "split": self.split.describe(),
            "evaluated_role": role,
            "ranking": "full" if ec.negatives == "full" else f"sampled-{ec.negatives}-{ec.negative_sampler}",
            **({} if ec.negatives == "full" else {"negatives_seed": ec.seed}),
            "exclude_history": self.exclude_history,
            "ties": ec.ties,
            "ks": sorted(ec.ks),
            "max_len": self.max_len,
            "train_windows": self.train_windows,
            "seed": self.train_cfg.seed,
            "code_version": code_version(),
        }
