"""SRA-CL's prefix-neighbour search: exact all pairs against an approximate FAISS index (ivf, hnsw).

    python benchmarks/sracl_neighbours.py real [--datasets ml-100k beauty]
    python benchmarks/sracl_neighbours.py scale [--users 100000] [--sample 2000] [--variants ivf]
    python benchmarks/sracl_neighbours.py ties [--datasets ml-100k beauty toys] [--sample 2000]

The exact search (``semantic_index.prefix_neighbours``) is O(N^2) in training prefixes; the approximate one
(``prefix_neighbours_approx``, ``model.semantic.neighbour_index.kind=ivf|hnsw``) takes its candidates from a
FAISS index and applies the same filters (never the user's own prefixes, never a window holding the target).

- ``real``: the prefix vectors SRA-CL trains with on the real data sets (packaged config, with the attribute
  source everywhere: ml-100k's packaged source is MiniLM text, an optional dependency);
  every variant's lists against the exact ones: recall@k (the share of the exact k found), tie-aware recall
  (neighbours at least as near as the exact k-th, for data whose vectors tie), the mean cosine of the
  neighbours as a share of the exact lists' mean, rows the index could not fill (searched exactly),
  and wall time of the search alone (the vectors are built once, outside the timing).
- ``scale``: planted topic-persistent users (``data.synthetic.generate_seqrec``), 128-d item vectors
  around their topic's centre, prefix vectors as SRA-CL makes them (normalised mean of the last ``max_len``
  item vectors). The exact search runs on ``--sample`` random query rows only (its cost is linear in the
  queries), and on half of them: the difference is the cost of a query, and the full time is the sample's
  time plus that cost for the other N - sample queries (marked "extrapolated"). Recall on the sampled rows.
- ``ties``: the exact search under both tie rules (``prefix_ties`` random, the default since session 22, and
  topk, the rule before): wall time, how evenly the lists use the prefixes (never picked, largest in-degree,
  the share of all slots held by the 1% most picked), rows whose lists differ, and on ``--sample`` rows how
  often the k-th value's tie group runs past the k slots (where the rule decides).

Recall is averaged over rows (a row without exact neighbours counts 0); tie-aware recall pools all rows.

One process; torch and FAISS use the machine's threads unless OMP_NUM_THREADS / --threads say otherwise.
JSON: ``results/sracl_neighbours_<mode>.json``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import data_root, machine, write_json

from behaviorseq.index.faiss_index import IndexConfig
from behaviorseq.models.retrieval import semantic_index as si

VARIANTS = {"ivf": {"kind": "ivf"}, "ivf-64": {"kind": "ivf", "nprobe": 64}, "hnsw": {"kind": "hnsw"}}


def compare(vecs, user, events, start, end, k, sample=None, seed=0, variants=tuple(VARIANTS), ties="random") -> dict:
    """Exact (on ``sample`` query rows, or all) against every approximate variant."""
    N = len(vecs)
    q = None if sample is None or sample >= N else np.sort(np.random.default_rng(seed).choice(N, sample, replace=False))
    t = time.perf_counter()
    exact = si.prefix_neighbours(vecs, user, events, start, end, k, queries=q, ties=ties)
    t_exact = time.perf_counter() - t
    rows = np.arange(N) if q is None else q
    if q is not None:  # the cost of a query from two sample sizes (the slope), then the fixed cost plus N queries
        t = time.perf_counter()
        si.prefix_neighbours(vecs, user, events, start, end, k, queries=q[: len(q) // 2], ties=ties)
        per_query = (t_exact - (time.perf_counter() - t)) / (len(q) - len(q) // 2)
        if per_query <= 0:
            raise RuntimeError("the larger exact sample was not slower than the smaller one: give a larger --sample")
        print(f"  exact: {per_query * 1e3:.2f} ms per query, {t_exact - per_query * len(q):.1f} s fixed", flush=True)
        t_exact = t_exact + per_query * (N - len(q))
    out = {"prefixes": N, "dim": int(vecs.shape[1]), "k": k, "ties": ties, "exact_queries": len(rows),
           "exact_s": round(t_exact, 2), "exact_extrapolated": q is not None}
    ref = np.einsum("nd,nkd->nk", vecs[rows], vecs[np.maximum(exact, 0)])
    ref_sim = ref[exact >= 0].mean()
    kth = np.where(exact >= 0, ref, np.inf).min(1)  # the exact list's farthest neighbour
    for name in variants:
        opts = VARIANTS[name]
        cfg = IndexConfig.from_dict(opts)
        t = time.perf_counter()
        nbr, fallback = si.prefix_neighbours_approx(vecs, user, events, start, end, k, cfg, ties=ties)
        took = time.perf_counter() - t
        got = nbr[rows]
        recall = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max((b >= 0).sum(), 1) for a, b in zip(got, exact)])
        sims = np.einsum("nd,nkd->nk", vecs[rows], vecs[np.maximum(got, 0)])
        sim = sims[got >= 0].mean()
        # ties: attribute bags often give many prefixes the same cosine, and any of them is as near as the
        # exact list's; a neighbour counts if it is at least as near as the exact k-th (float slack 1e-5)
        tie_recall = ((sims >= kth[:, None] - 1e-5) & (got >= 0)).sum() / max((exact >= 0).sum(), 1)
        out[name] = {"options": opts, "seconds": round(took, 2), "speedup": round(out["exact_s"] / took, 1),
                     "recall": round(float(recall), 4), "tie_recall": round(float(tie_recall), 4),
                     "cosine_share": round(float(sim / ref_sim), 4),
                     "exact_fallback_rows": int(fallback)}
        print(f"  {name:7s} {took:8.1f} s  ({out[name]['speedup']}x)  recall@{k} {recall:.4f} (ties {tie_recall:.4f})  "
              f"cosine {sim / ref_sim:.4f}  fallback rows {fallback}", flush=True)
    return out


def real_prefixes(ds: str, with_items: bool = False):
    """SRA-CL's training prefixes of a real data set and their vectors (packaged config, attribute source);
    ``with_items``: the item vectors too, last."""
    from behaviorseq.cli_train import build_config
    from behaviorseq.models.retrieval.semantic import make_source
    from behaviorseq.train.run import prepare, resolve_config

    over = [f"data.data_root={data_root()}", "model.alpha=0", "model.beta=0",  # no index built by prepare
            "model.semantic.source=attributes"]
    cfg = resolve_config(build_config("sracl", ds, None, over))
    store, _, net, task = prepare(cfg)
    view = task.train_view(0)
    events = np.array(store.item, dtype=np.int64)
    end = np.asarray(view.input_end, dtype=np.int64)
    start = np.maximum(np.asarray(view.input_start, dtype=np.int64), end - net.cfg.max_len)
    source = make_source(net.cfg.semantic, "cpu")
    item_vecs = source.item_vectors(store)
    vecs = source.prefix_vectors(store, si.prefix_windows(events, start, end, net.cfg.max_len), item_vecs)
    print(f"{ds}: {len(end):,} training prefixes, {vecs.shape[1]}-d", flush=True)
    return (vecs, view.user, events, start, end) + ((item_vecs,) if with_items else ())


def real(datasets: list[str], k: int, variants: list[str], ties: str = "random") -> dict:
    res = {}
    for ds in datasets:
        res[ds] = compare(*real_prefixes(ds), k, variants=variants, ties=ties)
        print(f"  exact   {res[ds]['exact_s']:8.1f} s", flush=True)
    return res


def spread(nbr: np.ndarray) -> dict:
    """How evenly a list set uses the prefixes: never picked, largest and mean in-degree."""
    deg = np.bincount(nbr[nbr >= 0], minlength=len(nbr))
    return {"never_picked": round(float((deg == 0).mean()), 4), "max_in_degree": int(deg.max()),
            "mean_in_degree": round(float(deg.mean()), 2), "top1pct_share": round(float(
                np.sort(deg)[::-1][: max(1, len(deg) // 100)].sum() / max(deg.sum(), 1)), 4)}


def ties(datasets: list[str], k: int, sample: int, seed: int = 0) -> dict:
    """The two tie rules of the exact search on the real data: time (same process), spread, changed rows, and
    on ``sample`` random rows the share whose k-th admissible value (float64, on the tie grid) is shared by
    more admissible prefixes than slots are left."""
    from behaviorseq.models.retrieval.semantic_items import TIE_GRID

    res = {}
    for ds in datasets:
        vecs, user, events, start, end = real_prefixes(ds)
        out = {"prefixes": len(vecs), "k": k}
        lists = {}
        for rule in ("topk", "random"):
            t = time.perf_counter()
            lists[rule] = si.prefix_neighbours(vecs, user, events, start, end, k, ties=rule)
            out[rule] = {"seconds": round(time.perf_counter() - t, 2), **spread(lists[rule])}
            print(f"  {rule:6s} {out[rule]}", flush=True)
        out["rows_changed"] = round(float((lists["topk"] != lists["random"]).any(1).mean()), 4)
        rows = np.sort(np.random.default_rng(seed).choice(len(vecs), min(sample, len(vecs)), replace=False))
        win = si.prefix_windows(events, start, end, int((end - start).max()))
        v64, tied = vecs.astype(np.float64), 0
        for j in rows:
            sim = np.round(v64 @ v64[j] / TIE_GRID)
            ok = (user != user[j]) & ~(win == events[end[j]]).any(1)
            s = np.sort(sim[ok])[::-1]
            if len(s) > k:
                tied += int(s[k - 1] == s[k])  # the k-th value continues past the last slot
        out["kth_tied_share"] = round(tied / len(rows), 4)
        out["kth_tied_sample"] = len(rows)
        print(f"  rows changed {out['rows_changed']}, k-th value tied beyond the slots in {out['kth_tied_share']:.1%} "
              f"of {len(rows)} sampled rows", flush=True)
        res[ds] = out
    return res


def scale(users: int, sample: int, k: int, variants: list[str], max_len: int = 20, seed: int = 1,
          ties: str = "random") -> dict:
    from behaviorseq.data.synthetic import SeqRecConfig, generate_seqrec

    n_topics, n_items, dim = 200, 20_000, 128
    table, truth = generate_seqrec(SeqRecConfig(n_users=users, n_items=n_items, n_topics=n_topics, stay=0.8,
                                                min_len=5, max_len=30, seed=seed))
    user_col = np.asarray(table.events.column("user"))
    order = np.lexsort((np.arange(len(user_col)), user_col))  # the generator's event order within a user
    events, user_ev = np.asarray(table.events.column("item"), dtype=np.int64)[order], user_col[order]
    first = np.r_[True, user_ev[1:] != user_ev[:-1]]
    seq_start = np.maximum.accumulate(np.where(first, np.arange(len(events)), 0))
    end = np.flatnonzero(~first)  # every event after a user's first is a target
    start = np.maximum(seq_start[end], end - max_len)
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((n_topics, dim))
    item_vec = centre[np.asarray(truth.item_topic)[1:]] + 0.7 * rng.standard_normal((n_items, dim))
    item_vec = np.vstack([np.zeros(dim), item_vec / np.linalg.norm(item_vec, axis=1, keepdims=True)])
    vecs = np.zeros((len(end), dim), np.float32)
    for s in range(0, len(end), si.WINDOW_CHUNK):  # windows a chunk at a time, as build_index does
        w = si.prefix_windows(events, start[s:s + si.WINDOW_CHUNK], end[s:s + si.WINDOW_CHUNK], max_len)
        v = item_vec[w].sum(1)
        vecs[s:s + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    print(f"planted: {users:,} users, {len(end):,} prefixes, {dim}-d", flush=True)
    res = compare(vecs, user_ev[end], events, start, end, k, sample=sample, seed=seed, variants=variants, ties=ties)
    print(f"  exact   {res['exact_s']:8.1f} s (extrapolated from {res['exact_queries']:,} queries)", flush=True)
    return {"planted": {"users": users, "items": n_items, "topics": n_topics, "stay": 0.8, "lengths": [5, 30],
                        "item_noise": 0.7, "seed": seed, **res}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("real", "scale", "ties"))
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty"])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--suffix", default="", help="appended to the JSON's name")
    p.add_argument("--ties", choices=("random", "topk"), default="random",
                   help="real / scale: the prefix tie rule of both searches (topk: the rule up to session 21)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
        import faiss

        faiss.omp_set_num_threads(a.threads)
    if a.mode == "ties":
        res = ties(a.datasets, a.k, a.sample)
    else:
        res = real(a.datasets, a.k, a.variants, a.ties) if a.mode == "real" else \
            scale(a.users, a.sample, a.k, a.variants, ties=a.ties)
    print(write_json(f"sracl_neighbours_{a.mode}{a.suffix}.json", {"machine": machine(), "variants": VARIANTS, **res}))


if __name__ == "__main__":
    main()
