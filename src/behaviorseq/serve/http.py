"""A JSON-over-HTTP front for a served run (standard library only; put a real WSGI/ASGI server or a gateway in
front of it for production traffic). One endpoint per kind of model, and ``GET /health`` for all:

    retrieval (Recommender)  POST /recommend  {"history": [raw ids, oldest first], "n": 10, "exclude_seen": true}
                                              or {"histories": [[...], ...], ...}
                             -> {"items": [...], "scores": [...], "unknown": [...], "popular_fallback": false}
    CTR (Ranker)             POST /score      {"history": [...], "candidates": [raw ids], "rank": false, "n": null}
                                              or {"requests": [{"history": [...], "candidates": [...]}, ...], ...}
                             -> {"items": [...], "probs": [...], "unknown_history": [...], "unknown_candidates": [...]}
                                (request order, null for an unknown candidate; "rank": true sorts, keeps the top n;
                                at most 100,000 candidates a request)
    event streams            POST /predict    {"times": [...], "types": [...], "seed": 0}
      (EventPredictor)                        or {"sequences": [{"times": [...], "types": [...]}, ...], "seed": 0}
                             -> {"dtime": ..., "type": ..., "unaccepted": ...}
    default risk             POST /risk       {"payments": [{"user": ..., "time": ..., "merchant": ..., "amount": ...,
      (RiskScorer)                             "description": ...}, ...], "label_date": "2024-06-29"}  (the tables' columns;
                                              label_date: one date, or {"user": date, ...} per user)
                             -> {"users": [...], "probs": [...], "payments_used": [...]}

A body of many gets a list of answers (at most 10,000 histories, /score requests or sequences, 100,000
candidates, 1,000,000 events or payments a request). A malformed request gets 400 with {"error": message}; a body
without a Content-Length 411; one that does not arrive within ``TIMEOUT`` seconds 408. Requests are served one
model call at a time.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from behaviorseq.serve.events import EventPredictor
from behaviorseq.serve.ranker import Ranker
from behaviorseq.serve.recommender import Recommender
from behaviorseq.serve.risk import RiskScorer

MAX_BODY = 16 << 20  # bytes: a request larger than this is refused
MAX_CANDIDATES = 100_000  # per /score request
MAX_ROWS = 10_000  # histories per /recommend request, sequences per /predict request
MAX_EVENTS = 1_000_000  # events per /predict request
TIMEOUT = 30  # seconds a connection may stall (a body shorter than its Content-Length) before it is answered 408


def _check_keys(body, allowed: set[str], what: str = "the body") -> None:
    if not isinstance(body, dict):
        raise ValueError(f"{what} must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}; valid: {', '.join(sorted(allowed))}")


def _one_or_many(body: dict, one: set[str], many: str) -> tuple[list, bool]:
    """([the request's parts], whether it was one): ``one``'s keys at the top, or a list under ``many``."""
    if many in body and one & set(body):
        raise ValueError(f"give {' and '.join(sorted(one))}, or {many!r}, not both")
    if many not in body:
        return [{k: body[k] for k in one if k in body}], True
    if not isinstance(body[many], list):
        raise ValueError(f"{many!r} must be a list")
    return body[many], False


def _ids(x, what: str) -> list:
    """A list of raw ids (64-bit integers or strings), or ValueError naming ``what``."""
    if not isinstance(x, list):
        raise ValueError(f"{what} must be a list of raw item ids")
    bad = [v for v in x if not isinstance(v, (int, str)) or isinstance(v, bool)
           or (isinstance(v, int) and not -2**63 <= v < 2**64)]  # signed or unsigned 64-bit: the vocabulary decides
    if bad:
        raise ValueError(f"{what}: raw item ids are integers (64-bit) or strings, got {bad[0]!r}")
    return x


def _option(body: dict, key: str, default, kind: type, check=lambda v: True, what: str = ""):
    v = body.get(key, default)
    if v is default:
        return v
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)) or not check(v):
        raise ValueError(f"{key!r} must be {what or kind.__name__}, got {v!r}")
    return v


def parse_request(body) -> tuple[list[list], bool, int, bool]:
    """(histories, one, n, exclude_seen) of a /recommend body; ``ValueError`` names what is wrong."""
    _check_keys(body, {"history", "histories", "n", "exclude_seen"})
    if ("history" in body) == ("histories" in body):
        raise ValueError("give exactly one of 'history' or 'histories' (a list of them)")
    one = "history" in body
    histories = [body["history"]] if one else body["histories"]
    if not isinstance(histories, list):
        raise ValueError("'histories' must be a list")
    if len(histories) > MAX_ROWS:
        raise ValueError(f"over {MAX_ROWS} histories in one request: split it")
    histories = [_ids(h, f"history {i}") for i, h in enumerate(histories)]
    n = _option(body, "n", 10, int, lambda v: v >= 1, "an integer >= 1")
    return histories, one, n, _option(body, "exclude_seen", True, bool, what="true or false")


def recommend_route(rec: Recommender) -> tuple[Callable, Callable]:
    def answer(parsed):
        histories, one, n, exclude = parsed
        out = [{"items": r.items, "scores": r.scores, "unknown": r.unknown, "popular_fallback": r.popular_fallback}
               for r in rec.recommend(histories, n=n, exclude_seen=exclude)]
        return out[0] if one else out
    return parse_request, answer


def parse_score(body) -> tuple[list[tuple[list, list]], bool, bool, int | None]:
    """(requests as (history, candidates), one, rank, n) of a /score body."""
    _check_keys(body, {"history", "candidates", "requests", "rank", "n"})
    reqs, one = _one_or_many(body, {"history", "candidates"}, "requests")
    if len(reqs) > MAX_ROWS:
        raise ValueError(f"over {MAX_ROWS} requests in one body: split it")
    parsed = []
    for i, r in enumerate(reqs):
        where = "" if one else f"request {i}: "
        _check_keys(r, {"history", "candidates"}, where.rstrip(": ") or "the body")
        parsed.append((_ids(r.get("history", []), where + "'history'"), _ids(r.get("candidates"), where + "'candidates'")))
    if sum(len(c) for _, c in parsed) > MAX_CANDIDATES:
        raise ValueError(f"over {MAX_CANDIDATES} candidates in one request: split it")
    rank = _option(body, "rank", False, bool, what="true or false")
    n = _option(body, "n", None, int, lambda v: v >= 1, "an integer >= 1")
    if n is not None and not rank:
        raise ValueError("'n' keeps the top n of a ranking: give \"rank\": true as well")
    return parsed, one, rank, n


def score_route(ranker: Ranker) -> tuple[Callable, Callable]:
    def answer(parsed):
        reqs, one, rank, n = parsed
        out = [ranker.rank(h, c, n) if rank else ranker.score(h, c) for h, c in reqs]
        out = [{"items": s.items, "probs": s.probs, "unknown_history": s.unknown_history,
                "unknown_candidates": s.unknown_candidates} for s in out]
        return out[0] if one else out
    return parse_score, answer


F32_MAX = float(np.finfo(np.float32).max)


def parse_predict(body) -> tuple[list[tuple[list, list]], bool, int]:
    """(sequences as (times, types), one, seed) of a /predict body."""
    _check_keys(body, {"times", "types", "sequences", "seed"})
    seqs, one = _one_or_many(body, {"times", "types"}, "sequences")
    if len(seqs) > MAX_ROWS:
        raise ValueError(f"over {MAX_ROWS} sequences in one request: split it")
    parsed = []
    for i, q in enumerate(seqs):
        _check_keys(q, {"times", "types"}, "the body" if one else f"sequence {i}")
        t, k = q.get("times"), q.get("types")
        if not (isinstance(t, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            and abs(v) <= F32_MAX for v in t)
                and isinstance(k, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in k)):
            raise ValueError(f"sequence {i}: 'times' must be a list of numbers (within float32's range) and 'types' "
                             "a list of integers")
        parsed.append((t, k))
    if sum(len(t) for t, _ in parsed) > MAX_EVENTS:
        raise ValueError(f"over {MAX_EVENTS} events in one request: split it")
    return parsed, one, _option(body, "seed", 0, int, lambda v: 0 <= v < 2**63, "an integer >= 0")


def predict_route(pred: EventPredictor) -> tuple[Callable, Callable]:
    def answer(parsed):
        seqs, one, seed = parsed
        out = [{"dtime": e.dtime, "type": e.type, "unaccepted": e.unaccepted} for e in pred.predict(seqs, seed=seed)]
        return out[0] if one else out
    return parse_predict, answer


def parse_risk(body) -> tuple[object, object]:
    """(payments as a DataFrame, label date) of a /risk body."""
    import pandas as pd

    _check_keys(body, {"payments", "label_date"})
    rows = body.get("payments")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("'payments' must be a list of payment objects (user, time, merchant, amount[, description])")
    if len(rows) > MAX_EVENTS:
        raise ValueError(f"over {MAX_EVENTS} payments in one request: split it")
    bad = next(((i, k, v) for i, r in enumerate(rows) for k, v in r.items() if isinstance(v, (dict, list))), None)
    if bad is not None:
        raise ValueError(f"payment {bad[0]}, field {bad[1]!r}: a payment's fields are numbers or text, got {bad[2]!r}")
    date = body.get("label_date")
    ok = lambda v: isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
                                          and math.isfinite(v))
    per_user = isinstance(date, dict) and date and all(ok(v) for v in date.values()) \
        and len({isinstance(v, str) for v in date.values()}) == 1  # all dates text or all numbers
    if not (ok(date) or per_user):
        raise ValueError("'label_date' (the observation date, required) must be an ISO date or a finite number, or "
                         f"an object of one per user (all ISO dates or all numbers), got {date!r}")
    frame = pd.DataFrame.from_records(rows)
    try:  # a column of mixed types (a number here, text there) is the request's fault
        pa.Table.from_pandas(frame, preserve_index=False)
    except (TypeError, ValueError, pa.ArrowException) as e:
        raise ValueError(f"'payments': a column holds values of different types ({e})") from None
    return frame, date


def risk_route(scorer: RiskScorer) -> tuple[Callable, Callable]:
    def answer(parsed):
        s = scorer.score(*parsed)
        return {"users": s.users, "probs": s.probs, "payments_used": s.payments_used}
    return parse_risk, answer


def routes_for(served) -> tuple[dict[str, tuple[Callable, Callable]], dict]:
    """({path: (parse(body), answer(parsed))}, health fields) of a served object."""
    if isinstance(served, Recommender):
        return {"/recommend": recommend_route(served)}, {"task": "retrieval", "items": len(served.raw),
                                                          "max_len": served.max_len}
    if isinstance(served, Ranker):
        return {"/score": score_route(served)}, {"task": "ctr", "items": len(served.ids), "max_len": served.max_len}
    if isinstance(served, EventPredictor):
        return {"/predict": predict_route(served)}, {"task": "tpp", "types": served.num_types,
                                                      "max_len": served.max_len}
    if isinstance(served, RiskScorer):
        return {"/risk": risk_route(served)}, {"task": "default_risk", "model_name": served.name}
    raise TypeError(f"cannot serve a {type(served).__name__}; serve a Recommender, Ranker, EventPredictor or RiskScorer")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the client went away before its answer: not an error
            return
        super().handle_error(request, client_address)


def make_server(served, host: str = "127.0.0.1", port: int = 8000, name: str = "") -> ThreadingHTTPServer:
    """An HTTP server for ``served`` (port 0: any free port, see ``server.server_address``); call
    ``serve_forever()`` on it, ``shutdown()`` to stop."""
    routes, fields = routes_for(served)
    lock = threading.Lock()
    health = {"status": "ok", "model": name or type(served.model).__name__, **fields}
    paths = ", ".join(f"POST {p}" for p in routes)

    class Handler(BaseHTTPRequestHandler):
        timeout = TIMEOUT  # a stalled client (a body shorter than its Content-Length) never holds a thread forever

        def _send(self, code: int, payload, allow: str | None = None) -> None:
            data = json.dumps(payload, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if allow:
                self.send_header("Allow", allow)
            self.end_headers()
            if self.command != "HEAD":  # HEAD: the headers GET would send, no body
                self.wfile.write(data)

        @property
        def route(self) -> str:
            return urlsplit(self.path).path  # "/recommend?x=1" is /recommend

        def _refuse(self, method: str) -> bool:
            """404 for an unknown path, 405 (with Allow) for a known path and another method; True if sent."""
            allowed = "GET, HEAD" if self.route == "/health" else "POST" if self.route in routes else None
            if allowed is None:
                self._send(404, {"error": f"no such path {self.route!r}; GET /health, {paths}"})
            elif method not in allowed.split(", "):
                self._send(405, {"error": f"{self.route} takes {allowed}, not {method}"}, allow=allowed)
            return allowed is None or method not in allowed.split(", ")

        def do_GET(self) -> None:  # noqa: N802 (http.server's names)
            if not self._refuse(self.command):
                self._send(200, health)

        do_HEAD = do_GET  # noqa: N815

        def _other(self) -> None:
            self._refuse(self.command)

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other  # noqa: N815

        def do_POST(self) -> None:  # noqa: N802
            if self._refuse("POST"):
                return
            if self.headers.get("Content-Length") is None:  # e.g. a chunked body, which this server does not read
                self._send(411, {"error": "send the body with a Content-Length (chunked bodies are not read)"})
                return
            try:
                size = int(self.headers.get("Content-Length"))
            except ValueError:
                size = -1
            if size < 0:
                self._send(400, {"error": "Content-Length must be a byte count"})
                return
            if size > MAX_BODY:
                self._send(413, {"error": f"request body over {MAX_BODY} bytes"})
                return
            parse, answer = routes[self.route]
            try:
                raw = self.rfile.read(size)
            except TimeoutError:
                self._send(408, {"error": f"the body did not arrive within {TIMEOUT} s (Content-Length {size})"})
                self.close_connection = True
                return
            if len(raw) < size:  # the client closed its side early
                self._send(400, {"error": f"the body ended after {len(raw)} of its {size} bytes"})
                return
            try:
                parsed = parse(json.loads(raw or b"null"))  # outside the lock
                with lock:
                    out = answer(parsed)
            except (ValueError, RecursionError, OverflowError) as e:  # the request's fault (parsing, model checks)
                self._send(400, {"error": str(e) or type(e).__name__})
                return
            except Exception as e:  # noqa: BLE001 (a server answers; the client sees what went wrong)
                self._send(500, {"error": f"{type(e).__name__}: {e}"})
                return
            self._send(200, out)

        def log_message(self, fmt: str, *args) -> None:  # quiet by default; a gateway logs requests
            pass

    return _Server((host, port), Handler)
