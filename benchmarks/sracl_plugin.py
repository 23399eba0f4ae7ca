"""SRA-CL as a plug-in on another backbone (the paper's Fig. 3: on GRU4Rec, SASRec and DuoRec, HR@20 up by
8.3-27.3%): SRA-CL on the backbone against the same backbone on the same prefix samples (SRA-CL with
alpha = beta = 0), full ranking, leave-one-out, from finished run folders.

    python benchmarks/sracl_plugin.py [--datasets beauty] [--tag gru] [--unfiltered]

Runs: ``behaviorseq train --model sracl --data beauty --out benchmarks/_work/runs/sracl-beauty-gru-s1
model.backbone=gru4rec train.seed=1 train.threads=1`` and the same with ``model.alpha=0 model.beta=0`` into
``grupfx-beauty-gru-s1``. A run without metrics.json (still training, or stopped by its time limit) is listed, not
counted. ``--unfiltered`` also evaluates each run's best weights with the user's history left in the ranking (the
SRA-CL code's protocol, which the paper's figures use).
"""

from __future__ import annotations

import argparse
import json

from common import RESULTS, WORK, cell, machine, write_json
from sracl_bars import METRICS, SASREC, row, run_record

PLAIN = {"gru": ("grupfx", "GRU4Rec on prefixes (SRA-CL on GRU4Rec, alpha = beta = 0)")}
SECTION4 = {"gru": "gru4rec"}  # the backbone's §4 baseline (every position of a sequence, its packaged config)
PAPER = "paper, Fig. 3: SRA-CL as a plug-in raises HR@20 by 8.3-27.3% on GRU4Rec, SASRec and DuoRec"


def runs(group: str, ds: str, tag: str, unfiltered: bool = False) -> list[dict]:
    return [run_record(run, unfiltered) for run in sorted((WORK / "runs").glob(f"{group}-{ds}-{tag}-s*"))
            if run.is_dir() and run.name.rsplit("-s", 1)[1].isdigit()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["beauty"])
    ap.add_argument("--tag", default="gru", choices=sorted(PLAIN))
    ap.add_argument("--unfiltered", action="store_true", help="also evaluate with history items left in the ranking")
    args = ap.parse_args()
    plain, plain_name = PLAIN[args.tag]
    lines, found, gains = [], {}, {}
    for ds in args.datasets:
        found[ds] = {g: runs(g, ds, args.tag, args.unfiltered) for g in ("sracl", plain)}
        lines += [f"\n{ds} (test; full ranking, leave-one-out, history items excluded)",
                  "| method | seeds | " + " | ".join(m.upper() for m in METRICS) + " | s / epoch | best epoch |",
                  "|" + "---|" * (len(METRICS) + 4)]
        stats = {}
        for g, name in ((plain, plain_name), ("sracl", f"SRA-CL on {plain_name.split()[0]}")):
            done = [r for r in found[ds][g] if r["finished"]]
            if done:
                text, stats[g] = row(name, done)
                lines.append(text + f" {sum(r['seconds_per_epoch'] for r in done) / len(done):.0f} | "
                             + "/".join(str(r["best_epoch"]) for r in done) + " |")
        if ds in SASREC:  # the §4 results file of this data set holds every baseline
            base = [r for r in json.loads((RESULTS / SASREC[ds]).read_text())["results"]
                    if r["model"] == SECTION4[args.tag]]
            if base:
                b = base[0]
                lines.append(f"| our {SECTION4[args.tag]} (§4: every position, its packaged config) | "
                             f"{'/'.join(map(str, b['seeds']))} | " + " | ".join(cell(b[m]) for m in METRICS) + " | | |")
        pending = [f"{r['run']} ({r['epochs']} epochs)" for g in found[ds].values() for r in g if not r["finished"]]
        if pending:
            lines.append(f"unfinished, not counted: {', '.join(pending)}")
        if args.unfiltered:
            lines.append(f"{ds}, history items left in the ranking (the SRA-CL code's protocol):")
            for g, name in ((plain, plain_name), ("sracl", f"SRA-CL on {plain_name.split()[0]}")):
                done = [r for r in found[ds][g] if "test_unfiltered" in r]
                if done:
                    text, stats[g + ":unfiltered"] = row(name, done, "test_unfiltered")
                    lines.append(text)
        if "sracl" in stats and plain in stats:
            seeds = sorted({r["seed"] for r in found[ds]["sracl"] if r["finished"]}
                           & {r["seed"] for r in found[ds][plain] if r["finished"]})
            gains[ds] = {"common_seeds": seeds}
            for key, label in (("", "history excluded"), (":unfiltered", "history left in")):
                if "sracl" + key in stats and plain + key in stats:
                    gain = stats["sracl" + key]["hr@20"]["mean"] / stats[plain + key]["hr@20"]["mean"] - 1
                    gains[ds]["hr@20_gain" + key.replace(":", "_")] = gain
                    lines.append(f"SRA-CL HR@20 {gain:+.1%} relative to the backbone alone, {label} (seeds in common: "
                                 f"{seeds})")
        lines.append(PAPER)
    text = "\n".join(lines)
    print(text)
    write_json(f"sracl_plugin_{args.tag}.json", {"machine": machine(), "argv": vars(args), "runs": found,
                                                 "gains": gains, "table": text})


if __name__ == "__main__":
    main()
