"""Data-pipeline benchmark: load -> encode -> dedup + k-core -> sequences -> cache, and the cache reload.

Generates (once, cached under ``--workdir`` with a sidecar JSON of its parameters) a skewed synthetic event
log -- a 10M-event CSV and, unless ``--skip-100m``, a 100M-event Parquet file -- with columns
``user,item,category,behavior,timestamp``:

* users: Zipf-like activity (p(rank r) ~ r^-0.6), items: Zipf popularity (r^-0.8), ranks mapped to ids
  through a fixed random permutation, so popular ids are scattered;
* 15% of events repeat the (user, item) pair of an event a little earlier in the stream (pv -> cart -> buy
  bursts), so de-duplication has real work;
* category: an int per item (Zipf over ``n_items // 200`` categories); behavior: pv/cart/fav/buy with
  Taobao-like shares 89/5.5/3/2.5 %;
* timestamps: increasing through the file (9 days) plus Gaussian noise (sd 300 s), integer seconds, so
  ties and slightly out-of-order rows occur.

Each measured pipeline runs in a fresh subprocess; its peak RSS is the child's ``ru_maxrss`` (from
``os.wait4``), and a sampler thread in the child records the peak RSS inside each stage.

* ours:   ``read_table`` -> ``preprocess.run([Dedup("first"), KCore(5, 5)])`` -> ``SequenceStore.build``
          -> ``store.save``;
* pandas: ``pd.read_csv`` -> sort by time + ``drop_duplicates(["user", "item"], keep="first")`` ->
          iterative k-core with ``value_counts`` + ``isin`` -> ``factorize`` -> stable sort by
          (user, time) -> ``groupby("user")["item"].apply(list)`` -> pickle;
* reload: ``SequenceStore.load`` + touching the offsets and one random user's sequence (decoded), in a
  fresh process, median of 3 (the pickle reload of the pandas result is timed the same way, for reference).

Both 10M results are checked to be identical: event/user/item counts after k-core, a SHA-256 over every
user's full sequence in raw ids, and a few users' sequences printed side by side.

    python benchmarks/data_pipeline.py --events 10000000 --parquet-events 100000000 --json out.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import pickle
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GEN_VERSION = 1
BEHAVIORS = ["pv", "cart", "fav", "buy"]
BEHAVIOR_P = [0.89, 0.055, 0.03, 0.025]
N_CHECK_USERS = 6


# ---- data generation ---------------------------------------------------------------------------
def gen_params(n_events: int, n_users: int, n_items: int, seed: int) -> dict:
    return {
        "version": GEN_VERSION, "events": n_events, "users": n_users, "items": n_items, "seed": seed,
        "user_zipf": 0.6, "item_zipf": 0.8, "repeat_frac": 0.15, "repeat_window": 2000,
        "categories": max(100, n_items // 200), "category_zipf": 0.9,
        "t0": 1_511_539_200, "span_s": 9 * 86400, "noise_sd_s": 300.0, "chunk": 1_000_000,
    }


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    c = np.cumsum(w)
    return c / c[-1]


def generate(path: Path, params: dict, fmt: str) -> dict:
    """Write ``params['events']`` rows chunk by chunk; skip when the sidecar says it is already there."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    side = path.with_suffix(path.suffix + ".json")
    if path.exists() and side.exists():
        try:
            if json.loads(side.read_text()).get("params") == params:
                return {"generated": False, "seconds": 0.0, "bytes": path.stat().st_size}
        except ValueError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    p = params
    rng = np.random.default_rng(p["seed"])
    uperm = rng.permutation(p["users"]).astype(np.int64) + 1  # raw id of activity rank r
    iperm = rng.permutation(p["items"]).astype(np.int64) + 1
    ucdf, icdf = _zipf_cdf(p["users"], p["user_zipf"]), _zipf_cdf(p["items"], p["item_zipf"])
    ccdf = _zipf_cdf(p["categories"], p["category_zipf"])
    item_cat = np.empty(p["items"] + 1, dtype=np.int64)  # category of raw item id
    item_cat[1:] = rng.permutation(p["categories"])[np.searchsorted(ccdf, rng.random(p["items"]))] + 1
    beh_dict = pa.array(BEHAVIORS)
    bcdf = np.cumsum(BEHAVIOR_P)
    schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("category", pa.int64()),
                        ("behavior", pa.string()), ("timestamp", pa.int64())])
    t = time.perf_counter()
    writer = pq.ParquetWriter(str(tmp), schema, compression="snappy") if fmt == "parquet" else None
    sink = None if writer else pa.OSFile(str(tmp), "wb")
    try:
        done, first = 0, True
        while done < p["events"]:
            n = min(p["chunk"], p["events"] - done)
            u = uperm[np.minimum(np.searchsorted(ucdf, rng.random(n)), p["users"] - 1)]
            i = iperm[np.minimum(np.searchsorted(icdf, rng.random(n)), p["items"] - 1)]
            rep = np.flatnonzero(rng.random(n) < p["repeat_frac"])
            src = rep - rng.integers(1, p["repeat_window"], len(rep))
            ok = src >= 0
            rep, src = rep[ok], src[ok]
            u[rep], i[rep] = u[src], i[src]
            pos = np.arange(done, done + n, dtype=np.float64)
            ts = (p["t0"] + pos * (p["span_s"] / p["events"]) + rng.normal(0, p["noise_sd_s"], n)).astype(np.int64)
            b = np.minimum(np.searchsorted(bcdf, rng.random(n)), 3).astype(np.int32)
            beh = pa.DictionaryArray.from_arrays(pa.array(b), beh_dict).cast(pa.string())
            tab = pa.Table.from_arrays([pa.array(u), pa.array(i), pa.array(item_cat[i]), beh, pa.array(ts)],
                                       schema=schema)
            if writer is not None:
                writer.write_table(tab, row_group_size=n)
            else:
                pacsv.write_csv(tab, sink, pacsv.WriteOptions(include_header=first))
            first = False
            done += n
    finally:
        if writer is not None:
            writer.close()
        else:
            sink.close()
    os.replace(tmp, path)
    secs = time.perf_counter() - t
    side.write_text(json.dumps({"params": params, "format": fmt, "seconds": secs}, indent=1))
    return {"generated": True, "seconds": secs, "bytes": path.stat().st_size}


# ---- child-side instrumentation ----------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Meter:
    """Wall time and peak RSS per stage (a thread samples /proc/self/statm every 20 ms)."""

    def __init__(self, progress: Path | None = None) -> None:
        self.stages: list[dict] = []
        self._peak = self._sub = 0
        self._stop = threading.Event()
        self.progress = progress
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            r = _rss_bytes()
            if r > self._peak:
                self._peak = r
            if r > self._sub:
                self._sub = r

    @contextmanager
    def stage(self, name: str):
        self._note({"start": name})
        self._peak = r0 = _rss_bytes()
        t = time.perf_counter()
        yield
        secs = time.perf_counter() - t
        r1 = _rss_bytes()
        rec = {"stage": name, "seconds": secs, "rss_start_mb": r0 / 2**20, "rss_end_mb": r1 / 2**20,
               "peak_mb": max(self._peak, r1) / 2**20}
        self.stages.append(rec)
        self._note(rec)

    def mark(self, name: str, secs: float, peak: int) -> None:
        rec = {"stage": name, "seconds": secs, "peak_mb": peak / 2**20, "sub": True}
        self.stages.append(rec)
        self._note(rec)

    def take_peak(self) -> int:
        """Peak since the last call (for sub-stages inside a library call)."""
        r = _rss_bytes()
        p, self._sub = max(self._sub, r), r
        if p > self._peak:
            self._peak = p
        return p

    def _note(self, rec: dict) -> None:
        if self.progress:
            with open(self.progress, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    def close(self) -> dict:
        self._stop.set()
        return {"stages": self.stages, "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _digest(users: np.ndarray, lengths: np.ndarray, items: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (users, lengths, items):
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()


def _check_positions(n: int) -> list[int]:
    return sorted({int(x) for x in np.linspace(0, n - 1, N_CHECK_USERS)}) if n else []


def child_ours(args) -> dict:
    import pyarrow as pa

    from behaviorseq.data import preprocess as P
    from behaviorseq.data.loaders import read_table
    from behaviorseq.data.store import SequenceStore

    m = Meter(Path(args.progress) if args.progress else None)
    sub: dict[str, float] = {}

    class Timed(P.Step):  # times each step inside preprocess.run without touching the library
        def __init__(self, inner: P.Step) -> None:
            self.inner = inner

        def apply(self, f):
            t = time.perf_counter()
            if "_last" not in sub:  # first step: everything before it was the id encoding
                m.mark("  encode ids", t - sub["_t0"], m.take_peak())
            out = self.inner.apply(f)
            sub["_last"] = time.perf_counter()
            m.mark(f"  {self.inner.kind}", sub["_last"] - t, m.take_peak())
            return out

        def to_dict(self):
            return self.inner.to_dict()

    # The plain call: behavior (strings) is inferred categorical, category (ints) numeric. With
    # --declare-category it is declared categorical, which makes the CSV reader keep it as strings.
    kinds = {"category": "categorical"} if args.declare_category else None
    with m.stage("load"):
        table = read_table(args.input, columns={"user": "user", "item": "item", "timestamp": "timestamp"},
                           kinds=kinds)
    with m.stage("preprocess"):
        sub["_t0"] = time.perf_counter()
        m.take_peak()
        prep = P.run(table, [Timed(P.Dedup("first")), Timed(P.KCore(5, 5))])
        m.mark("  compact + sort", time.perf_counter() - sub["_last"], m.take_peak())
    with m.stage("build"):
        store = SequenceStore.build(prep)
    out = Path(args.output)
    if out.exists():
        shutil.rmtree(out)
    with m.stage("save"):
        store.save(out)
    res = m.close()
    # ---- result check (not timed) ----
    uv = np.asarray(prep.user_vocab.slice(1).to_numpy(zero_copy_only=False), dtype=np.int64)
    lengths = np.asarray(store.lengths[1:])
    raw_items = np.asarray(store.events["item"].vocab.take(pa.array(np.asarray(store.item))).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    pos = _check_positions(len(uv))
    seqs = {str(int(uv[p])): raw_items[store.offsets[p + 1]:store.offsets[p + 2]].tolist() for p in pos}
    res["check"] = {"events": store.num_events, "users": store.num_users, "items": store.num_items,
                    "digest": _digest(uv, lengths, raw_items), "sample": seqs}
    res["record"] = prep.record
    res["input_types"] = {f.name: str(f.type) for f in table.events.schema}
    res["stats"] = store.meta["stats"]
    res["cache_bytes"] = sum(f.stat().st_size for f in out.iterdir())
    return res


def child_pandas(args) -> dict:
    import pandas as pd

    m = Meter(Path(args.progress) if args.progress else None)
    with m.stage("load"):
        df = pd.read_csv(args.input)
    with m.stage("dedup"):
        df = df.sort_values("timestamp", kind="stable")
        df = df.drop_duplicates(["user", "item"], keep="first")
    with m.stage("k_core"):
        while True:
            uc, ic = df["user"].value_counts(), df["item"].value_counts()
            bad_u, bad_i = uc.index[uc < 5], ic.index[ic < 5]
            if len(bad_u) == 0 and len(bad_i) == 0:
                break
            df = df[~df["user"].isin(bad_u) & ~df["item"].isin(bad_i)]
    with m.stage("factorize + sort"):
        df["user_id"], users = pd.factorize(df["user"])
        df["item_id"], items = pd.factorize(df["item"])
        df["item_id"] += 1  # 0 = padding
        df = df.sort_values(["user_id", "timestamp"], kind="stable")
    with m.stage("groupby lists"):
        seqs = df.groupby("user_id")["item_id"].apply(list)
    out = Path(args.output)
    with m.stage("pickle"):
        with open(out, "wb") as fh:
            pickle.dump({"seqs": seqs, "users": users, "items": items}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    res = m.close()
    # ---- result check (not timed): every sequence in raw ids, users in raw-id order ----
    raw_users = np.asarray(users)[seqs.index.to_numpy()].astype(np.int64)
    order = np.argsort(raw_users, kind="stable")
    vals = seqs.to_numpy()
    lengths = np.array([len(vals[k]) for k in order], dtype=np.int64)
    flat = np.concatenate([np.asarray(vals[k], dtype=np.int64) for k in order])
    item_arr = np.asarray(items).astype(np.int64)
    raw_items = item_arr[flat - 1]
    uv = raw_users[order]
    offs = np.concatenate([[0], np.cumsum(lengths)])
    pos = _check_positions(len(uv))
    sample = {str(int(uv[p])): raw_items[offs[p]:offs[p + 1]].tolist() for p in pos}
    res["check"] = {"events": int(len(df)), "users": int(df["user"].nunique()), "items": int(df["item"].nunique()),
                    "digest": _digest(uv, lengths, raw_items), "sample": sample}
    res["cache_bytes"] = out.stat().st_size
    return res


def child_reload(args) -> dict:
    """Time SequenceStore.load + offsets + one random user's sequence; decoding it to raw ids is timed
    apart: the first pyarrow array built in a process imports pandas (pyarrow does so lazily), which
    costs 0.3-2 s depending on machine load and is not part of reading the cache."""
    from behaviorseq.data.store import SequenceStore

    rng = np.random.default_rng()
    t = time.perf_counter()
    store = SequenceStore.load(args.input)
    t_load = time.perf_counter() - t
    off = np.asarray(store.offsets)
    total = int(off[-1])
    u = int(rng.integers(1, store.num_users + 1))
    seq = np.array(store.sequence(u))
    ts = np.array(store.sequence(u, "timestamp"))
    secs = time.perf_counter() - t
    t = time.perf_counter()
    raw = store.raw_items(seq)
    decode = time.perf_counter() - t
    return {"seconds": secs, "load_s": t_load, "touch_s": secs - t_load, "decode_s": decode,
            "pandas_imported_by_decode": "pandas" in sys.modules, "user": u, "len": len(raw), "events": total,
            "t_last": int(ts[-1]) if len(ts) else None,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_reload_pandas(args) -> dict:
    rng = np.random.default_rng()
    t = time.perf_counter()
    with open(args.input, "rb") as fh:
        d = pickle.load(fh)
    seqs = d["seqs"]
    k = int(rng.integers(0, len(seqs)))
    seq = list(seqs.iloc[k])
    raw = np.asarray(d["items"])[np.asarray(seq) - 1].tolist()
    secs = time.perf_counter() - t
    return {"seconds": secs, "len": len(raw),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


CHILDREN = {"ours": child_ours, "pandas": child_pandas, "reload": child_reload, "reload-pandas": child_reload_pandas}


# ---- parent --------------------------------------------------------------------------------------
def spawn(mode: str, inp: Path, out: Path | None, workdir: Path, tag: str, timeout: float | None = None,
          extra: list[str] | None = None) -> dict:
    """Run one child in a fresh interpreter; returns its result plus wall time and ru_maxrss (wait4)."""
    res_path = workdir / f"result-{tag}.json"
    prog = workdir / f"progress-{tag}.jsonl"
    for p in (res_path, prog):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", mode, "--_input", str(inp),
           "--_result", str(res_path), "--_progress", str(prog)]
    if out is not None:
        cmd += ["--_output", str(out)]
    cmd += extra or []
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    load_before = [round(x, 2) for x in os.getloadavg()]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    deadline = None if timeout is None else t + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline and time.perf_counter() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    rec = {"loadavg_before": load_before, "wall_s": wall, "rc": proc.returncode, "ru_maxrss_mb": ru.ru_maxrss / 1024,
           "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpu_s": ru.ru_utime + ru.ru_stime}
    if proc.returncode == 0 and res_path.exists():
        rec.update({k: v for k, v in json.loads(res_path.read_text()).items() if k != "ru_maxrss_mb"})
        rec["self_ru_maxrss_mb"] = json.loads(res_path.read_text()).get("ru_maxrss_mb")
    else:
        rec["progress"] = [json.loads(line) for line in prog.read_text().splitlines()] if prog.exists() else []
        rec["failed"] = True
    return rec


def stage_seconds(rec: dict) -> dict:
    return {s["stage"]: s["seconds"] for s in rec.get("stages", []) if not s.get("sub")}


def total_seconds(rec: dict) -> float:
    return sum(stage_seconds(rec).values())


def machine_info() -> dict:
    import pandas
    import psutil
    import pyarrow
    info = {"cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__, "pyarrow": pyarrow.__version__, "pandas": pandas.__version__}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        from behaviorseq import __version__ as v
        info["behaviorseq"] = v
    except ImportError:
        pass
    return info


def reload_median(inp: Path, workdir: Path, mode: str, tag: str, n: int = 3) -> dict:
    runs = [spawn(mode, inp, None, workdir, f"{tag}-{k}") for k in range(n)]
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        return {"failed": True, "runs": runs}
    return {"seconds": statistics.median(r["seconds"] for r in ok),
            "process_wall_s": statistics.median(r["wall_s"] for r in ok),
            "peak_mb": max(r["ru_maxrss_mb"] for r in ok), "runs": [r["seconds"] for r in ok],
            "load_s": [r.get("load_s") for r in ok], "touch_s": [r.get("touch_s") for r in ok],
            "decode_s": [r.get("decode_s") for r in ok],
            "decode_s_median": statistics.median(r["decode_s"] for r in ok) if all("decode_s" in r for r in ok) else None}


def fmt_row(cols, widths):
    return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=False)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=None, help="default: events / 10")
    ap.add_argument("--items", type=int, default=None, help="default: events / 10 (CSV), events / 25 (Parquet)")
    ap.add_argument("--parquet-events", type=int, default=100_000_000)
    ap.add_argument("--skip-100m", action="store_true", help="skip the large Parquet run")
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--pandas-large", action="store_true", help="also try pandas on the large file (slow)")
    ap.add_argument("--workdir", default=str(ROOT / "benchmarks" / "_work"))
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--declare-category", action="store_true",
                    help="ours: read_table(..., kinds={'category': 'categorical'}) instead of the inferred kinds")
    ap.add_argument("--_child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--_input", help=argparse.SUPPRESS)
    ap.add_argument("--_output", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    ap.add_argument("--_progress", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        cargs = argparse.Namespace(input=args._input, output=args._output, progress=args._progress,
                                   declare_category=args.declare_category)
        res = CHILDREN[args._child](cargs)
        Path(args._result).write_text(json.dumps(res, default=str))
        return 0

    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    out = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine_info(),
           "command": " ".join([Path(sys.executable).name, *sys.argv])}
    n = args.events
    small = gen_params(n, args.users or max(1, n // 10), args.items or max(1, n // 10), args.seed)
    csv = wd / f"events_{n}.csv"
    print(f"[gen] {csv} ...", flush=True)
    out["small"] = {"path": str(csv), "params": small, "gen": generate(csv, small, "csv")}
    print(f"[gen] {out['small']['gen']}", flush=True)
    big = None
    if not args.skip_100m:
        N = args.parquet_events
        big = gen_params(N, args.users or max(1, N // 10), args.items or max(1, N // 25), args.seed)
        pq_path = wd / f"events_{N}.parquet"
        print(f"[gen] {pq_path} ...", flush=True)
        out["large"] = {"path": str(pq_path), "params": big, "gen": generate(pq_path, big, "parquet")}
        print(f"[gen] {out['large']['gen']}", flush=True)

    cache = wd / "cache"
    cache.mkdir(exist_ok=True)
    print("[run] ours, 10M CSV", flush=True)
    flags = ["--declare-category"] if args.declare_category else []
    out["declare_category"] = args.declare_category
    ours = spawn("ours", csv, cache / f"store_{n}", wd, "ours-small", extra=flags)
    out["small"]["ours"] = ours
    if not ours.get("failed"):
        print("[run] reload x3", flush=True)
        out["small"]["reload"] = reload_median(cache / f"store_{n}", wd, "reload", "reload-small")
    pdres = None
    if not args.skip_pandas:
        print("[run] pandas, 10M CSV", flush=True)
        pdres = spawn("pandas", csv, cache / f"pandas_{n}.pkl", wd, "pandas-small")
        out["small"]["pandas"] = pdres
        if not pdres.get("failed"):
            out["small"]["pandas_reload"] = reload_median(cache / f"pandas_{n}.pkl", wd, "reload-pandas",
                                                          "reload-pandas-small")
        if not ours.get("failed") and not pdres.get("failed"):
            a, b = ours["check"], pdres["check"]
            same = {k: a[k] == b[k] for k in ("events", "users", "items", "digest", "sample")}
            out["small"]["identical"] = all(same.values())
            out["small"]["identical_detail"] = same
    if big is not None:
        print("[run] ours, large Parquet", flush=True)
        lg = spawn("ours", Path(out["large"]["path"]), cache / f"store_{big['events']}", wd, "ours-large",
                   extra=flags)
        out["large"]["ours"] = lg
        if not lg.get("failed"):
            print("[run] reload x3 (large)", flush=True)
            out["large"]["reload"] = reload_median(cache / f"store_{big['events']}", wd, "reload", "reload-large")
        if args.pandas_large:
            print("[run] pandas, large (timeout 20 min; reads Parquet)", flush=True)
            out["large"]["pandas"] = spawn("pandas", Path(out["large"]["path"]), cache / "pandas_large.pkl", wd,
                                           "pandas-large", timeout=1200)

    report(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"[json] {args.json}")
    ok = not ours.get("failed") and (pdres is None or out["small"].get("identical", False))
    return 0 if ok else 1


def report(out: dict) -> None:
    sm = out["small"]
    ours, pdres = sm["ours"], sm.get("pandas")
    print()
    print(f"machine: {out['machine'].get('cpu_count')} CPUs ({out['machine'].get('cpu_model')}), "
          f"{out['machine']['ram_gb']} GiB RAM, python {out['machine']['python']}, numpy {out['machine']['numpy']}, "
          f"pyarrow {out['machine']['pyarrow']}, pandas {out['machine']['pandas']}")
    p = sm["params"]
    print(f"10M input: {p['events']:,} events, {p['users']:,} user ids, {p['items']:,} item ids "
          f"(CSV, {sm['gen']['bytes'] / 2**20:.0f} MiB)")
    if ours.get("failed"):
        print(f"ours FAILED rc={ours['rc']} peak={ours['ru_maxrss_mb']:.0f} MB progress={ours.get('progress')}")
        return
    c = ours["check"]
    print(f"after dedup + 5-core: {c['events']:,} events, {c['users']:,} users, {c['items']:,} items")
    # aligned stages: ours <-> pandas
    pmap = {"load": ["load"], "preprocess": ["dedup", "k_core", "factorize + sort"], "build": ["groupby lists"],
            "save": ["pickle"]}
    po = stage_seconds(pdres) if pdres and not pdres.get("failed") else {}
    ppk = {s["stage"]: s["peak_mb"] for s in (pdres or {}).get("stages", [])}
    w = [52, 8, 8, 9, 8, 11]
    print()
    print(fmt_row(["stage (10M CSV)", "ours s", "peak MB", "pandas s", "peak MB", "pandas/ours"], w))
    for s in ours["stages"]:
        name = s["stage"]
        if s.get("sub"):
            print(fmt_row([name, f"{s['seconds']:.2f}", f"{s['peak_mb']:.0f}", "", "", ""], w))
            continue
        pt = sum(po.get(k, 0) for k in pmap.get(name, [])) if po else None
        pk = max((ppk.get(k, 0) for k in pmap.get(name, [])), default=0) if po else None
        label = name + (f"  [pd: {' + '.join(pmap[name])}]" if po and name in pmap and len(pmap[name]) > 1
                        else f"  [pd: {pmap[name][0]}]" if po and name in pmap and pmap[name][0] != name else "")
        print(fmt_row([label, f"{s['seconds']:.2f}", f"{s['peak_mb']:.0f}",
                       f"{pt:.2f}" if pt is not None else "-", f"{pk:.0f}" if pk is not None else "-",
                       f"{pt / s['seconds']:.1f}x" if pt else "-"], w))
    to = total_seconds(ours)
    tp = total_seconds(pdres) if po else None
    print(fmt_row(["total (in-process)", f"{to:.2f}", f"{ours['ru_maxrss_mb']:.0f}",
                   f"{tp:.2f}" if tp else "-", f"{pdres['ru_maxrss_mb']:.0f}" if po else "-",
                   f"{tp / to:.1f}x" if tp else "-"], w))
    print(fmt_row(["process wall (incl. imports)", f"{ours['wall_s']:.2f}", "",
                   f"{pdres['wall_s']:.2f}" if po else "-", "", f"{pdres['wall_s'] / ours['wall_s']:.1f}x" if po else "-"],
                  w))
    rl, prl = sm.get("reload"), sm.get("pandas_reload")
    if rl and not rl.get("failed"):
        print(fmt_row(["reload (median of 3)", f"{rl['seconds']:.3f}", f"{rl['peak_mb']:.0f}",
                       f"{prl['seconds']:.3f}" if prl and not prl.get("failed") else "-",
                       f"{prl['peak_mb']:.0f}" if prl and not prl.get("failed") else "-",
                       f"{prl['seconds'] / rl['seconds']:.0f}x" if prl and not prl.get("failed") else "-"], w))
    if rl and rl.get("decode_s_median") is not None:
        print(f"  reload = SequenceStore.load + offsets + one user's items/timestamps (fresh process; process wall "
              f"incl. interpreter + imports {rl['process_wall_s']:.2f} s); decoding that user's items to raw ids "
              f"adds {rl['decode_s_median']:.2f} s the first time (pyarrow imports pandas lazily)")
    print(f"cache size: ours {ours['cache_bytes'] / 2**20:.0f} MiB"
          + (f", pandas pickle {pdres['cache_bytes'] / 2**20:.0f} MiB" if po else ""))
    if "identical" in sm:
        print(f"identical results (counts, full-sequence digest, sample users): {sm['identical']} "
              f"{sm['identical_detail']}")
    budget = [("10M total <= 60 s", ours["wall_s"] <= 60), ("10M peak RSS <= 3 GB", ours["ru_maxrss_mb"] <= 3000),
              ("reload <= 1 s", bool(rl) and not rl.get("failed") and rl["seconds"] <= 1)]
    lg = out.get("large")
    if lg:
        r = lg.get("ours", {})
        p = lg["params"]
        print()
        print(f"large input: {p['events']:,} events, {p['users']:,} user ids, {p['items']:,} item ids "
              f"(Parquet, {lg['gen']['bytes'] / 2**20:.0f} MiB)")
        if r.get("failed"):
            print(f"ours FAILED rc={r.get('rc')} peak={r.get('ru_maxrss_mb', 0):.0f} MB; progress: {r.get('progress')}")
        elif r:
            c = r["check"]
            print(f"after dedup + 5-core: {c['events']:,} events, {c['users']:,} users, {c['items']:,} items")
            print(fmt_row(["stage (large Parquet)", "ours s", "peak MB"], w[:3]))
            for s in r["stages"]:
                print(fmt_row([s["stage"], f"{s['seconds']:.2f}", f"{s['peak_mb']:.0f}"], w[:3]))
            print(fmt_row(["total (in-process)", f"{total_seconds(r):.2f}", f"{r['ru_maxrss_mb']:.0f}"], w[:3]))
            print(fmt_row(["process wall", f"{r['wall_s']:.2f}", ""], w[:3]))
            rl2 = lg.get("reload")
            if rl2 and not rl2.get("failed"):
                print(fmt_row(["reload (median of 3)", f"{rl2['seconds']:.3f}", f"{rl2['peak_mb']:.0f}"], w[:3]))
                if rl2.get("decode_s_median") is not None:
                    print(fmt_row(["  + first raw-id decode", f"{rl2['decode_s_median']:.3f}", ""], w[:3]))
            budget.append(("large run within 24 GiB", r["ru_maxrss_mb"] <= 24 * 1024))
    print()
    for name, ok in budget:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")


if __name__ == "__main__":
    sys.exit(main())
