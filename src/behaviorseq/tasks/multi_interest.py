"""Serving-path evaluation of multi-interest retrieval (ComiRec, Cen et al. KDD 2020, section 3.4 and
Algorithm 2): every interest of a user retrieves its own top-N from an item index (FAISS), the K*N
candidates are pooled by their best score over interests, and the final N come from the controllable
aggregation with trade-off lambda (lambda = 0: the plain merge). Reports Recall/HR/NDCG@k against the
held-out target set and Diversity@k over item categories, for each lambda.

With the exact (flat) index and lambda = 0 this gives the same Recall/HR/NDCG as
``RetrievalTask.evaluate`` on the dense max-over-interests scores when no scores tie (a test checks it), so the
training metrics and the serving metrics agree. Tied scores differ: the evaluator counts a tie against the
target (pessimistic), a served top-N keeps the index's order among them (a constant-score model gets recall
from the order alone). Models without ``interests()`` (single-vector baselines) are
ranked by their dense ``score()``; the aggregation then has a single candidate list to re-rank.
History items are not removed here: ComiRec's protocol keeps them in the ranking.
"""

from __future__ import annotations

import numpy as np
import torch

from behaviorseq.data.batching import SeqBatcher
from behaviorseq.index import ItemIndex, controllable_aggregate
from behaviorseq.index.faiss_index import IndexConfig
from behaviorseq.metrics import comirec_official_metrics, diversity_at_n, set_metrics
from behaviorseq.tasks.retrieval import RetrievalTask, _move


@torch.no_grad()
def evaluate_controllable(task: RetrievalTask, model: torch.nn.Module, role: str, cate: np.ndarray,
                          lambdas=(0.0,), n: int = 50, ks=None, index: dict | None = None,
                          device: torch.device | str = "cpu") -> dict[float, dict[str, float]]:
    """{lambda: {recall@k, hr@k, ndcg@k, diversity@k, n}} over the users of ``role``'s view, plus the ComiRec
    code's own recall and NDCG (``recall_master@k``, ``ndcg_paper@k``, ...: metrics.comirec_official) to set
    beside the paper's tables. Each cut-off k aggregates its own pool (each interest's top k), as the ComiRec code
    does per topN; ``n`` caps the cut-offs (until session 25 every k was read off one greedy pass over top-n
    pools, which differs from the paper's protocol at lambda > 0 for k < n)."""
    if task.exclude_history:
        raise ValueError("the serving path does not remove history items; evaluate with eval.exclude_history=false "
                         "(ComiRec's protocol)")
    ks = sorted(ks or [k for k in task.eval_cfg.ks if k <= n])
    if max(ks) > n:
        raise ValueError(f"cut-offs {ks} exceed the {n} retrieved items")
    view = task.split.view(role)
    batcher = SeqBatcher(task.store, view, task.max_len, task.padding, task.fields, max_targets=None)
    cate = np.asarray(cate, dtype=np.int64)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    multi = hasattr(model, "interests")
    table = model.item_emb.weight.detach().float().cpu() if multi else None  # single-vector models: dense score()
    idx_obj = ItemIndex(IndexConfig.from_dict(index or {})).fit(table) if multi else None
    sums: dict[float, dict[str, float]] = {lam: {} for lam in lambdas}
    count = 0
    for start in range(0, len(view), task.eval_cfg.batch_size):
        rows = np.arange(start, min(start + task.eval_cfg.batch_size, len(view)))
        batch = batcher.batch(rows)
        if "targets" not in batch:  # a single target per user: make it a one-element set
            batch["targets"] = batch.pop("target")[:, None]
        u = model.interests(_move(batch, device)).float().cpu() if multi else None
        if not multi:
            dense = model.score(_move(batch, device)).float().cpu()
            dense[:, 0] = -torch.inf
        # each cut-off k from its own pool, each interest's top k (the ComiRec code runs once per topN): a greedy
        # pass over a wider pool reaches items no interest ranks in its top k (other @k metrics at lambda > 0)
        for k in ks:
            if multi:
                pool = idx_obj.search_pool(u, k)  # [B, K*k]
                p_scores, p_items = pool.scores, pool.items
            else:
                top = torch.topk(dense, min(k, dense.shape[1] - 1), dim=1)
                p_scores, p_items = top.values.numpy(), top.indices.numpy()
            for lam in lambdas:
                items = controllable_aggregate(p_scores, p_items, cate, k, lam).items  # [B, k]
                per = set_metrics(items, batch["targets"], [k])
                per.update(comirec_official_metrics(items, batch["targets"], [k]))  # the paper's variants, apart
                per[f"diversity@{k}"] = diversity_at_n(items, cate)
                for key, v in per.items():
                    sums[lam][key] = sums[lam].get(key, 0.0) + float(v.double().sum())
        count += len(rows)
    if was_training:
        model.train()
    return {lam: {**{k: v / max(count, 1) for k, v in sorted(d.items())}, "n": count} for lam, d in sums.items()}
