"""SRA-CL's item-neighbour search (the substitution candidates): exact all pairs against a FAISS index.

    python benchmarks/sracl_item_neighbours.py real [--datasets ml-100k beauty toys]
    python benchmarks/sracl_item_neighbours.py scale [--items 1000000] [--sample 2000] [--variants ivf]

The exact search (``semantic_items.item_neighbours``) is O(n_items^2); the approximate one
(``item_neighbours_approx``, ``model.semantic.item_index.kind=ivf|hnsw``) takes candidates from a FAISS index
and applies the same tie rule (a fixed random number per (item, candidate) pair), so where it reaches an item's
whole tie group its list is the exact one.

- ``real``: the attribute-bag item vectors SRA-CL trains with (packaged config, attribute source everywhere).
- ``scale``: a planted catalogue: every item a bag of a category (Zipf over 500), a brand of that category
  (Zipf over ``items / 10,000`` per category) and a price band (10), its vector the normalised idf-weighted sum
  of fixed random 128-d attribute vectors; items with the same bag have the same vector, so ties are common.
  The exact search runs on ``--sample`` random items and on half of them; the full time is extrapolated from
  the difference (the cost of a query), as in ``sracl_neighbours.py``.

Variants: ivf (16 probes), ivf-64, hnsw, and ivf-all (every default cell probed: the lists must be the exact
ones). ``real`` also times the old ``topk`` rule (float32) and counts its spread, for reference.
Reported per variant: wall time, speed-up, recall@k (share of the exact list found), tie-aware recall
(neighbours at least as near as the exact k-th), rows identical to the exact list, rows searched exactly, and
the substitution spread of the full lists (items nobody picks, the largest in-degree).
One process; torch and FAISS threads from OMP_NUM_THREADS / --threads. JSON: ``results/sracl_item_neighbours_<mode>.json``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import data_root, machine, write_json

from behaviorseq.index.faiss_index import IndexConfig, default_nlist
from behaviorseq.models.retrieval.semantic_items import _with_vectors, item_neighbours, item_neighbours_approx

VARIANTS = {"ivf": {"kind": "ivf"}, "ivf-64": {"kind": "ivf", "nprobe": 64}, "hnsw": {"kind": "hnsw"},
            "ivf-all": {"kind": "ivf", "nprobe": "all"}}  # every default cell probed: the exact lists expected


def spread(nbr: np.ndarray, has: np.ndarray) -> dict:
    deg = np.bincount(nbr[has].ravel(), minlength=len(nbr))[1:][has[1:]]
    return {"never_picked": int((deg == 0).sum()), "max_in_degree": int(deg.max())}


def compare(vecs: np.ndarray, k: int, sample: int | None, seed: int, variants: list[str]) -> dict:
    has = _with_vectors(vecs)
    ids = np.flatnonzero(has)
    q = ids if sample is None or sample >= len(ids) else np.sort(np.random.default_rng(seed).choice(ids, sample, replace=False))
    t = time.perf_counter()
    exact = item_neighbours(vecs, k, queries=q)
    t_exact = time.perf_counter() - t
    if len(q) < len(ids):  # the cost of a query from two sample sizes, then the fixed cost plus every query
        t = time.perf_counter()
        item_neighbours(vecs, k, queries=q[: len(q) // 2])
        per_query = (t_exact - (time.perf_counter() - t)) / (len(q) - len(q) // 2)
        if per_query <= 0:
            raise RuntimeError("the larger exact sample was not slower than the smaller one: give a larger --sample")
        t_exact += per_query * (len(ids) - len(q))
    out = {"items": int(len(ids)), "distinct_vectors": int(len(np.unique(vecs[ids], axis=0))),
           "dim": int(vecs.shape[1]), "k": k, "exact_queries": int(len(q)),
           "exact_s": round(t_exact, 2), "exact_extrapolated": len(q) < len(ids)}
    if len(q) == len(ids):
        out["exact_spread"] = spread(_full(exact, q, len(vecs), k), has)
    ref = np.einsum("nd,nkd->nk", vecs[q], vecs[exact])
    kth = ref.min(1)
    print(f"  exact   {t_exact:9.1f} s{' (extrapolated)' if out['exact_extrapolated'] else ''}", flush=True)
    cells = default_nlist(len(ids))
    for name in variants:
        opts = dict(VARIANTS[name])
        if opts.get("nprobe") == "all":
            opts.update(nlist=cells, nprobe=cells)
        elif opts.get("nprobe", 0) > cells:
            print(f"  {name:7s} skipped: more probes than the default ivf cells", flush=True)
            continue
        t = time.perf_counter()
        nbr, fallback = item_neighbours_approx(vecs, k, IndexConfig.from_dict(opts))
        took = time.perf_counter() - t
        got = nbr[q]
        sims = np.einsum("nd,nkd->nk", vecs[q], vecs[got])
        res = {"options": opts, "seconds": round(took, 2), "speedup": round(t_exact / took, 1),
               "recall": round(float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact)])), 4),
               "tie_recall": round(float((sims >= kth[:, None] - 1e-5).mean()), 4),
               "rows_equal_exact": round(float((got == exact).all(1).mean()), 4),
               "exact_fallback_rows": int(fallback), "spread": spread(nbr, has)}
        out[name] = res
        print(f"  {name:7s} {took:9.1f} s ({res['speedup']}x)  recall@{k} {res['recall']:.4f} (ties "
              f"{res['tie_recall']:.4f})  rows = exact {res['rows_equal_exact']:.4f}  fallback {fallback}  "
              f"spread {res['spread']}", flush=True)
    return out


def _full(exact: np.ndarray, q: np.ndarray, n: int, k: int) -> np.ndarray:
    full = np.zeros((n, k), np.int64)
    full[q] = exact
    return full


def real(datasets: list[str], k: int, variants: list[str]) -> dict:
    from behaviorseq.cli_train import build_config
    from behaviorseq.models.retrieval.semantic import make_source
    from behaviorseq.train.run import prepare, resolve_config

    res = {}
    for ds in datasets:
        over = [f"data.data_root={data_root()}", "model.alpha=0", "model.beta=0", "model.semantic.source=attributes"]
        cfg = resolve_config(build_config("sracl", ds, None, over))
        store, _, net, _ = prepare(cfg)
        vecs = make_source(net.cfg.semantic, "cpu").item_vectors(store)
        print(f"{ds}: {len(vecs) - 1:,} items, {vecs.shape[1]}-d", flush=True)
        res[ds] = compare(vecs, k, None, 0, variants)
        t = time.perf_counter()  # the rule up to session 16 (float32, torch.topk's order among ties), for reference
        topk = item_neighbours(vecs, k, ties="topk")
        res[ds]["topk_rule"] = {"seconds": round(time.perf_counter() - t, 2),
                                "spread": spread(topk, _with_vectors(vecs))}
        print(f"  topk rule {res[ds]['topk_rule']}", flush=True)
    return res


def planted(items: int, seed: int = 1, dim: int = 128, categories: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)

    def zipf(n: int, size: int) -> np.ndarray:
        p = 1.0 / np.arange(1, n + 1)
        return rng.choice(n, size, p=p / p.sum())

    per_cat = max(items // 20 // categories, 2)  # brands belong to one category, as in a shop's catalogue
    category = zipf(categories, items)
    value = {"category": category, "brand": category * per_cat + zipf(per_cat, items), "price": rng.integers(0, 10, items)}
    vecs = np.zeros((items + 1, dim), np.float32)
    for v in value.values():
        size = int(v.max()) + 1
        idf = np.log((1 + items) / (1 + np.bincount(v, minlength=size))) + 1
        table = rng.standard_normal((size, dim)).astype(np.float32)
        vecs[1:] += (table[v] * idf[v, None]).astype(np.float32)
    vecs[1:] /= np.linalg.norm(vecs[1:], axis=1, keepdims=True)
    return vecs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("real", "scale"))
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty", "toys"])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["ivf", "ivf-64", "hnsw"])
    p.add_argument("--suffix", default="", help="appended to the JSON's name")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
        import faiss

        faiss.omp_set_num_threads(a.threads)
    if a.mode == "real":
        res = real(a.datasets, a.k, a.variants)
    else:
        vecs = planted(a.items, a.seed)
        print(f"planted: {a.items:,} items, {vecs.shape[1]}-d, "
              f"{len(np.unique(vecs[1:], axis=0)):,} distinct vectors", flush=True)
        res = {"planted": {"items": a.items, "seed": a.seed, "attributes": "category Zipf(500), brand of the "
                           "category Zipf(items/10,000), price uniform(10)", **compare(vecs, a.k, a.sample, a.seed, a.variants)}}
    print(write_json(f"sracl_item_neighbours_{a.mode}{a.suffix}.json", {"machine": machine(), "variants": VARIANTS,
                                                                       **res}))


if __name__ == "__main__":
    main()
