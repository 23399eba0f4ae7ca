"""Issue 4's SRA-CL bars from finished run folders: SRA-CL on SASRec against our SASRec (>= 10% relative
HR@20) and against CL4SRec, 3 seeds, full ranking, leave-one-out, beside the paper's Beauty numbers.

    python benchmarks/sracl_bars.py [--datasets beauty ml-100k] [--unfiltered] [--merge sracl_bars.json] [--tags cpu]

Runs are made by ``behaviorseq train --out benchmarks/_work/runs/<group>-<dataset>-<where>-s<seed>`` (e.g.
``sracl-beauty-cpu-s1``; ``sasrecpfx`` = SRA-CL with alpha = beta = 0, i.e. SASRec on SRA-CL's prefix
samples; ``benchmarks/gpu_batch.sh 3`` for the GPU ones). Our SASRec is the §4 baseline, read per seed from
its results file. A run still under way (no metrics.json, or stopped by its time limit) is listed, not
counted. Run folders live in the git-ignored _work/, so the JSON keeps every seed and ``--merge`` adds an
earlier file's seeds that are no longer on disk.

``--unfiltered`` re-evaluates each run's best weights with the user's history left in the ranking (the SRA-CL
code's protocol; ours excludes it, as S3-Rec and RecBole do), where the run folder is still here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS, WORK, cell, machine, write_json

from behaviorseq.train import evaluate_run

METRICS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20"]
GROUPS = {"sracl": "SRA-CL", "cl4srec": "CL4SRec", "sasrecpfx": "SASRec on prefixes (SRA-CL, alpha = beta = 0)"}
SASREC = {"beauty": "baselines_beauty_all.json", "ml-100k": "baselines_ml100k_p30.json"}  # §4, per seed
PAPER = {"beauty": "paper (Beauty, DeepSeek-V3 + SimCSE semantics): SRA-CL HR@20 0.1314, NDCG@20 0.0568; "
                   "without LLM 0.1259; no CL 0.1206; best baseline MCLRec 0.1239"}


TAGS = ("", "cpu", "gpu")  # <group>-<dataset>[-<tag>]-s<seed>: the packaged set-up; other tags (e.g. gpu-attr) are variants


def run_tag(name: str, group: str, ds: str) -> str:
    """The tag of a run folder <group>-<dataset>[-<tag>]-s<seed>."""
    return name[len(f"{group}-{ds}"):].rsplit("-s", 1)[0].lstrip("-")


PROTOCOL_KEYS = ("ranking", "exclude_history", "ties", "split", "data_fingerprint")  # recorded with every run's numbers


def run_record(run: Path, unfiltered: bool) -> dict:
    """A run folder <...>-s<seed>: its test metrics when finished (no metrics.json, or stopped by its time limit:
    unfinished), and with ``unfiltered`` its best weights re-evaluated with history items left in the ranking."""
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").exists() else []
    done = (run / "metrics.json").exists() and not (log and log[-1].get("stopped_by_time_limit"))
    rec = {"run": run.name, "seed": int(run.name.rsplit("-s", 1)[1]), "finished": done, "epochs": len(log)}
    if done:
        res = json.loads((run / "metrics.json").read_text())
        rec.update(test={m: res["test"][m] for m in METRICS}, best_epoch=res["best_epoch"],
                   seconds_per_epoch=res["seconds_per_epoch"], device=res["environment"]["device"],
                   protocol={k: res["protocol"].get(k) for k in PROTOCOL_KEYS})  # what "test" was measured under
        if unfiltered:  # scoring reads the backbone only (evaluate_run builds no semantic index)
            ev = evaluate_run(run, ("test",), {"eval": {"exclude_history": False}})
            rec["test_unfiltered"] = {m: ev["test"][m] for m in METRICS}
            rec["protocol_unfiltered"] = {k: ev["protocol"].get(k) for k in PROTOCOL_KEYS}
    return rec


def scan(ds: str, unfiltered: bool, tags: tuple[str, ...] = TAGS) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for group in GROUPS:
        for run in sorted((WORK / "runs").glob(f"{group}-{ds}-*s*")):
            if not run.is_dir() or not run.name.rsplit("-s", 1)[1].isdigit():
                continue  # a stray log file beside the run folders
            if run_tag(run.name, group, ds) not in tags:
                continue  # a variant (another semantic source, ...), not the bar's set-up
            out.setdefault(group, []).append(run_record(run, unfiltered))
    return out


def count_each_seed_once(found: dict[str, list[dict]]) -> None:
    """A seed run twice (say on CPU and on a GPU) counts once: the first finished run in name order."""
    for g, recs in found.items():
        if g not in GROUPS:  # our SASRec's re-evaluations (history left in), merged from an earlier file
            continue
        seen = set()
        for r in sorted(recs, key=lambda r: r["run"]):
            if r["finished"] and r["seed"] in seen:
                r["finished"], r["repeat_of_seed"] = False, r["seed"]
            elif r["finished"]:
                seen.add(r["seed"])


def row(name: str, recs: list[dict], key: str = "test") -> tuple[str, dict]:
    vals = {m: [r[key][m] for r in recs] for m in METRICS}
    stats = {m: {"mean": sum(v) / len(v), "std": (sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)) ** 0.5
                 if len(v) > 1 else None} for m, v in vals.items()}
    seeds = "/".join(str(r["seed"]) for r in recs)
    return f"| {name} | {seeds} | " + " | ".join(cell(stats[m]) for m in METRICS) + " |", stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["beauty", "ml-100k"])
    ap.add_argument("--unfiltered", action="store_true", help="also evaluate with history items left in the ranking")
    ap.add_argument("--merge", nargs="*", default=[], help="earlier results of this script (their seeds not on disk)")
    ap.add_argument("--out", default=None, help="default sracl_bars.json, or sracl_bars_<tags>.json for other tags")
    ap.add_argument("--tags", nargs="+", default=list(TAGS),
                    help="run-folder tags to count (default: the packaged set-up; e.g. cpu-randomties for a variant)")
    args = ap.parse_args()
    variant = sorted(set(args.tags) - set(TAGS))
    if variant and set(args.tags) & set(TAGS):  # a variant's seed would stand in for the packaged set-up's
        raise SystemExit(f"--tags: give the packaged tags {TAGS} or variants {variant}, not both")
    args.out = args.out or ("sracl_bars.json" if not variant else f"sracl_bars_{'_'.join(variant)}.json")
    old = {}
    for p in args.merge:
        for ds, groups in json.loads((RESULTS / p if not Path(p).exists() else Path(p)).read_text())["runs"].items():
            for g, recs in groups.items():  # the groups' runs of the tags asked for only (no variant in the packaged bar)
                keep = [r for r in recs if g not in GROUPS or run_tag(r["run"], g, ds) in args.tags]
                old.setdefault(ds, {}).setdefault(g, {r["run"]: r for r in keep})
    lines, runs, bars = [], {}, {}
    for ds in args.datasets:
        found = scan(ds, args.unfiltered, tuple(args.tags))
        for g, recs in old.get(ds, {}).items():  # merged seeds whose folders are gone
            have = {r["run"] for r in found.get(g, [])}
            found.setdefault(g, []).extend(r for name, r in recs.items() if name not in have)
        count_each_seed_once(found)
        runs[ds] = found
        sasrec = [r for r in json.loads((RESULTS / SASREC[ds]).read_text())["results"] if r["model"] == "sasrec"][0]
        lines += [f"\n{ds} (test; history items excluded from the ranking)",
                  "| method | seeds | " + " | ".join(m.upper() for m in METRICS) + " |", "|" + "---|" * (len(METRICS) + 2)]
        stats = {"sasrec": {m: sasrec[m] for m in METRICS}}
        lines.append(f"| our SASRec (§4) | {'/'.join(map(str, sasrec['seeds']))} | "
                     + " | ".join(cell(sasrec[m]) for m in METRICS) + " |")
        for g, name in GROUPS.items():
            done = [r for r in found.get(g, []) if r["finished"]]
            if done:
                text, stats[g] = row(name, done)
                lines.append(text)
        pending = [f"{r['run']} ({r['epochs']} epochs)" for g in GROUPS for r in found.get(g, [])
                   if not r["finished"] and "repeat_of_seed" not in r]
        if pending:
            lines.append(f"unfinished (running, or stopped by a time limit), not counted: {', '.join(pending)}")
        repeats = [r["run"] for g in GROUPS for r in found.get(g, []) if "repeat_of_seed" in r]
        if repeats:
            lines.append(f"second finished runs of a seed, not counted: {', '.join(repeats)}")
        if args.unfiltered:
            lines += [f"{ds}, history items left in the ranking (the SRA-CL code's protocol):"]
            ours = []
            for run in sorted((WORK / "runs").glob(f"sasrec-{ds}-*s[0-9]")):  # the §4 SASRec runs still on disk
                ev = evaluate_run(run, ("test",), {"eval": {"exclude_history": False}})
                ours.append({"run": run.name, "seed": int(run.name.rsplit("-s", 1)[1]),
                             "test_unfiltered": {m: ev["test"][m] for m in METRICS}})
            if ours:
                runs[ds]["sasrec"] = ours
                lines.append(row("our SASRec (§4 runs on disk)", ours, "test_unfiltered")[0])
            lines += [row(GROUPS[g], [r for r in found.get(g, []) if "test_unfiltered" in r], "test_unfiltered")[0]
                      for g in GROUPS if any("test_unfiltered" in r for r in found.get(g, []))]
        if ds in PAPER:
            lines.append(PAPER[ds])
        if "sracl" in stats:
            n = len([r for r in found["sracl"] if r["finished"]])
            gain = stats["sracl"]["hr@20"]["mean"] / stats["sasrec"]["hr@20"]["mean"] - 1
            vs_cl = stats["sracl"]["hr@20"]["mean"] - stats["cl4srec"]["hr@20"]["mean"] if "cl4srec" in stats else None
            bars[ds] = {"seeds": n, "hr@20_gain_over_sasrec": gain, "hr@20_minus_cl4srec": vs_cl,
                        "holds": n >= 3 and gain >= 0.10 and vs_cl is not None and vs_cl > 0}
            if "sasrecpfx" in stats:  # the paper's own comparison: its "no CL" row is SASRec on the same samples
                twin = stats["sracl"]["hr@20"]["mean"] / stats["sasrecpfx"]["hr@20"]["mean"] - 1
                bars[ds]["hr@20_gain_over_sasrec_on_prefixes"] = twin
                lines.append(f"SRA-CL HR@20 {twin:+.1%} relative to SASRec on the same prefix samples (alpha = beta = 0; "
                             "the paper's no-CL row: +4.4% without LLM summaries, +9.0% with them)")
            lines.append(f"bar: SRA-CL HR@20 {gain:+.1%} relative to our SASRec (needs >= +10%), "
                         + (f"{vs_cl:+.4f} against CL4SRec" if vs_cl is not None else "CL4SRec not finished")
                         + f", {n} seed(s) of 3: {'HOLDS' if bars[ds]['holds'] else 'not met'}")
    text = "\n".join(lines)
    print(text)
    write_json(args.out, {"machine": machine(), "argv": vars(args), "runs": runs, "bars": bars, "table": text})


if __name__ == "__main__":
    main()
