"""A JSON-over-HTTP front for ``Recommender`` (standard library only; put a real WSGI/ASGI server or a
gateway in front of it for production traffic).

    GET  /health     -> {"status": "ok", "model": ..., "items": n_items, "max_len": ...}
    POST /recommend  {"history": [raw ids, oldest first], "n": 10, "exclude_seen": true}
                     or {"histories": [[...], [...]], ...}
                     -> {"items": [...], "scores": [...], "unknown": [...], "popular_fallback": false}
                        (a list of those for "histories")

A malformed request gets 400 with {"error": message}; requests are served one model call at a time.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from behaviorseq.serve.recommender import Recommendation, Recommender

MAX_BODY = 16 << 20  # bytes: a request larger than this is refused


def _as_json(r: Recommendation) -> dict:
    return {"items": r.items, "scores": r.scores, "unknown": r.unknown, "popular_fallback": r.fallback}


def parse_request(body: dict) -> tuple[list[list], bool, int, bool]:
    """(histories, one, n, exclude_seen) of a /recommend body; ``ValueError`` names what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - {"history", "histories", "n", "exclude_seen"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; valid: history or histories, n, exclude_seen")
    if ("history" in body) == ("histories" in body):
        raise ValueError("give exactly one of 'history' (a list of raw item ids) or 'histories' (a list of them)")
    one = "history" in body
    histories = [body["history"]] if one else body["histories"]
    if not isinstance(histories, list) or not all(isinstance(h, list) for h in histories):
        raise ValueError("'history' must be a list of raw item ids, 'histories' a list of such lists")
    for i, h in enumerate(histories):
        bad = [x for x in h if not isinstance(x, (int, str)) or isinstance(x, bool)
               or (isinstance(x, int) and not -2**63 <= x < 2**63)]
        if bad:
            raise ValueError(f"history {i}: raw item ids are integers (64-bit) or strings, got {bad[0]!r}")
    n = body.get("n", 10)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"'n' must be an integer >= 1, got {n!r}")
    exclude = body.get("exclude_seen", True)
    if not isinstance(exclude, bool):
        raise ValueError(f"'exclude_seen' must be true or false, got {exclude!r}")
    return histories, one, n, exclude


def make_server(rec: Recommender, host: str = "127.0.0.1", port: int = 8000, name: str = "") -> ThreadingHTTPServer:
    """An HTTP server for ``rec`` (port 0: any free port, see ``server.server_address``); call
    ``serve_forever()`` on it, ``shutdown()`` to stop."""
    lock = threading.Lock()
    health = {"status": "ok", "model": name or type(rec.model).__name__, "items": len(rec.raw), "max_len": rec.max_len}

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, payload) -> None:
            data = json.dumps(payload, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's names)
            if self.path == "/health":
                self._send(200, health)
            else:
                self._send(404, {"error": f"no such path {self.path!r}; GET /health, POST /recommend"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/recommend":
                self._send(404, {"error": f"no such path {self.path!r}; POST /recommend"})
                return
            try:
                size = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                size = -1
            if size < 0:
                self._send(400, {"error": "Content-Length must be a byte count"})
                return
            if size > MAX_BODY:
                self._send(413, {"error": f"request body over {MAX_BODY} bytes"})
                return
            try:
                histories, one, n, exclude = parse_request(json.loads(self.rfile.read(size) or b"null"))
            except (ValueError, json.JSONDecodeError) as e:
                self._send(400, {"error": str(e)})
                return
            try:
                with lock:
                    out = [_as_json(r) for r in rec.recommend(histories, n=n, exclude_seen=exclude)]
            except Exception as e:  # noqa: BLE001 (a server answers; the client sees what went wrong)
                self._send(500, {"error": f"{type(e).__name__}: {e}"})
                return
            self._send(200, out[0] if one else out)

        def log_message(self, fmt: str, *args) -> None:  # quiet by default; a gateway logs requests
            pass

    return ThreadingHTTPServer((host, port), Handler)
