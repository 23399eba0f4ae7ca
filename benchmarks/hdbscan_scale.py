"""HDBSCAN at scale (issue 7): ours (FAISS, ``behaviorseq.cluster.HDBSCAN``) vs ``hdbscan`` (Boruvka KD-tree)
vs ``sklearn.cluster.HDBSCAN`` on Gaussian blobs and planted rings in 10-30 dimensions.

    python benchmarks/hdbscan_scale.py --sizes 10000 50000 [--data blobs rings] [--dim 10]
        [--methods ours ours-part hdbscan sklearn] [--threads 2] [--timeout 1800] [--ours-index auto]
        [--ours-mst auto] [--ours-partitions 8] [--hdbscan-approx] [--json hdbscan_scale.json] [--append]

``ours-part`` is ours with the partition-and-merge neighbour search (``HDBSCAN(partitions=...)``, one index
per partition, for data beyond one index); it is not among the default methods.

Every (data, size, method) runs in a fresh interpreter (``OMP_NUM_THREADS`` = ``--threads``) that generates
the data from the seed, times ``fit`` alone (imports, and for ours the loading of the numba-compiled
kernels by a 5,000-point warm-up fit, stay outside the clock; wall seconds and the process's CPU seconds, which
miss hdbscan's loky worker processes: ``process_tree_cpu_s`` has the whole child, imports and data generation
included) and reports its peak RSS (``ru_maxrss`` of the
child: data, index and clustering). A method that exceeds ``--timeout`` is killed and not run at larger sizes.
Reported per run: wall time of ``fit``, peak RSS, number of clusters and noise share, ARI/AMI against
``hdbscan``'s labels (the reference; ``approx_min_span_tree=False`` unless ``--hdbscan-approx``) and
against the planted truth, and for ours the fraction of certified-exact MST edges, the MST weight against
hdbscan's exact MST and the share of hdbscan's MST edges we recovered. Same ``min_cluster_size`` /
``min_samples`` for all (sklearn's ``min_samples`` counts the point itself, so it gets ours + 1).

Data (seeded): ``blobs``: 20 Gaussian clusters with Dirichlet sizes and std 0.5-1.5 in ``[-10, 10]^d`` plus
5% uniform noise; ``rings``: a background of 5 broad Gaussians (std 3) with planted fraud rings (tight
Gaussians, std 0.05-0.2, 50-500 points each, about 5% of the points, drawn around background points) plus
1% uniform noise; the truth labels are the 5 background components and each ring.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, WORK, machine, write_json

MCS, MS = 25, 10


def make_data(kind: str, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X [n, dim] float32, truth [n] int)``: blob / background-Gaussian / ring ids, -1 for uniform noise."""
    rng = np.random.default_rng(seed)
    if kind == "blobs":
        k, n_noise = 20, n // 20
        sizes = rng.multinomial(n - n_noise, rng.dirichlet(np.full(k, 5.0)))
        centers = rng.uniform(-10, 10, (k, dim))
        stds = rng.uniform(0.5, 1.5, k)
        parts = [centers[i] + stds[i] * rng.standard_normal((sizes[i], dim)) for i in range(k)]
        truth = np.repeat(np.arange(k), sizes)
        X = np.vstack([*parts, rng.uniform(-12, 12, (n_noise, dim))])
        truth = np.r_[truth, np.full(n_noise, -1)]
    elif kind == "rings":
        n_noise = n // 100
        ring_sizes = []
        while sum(ring_sizes) < 0.05 * n:
            ring_sizes.append(int(rng.integers(50, 501)))
        n_bg = n - n_noise - sum(ring_sizes)
        centers = rng.uniform(-10, 10, (5, dim))
        bg_id = rng.integers(0, 5, n_bg)
        bg = centers[bg_id] + 3.0 * rng.standard_normal((n_bg, dim))
        rings = [bg[rng.integers(n_bg)] + rng.uniform(0.05, 0.2) * rng.standard_normal((s, dim))
                 for s in ring_sizes]
        X = np.vstack([bg, *rings, rng.uniform(-15, 15, (n_noise, dim))])
        truth = np.r_[bg_id, 5 + np.repeat(np.arange(len(ring_sizes)), ring_sizes), np.full(n_noise, -1)]
    else:
        raise ValueError(f"unknown data kind {kind!r}; valid: blobs, rings")
    perm = rng.permutation(n)
    return X[perm].astype(np.float32), truth[perm]


# ---- child -----------------------------------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    X, _ = make_data(args.data, args.n, args.dim)
    out = Path(args._out)
    rec: dict = {}
    if args._method in ("ours", "ours-part"):  # imports (numba, faiss, sklearn) happen before the clock starts, for all
        from behaviorseq.cluster import (
            HDBSCAN,
            as_working,
            core_distances,
            knn_graph,
            mutual_reachability_mst,
        )
        from behaviorseq.cluster.knn import IndexSpec

        # load (or compile, on a cold numba cache) the jitted kernels outside the clock, as an installed
        # package would have them; a 5,000-point fit that forces every kernel, cells included
        w, _ = as_working(X[:5000])
        g, _ = knn_graph(w, 16, IndexSpec())
        knn_graph(w, 16, IndexSpec(kind="ivf"))  # the ivf scan kernel, compiled for this dimension
        mutual_reachability_mst(w, core_distances(g, 5), g, "exact", cells_min_points=0)
        HDBSCAN(min_cluster_size=MCS, min_samples=MS).fit(X[:5000])
        t0, c0 = time.perf_counter(), time.process_time()
        index = args.ours_index if args.ours_index != "auto" else ("flat" if args.n <= 10_000 else "ivf")
        parts = args.ours_partitions if args._method == "ours-part" else None
        m = HDBSCAN(min_cluster_size=MCS, min_samples=MS, index=index, mst=args.ours_mst, partitions=parts).fit(X)
        rec["seconds"], rec["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        t = m.minimum_spanning_tree_
        rec.update(index=index, knn=m.knn_report_, mst_mode=m.mst_mode_, stages=m.timings_,
                   exact_fraction=t.exact_fraction,
                   mst_weight=float(t.weight.sum()), rounds=t.rounds, searched=t.searched)
        labels, edges = m.labels_, np.c_[t.src, t.dst]
    elif args._method == "hdbscan":
        import hdbscan

        t0, c0 = time.perf_counter(), time.process_time()
        m = hdbscan.HDBSCAN(min_cluster_size=MCS, min_samples=MS, algorithm="boruvka_kdtree",
                            approx_min_span_tree=args.hdbscan_approx, core_dist_n_jobs=args.threads,
                            gen_min_span_tree=True).fit(X)
        rec["seconds"], rec["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        mst = m.minimum_spanning_tree_._mst
        rec.update(approx_min_span_tree=args.hdbscan_approx, mst_weight=float(mst[:, 2].sum()))
        labels, edges = m.labels_, mst[:, :2].astype(np.int64)
    else:
        from sklearn.cluster import HDBSCAN as SkHDBSCAN

        t0, c0 = time.perf_counter(), time.process_time()
        m = SkHDBSCAN(min_cluster_size=MCS, min_samples=MS + 1, algorithm="kd_tree", n_jobs=args.threads).fit(X)
        rec["seconds"], rec["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        labels, edges = m.labels_, None
    np.save(out.with_suffix(".labels.npy"), labels)
    if edges is not None:
        np.save(out.with_suffix(".edges.npy"), edges)
    rec["self_ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps(rec, default=float))


# ---- parent ----------------------------------------------------------------------------------------------
def spawn(args: argparse.Namespace, data: str, n: int, method: str, workdir: Path) -> dict:
    out = workdir / f"{data}_{n}_{args.dim}_{method}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_method", method, "--_out", str(out),
           "--data", data, "--n", str(n), "--dim", str(args.dim), "--threads", str(args.threads),
           "--ours-index", args.ours_index, "--ours-mst", args.ours_mst, "--ours-partitions", str(args.ours_partitions)]
    cmd += ["--hdbscan-approx"] if args.hdbscan_approx else []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    load = [round(x, 2) for x in os.getloadavg()]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t > args.timeout:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    rec = {"data": data, "n": n, "dim": args.dim, "method": method, "process_wall_s": time.perf_counter() - t,
           "rc": os.waitstatus_to_exitcode(status), "ru_maxrss_mb": ru.ru_maxrss / 1024, "loadavg_before": load,
           "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "process_tree_cpu_s": ru.ru_utime + ru.ru_stime}  # the child and its reaped workers (hdbscan's loky)
    if rec["rc"] == 0 and out.exists():
        rec.update(json.loads(out.read_text()))
    else:
        rec["failed"] = "timeout" if time.perf_counter() - t > args.timeout else f"rc={rec['rc']}"
    return rec


def compare(recs: list[dict], data: str, n: int, dim: int, workdir: Path) -> None:
    """Agreement of each run with hdbscan's labels and the planted truth; ours' MST against hdbscan's. The
    hdbscan reference is read from ``workdir``, so it may come from an earlier invocation (``--append``)."""
    from sklearn.metrics import adjusted_mutual_info_score as ami
    from sklearn.metrics import adjusted_rand_score as ari

    _, truth = make_data(data, n, dim)
    stem = workdir / f"{data}_{n}_{dim}_hdbscan"
    hdb = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").exists() else None
    ref = np.load(f"{stem}.labels.npy") if hdb is not None else None
    for r in recs:
        if "seconds" not in r:
            continue
        path = workdir / f"{data}_{n}_{dim}_{r['method']}"
        lab = np.load(f"{path}.labels.npy")
        r.update(n_clusters=int(lab.max() + 1), noise=float((lab < 0).mean()),
                 ari_truth=ari(truth, lab), ami_truth=ami(truth, lab))
        if ref is not None:
            r.update(ari_hdbscan=ari(ref, lab), ami_hdbscan=ami(ref, lab))
        if r["method"].startswith("ours") and hdb is not None:
            e1, e2 = (np.sort(np.load(f"{p}.edges.npy"), axis=1) for p in (path, stem))
            key = lambda e: e[:, 0] * n + e[:, 1]  # noqa: E731
            r["mst_edges_in_hdbscan"] = float(np.isin(key(e1), key(e2)).mean())
            r["mst_weight_ratio"] = r["mst_weight"] / hdb["mst_weight"]
            r["speedup_vs_hdbscan"] = hdb["seconds"] / r["seconds"]
        if r["method"] == "sklearn" and hdb is not None:
            r["speedup_vs_hdbscan"] = hdb["seconds"] / r["seconds"]


def plot(recs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    color = {"ours": "C0", "hdbscan": "C1", "sklearn": "C2", "ours-part": "C3"}  # colour = method, line = data, marker = dim
    line = {"blobs": "-", "rings": "--"}
    for method, data, dim in sorted({(r["method"], r["data"], r["dim"]) for r in recs}):
        pts = sorted((r["n"], r["seconds"]) for r in recs
                     if (r["method"], r["data"], r["dim"]) == (method, data, dim) and "seconds" in r)
        if pts:
            ax.plot(*zip(*pts), line[data], marker="o" if dim <= 10 else "s", color=color[method],
                    label=f"{method} ({data}, {dim}-d)")
    ax.set(xscale="log", yscale="log", xlabel="points", ylabel="fit wall time (s)",
           title=f"HDBSCAN fit time, min_cluster_size={MCS}, min_samples={MS}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--data", nargs="+", default=["blobs", "rings"], choices=["blobs", "rings"])
    ap.add_argument("--dim", type=int, default=10)
    ap.add_argument("--methods", nargs="+", default=["ours", "hdbscan", "sklearn"],
                    choices=["ours", "ours-part", "hdbscan", "sklearn"],
                    help="ours-part: ours with partition-and-merge neighbour search (--ours-partitions)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run; slower methods stop there")
    ap.add_argument("--ours-index", default="auto", choices=["auto", "flat", "ivf", "hnsw"],
                    help="auto: flat up to 10k points, ivf above")
    ap.add_argument("--ours-mst", default="auto", choices=["auto", "exact", "approx"])
    ap.add_argument("--ours-partitions", type=int, default=8, help="partitions of the ours-part method")
    ap.add_argument("--hdbscan-approx", action="store_true", help="hdbscan's default approx_min_span_tree=True")
    ap.add_argument("--json", default="hdbscan_scale.json")
    ap.add_argument("--append", action="store_true",
                    help="merge into an existing --json (same data/n/dim/method replaced), table and plot of all")
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_method", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._method:
        args.data = args.data[0]
        return child(args)
    workdir = WORK / "hdbscan_scale"
    workdir.mkdir(parents=True, exist_ok=True)
    recs, dead = [], set()
    for data in args.data:
        for n in sorted(args.sizes):
            group = []
            for method in args.methods:
                if (data, method) in dead:
                    continue
                r = spawn(args, data, n, method, workdir)
                group.append(r)
                if "failed" in r:
                    dead.add((data, method))
                print(f"{data:5s} n={n:>9,} {method:8s} " + (f"{r['seconds']:9.2f} s  {r['ru_maxrss_mb']:8.0f} MB"
                      if "seconds" in r else f"FAILED ({r['failed']})"), flush=True)
            compare(group, data, n, args.dim, workdir)
            recs += group
    if args.append and (RESULTS / args.json).exists():
        key = lambda r: (r["data"], r["n"], r["dim"], r["method"])  # noqa: E731
        new = {key(r) for r in recs}
        old = json.loads((RESULTS / args.json).read_text())["runs"]
        recs = sorted([r for r in old if key(r) not in new] + recs, key=lambda r: (r["data"], r["dim"], r["n"]))
    print("\n| data | d | n | method | fit s | peak MB | clusters | noise | ARI/AMI vs hdbscan | ARI vs truth | "
          "exact MST edges | MST weight / hdbscan | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in recs:
        if "seconds" not in r:
            print(f"| {r['data']} | {r['dim']} | {r['n']:,} | {r['method']} | {r['failed']} | | | | | | | | |")
            continue
        vs = f"{r['ari_hdbscan']:.4f} / {r['ami_hdbscan']:.4f}" if "ari_hdbscan" in r else "-"
        ex = f"{r['exact_fraction']:.4f}" if "exact_fraction" in r else "-"
        wr = f"{r['mst_weight_ratio']:.5f}" if "mst_weight_ratio" in r else "-"
        sp = f"{r['speedup_vs_hdbscan']:.1f}x" if "speedup_vs_hdbscan" in r else "-"
        print(f"| {r['data']} | {r['dim']} | {r['n']:,} | {r['method']} | {r['seconds']:.2f} | {r['ru_maxrss_mb']:.0f} | "
              f"{r['n_clusters']} | {r['noise']:.3f} | {vs} | {r['ari_truth']:.4f} | {ex} | {wr} | {sp} |")
    payload = {"machine": machine(), "threads": args.threads, "min_cluster_size": MCS, "min_samples": MS,
               "command": " ".join(sys.argv), "runs": recs}
    print(f"wrote {write_json(args.json, payload)}")
    png = RESULTS / Path(args.json).with_suffix(".png").name
    plot(recs, png)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
