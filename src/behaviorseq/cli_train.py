"""``behaviorseq train | evaluate | compare``: thin wrappers over ``behaviorseq.train``.

Config resolution is ``behaviorseq.train.build_config`` (the Python API's too), later wins: the model's packaged
YAML (``behaviorseq/configs/<model>.yaml``), a dataset-specific one (``<model>_<dataset>.yaml``) if packaged, an
evaluation protocol (``--protocol comirec`` -> ``protocol_comirec.yaml``), ``--config FILE``, then ``key=value``
overrides (``train.lr=0.001``, ``model.hidden_size=64``, ``eval.ks=[10,20]``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from behaviorseq.config import ConfigError, parse_overrides
from behaviorseq.data.datasets import REGISTRY, DatasetNotFound
from behaviorseq.data.loaders.errors import DataFormatError
from behaviorseq.llm import LLMDryRun, LLMError
from behaviorseq.train.packaged import _merge, build_config, packaged_config  # noqa: F401 (re-exported)
from behaviorseq.utils import atomic_write_text

# Errors in what the user gave (settings, data files): a message on stderr and exit code 2, no traceback.
# ValueError covers the loaders', steps' and splits' checks of their arguments; BEHAVIORSEQ_DEBUG=1 re-raises.
USER_ERRORS = (ConfigError, DatasetNotFound, DataFormatError, FileNotFoundError, ValueError, yaml.YAMLError, LLMError)


def user_error(e: Exception) -> int:
    if isinstance(e, LLMDryRun):  # asked for: the count of what would be sent, and no run (nothing was written)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, once
            print(e)
        return 0
    if os.environ.get("BEHAVIORSEQ_DEBUG") == "1":
        raise e
    hint = "" if isinstance(e, (ConfigError, DatasetNotFound, DataFormatError, FileNotFoundError, LLMError)) else \
        "  (BEHAVIORSEQ_DEBUG=1 shows the traceback)"
    print(f"error: {e}{hint}", file=sys.stderr)
    return 2


def _role_table(result: dict, columns: list[tuple[str, str, str]]) -> list[str]:
    """Markdown rows for valid and test: ``columns`` are (header, metric key, format spec)."""
    lines = ["| role | " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for role in ("valid", "test"):
        r = result[role]
        cells = [r.get(key) for _, key, spec in columns]  # "-": not measured on this role (e.g. TPP valid rmse)
        lines.append(f"| {role} | " + " | ".join("-" if v is None or v != v else format(v, spec)
                                                 for v, (_, _, spec) in zip(cells, columns)) + " |")
    return lines


def format_ctr_metrics(result: dict) -> str:
    """The table of a CTR run: AUC, GAUCs and logloss per role, then the protocol line."""
    names = [n for n in ("auc", "gauc_user", "gauc_category", "logloss") if n in result["test"]]
    lines = _role_table(result, [(n, n, ".4f") for n in names] + [("n", "n", "")])
    p = result["protocol"]
    s = p["sampling"]
    how = " ".join(str(x) for x in (s.get("protocol"), s.get("split")) if x) or "generated samples"
    lines.append(f"\nprotocol: {p['dataset']} ({p['dataset_stats']['samples']} samples), "
                 f"{how}, history max_len {p['max_len']}, seed {p['seed']}")
    return "\n".join(lines)


def format_risk_metrics(result: dict) -> str:
    """The table of a default-risk run: AUC, KS and logloss per role, then the protocol line."""
    lines = _role_table(result, [("auc", "auc", ".4f"), ("ks", "ks", ".4f"), ("logloss", "logloss", ".4f"),
                                 ("positive rate", "positive_rate", ".3f"), ("users", "n", "")])
    p = result["protocol"]
    lines.append(f"\nprotocol: {p['dataset']}, {p['window_days']:g}-day window, {p['view']}, one sample per user "
                 f"(users {p['users']}), seed {p['seed']}")
    rep = p.get("dataset_report") or {}
    dropped = {k: rep[k] for k in ("dropped_unlabelled_user", "dropped_after_own_label_date",
                                   "labelled_users_not_in_payments", "labelled_users_without_payments") if rep.get(k)}
    if dropped:  # what reading one's own tables left out: said where it is seen, not only in metrics.json
        lines.append(f"data: {rep.get('payments_read')} payments read; " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    return "\n".join(lines)


def format_tpp_metrics(result: dict) -> str:
    """The table of a TPP run: log-likelihood per event, next-time RMSE and type accuracy per role."""
    lines = _role_table(result, [("loglik / event", "loglik", ".4f"), ("rmse", "rmse", ".4f"), ("acc", "acc", ".4f"),
                                 ("events", "n_events", ".0f")])
    p = result["protocol"]
    ref = p.get("reference", {}).get("true_model_loglik")
    if ref:
        lines.append(f"| true model | {ref['test']:.4f} (valid {ref['valid']:.4f}) | | | |")
    i = p["loglik_integral"]
    lines.append(f"\nprotocol: {result['dataset']}, integral {i['method']} ({i['points_per_interval']} points), "
                 f"prediction by thinning ({p['prediction']['draws']} draws), "
                 + (f"chunks of {p['max_len']} events" if p["max_len"] else "whole sequences") + f", seed {p['seed']}")
    return "\n".join(lines)


def format_metrics(result: dict, ks=None) -> str:
    if result["protocol"].get("task") == "temporal_point_process":
        return format_tpp_metrics(result)
    if result["protocol"].get("task") == "pointwise_ctr":
        return format_ctr_metrics(result)
    if result["protocol"].get("task") == "default_risk":
        return format_risk_metrics(result)
    ks = ks or result["protocol"]["ks"]
    names = [n for n in ("Recall", "HR", "NDCG", "MRR") if any(f"{n.lower()}@{k}" in result["test"] for k in ks)]
    head = ["role"] + [f"{m}@{k}" for k in ks for m in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for role in ("valid", "test"):
        r = result[role]
        vals = [f"{r.get(f'{m.lower()}@{k}', float('nan')):.4f}" for k in ks for m in names]
        lines.append("| " + " | ".join([role] + vals) + " |")
    p = result["protocol"]
    lines.append(f"\nprotocol: {p['dataset']} ({p['dataset_stats_after_preprocessing']}), {p['split']['split']}, "
                 f"{p['ranking']} ranking, history excluded: {p['exclude_history']}, ties: {p['ties']}, "
                 f"seed {p['seed']}")
    if p.get("skipped_bad_rows"):
        first = p["skipped_bad_rows"]["first"][0]
        lines.append(f"note: {p['skipped_bad_rows']['count']} malformed rows were skipped (data.read.skip_bad_rows); "
                     f"first: {first['file']}, line {first.get('line', first.get('row'))}, field {first['field']!r}: "
                     f"{first['reason']}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from behaviorseq.train import run_experiment

    try:
        cfg = build_config(args.model, args.data, args.config, args.overrides, args.protocol)
        if args.task:
            cfg = _merge(cfg, {"task": args.task})
        if args.data_root:  # recorded absolute: evaluate / resume / serve from any directory find the data
            cfg = _merge(cfg, {"data": {"data_root": str(Path(args.data_root).resolve())}})
        ds = (cfg.get("data") or {}).get("dataset")
        if isinstance(ds, str) and ds.lower() not in REGISTRY and Path(ds).exists():  # a relative path of one's own
            cfg = _merge(cfg, {"data": {"dataset": str(Path(ds).resolve())}})
        own = bool(args.data) and args.data.lower() not in REGISTRY and Path(args.data).exists()
        if own:  # a file or folder of one's own: the run folder records where it is, from any directory
            cfg = _merge(cfg, {"data": {"dataset": str(Path(args.data).resolve())}})
        name = Path(args.data).stem if own else (args.data or "data")
        out = Path(args.out or f"runs/{args.model}-{name.lower()}-{time.strftime('%Y%m%d-%H%M%S')}")
        if args.resume and not (out / "config.yaml").exists():
            print(f"note: {out} holds no run to resume; starting a fresh one", file=sys.stderr)
        result = run_experiment(cfg, out, resume=args.resume, overwrite=args.overwrite)
    except USER_ERRORS as e:
        return user_error(e)
    print(format_metrics(result))
    print(f"\nrun folder: {out}  (best epoch {result['best_epoch']}, {result['seconds_per_epoch']:.1f} s/epoch)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from behaviorseq.train import evaluate_run

    try:
        ov = parse_overrides(args.overrides)
        result = evaluate_run(args.run_dir, overrides=ov or None)
    except USER_ERRORS as e:
        return user_error(e)
    print(format_metrics(result))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from behaviorseq.train import compare_runs

    try:
        table, rows = compare_runs(args.run_dirs, role=args.role, out=args.plot)
        print(table)
        if args.json:
            atomic_write_text(args.json, json.dumps(rows, indent=2))
    except USER_ERRORS as e:
        return user_error(e)
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from behaviorseq.serve import Recommender

    try:
        rec = Recommender.from_run(args.run_dir)
        histories = [rec.ids.parse_cli(h) for h in args.history]  # command-line ids are text: as the data's ids
        out = rec.recommend(histories, n=args.n, exclude_seen=not args.keep_seen)
    except USER_ERRORS as e:
        return user_error(e)
    rows = [{"history": h, "items": o.items, "scores": o.scores, "unknown": o.unknown, "popular_fallback": o.popular_fallback}
            for h, o in zip(histories, out)]
    print(json.dumps(rows if len(rows) > 1 else rows[0], default=str))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from behaviorseq.serve import Ranker, RiskScorer
    from behaviorseq.train.run import load_run_config

    try:
        task = load_run_config(args.run_dir).task
        if task in ("retrieval", "tpp"):
            raise ValueError(f"{args.run_dir} is a {task} run, which scores no candidates: "
                             + ("`behaviorseq recommend RUN --history ...` gives its top-N items" if task == "retrieval"
                                else "`behaviorseq serve RUN` predicts its next events (POST /predict)"))
        if task == "default_risk":  # new users' payments -> default probabilities
            if not args.payments:
                raise ValueError("a default-risk run scores a payments table: give --payments FILE")
            if args.label_date is not None and args.label_dates is not None:
                raise ValueError("give one of --label-date (one date for all) and --label-dates (a table of users' dates)")
            scorer = RiskScorer.from_run(args.run_dir)
            dates = scorer.read_label_dates(args.label_dates) if args.label_dates else args.label_date
            r = scorer.score(args.payments, dates)
            print(json.dumps({"users": r.users, "probs": r.probs, "payments_used": r.payments_used}, default=str))
            return 0
        if args.candidates is None:
            raise ValueError("a CTR run scores candidates: give --candidates ID,ID,...")
        if args.n is not None and not args.rank:
            raise ValueError("-n keeps the top n of a ranking: give --rank as well")
        ranker = Ranker.from_run(args.run_dir)
        history, candidates = ranker.ids.parse_cli(args.history or ""), ranker.ids.parse_cli(args.candidates)
        s = ranker.rank(history, candidates, args.n) if args.rank else ranker.score(history, candidates)
    except USER_ERRORS as e:
        return user_error(e)
    print(json.dumps({"items": s.items, "probs": s.probs, "unknown_history": s.unknown_history,
                      "unknown_candidates": s.unknown_candidates}, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from behaviorseq.serve import load_run
    from behaviorseq.serve.http import make_server, routes_for

    try:
        served = load_run(args.run_dir)
        server = make_server(served, args.host, args.port, name=Path(args.run_dir).name)
    except (*USER_ERRORS, OSError) as e:
        return user_error(e)
    host, port = server.server_address[:2]
    posts = ", ".join(f"POST {p}" for p in routes_for(served)[0])
    print(f"serving {args.run_dir} at http://{host}:{port} (GET /health, {posts}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train, early-stop, evaluate the best checkpoint on test")
    t.add_argument("--model", required=True, help="a registered model: sasrec, gru4rec, bert4rec, comirec_sa, comirec_dr, mostpop, ...")
    t.add_argument("--data", default=None, help="a registered dataset name or a path")
    t.add_argument("--data-root", default=None)
    t.add_argument("--config", default=None, help="a YAML run config")
    t.add_argument("--task", default=None, choices=["retrieval", "ctr", "default_risk", "tpp"],
                   help="default: from the model: ctr for ranking models (din, sim, eta, twin, dare, sdim), "
                        "default_risk for risk models (lbsf, flat_transformer, flat_gru, chunked_transformer), tpp for event-stream "
                        "models (nhp, thp, attnhp, prompttpp, hawkes_exp), else retrieval")
    t.add_argument("--protocol", default=None, help="a packaged evaluation protocol, e.g. comirec (user holdout)")
    t.add_argument("--out", default=None, help="run folder (default runs/<model>-<data>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run the folder holds (without it, a used folder is refused)")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. train.lr=0.001 model.loss=ce")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("recommend", help="top-N items for raw item histories from a trained retrieval run")
    r.add_argument("run_dir")
    r.add_argument("--history", action="append", required=True,
                   help="a user's raw item ids, oldest first, comma-separated (repeat for several users)")
    r.add_argument("-n", type=int, default=10)
    r.add_argument("--keep-seen", action="store_true", help="may recommend items the history holds")
    r.set_defaults(func=cmd_recommend)

    sc = sub.add_parser("score", help="a CTR run: click probabilities of candidates after a history; a default-risk "
                                      "run: default probabilities of the users of a payments table")
    sc.add_argument("run_dir")
    sc.add_argument("--history", default="", help="the user's raw item ids, oldest first, comma-separated")
    sc.add_argument("--candidates", default=None, help="raw item ids to score, comma-separated (CTR)")
    sc.add_argument("--payments", default=None, help="a payments CSV / Parquet in the training tables' layout (risk)")
    sc.add_argument("--label-date", default=None, help="the observation date (risk, required): ISO date or a number "
                                                       "in the tables' time unit")
    sc.add_argument("--label-dates", default=None, help="risk: a CSV / Parquet of users and their own observation "
                                                        "dates (the labels table's user and date columns); only they "
                                                        "are scored")
    sc.add_argument("--rank", action="store_true", help="most probable first (unknown candidates left out)")
    sc.add_argument("-n", type=int, default=None, help="with --rank: keep the top n")
    sc.set_defaults(func=cmd_score)

    sv = sub.add_parser("serve", help="a JSON HTTP endpoint for a trained run: POST /recommend (retrieval), "
                                      "/score (CTR), /predict (event streams) or /risk (default risk)")
    sv.add_argument("run_dir")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.set_defaults(func=cmd_serve)

    e = sub.add_parser("evaluate", help="re-evaluate a run's best checkpoint")
    e.add_argument("run_dir")
    e.add_argument("overrides", nargs="*", help="e.g. eval.negatives=100 eval.exclude_history=false")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="a table and a bar chart of several runs")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--role", default="test", choices=["valid", "test"])
    c.add_argument("--plot", default=None, help="write a bar chart PNG here")
    c.add_argument("--json", default=None)
    c.set_defaults(func=cmd_compare)
