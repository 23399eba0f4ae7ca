"""SRA-CL's random tie rule, the compiled pass (``nn/tie_order.py`` with numba) against the numpy form it replaced
(every pair's number drawn, then sorted), in one process on the same inputs; the lists must be identical.

    python benchmarks/tie_order_speed.py group [--groups 2000 8000 20000] [--others 20000]
    python benchmarks/tie_order_speed.py real [--datasets beauty]

- ``group``: a catalogue of ``--others`` items with distinct random vectors plus one group of G items with the
  same vector (a category-only attribute bag, say): G^2 pair numbers in either form. Timed: the exact item
  search (``item_neighbours``) and the approximate one (``item_neighbours_approx``, ivf).
- ``real``: a data set's attribute-bag vectors as SRA-CL trains with them (packaged config): the exact item
  search and the exact prefix search (``prefix_neighbours``), both with random ties.
One process; torch and numba threads from OMP_NUM_THREADS / --threads. JSON: ``results/tie_order_speed_<mode>.json``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import machine, write_json
from sracl_neighbours import real_prefixes

from behaviorseq.index.faiss_index import IndexConfig
from behaviorseq.models.retrieval import semantic_items as items_mod
from behaviorseq.models.retrieval.semantic_items import item_neighbours, item_neighbours_approx
from behaviorseq.models.retrieval.semantic_prefixes import prefix_neighbours
from behaviorseq.nn import tie_order


def both(fn, *args, **kw) -> dict:
    """``fn`` with the compiled pass, then with the numpy form: seconds, speed-up, identical output."""
    out, res = {}, {}
    for name, flag in (("numba", True), ("numpy", False)):
        items_mod.HAVE_NUMBA = tie_order.HAVE_NUMBA = flag
        t = time.perf_counter()
        out[name] = fn(*args, **kw)
        res[f"{name}_s"] = round(time.perf_counter() - t, 2)
    items_mod.HAVE_NUMBA = tie_order.HAVE_NUMBA = True
    res["speedup"] = round(res["numpy_s"] / max(res["numba_s"], 1e-9), 1)
    lists = {k: v[0] if isinstance(v, tuple) else v for k, v in out.items()}  # the approximate search: (lists, rows)
    res["identical"] = bool(np.array_equal(lists["numba"], lists["numpy"]))
    return res


def group(groups: list[int], others: int, k: int, seed: int = 0) -> dict:
    res = {}
    for g in groups:
        rng = np.random.default_rng(seed)
        vecs = np.zeros((1 + others + g, 128), dtype=np.float32)
        vecs[1:1 + others] = rng.standard_normal((others, 128))
        vecs[1 + others:] = rng.standard_normal(128)  # one shared vector
        vecs[1:] /= np.linalg.norm(vecs[1:], axis=1, keepdims=True)
        row = {"items": others + g, "group": g,
               "exact": both(item_neighbours, vecs, k),
               "ivf": both(item_neighbours_approx, vecs, k, IndexConfig(kind="ivf"))}
        print(f"group {g:,} in {others + g:,} items: {row}", flush=True)
        res[str(g)] = row
    return res


def real(datasets: list[str], k: int) -> dict:
    res = {}
    for ds in datasets:
        vecs, user, events, start, end, item_vecs = real_prefixes(ds, with_items=True)
        res[ds] = {"items": len(item_vecs) - 1, "prefixes": len(vecs),
                   "item_exact": both(item_neighbours, item_vecs, k),
                   "prefix_exact": both(prefix_neighbours, vecs, user, events, start, end, k)}
        print(f"{ds}: {res[ds]}", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("group", "real"))
    p.add_argument("--groups", type=int, nargs="+", default=[2000, 8000, 20000])
    p.add_argument("--others", type=int, default=20000)
    p.add_argument("--datasets", nargs="+", default=["beauty"])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tie_order.best_k(np.zeros((2, 3)), np.zeros((2, 3), np.int64), np.arange(2), 1, 0, 0)  # compile / load first
    res = group(a.groups, a.others, a.k) if a.mode == "group" else real(a.datasets, a.k)
    out = write_json(f"tie_order_speed_{a.mode}.json", {"machine": machine(), "argv": vars(a), "results": res})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
