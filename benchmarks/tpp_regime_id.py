"""How well can one sequence of the continual stream (``tpp_continual.py``) tell which regime made it? (issue 6)

    python benchmarks/tpp_regime_id.py [--seeds 0 1 2] [--json benchmarks/results/tpp_regime_id.json]

PromptTPP can only keep regimes apart if its retrieval query tells them apart. Two ceilings, on the training
sequences of all six windows (the stream's defaults: 3 types, 400 sequences of 40 events per window):
- Bayes: argmax over the three regimes of the exact Hawkes log-likelihood of the whole sequence, with the true
  parameters (the best any classifier can do from one sequence);
- pooled statistics: a logistic regression (fit on half the sequences, scored on the other half) on what a
  mean-pooled query can carry: the sequence's type shares and the mean and sd of its log inter-event times.

With ``--queries WORKDIR`` (a ``tpp_continual.py`` workdir that holds ``seed<s>/finetune_w0``, the AttNHP trained
on window 1), also pooled queries that this backbone gives for the whole sequence (the query at its last event):
PromptTPP's own layer-1 query, the mean of the event tokens ``[tanh(E k_j); pe(t_j)]``; its type half alone; and the
mean of the backbone's layer-1 attention outputs, the frozen model's own states as L2P would query with. Each is
scored by the nearest regime mean by cosine and by a logistic-regression probe (both fit on the training sequences,
scored on the test sequences of all windows). Keys that the pull term draws to each regime's mean query could do no
better than the nearest mean at the last event, and earlier events see less of the sequence.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from tpp_continual import make_stream

from behaviorseq.data.synthetic.hawkes import hawkes_loglik


def pooled_stats(seqs, num_types: int) -> np.ndarray:
    rows = []
    for n in range(len(seqs)):
        t, k = seqs.sequence(n)
        logdt = np.log(np.diff(t) + 1e-9)
        rows.append(np.r_[np.bincount(k, minlength=num_types) / len(k), logdt.mean(), logdt.std()])
    return np.asarray(rows)


def backbone_queries(model, seqs) -> dict:
    """Per-sequence pooled queries (whole sequence, padding masked) that the window-1 backbone can give:
    ``layer1`` PromptTPP's own (the mean event token [tanh(E k_j); pe(t_j)]), ``types`` its type half alone,
    ``layer2`` the mean of the backbone's layer-1 attention outputs over events (L2P's choice of query, the
    frozen model's own states, here without prompts), stacks concatenated."""
    import torch

    from behaviorseq.tasks.tpp import TPPBatcher

    b = TPPBatcher(seqs, None).batch(np.arange(len(seqs)))
    mask, t = b["mask"], b["time"]
    m = mask[..., None].float()

    def pool(x):
        return (x * m).sum(1) / m.sum(1)

    pe, typ = model.time_enc(t), torch.tanh(model.type_emb(b["type"]))
    L = t.shape[1]
    causal = (torch.ones(L, L, dtype=torch.bool).tril() & mask[:, None, :]) | torch.eye(L, dtype=torch.bool)
    x, out = torch.cat([typ, pe], -1), []
    for stack in model.stacks:
        layer = stack[0]
        s = torch.einsum("bid,bjd->bij", layer.q(x), layer.k(x)) * layer.scale
        out.append(torch.softmax(s.masked_fill(~causal, -torch.inf), -1) @ layer.v(x))
    return {"layer1": pool(x), "types": pool(typ), "layer2": pool(torch.cat(out, -1))}


def query_accuracy(ckpt: Path, splits, schedule, num_types: int) -> dict:
    """Per query kind: accuracy of the nearest regime mean by cosine (means from the training sequences of all
    windows, scored on their test sequences) and of a logistic-regression probe (same split), with the backbone
    in ``ckpt``."""
    import torch
    import torch.nn.functional as F

    from behaviorseq import models

    model = models.build("attnhp", num_types, {})
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    with torch.no_grad():
        tr, te = ([backbone_queries(model, sp[i]) for sp in splits] for i in (0, 2))
    y_tr, y_te = (np.array([schedule[w] for w, sp in enumerate(splits) for _ in range(len(sp[i]))]) for i in (0, 2))
    res = {}
    for kind in tr[0]:
        q_tr, q_te = (F.normalize(torch.cat([f[kind] for f in fs]), dim=-1) for fs in (tr, te))
        means = F.normalize(torch.stack([q_tr[torch.from_numpy(y_tr == r)].mean(0) for r in range(y_tr.max() + 1)]), dim=-1)
        nearest = float(((q_te @ means.T).argmax(1).numpy() == y_te).mean())
        probe = LogisticRegression(max_iter=3000).fit(q_tr.numpy(), y_tr).score(q_te.numpy(), y_te)
        res[kind] = {"nearest_mean": nearest, "probe": float(probe)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--types", type=int, default=3)
    ap.add_argument("--schedule", default="0,1,2,0,1,2")
    ap.add_argument("--n-seqs", type=int, default=400)
    ap.add_argument("--max-events", type=int, default=40)
    ap.add_argument("--json", default=None)
    ap.add_argument("--queries", default=None, metavar="WORKDIR",
                    help="also PromptTPP's layer-1 query accuracy with WORKDIR/seed<s>/finetune_w0's backbone")
    args = ap.parse_args()
    out = []
    for seed in args.seeds:
        regimes, schedule, splits = make_stream(args, seed)
        ll, stats, y = [], [], []
        for w, (train, _, _) in enumerate(splits):
            ll.append(np.stack([hawkes_loglik(r, train) for r in regimes], 1))  # [n, regimes]
            stats.append(pooled_stats(train, args.types))
            y += [schedule[w]] * len(train)
        ll, stats, y = np.concatenate(ll), np.concatenate(stats), np.asarray(y)
        half = np.arange(len(y)) % 2 == 0
        probe = LogisticRegression(max_iter=2000).fit(stats[half], y[half]).score(stats[~half], y[~half])
        shares = [stats[y == r, : args.types].mean(0).round(3).tolist() for r in range(len(regimes))]
        row = {"seed": seed, "bayes_accuracy": float((ll.argmax(1) == y).mean()), "pooled_probe_accuracy": float(probe),
               "type_shares_by_regime": shares, "n": int(len(y))}
        if args.queries:
            ckpt = Path(args.queries) / f"seed{seed}" / "finetune_w0" / "checkpoints" / "best.pt"
            row["query_accuracy"] = query_accuracy(ckpt, splits, schedule, args.types)
            row["layer1_query_accuracy"] = row["query_accuracy"]["layer1"]["nearest_mean"]
        out.append(row)
        q = "".join(f", {k} query {v['nearest_mean']:.3f} (probe {v['probe']:.3f})"
                    for k, v in row.get("query_accuracy", {}).items())
        print(f"seed {seed}: Bayes {row['bayes_accuracy']:.3f}, pooled-statistics probe {probe:.3f}{q} (chance 0.333); "
              f"type shares by regime {shares}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": vars(args), "results": out}, indent=2))


if __name__ == "__main__":
    main()
