"""How much of the planted signal survives SDIM's hashed bucket mean, with *oracle* embeddings? (issue 5)

    python benchmarks/long_ctr_sdim_oracle.py            # about 10 s; prints the table of README section 8
    python benchmarks/long_ctr_sdim_oracle.py --dense    # about 1 min; denser interests at L = 1,024 (section 8)
    python benchmarks/long_ctr_sdim_oracle.py --near     # about 30 s; the SDIM brief's own synthetic data (near_ctr)

e_j = [z_j ; s * u_cat(j)] (true latent, plus a random unit category vector scaled by s). Scores on test samples:
<z_target, readout> where readout is (a) the mean z over the whole history (DIN at init: uniform attention),
(b) the mean z of the target's category (a perfect hard search, SIM), (c) SDIM's long interest (m = 48, tau).
AUC against the sampled labels; the Bayes AUC ranks the true click probabilities."""
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from behaviorseq.data.ctr import CTRBatcher
from behaviorseq.data.synthetic.long_ctr import LongCTRConfig, generate_long_ctr
from behaviorseq.data.synthetic.near_ctr import NearCTRConfig, generate_near_ctr
from behaviorseq.nn.simhash import SimHash, query_interest


def run(L, over, taus=(1, 2, 3, 4), scales=(0.0, 1.0, 2.0, 4.0)):
    cfg = LongCTRConfig(**{**dict(n_users=2000, n_items=400, n_categories=40, latent_dim=8, n_interests=4,
                                  n_relevant=5, n_decoys=2, samples_per_user=20), **over, "min_len": L, "max_len": L, "seed": 1})
    data, truth = generate_long_ctr(cfg)
    rows = data.indices("test")
    b = CTRBatcher(data, L, rows, True).batch(np.arange(rows.size))
    y = b["label"].numpy()
    z = torch.as_tensor(truth.item_latent, dtype=torch.float32)
    item, cat, t = b["item"], b["category"], b["target"]
    mask = item > 0
    zt = z[t]
    zh = z[item]  # [B, L, 8]
    out = {"bayes": roc_auc_score(y, truth.click_prob[b["index"].numpy()])}
    out["uniform mean"] = roc_auc_score(y, (zt * (zh * mask[..., None]).sum(1)).sum(-1).numpy())
    same = (cat == b["target_category"][:, None]) & mask
    out["category mean"] = roc_auc_score(y, (zt * (zh * same[..., None]).sum(1)).sum(-1).numpy())
    g = torch.Generator().manual_seed(0)
    u = torch.randn(cfg.n_categories + 1, 8, generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    for s in scales:
        e = torch.cat([zh, s * u[cat]], -1)
        q = torch.cat([zt, s * u[b["target_category"]]], -1)[:, None, :]
        for tau in taus:
            h = SimHash(16, 48 if 48 % tau == 0 else 48 - 48 % tau, tau, seed=0)
            long = query_interest(e, h.codes(e), mask, h.codes(q))[:, 0, :8]
            out[f"sdim s={s} tau={tau}"] = roc_auc_score(y, (zt * long).sum(-1).numpy())
    return out


def dense() -> None:
    """The same ceilings when the target's category fills more of the history (signal_scale grows with
    sqrt(n_relevant), which keeps the Bayes AUC near 0.83): 4 interests x 25 (the trained set-up), 4 x 50,
    4 x 100, 2 x 200 and 1 x 400 relevant behaviours, with a decoy ratio of 1:5 to 2:5."""
    for over in [dict(n_interests=4, n_relevant=25, n_decoys=10), dict(n_interests=4, n_relevant=50, n_decoys=20),
                 dict(n_interests=4, n_relevant=100, n_decoys=20), dict(n_interests=2, n_relevant=200, n_decoys=40),
                 dict(n_interests=1, n_relevant=400, n_decoys=80)]:
        over["signal_scale"] = round(8 * (over["n_relevant"] / 5) ** 0.5, 2)
        res = run(1024, over, taus=(3, 8), scales=(4.0, 8.0))
        print(over, " ".join(f"{k}: {v:.3f}" for k, v in res.items()), flush=True)


def near() -> None:
    """The SDIM brief's data (click iff a behaviour has cos > 0.8 with the target; L = 1,024, 1,000 users,
    seed 1, test samples). Oracle embeddings: the true unit vectors z, optionally widened by a random unit vector
    per topic scaled by s in `extra` more dimensions (what a wider learned table could do: push other topics
    towards orthogonal). Readouts scored as <q, readout>: the max cosine (a perfectly sharp attention), DIN-style
    softmax attention at temperature 1 / beta, the uniform mean, the mean over the target's category (SIM's hard
    search), and SDIM's long interest (m = 48)."""
    full, full_truth = generate_near_ctr(NearCTRConfig(seed=1))  # the trained runs' data (4,000 users): statistics
    v, topic = full_truth.item_vector[1:], full_truth.item_topic[1:]
    cos_items, same = v @ v.T, topic[:, None] == topic[None, :]
    within = cos_items[same & ~np.eye(len(v), dtype=bool)]
    print(f"  default data, seed 1: positives {full.label.mean():.3f}; same-topic cos 5/50/95% "
          f"{np.round(np.quantile(within, [0.05, 0.5, 0.95]), 3).tolist()}; cross-topic pairs above 0.8 "
          f"{100 * (cos_items[~same] > 0.8).mean():.4f}%")
    data, truth = generate_near_ctr(NearCTRConfig(n_users=1000, seed=1))
    rows = data.indices("test")
    b = CTRBatcher(data, 1024, rows, True).batch(np.arange(rows.size))
    y = b["label"].numpy()
    z = torch.as_tensor(truth.item_vector, dtype=torch.float32)
    item, t = b["item"], b["target"]
    mask = item > 0
    zt, zh = z[t], z[item]
    cos = (zh * zt[:, None]).sum(-1)
    out = {"bayes": roc_auc_score(y, truth.click_prob[b["index"].numpy()]),
           "max cos": roc_auc_score(y, cos.max(1).values.numpy()),
           "uniform mean": roc_auc_score(y, cos.mean(1).numpy())}
    for beta in (10, 50):
        out[f"softmax beta={beta}"] = roc_auc_score(y, (torch.softmax(beta * cos, 1) * cos).sum(1).numpy())
    same = b["category"] == b["target_category"][:, None]
    out["category mean"] = roc_auc_score(y, ((cos * same).sum(1) / same.sum(1).clamp(min=1)).numpy())
    topic = torch.as_tensor(truth.item_topic)
    g = torch.Generator().manual_seed(0)
    for extra, s in [(0, 0.0), (16, 1.0), (48, 2.0), (112, 2.0)]:
        u = torch.randn(len(topic), max(extra, 1), generator=g)
        u = s * u / u.norm(dim=1, keepdim=True)
        e = torch.cat([zh, u[topic[item]]], -1) if extra else zh
        q = torch.cat([zt, u[topic[t]]], -1) if extra else zt
        for tau in ((1, 2, 3, 4, 6) if not extra else (3,)):
            h = SimHash(e.shape[-1], 48, tau, seed=0)
            long = query_interest(e, h.codes(e), mask, h.codes(q[:, None, :]))[:, 0]
            out[f"sdim tau={tau}, dim {e.shape[-1]}" + (f" (s={s})" if extra else "")] = \
                roc_auc_score(y, (q * long).sum(-1).numpy())
    for k, v in out.items():
        print(f"  {k:32s} {v:.4f}")


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dense", action="store_true", help="denser interests at L = 1,024")
    g.add_argument("--near", action="store_true", help="the SDIM brief's own synthetic data (near_ctr)")
    a = p.parse_args()
    if a.near:
        near()
        raise SystemExit
    if a.dense:
        dense()
        raise SystemExit
    for L, over in [(200, {}), (1024, dict(n_relevant=25, n_decoys=10, signal_scale=17.89))]:
        res = run(L, over)
        print(f"L={L} {over}")
        for k, v in res.items():
            print(f"  {k:24s} {v:.4f}")
