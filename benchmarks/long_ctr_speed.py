"""Long-sequence CTR speed (issue 5's Speed bar): inference throughput (candidates/s) and training step
time of DIN-long, TWIN, DARE (full d_A and d_A halved) and SDIM for history lengths L and C candidates
per user, on random ids (speed does not depend on the data; every history is L real behaviours).

Inference, per pass: U users x C candidates, eval mode, ``torch.inference_mode``.
    DIN-long: one row per (user, candidate) through ``model.score`` (its activation unit runs on every
        (candidate, behaviour) pair anyway), rows chunked so that rows x L <= --chunk-tokens.
    TWIN, DARE: ``model.score_candidates`` per user: the history's embeddings looked up once (the per-user
        key cache of a TWIN serving system), all C candidates scored by one [C, L] product, top-K, then
        only the K chosen rows read per candidate (equal to ``score`` on repeated rows, a test).
    SDIM: the BSE split, ``BSE.encode`` once per user then ``BSE.score`` of the C candidates by lookup.
    DARE search: ``DARE.search_candidates`` alone (E^A lookups, the [C, L] scores, top-K): the d_A bar;
        and its first part alone (lookups and the [C, L] product, no top-K), the only part d_A scales.
--dim sets the per-field embedding dim d of every model (default 16, DARE's scripts); DARE's paper
quotes its search speed-up at d_A 128 -> 64, so the d_A bar is also run with --dim 128.
Training, per step: ``model.loss`` (main + auxiliary heads + L2) on B samples, backward, Adam step.

Each cell: one warm-up pass, then the median of --repeats passes. A pass longer than --budget seconds
ends its cell after the warm-up (marked ``*``: one pass) and the larger L (and larger C) of that model are
skipped (``skip``). Writes results/long_ctr_speed{suffix}.json and a log-log plot of throughput vs L.

    python benchmarks/long_ctr_speed.py                                    # the full grid, 2 threads
    python benchmarks/long_ctr_speed.py --lengths 256 1024 --candidates 1 100 1000 --repeats 3 \
        --threads 1 --budget 5 --train-budget 5 --under-load --suffix _quick   # a quick look (~35 s)

On a machine whose cores are already busy, use --threads 1: two OpenMP threads competing with other
jobs made small kernels 10-80x slower here (oversubscription), which no model change can fix.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from common import RESULTS, machine, write_json

from behaviorseq.models.ranking import build
from behaviorseq.models.ranking.sdim import BSE
from behaviorseq.nn.target_attention import real_suffix, recency_positions

# name -> (registered model, config overrides beyond max_len given the per-field dim d).
VARIANTS = {
    "din": ("din", lambda d: {"embedding_dim": d}),
    "twin": ("twin", lambda d: {"embedding_dim": d}),
    "dare": ("dare", lambda d: {"embedding_dim": d}),
    "dare_half": ("dare", lambda d: {"embedding_dim": d, "attention_dim": d // 2}),  # d_A = d_R / 2
    "sdim": ("sdim", lambda d: {"embedding_dim": d}),
}
LOAD_NOTE = "timings taken under load: other jobs shared the CPUs, so absolute numbers are pessimistic and noisy"


def make_model(variant: str, max_len: int, n_items: int, n_categories: int, seed: int, dim: int) -> torch.nn.Module:
    name, cfg = VARIANTS[variant]
    torch.manual_seed(seed)
    return build(name, n_items, n_categories, {"max_len": max_len, **cfg(dim)})


def histories(n: int, length: int, item_category: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    """n full histories of ``length`` random items (no padding): ``item``, ``category`` [n, length]."""
    item = torch.randint(1, len(item_category), (n, length), generator=g)
    return {"item": item, "category": item_category[item]}


def targets(n: int, item_category: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    t = torch.randint(1, len(item_category), (n,), generator=g)
    return {"target": t, "target_category": item_category[t]}


def timed(fn: Callable[[], None], repeats: int, budget: float) -> dict:
    """Warm-up pass, then the median of ``repeats`` passes; a warm-up over ``budget`` s is the only pass."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    if warm > budget:
        return {"seconds": warm, "seconds_all": [warm], "passes": 1, "over_budget": True}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"seconds": med, "seconds_all": times, "passes": len(times), "over_budget": med > budget}


def row_scorer(model: torch.nn.Module, seq: dict, cand: dict, chunk_tokens: int) -> Callable[[], None]:
    """DIN / TWIN / DARE serving: one row per (user, candidate), the user's sequence repeated per row."""
    U, L = seq["item"].shape
    C = cand["target"].shape[1]
    rows = max(1, chunk_tokens // L)

    def run() -> None:
        for u in range(U):
            for c0 in range(0, C, rows):
                c1 = min(C, c0 + rows)
                batch = {"item": seq["item"][u].expand(c1 - c0, L), "category": seq["category"][u].expand(c1 - c0, L),
                         "target": cand["target"][u, c0:c1], "target_category": cand["target_category"][u, c0:c1]}
                model.score(batch)
    return run


def dare_scores(model: torch.nn.Module, history: dict, cand: dict) -> torch.Tensor:
    """The first part of ``DARE.search_candidates``: E^A lookups and the [C, n] score product, no top-K."""
    item, category = real_suffix(history["item"], history["category"])
    e = model.attention(item, category, recency_positions(item.shape[0]))
    t = cand["target"]
    return model.candidate_scores(model.attention(t, cand["target_category"], torch.zeros_like(t)), e)


def user_scorer(method: Callable, seq: dict, cand: dict) -> Callable[[], None]:
    """TWIN / DARE serving, or DARE's search alone: ``method(history, candidates)`` once per user."""
    U = seq["item"].shape[0]

    def run() -> None:
        for u in range(U):
            method({"item": seq["item"][u], "category": seq["category"][u]},
                   {"target": cand["target"][u], "target_category": cand["target_category"][u]})
    return run


def bse_scorer(model: torch.nn.Module, seq: dict, cand: dict, parts: list) -> Callable[[], None]:
    """SDIM serving through BSE: encode the U sequences once, then score U x C candidates by lookup."""
    bse = BSE(model)

    def run() -> None:
        t0 = time.perf_counter()
        state = bse.encode(seq)
        t1 = time.perf_counter()
        bse.score(cand, state)
        parts.append((t1 - t0, time.perf_counter() - t1))
    return run


def bench_inference(args, item_category: torch.Tensor) -> list[dict]:
    cells, over = [], {}  # over[(variant, kind)]: the (L, C) cells whose pass exceeded the budget
    kinds = [(v, "serve") for v in args.models]
    kinds += [(v, k) for k in ("search", "scores") for v in args.models if v.startswith("dare")]
    for L in sorted(args.lengths):
        g = torch.Generator().manual_seed(args.seed + L)
        seq = histories(args.users, L, item_category, g)
        cand = {k: t.view(args.users, -1) for k, t in targets(args.users * max(args.candidates), item_category, g).items()}
        for variant, kind in kinds:
            model = make_model(variant, L, args.n_items, args.n_categories, args.seed, args.dim).eval()
            for C in sorted(args.candidates):
                cell = {"model": variant, "kind": kind, "L": L, "candidates": C, "users": args.users}
                hit = [(L0, C0) for L0, C0 in over.get((variant, kind), []) if L0 <= L and C0 <= C]
                if hit:  # a smaller (or equal) L and C already exceeded the budget
                    cells.append({**cell, "skipped": f"L={hit[0][0]}, C={hit[0][1]} took over {args.budget} s"})
                    continue
                c = {k: t[:, :C] for k, t in cand.items()}
                parts: list = []
                if variant == "sdim":
                    fn = bse_scorer(model, seq, c, parts)
                elif kind == "search":
                    fn = user_scorer(model.search_candidates, seq, c)
                elif kind == "scores":
                    fn = user_scorer(partial(dare_scores, model), seq, c)
                elif hasattr(model, "score_candidates"):
                    fn = user_scorer(model.score_candidates, seq, c)
                else:
                    fn = row_scorer(model, seq, c, args.chunk_tokens)
                with torch.inference_mode():
                    res = timed(fn, args.repeats, args.budget)
                res["candidates_per_s"] = args.users * C / res["seconds"]
                if parts:  # BSE: the timed passes' encode / score split (the warm-up is parts[0])
                    kept = parts[-res["passes"]:]
                    res["encode_seconds"] = statistics.median(p[0] for p in kept)
                    res["score_seconds"] = statistics.median(p[1] for p in kept)
                if res["over_budget"]:
                    over.setdefault((variant, kind), []).append((L, C))
                cells.append({**cell, **res})
                print(f"  {kind:6s} {variant:9s} L={L:5d} C={C:5d}: {res['seconds'] * 1e3:9.2f} ms/pass, "
                      f"{res['candidates_per_s']:12,.0f} cand/s{' (over budget)' if res['over_budget'] else ''}",
                      flush=True)
    return cells


def bench_training(args, item_category: torch.Tensor) -> list[dict]:
    cells, over = [], {}
    for variant in args.models:
        for L in sorted(args.lengths):
            cell = {"model": variant, "L": L, "batch": args.batch}
            if variant in over:
                cells.append({**cell, "skipped": f"L={over[variant]} took over {args.train_budget} s per step"})
                continue
            g = torch.Generator().manual_seed(args.seed + L)
            batch = {**histories(args.batch, L, item_category, g), **targets(args.batch, item_category, g),
                     "label": torch.randint(0, 2, (args.batch,), generator=g).float()}
            model = make_model(variant, L, args.n_items, args.n_categories, args.seed, args.dim).train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(model=model, opt=opt, batch=batch) -> None:
                opt.zero_grad(set_to_none=True)
                model.loss(batch).backward()
                opt.step()

            res = timed(step, args.repeats, args.train_budget)
            if res["over_budget"]:
                over[variant] = L
            cells.append({**cell, **res})
            print(f"  train  {variant:9s} L={L:5d} B={args.batch}: {res['seconds'] * 1e3:9.1f} ms/step"
                  f"{' (over budget)' if res['over_budget'] else ''}", flush=True)
            del model, opt, batch
    return cells


def _fmt(cell: dict | None, key: str, scale: float = 1.0) -> str:
    if cell is None:
        return "-"
    if "skipped" in cell:
        return "skip"
    v = cell[key] * scale
    s = f"{v:.3g}" if v < 1e4 else f"{v:.2e}"
    return s + ("*" if cell["over_budget"] else "")


def tables(args, inf: list[dict], train: list[dict]) -> str:
    Ls = sorted(args.lengths)
    head = " | ".join(f"L={L}" for L in Ls)
    sep = "|---" * (len(Ls) + 2) + "|"
    find = {(c["model"], c["kind"], c["L"], c["candidates"]): c for c in inf}
    out = [f"Inference throughput, candidates/s ({args.users} user(s) x C candidates per pass; "
           "SDIM via BSE encode + lookup)", "", f"| model | C | {head} |", sep]
    for v in args.models:
        for C in sorted(args.candidates):
            out.append(f"| {v} | {C} | " + " | ".join(_fmt(find.get((v, "serve", L, C)), "candidates_per_s")
                                                      for L in Ls) + " |")
    dare = [v for v in args.models if v.startswith("dare")]
    if dare:
        for kind, title in (("search", "DARE search stage (E^A lookups + scores + top-K), ms per pass"),
                            ("scores", "Of which E^A lookups + the [C, L] score product (no top-K), ms per pass")):
            out += ["", title, "", f"| variant | C | {head} |", sep]
            for v in dare:
                for C in sorted(args.candidates):
                    out.append(f"| {v} | {C} | " + " | ".join(_fmt(find.get((v, kind, L, C)), "seconds", 1e3)
                                                              for L in Ls) + " |")
    tfind = {(c["model"], c["L"]): c for c in train}
    out += ["", f"Training step (forward + backward + Adam, batch {args.batch}), ms", "", f"| model | {head} |",
            "|---" * (len(Ls) + 1) + "|"]
    for v in args.models:
        out.append(f"| {v} | " + " | ".join(_fmt(tfind.get((v, L)), "seconds", 1e3) for L in Ls) + " |")
    out += ["", "`*`: over the time budget (a single pass when its warm-up was); `skip`: a smaller L or C "
            "already exceeded it; `-`: not run."]
    return "\n".join(out)


def goal_ratios(inf: list[dict], C_goal: int) -> dict:
    """SDIM / DIN-long throughput at L = 1k and 8k (goals >= 5x, >= 20x), and DARE search time full / half d_A."""
    find = {(c["model"], c["kind"], c["L"], c["candidates"]): c for c in inf if "skipped" not in c}
    out: dict = {"candidates": C_goal, "sdim_over_din": {}, "dare_search_half_speedup": {}}
    for L, goal in ((1024, 5.0), (8192, 20.0)):
        s, d = find.get(("sdim", "serve", L, C_goal)), find.get(("din", "serve", L, C_goal))
        out["sdim_over_din"][L] = ({"ratio": s["candidates_per_s"] / d["candidates_per_s"], "goal": goal}
                                   if s and d else {"ratio": None, "goal": goal, "why": "a cell was not measured"})
    out["dare_scores_half_speedup"] = {}
    for L in sorted({c["L"] for c in inf}):
        f, h = find.get(("dare", "search", L, C_goal)), find.get(("dare_half", "search", L, C_goal))
        if f and h:
            out["dare_search_half_speedup"][L] = {"ratio": f["seconds"] / h["seconds"], "goal": 1.4}
        f, h = find.get(("dare", "scores", L, C_goal)), find.get(("dare_half", "scores", L, C_goal))
        if f and h:
            out["dare_scores_half_speedup"][L] = {"ratio": f["seconds"] / h["seconds"]}
    return out


def print_ratios(r: dict) -> None:
    C = r["candidates"]
    for L, x in r["sdim_over_din"].items():
        got = "not measured" if x["ratio"] is None else (
            f"{x['ratio']:.1f}x ({'meets' if x['ratio'] >= x['goal'] else 'misses'} the goal)")
        print(f"SDIM (BSE) / DIN-long throughput, L={L}, {C} candidates: {got}; goal >= {x['goal']:g}x")
    if not r["dare_search_half_speedup"]:
        print(f"DARE search d_A/2 vs d_A, {C} candidates: not measured; goal >= 1.4x")
    for L, x in r["dare_search_half_speedup"].items():
        print(f"DARE search speed-up, d_A halved vs full, L={L}, {C} candidates: {x['ratio']:.2f}x "
              f"({'meets' if x['ratio'] >= x['goal'] else 'misses'} the goal >= 1.4x)")
    for L, x in r.get("dare_scores_half_speedup", {}).items():
        print(f"  of which the lookups + score product alone: {x['ratio']:.2f}x at L={L}")


def plot(inf: list[dict], models: list[str], C: int, path: Path, under_load: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for v in models:
        pts = sorted((c["L"], c["candidates_per_s"]) for c in inf
                     if c["model"] == v and c["kind"] == "serve" and c["candidates"] == C and "skipped" not in c)
        if pts:
            ax.plot(*zip(*pts), "o-", label=v)
    Ls = sorted({c["L"] for c in inf})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(Ls, [str(L) for L in Ls])
    ax.set_xlabel("history length L")
    ax.set_ylabel("candidates / s")
    ax.set_title(f"Long-sequence CTR inference, {C} candidates per user" + ("\n(timed under load)" if under_load else ""),
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--lengths", nargs="+", type=int, default=[256, 1024, 4096, 8192])
    ap.add_argument("--candidates", nargs="+", type=int, default=[1, 10, 100, 1000], help="per user")
    ap.add_argument("--users", type=int, default=1, help="users per inference pass")
    ap.add_argument("--batch", type=int, default=256, help="training samples per step")
    ap.add_argument("--dim", type=int, default=16, help="per-field embedding dim d (dare_half: d_A = d / 2)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per inference pass before skipping")
    ap.add_argument("--train-budget", type=float, default=20.0, help="seconds per training step before skipping")
    ap.add_argument("--chunk-tokens", type=int, default=2**21, help="rows x L per forward of DIN / TWIN / DARE")
    ap.add_argument("--n-items", type=int, default=100_000)
    ap.add_argument("--n-categories", type=int, default=1_000)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--under-load", action="store_true", help="record that other jobs shared the machine")
    ap.add_argument("--suffix", default="", help="appended to the output file names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average {load0[0]:.2f}")
    if args.under_load:
        print(f"NOTE: {LOAD_NOTE}")
    g = torch.Generator().manual_seed(args.seed)
    item_category = torch.cat([torch.zeros(1, dtype=torch.long),
                               torch.randint(1, args.n_categories + 1, (args.n_items,), generator=g)])
    t0 = time.perf_counter()
    print("inference:")
    inf = bench_inference(args, item_category)
    train = [] if args.skip_training else (print("training:"), bench_training(args, item_category))[1]
    table = tables(args, inf, train)
    print()
    print(table)
    print()
    C_goal = 1000 if 1000 in args.candidates else max(args.candidates)
    ratios = goal_ratios(inf, C_goal)
    print_ratios(ratios)
    if args.under_load:
        print(f"NOTE: {LOAD_NOTE}")
    out = write_json(f"long_ctr_speed{args.suffix}.json", {
        "machine": machine(), "argv": vars(args), "under_load": args.under_load,
        "load_note": LOAD_NOTE if args.under_load else None,
        "load_average": {"start": load0, "end": os.getloadavg()}, "wall_seconds": time.perf_counter() - t0,
        "variants": {k: {"model": m, "config": {"max_len": "L", **c(args.dim)}} for k, (m, c) in VARIANTS.items()},
        "inference": inf, "training": train, "goal_ratios": ratios, "table": table})
    print(f"wrote {out}")
    plot(inf, args.models, C_goal, RESULTS / f"long_ctr_speed{args.suffix}.png", args.under_load)


if __name__ == "__main__":
    main()
