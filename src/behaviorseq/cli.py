"""``behaviorseq`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _fmt_int(x) -> str:
    return f"{int(x):,}"


def cmd_data_stats(args: argparse.Namespace) -> int:
    from behaviorseq.cli_train import USER_ERRORS, user_error
    from behaviorseq.config import ConfigError
    from behaviorseq.data.datasets import open_dataset, stats

    try:
        if any("=" not in c for c in args.column):
            raise ConfigError(f"--column takes role=column, e.g. user=uid; got {args.column}")
        store = open_dataset(args.dataset, root=args.data_root, cache_dir=args.cache_dir, cache=not args.no_cache,
                             read_args={"columns": dict(c.split("=", 1) for c in args.column),
                                        "delimiter": args.delimiter, "skip_bad_rows": args.skip_bad_rows or None,
                                        "drop": args.drop or None})
    except USER_ERRORS as e:
        return user_error(e)
    st = stats(store)
    lines = [
        f"dataset      {st['dataset']}",
        f"users        {_fmt_int(st['users'])}",
        f"items        {_fmt_int(st['items'])}",
        f"events       {_fmt_int(st['events'])}",
        f"density      {st['density']:.6f}",
    ]
    if st["time_min"] is not None:
        lines.append(f"time         {st['time_min']:.0f} .. {st['time_max']:.0f} (span {st['time_span']:.0f})"
                     + ("" if st["timestamp"] == "from the data" else f"  [timestamp {st['timestamp']}]"))
    sl = st["sequence_length"]
    if sl:
        lines.append("seq length   " + "  ".join(f"{k}={v:g}" for k, v in sl.items()))
    for k, v in st["cardinality"].items():
        lines.append(f"cardinality  {k:<22} {_fmt_int(v)}")
    report = store.meta.get("load_report") or {}
    if report.get("skipped_rows"):  # said here too: a cached store's reader warned only when it was built
        from behaviorseq.data.loaders import DataFormatError

        rows = report.get("bad_rows") or []
        first = f"; first: {DataFormatError(rows[0]['file'], rows[0]['line'], rows[0]['field'], rows[0]['reason'])}" \
            if rows else ""
        lines.append(f"skipped      {_fmt_int(report['skipped_rows'])} malformed row(s){first}")
    print("\n".join(lines))
    out = Path(args.json) if args.json else None
    if out is not None:
        from behaviorseq.utils import atomic_write_text

        atomic_write_text(out, json.dumps(st, indent=2, default=str))
        print(f"wrote {out}")
    return 0


class _Version(argparse.Action):
    """``--version``, computed only when asked (it may call git)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from behaviorseq.utils import code_version

        print(f"behaviorseq {code_version()}")  # the package version, with the git commit in a checkout
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="behaviorseq", description="Learning from user behavior sequences.")
    p.add_argument("--version", action=_Version, nargs=0, help="the package version (and git commit), then exit")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect and prepare datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    st = dsub.add_parser("stats", help="users, items, events, time span, length percentiles, cardinalities")
    st.add_argument("dataset", help="a registered name (ml-100k, beauty, toys, lastfm, ...) or a path")
    st.add_argument("--data-root", default=None, help="data folder (default: $BEHAVIORSEQ_DATA, ./data, ../shared/data)")
    st.add_argument("--cache-dir", default=None, help="sequence-store cache (default: $BEHAVIORSEQ_CACHE or ~/.cache)")
    st.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    st.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    st.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN",
                    help="a table file's column for a role, e.g. --column user=uid --column item=sku")
    st.add_argument("--delimiter", default=None, help="a table file's delimiter (default: ',', tab for .tsv)")
    st.add_argument("--skip-bad-rows", action="store_true", help="drop malformed rows, and say how many")
    st.add_argument("--drop", action="append", default=[], metavar="COLUMN",
                    help="a table file's column to leave out (e.g. one of a type no kind takes); repeatable")
    st.set_defaults(func=cmd_data_stats)

    from behaviorseq import cli_cluster, cli_continual, cli_train

    cli_train.add_commands(sub)
    cli_continual.add_commands(sub)
    cli_cluster.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides after an option (``--out runs/x train.lr=1e-3``): argparse stops the positional
    # list at the first option, so the rest arrive here
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
