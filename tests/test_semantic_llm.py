"""SRA-CL's LLM summary step (behaviorseq.llm, models/retrieval/semantic_prompts.py): the OpenAI-compatible client against a local
fake endpoint (request format, order under concurrency, retries, clear errors), the append-only disk cache
(nothing received is lost, torn lines skipped) and the wiring through SemanticConfig.llm into the index."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from behaviorseq.config import ConfigError
from behaviorseq.data.datasets import open_dataset
from behaviorseq.data.splits import leave_one_out
from behaviorseq.llm import (
    CachedBackend,
    DeterministicBackend,
    LLMConfig,
    LLMDryRun,
    LLMError,
    OpenAIChatBackend,
)
from behaviorseq.models.retrieval import semantic_index as si
from behaviorseq.models.retrieval.semantic import (
    HashingEncoder,
    SemanticConfig,
    TextSource,
    item_texts,
    make_source,
)
from behaviorseq.models.retrieval.semantic_prompts import (
    ITEM_PROMPT,
    OFFLINE_HINT,
    USER_PROMPT,
    item_prompt,
    item_sequences,
)


class FakeLLM:
    """A local OpenAI-compatible /v1/chat/completions. ``script``: what to do with the first requests, one entry each:
    None (answer normally), a status code (an error answer with Retry-After: 0), (status, retry_after or None),
    "drop" (close the connection without an answer) or "stall" (answer after 1.5 s). Then each answer is
    ``answer(prompt)``: text, or a status code for an error answer. Every request's path, JSON body and headers are
    kept, when each answer was sent, and the most requests ever in flight at once."""

    def __init__(self, answer=lambda p: f"S<{p}>", script=(), delay=0.0, body=None):
        self.answer, self.script, self.delay, self.body = answer, list(script), delay, body
        self.requests: list[tuple[str, dict, dict]] = []
        self.started_at: dict[int, float] = {}  # request number -> when it arrived
        self.done_at: dict[int, float] = {}  # request number -> when its answer was sent
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    n = len(fake.requests)
                    fake.started_at[n] = time.perf_counter()
                    fake.requests.append((self.path, data, dict(self.headers)))
                    step = fake.script.pop(0) if fake.script else None
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                self._answer(step, data["messages"][0]["content"], n)

            def _done(self, n):  # before the answer's bytes leave: the client cannot start its next request sooner
                with fake.lock:
                    fake.in_flight -= 1
                    fake.done_at[n] = time.perf_counter()

            def _answer(self, step, prompt, n):
                if step == "drop":
                    self._done(n)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if step == "stall":
                    time.sleep(1.5)
                    step = None
                if fake.delay:
                    time.sleep(fake.delay * (0.2 + 0.8 * np.random.default_rng(len(prompt)).random()))
                reply, retry_after = None, None
                if step is None:
                    reply = fake.answer(prompt)
                    status = reply if isinstance(reply, int) else 200
                else:
                    status, retry_after = step if isinstance(step, tuple) else (step, "0")
                if status != 200:
                    out = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                else:
                    body = fake.body if fake.body is not None else {
                        "choices": [{"message": {"role": "assistant", "content": reply}}]}
                    out = body if isinstance(body, bytes) else json.dumps(body).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self._done(n)
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers = []

    def make(**kw):
        servers.append(FakeLLM(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def cfg(base_url, **kw):
    return LLMConfig(base_url=base_url, model="deepseek-chat", **{"retry_wait": 0.0, **kw})


def test_requests_are_the_papers_settings_answers_keep_the_prompts_order_and_run_concurrently(fake, monkeypatch):
    server = fake(delay=0.05)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    prompts = [f"prompt {i} " + "x" * i for i in range(40)]
    out = OpenAIChatBackend(cfg(server.base_url + "/", concurrency=4, api_key_env="DEEPSEEK_API_KEY")).complete(prompts)
    assert out == [f"S<{p}>" for p in prompts]  # in order, though answered out of order
    assert server.max_in_flight == 4  # concurrency requests at a time, never more
    path, body, headers = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body == {"model": "deepseek-chat", "messages": [{"role": "user", "content": prompts[0]}],
                    "temperature": 0.0, "top_p": 0.001, "max_tokens": 400, "stream": False}
    assert headers["Authorization"] == "Bearer sk-test"
    OpenAIChatBackend(cfg(server.base_url, top_p=None)).complete(["a"])  # no api_key_env: no key sent anywhere
    assert "Authorization" not in server.requests[-1][2] and "top_p" not in server.requests[-1][1]
    monkeypatch.delenv("DEEPSEEK_API_KEY")
    n = len(server.requests)
    with pytest.raises(LLMError, match="api_key_env names DEEPSEEK_API_KEY, which is not set"):
        OpenAIChatBackend(cfg(server.base_url, api_key_env="DEEPSEEK_API_KEY")).complete(["a"])
    assert len(server.requests) == n


def test_retryable_answers_wait_as_told_and_others_fail_at_once_naming_the_endpoint(fake):
    server = fake(script=[(429, "3"), (503, None), (529, None)])
    b = OpenAIChatBackend(cfg(server.base_url, retry_wait=1.0))
    waits: list[float] = []
    b.sleep = waits.append
    assert b.complete(["a"]) == ["S<a>"] and len(server.requests) == 4
    assert waits[0] == 3.0 and 1.0 <= waits[1] <= 2.0 and 2.0 <= waits[2] <= 4.0  # Retry-After, then doubling
    server = fake(script=[500] * 3)
    with pytest.raises(LLMError, match=r"chat/completions: HTTP 500: scripted 500 \(prompt 'a'"):
        OpenAIChatBackend(cfg(server.base_url, retries=2)).complete(["a"])
    assert len(server.requests) == 3  # the first try and 2 retries
    for status in (401, 501):
        server = fake(script=[status])
        with pytest.raises(LLMError, match=rf"HTTP {status}"):
            OpenAIChatBackend(cfg(server.base_url)).complete(["a"])
        assert len(server.requests) == 1  # not worth another try
    server = fake(body={"id": "x", "choices": []})
    with pytest.raises(LLMError, match=r"no choices\[0\]\.message\.content"):
        OpenAIChatBackend(cfg(server.base_url)).complete(["a"])
    server = fake(body=b'{"choices": [{"message": {"content": "lone \\ud83d end"}}]}')
    assert OpenAIChatBackend(cfg(server.base_url)).complete(["a"]) == ["lone \ufffd end"]  # writable as UTF-8


def test_dropped_and_stalled_requests_are_retried_even_before_the_first_answer(fake):
    server = fake(script=["drop", "stall"])
    assert OpenAIChatBackend(cfg(server.base_url, timeout=0.5)).complete(["a", "b"]) == ["S<a>", "S<b>"]
    assert len(server.requests) == 4
    server = fake(script=[None, "drop"])  # after a first answer: the same
    assert OpenAIChatBackend(cfg(server.base_url)).complete(["a", "b"]) == ["S<a>", "S<b>"]
    assert len(server.requests) == 3


def test_an_unreachable_endpoint_fails_at_once_with_what_to_do():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match=r"cannot reach the LLM endpoint http://127\.0\.0\.1:\d+/v1/chat/completions .*"
                                       r"drop semantic\.llm"):
        OpenAIChatBackend(LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", retry_wait=5.0), "semantic.llm",
                          OFFLINE_HINT).complete(["a", "b"])
    assert time.perf_counter() - t0 < 4  # no backoff before anything was ever reached


def test_the_first_failure_for_good_stops_the_rest_and_what_arrived_is_cached(fake, tmp_path):
    """One prompt refused (400) among slow ones: that error is raised at once, no request starts after it, and the
    cache keeps every answer that came; a rerun asks only for what it lacks."""
    server = fake(answer=lambda p: 400 if p == "bad" else f"S<{p}>", delay=0.3)
    prompts = ["p0", "bad"] + [f"p{i}" for i in range(2, 24)]
    out: dict[int, str] = {}
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match=r"HTTP 400: scripted 400 \(prompt 'bad'"):
        OpenAIChatBackend(cfg(server.base_url, concurrency=4)).complete_into(prompts, out)
    assert time.perf_counter() - t0 < 3 and len(server.requests) < len(prompts)
    bad = [r[1]["messages"][0]["content"] for r in server.requests].index("bad")
    assert max(server.started_at.values()) < server.done_at[bad] + 0.1  # none started after the failure was seen
    assert out[0] == "S<p0>" and len(out) >= 2 and all(out[i] == f"S<{prompts[i]}>" for i in out)
    server = fake(answer=lambda p: 400 if p == "bad" else f"S<{p}>", delay=0.3)
    cache = CachedBackend(OpenAIChatBackend(cfg(server.base_url, concurrency=4)), tmp_path / "c.jsonl", chunk=100)
    with pytest.raises(LLMError):
        cache.complete(prompts)
    kept = len((tmp_path / "c.jsonl").read_text().splitlines())
    assert kept >= 1 and kept == len(cache.memory)
    n = len(server.requests)
    good = [p for p in prompts if p != "bad"]
    assert CachedBackend(OpenAIChatBackend(cfg(server.base_url)), tmp_path / "c.jsonl").complete(good) == \
        [f"S<{p}>" for p in good]
    assert len(server.requests) - n == len(good) - kept  # only the ones not kept


def test_cache_keeps_every_chunk_received_when_a_later_one_fails_and_skips_torn_lines(tmp_path):
    class Flaky(DeterministicBackend):
        sent: list[str] = []
        fail_after = 99

        def complete(self, prompts):
            if len(Flaky.sent) >= Flaky.fail_after:
                raise LLMError("endpoint went away")
            Flaky.sent += prompts
            return super().complete(prompts)

    path = tmp_path / "llm" / "cache.jsonl"
    prompts = [f"item {i}" for i in range(10)]
    Flaky.fail_after = 6
    with pytest.raises(LLMError, match="went away"):
        CachedBackend(Flaky(), path, chunk=3).complete(prompts)
    assert len(Flaky.sent) == 6 and len(path.read_text().splitlines()) == 6  # two chunks written, then the failure
    before, first = path.read_bytes(), set(Flaky.sent)
    with open(path, "ab") as f:
        f.write(b'{"key": "abc", "compl')  # an append cut short
    Flaky.fail_after, Flaky.sent = 99, []
    again = CachedBackend(Flaky(), path, chunk=3)
    assert len(again.memory) == 6 and again.skipped == 0  # the cut line is no line yet: left alone
    out = again.complete(prompts + prompts[:2])
    assert sorted(Flaky.sent) == sorted(set(prompts) - first)  # only what was missing was asked
    assert out == DeterministicBackend().complete(prompts + prompts[:2])
    assert path.read_bytes().startswith(before)  # lines already written are never rewritten
    third = CachedBackend(Flaky(), path)
    with pytest.warns(UserWarning, match="1 unreadable line"):
        assert len(third.memory) == 10  # the new lines began on a line of their own
    Flaky.sent = []
    assert third.complete(prompts) == out[:10] and Flaky.sent == []


def test_two_caches_on_one_file_write_each_key_once_and_agree(tmp_path):
    """Two processes sharing a cache: each append first reads the other's, so a key has one line and one answer."""

    class Other(DeterministicBackend):
        name = "other"

        def complete(self, prompts):
            return [f"other answer to {p}" for p in prompts]

    path = tmp_path / "shared.jsonl"
    a, b = CachedBackend(DeterministicBackend(), path), CachedBackend(Other(), path)
    assert a.memory == {} and b.memory == {}  # both loaded before either wrote
    first = a.complete(["x", "y"])
    assert b.complete(["y", "z"]) == [first[1], "other answer to z"]  # y: a's answer, from the file
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3 and len({r["key"] for r in lines}) == 3
    assert CachedBackend(Other(), path).complete(["x", "y", "z"]) == first + ["other answer to z"]


def test_an_interrupt_returns_at_once_and_keeps_what_arrived(fake, tmp_path, monkeypatch):
    """Ctrl-C while a chunk is in flight (raised in the wait for the answers, as a signal would): no wait for the
    queued requests, and the answers already received are in the cache."""
    from behaviorseq.llm import backends

    def interrupted_wait(futures, return_when):
        time.sleep(1.2)
        raise KeyboardInterrupt

    monkeypatch.setattr(backends, "wait", interrupted_wait)
    server = fake(delay=0.5)
    prompts = [f"p{i} " + "x" * i for i in range(40)]
    cache = CachedBackend(OpenAIChatBackend(cfg(server.base_url, concurrency=4)), tmp_path / "c.jsonl", chunk=40)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        cache.complete(prompts)
    assert time.perf_counter() - t0 < 2.5  # not the whole chunk (40 prompts, 4 at a time, up to 0.5 s each)
    kept = (tmp_path / "c.jsonl").read_text().splitlines()
    assert 2 <= len(kept) < len(prompts)


def test_a_run_sharing_the_cache_does_not_ask_what_another_has_answered(tmp_path):
    """Two runs on one cache file (parallel seeds): prompts the other run answered between two chunks are not
    sent again; and a cache file replaced by another process is read anew (its answers win)."""
    path = tmp_path / "shared.jsonl"
    prompts = [f"item {i}" for i in range(20)]
    sent: list[str] = []

    class Counting(DeterministicBackend):
        def complete(self, ps):
            sent.extend(ps)
            if len(sent) == len(ps):  # after this run's first chunk, another run answers everything
                CachedBackend(DeterministicBackend(), path).complete(prompts)
            return super().complete(ps)

    out = CachedBackend(Counting(), path, chunk=4).complete(prompts)
    assert len(sent) == 4 and out == DeterministicBackend().complete(prompts)
    assert len(path.read_text().splitlines()) == 20  # one line per key
    a = CachedBackend(DeterministicBackend(), path)
    assert a.complete(["item 0"]) == DeterministicBackend().complete(["item 0"])
    path.unlink()  # another process clears the cache and writes its own answers

    class Other(DeterministicBackend):
        name = "other"

        def complete(self, ps):
            return [f"other: {p}" for p in ps]

    CachedBackend(Other(), path).complete(["item 0"])
    a.complete(["item 99"])  # before asking, a finds another file: re-read, its answers replace a's
    assert a.memory["" + __import__("hashlib").sha256(b"item 0").hexdigest()] == "other: item 0"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 2 and len({r["key"] for r in lines}) == 2


def test_config_names_what_is_missing_and_where_llm_applies():
    with pytest.raises(ConfigError, match="needs base_url and model"):
        LLMConfig.from_dict({"model": "deepseek-chat"})
    with pytest.raises(ConfigError, match="an http:// or https:// address"):
        LLMConfig.from_dict({"model": "deepseek-chat", "base_url": "api.deepseek.com"})
    with pytest.raises(ConfigError, match="unknown key"):
        LLMConfig.from_dict({"backend": "deterministic", "temprature": 0})
    with pytest.raises(ConfigError, match="source 'attributes' reads none"):
        SemanticConfig.from_dict({"llm": {"backend": "deterministic"}})
    c = SemanticConfig.from_dict({"source": "hashing", "llm": {"base_url": "http://h/v1", "model": "m"}})
    assert c.llm.temperature == 0.0 and c.llm.top_p == 0.001 and c.llm.api_key_env is None  # the paper's; no key


def _toy_store(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{t}\n" for t, (u, i) in enumerate([(1, 1), (1, 2), (1, 3), (1, 4), (2, 3), (2, 1), (2, 4), (2, 2),
                                                      (3, 2), (3, 4), (3, 1), (3, 3)])))
    (folder / "toy.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                                     "1\tToy Story\tAnimation Comedy\n2\tGoldenEye\tAction\n"
                                     "3\tToy Story 2\tAnimation Comedy\n4\tHeat\tAction Crime\n")
    return open_dataset(str(folder), cache_dir=tmp_path / "cache")


def test_item_sequences_end_with_the_item_and_come_from_training_prefixes_only():
    """Hand-worked: user 1 = positions 0-3 (items 5 6 7 5), user 2 = 4-6 (8 6 5); the prefixes below are the
    training ones (a prefix's target is events[end]); an empty window gives no sequence (a sequence has 2+ items)."""
    events = np.array([5, 6, 7, 5, 8, 6, 5, 9])  # position 7 (item 9) is no training target: never in a sequence
    start = np.array([0, 0, 0, 0, 4, 4])
    end = np.array([0, 1, 2, 3, 5, 6])  # the first: target 5 after an empty window
    seqs = item_sequences(events, start, end, 9)
    assert sorted(seqs[5]) == [[5, 6, 7, 5], [8, 6, 5]] and sorted(seqs[6]) == [[5, 6], [8, 6]]
    assert seqs[7] == [[5, 6, 7]] and seqs[8] == seqs[9] == seqs[0] == []
    assert sorted(item_sequences(events, start, end, 9, max_len=2)[5]) == [[6, 5], [7, 5]]
    one = [item_sequences(events, start, end, 9, per_item=1, seed=s)[5] for s in range(20)]
    assert all(len(o) == 1 for o in one) and {tuple(o[0]) for o in one} == {(5, 6, 7, 5), (8, 6, 5)}  # drawn
    assert item_sequences(events, start, end, 9, per_item=1, seed=3) == item_sequences(events, start, end, 9, per_item=1, seed=3)
    names = [""] + [f"it{i}" for i in range(1, 10)]
    assert item_prompt("it5", seqs[7], names).startswith("Item: it5. Users came to it through these sequences, each "
                                                          "in order and ending with it: [it5, it6, it7]. Give a JSON")
    assert item_prompt("it8", [], names) == ITEM_PROMPT.format(item="it8", sequences="")


def test_item_and_prefix_summaries_through_the_config_into_the_index(fake, tmp_path):
    """semantic.llm -> make_source -> build_index: item prompts (with sequences from the training prefixes) and
    prefix prompts (prefix_text) go to the endpoint; the vectors are the encoder's of the answers; the index's key
    changes; with the endpoint gone, a rebuild elsewhere reads every answer from the cache."""
    server = fake(answer=lambda p: "summary of " + p)
    store = _toy_store(tmp_path)
    view = leave_one_out(store).train.prefixes()
    conf = SemanticConfig.from_dict({"source": "hashing", "dim": 32, "prefix_text": True, "cache_dir": str(tmp_path / "sem"),
                                     "llm": {"base_url": server.base_url, "model": "m", "retry_wait": 0}})
    src = make_source(conf)
    index = si.build_index(store, view, src, 8, k=2, item_k=2, cache_dir=tmp_path / "sem")
    sent = [r[1]["messages"][0]["content"] for r in server.requests]
    events, end = np.asarray(store.item, dtype=np.int64), np.asarray(view.input_end, dtype=np.int64)
    seqs = item_sequences(events, np.maximum(np.asarray(view.input_start), end - 8), end, store.num_items)
    texts = item_texts(store)
    item_prompts = [item_prompt(t, seqs[i], [""] + texts) for i, t in enumerate(texts, 1)]
    assert sum("sequences, each in order" in p for p in item_prompts) >= 3  # the toy's items are training targets
    user = [p for p in sent if p.startswith(USER_PROMPT.split("{")[0])]
    assert sorted(sent) == sorted(item_prompts + user) and len(user) == len(set(user)) > 0
    plain = TextSource(HashingEncoder(32), prefix_text=True)
    assert src.fingerprint()["summariser"].startswith("cached:openai:m@") and "prompts" in src.fingerprint()
    assert si.cache_key(store, src, view.input_start, view.input_end, 2, 2) != \
        si.cache_key(store, plain, view.input_start, view.input_end, 2, 2)
    want = HashingEncoder(32).encode(["summary of " + p for p in item_prompts])
    assert np.allclose(src.item_vectors(store, seqs)[1:], want)
    n = len(server.requests)
    server.close()  # the endpoint gone: the completions come from the cache
    again = si.build_index(store, view, make_source(conf), 8, k=2, item_k=2, cache_dir=tmp_path / "other")
    assert np.array_equal(again.prefix_vectors, index.prefix_vectors)
    assert np.array_equal(again.item_neighbours, index.item_neighbours) and len(server.requests) == n


def test_sracl_trains_with_the_deterministic_backend_from_its_config(tmp_path):
    """The wiring end to end: model.semantic.llm in a run's config reaches the index (its summaries cached)."""
    from behaviorseq.train import run_experiment

    store_dir = tmp_path / "toy"
    _toy_store(tmp_path)
    sem = tmp_path / "sem"
    cfg = {"model": "sracl",
           "model_config": {"max_len": 8, "hidden_size": 16, "k": 2, "item_k": 2,
                            "semantic": {"source": "hashing", "dim": 16, "cache_dir": str(sem),
                                         "llm": {"backend": "deterministic"}}},
           "data": {"dataset": str(store_dir), "cache_dir": str(tmp_path / "c")},
           "train": {"epochs": 1, "batch_size": 8, "seed": 1, "threads": 1}, "eval": {"ks": [2, 10]}}
    res = run_experiment(cfg, tmp_path / "run")
    assert res["test"]["hr@2"] >= 0
    cache = list((sem / "llm").glob("*.jsonl"))
    assert len(cache) == 1 and len(cache[0].read_text().splitlines()) == 4  # one summary per item
    # how the endpoint is called may change on --resume; what it is asked may not
    llm = cfg["model_config"]["semantic"]["llm"]
    cfg["train"]["epochs"] = 2
    llm.update(concurrency=2, retries=1, chunk=2)
    assert run_experiment(cfg, tmp_path / "run", resume=True)["epochs_run"] == 2
    llm["temperature"] = 0.5
    with pytest.raises(ConfigError, match="semantic.llm.temperature: 0.0 -> 0.5"):
        run_experiment(cfg, tmp_path / "run", resume=True)


def test_the_cli_names_an_unreachable_endpoint_without_a_traceback(tmp_path, capsys):
    from behaviorseq.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _toy_store(tmp_path)
    rc = main(["train", "--model", "sracl", "--data", str(tmp_path / "toy"), "--out", str(tmp_path / "run"),
               "model.semantic.source=hashing", f"model.semantic.llm.base_url=http://127.0.0.1:{port}/v1",
               "model.semantic.llm.model=m", f"model.semantic.cache_dir={tmp_path / 'sem'}", "data.cache_dir=" +
               str(tmp_path / "c"), "model.max_len=8", "model.k=2", "model.item_k=2", "eval.ks=[2,10]",
               "train.epochs=1", "train.early_stop_metric=ndcg@10"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: cannot reach the LLM endpoint") and "Traceback" not in err


def test_a_dry_run_counts_and_lists_every_prompt_and_sends_none(fake, tmp_path):
    """semantic.llm.dry_run: before anything is sent, every prompt the index would send (items, then prefixes with
    prefix_text) not yet in the cache is counted and listed once, in order, beside the cache; no index entry is
    written; after a real run the same dry run finds nothing to send and passes."""
    server = fake(answer=lambda p: "summary of " + p)
    store = _toy_store(tmp_path)
    view = leave_one_out(store).train.prefixes()
    llm = {"base_url": server.base_url, "model": "m", "retry_wait": 0, "dry_run": True}
    conf = SemanticConfig.from_dict({"source": "hashing", "dim": 32, "prefix_text": True, "cache_dir": str(tmp_path / "sem"),
                                     "llm": llm})
    src = make_source(conf)
    with pytest.raises(LLMDryRun, match=r"dry run, nothing sent: (\d+) prompt\(s\) of (\d+) are not in the cache") as e:
        si.build_index(store, view, src, 8, k=2, item_k=2, cache_dir=tmp_path / "sem")
    assert server.requests == [] and not [p for p in (tmp_path / "sem").iterdir() if p.name != "llm"]
    pending = src.summariser.pending
    assert pending.name.startswith(src.summariser.path.stem + ".pending-") and str(pending) in str(e.value)
    listed = [json.loads(x) for x in pending.read_text().splitlines()]
    events, end = np.asarray(store.item, dtype=np.int64), np.asarray(view.input_end, dtype=np.int64)
    start = np.maximum(np.asarray(view.input_start), end - 8)
    texts = item_texts(store)
    seqs = item_sequences(events, start, end, store.num_items)
    items = [item_prompt(t, seqs[i], [""] + texts) for i, t in enumerate(texts, 1)]
    windows = si.prefix_windows(events, start, end, 8)
    users = list(dict.fromkeys(USER_PROMPT.format(items="; ".join(texts[i - 1] for i in w if i > 0))
                               for w in windows.tolist()))
    assert [r["prompt"] for r in listed] == items + users
    assert str(e.value).startswith(f"dry run, nothing sent: {len(listed)} prompt(s) of {len(items) + len(windows)} ")
    llm["dry_run"] = False
    si.build_index(store, view, make_source(SemanticConfig.from_dict(conf.to_dict() | {"llm": llm})), 8, k=2,
                   item_k=2, cache_dir=tmp_path / "sem")
    assert sorted(r[1]["messages"][0]["content"] for r in server.requests) == sorted(r["prompt"] for r in listed)
    llm["dry_run"] = True  # every completion cached: a dry run still stops, with nothing to send
    again = make_source(SemanticConfig.from_dict(conf.to_dict() | {"llm": llm}))
    with pytest.raises(LLMDryRun, match=rf"nothing sent: 0 prompt\(s\) of {len(items) + len(windows)} are not"):
        si.build_index(store, view, again, 8, k=2, item_k=2, cache_dir=tmp_path / "other")
    assert again.summariser.pending == pending and pending.read_text() == ""  # the same prompt set: its list replaced
    with pytest.raises(LLMDryRun, match="the semantic index .* is cached, so the run would send no prompt"):
        si.build_index(store, view, make_source(SemanticConfig.from_dict(conf.to_dict() | {"llm": llm})), 8, k=2,
                       item_k=2, cache_dir=tmp_path / "sem")
    assert len(server.requests) == len(listed)


def test_max_new_prompts_refuses_before_sending_and_caps_direct_calls(fake, tmp_path):
    """max_new_prompts: a build that would send more is refused before one request; one within it runs; a cache
    used directly never sends more than the cap over its life."""
    server = fake()
    store = _toy_store(tmp_path)
    view = leave_one_out(store).train.prefixes()

    def conf(cap):
        return SemanticConfig.from_dict({"source": "hashing", "dim": 32, "cache_dir": str(tmp_path / "sem"),
                                         "llm": {"base_url": server.base_url, "model": "m", "retry_wait": 0,
                                                 "max_new_prompts": cap}})

    with pytest.raises(LLMError, match=r"nothing sent: 4 prompt\(s\) of 4 are not in the cache .* "
                                       r"semantic\.llm\.max_new_prompts is 3 \(a count per process.*Raise it"):
        si.build_index(store, view, make_source(conf(3)), 8, k=2, item_k=2, cache_dir=tmp_path / "sem")
    assert server.requests == []
    si.build_index(store, view, make_source(conf(4)), 8, k=2, item_k=2, cache_dir=tmp_path / "sem")
    assert len(server.requests) == 4  # the items' summaries (prefix_text off: prefixes average item vectors)
    cache = CachedBackend(OpenAIChatBackend(cfg(server.base_url)), tmp_path / "direct.jsonl", chunk=2, max_new=3)
    assert cache.complete(["a", "b"]) == ["S<a>", "S<b>"] and cache.complete(["a", "c"]) == ["S<a>", "S<c>"]
    with pytest.raises(LLMError, match=r"max_new_prompts is 3 \(3 sent already\)"):
        cache.complete(["d"])
    assert len(server.requests) == 4 + 3


def test_preflight_counts_each_new_prompt_once_and_lists_it_atomically(tmp_path):
    path = tmp_path / "c.jsonl"
    CachedBackend(DeterministicBackend(), path).complete(["a"])
    dry = CachedBackend(DeterministicBackend(), path, dry_run=True)
    with pytest.raises(LLMDryRun, match=r"2 prompt\(s\) of 5 are not in the cache .* \(3 characters, about 0 input "
                                        r"tokens at 4 characters a token\); they are listed in .*c\.pending-[0-9a-f]{12}\.jsonl"):
        dry.preflight(iter([["a", "bb", "bb"], ["c", "bb"]]))
    assert [json.loads(x)["prompt"] for x in dry.pending.read_text().splitlines()] == ["bb", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", dry.pending.name]  # no temporary file left
    first = dry.pending
    assert CachedBackend(DeterministicBackend(), path, max_new=2).preflight([["a", "bb", "c", "bb"]]) == \
        {"prompts": 4, "new": 2, "characters": 3}
    with pytest.raises(LLMDryRun, match=r"1 prompt\(s\) of 2 .* listed in"):  # a direct call: its own prompts
        dry.complete(["a", "d"])
    assert [json.loads(x)["prompt"] for x in dry.pending.read_text().splitlines()] == ["d"]
    assert dry.pending != first and first.exists()  # another prompt set, another list
    assert dry.complete(["a"]) == CachedBackend(DeterministicBackend(), path).complete(["a"])  # cached: no stop


def test_a_cap_for_the_items_but_not_the_prefixes_sends_nothing(tmp_path):
    """The guard counts the whole build (items, then prefix prompts) before the first request."""
    store = _toy_store(tmp_path)
    view = leave_one_out(store).train.prefixes()
    src = make_source(SemanticConfig.from_dict({"source": "hashing", "dim": 16, "prefix_text": True,
                                               "cache_dir": str(tmp_path / "sem"),
                                               "llm": {"backend": "deterministic", "max_new_prompts": 4}}))
    sent = []
    answer = src.summariser.backend.complete
    src.summariser.backend.complete = lambda ps: (sent.extend(ps), answer(ps))[1]
    with pytest.raises(LLMError, match=r"nothing sent: 7 prompt\(s\) of 7 .*max_new_prompts is 4"):
        si.build_index(store, view, src, 8, k=2, item_k=2, cache_dir=tmp_path / "sem")
    assert sent == []


def test_runs_sharing_a_cache_rarely_ask_the_same_prompt(tmp_path):
    """Two runs started together on one cache file (parallel seeds): each chunk starts at a random place, so they
    do not follow each other chunk for chunk (in order, each would ask all 512)."""
    sent = []

    class Slow(DeterministicBackend):
        def complete(self, prompts):
            time.sleep(0.01)
            sent.extend(prompts)
            return super().complete(prompts)

    prompts = [f"prompt {i}" for i in range(512)]
    caches = [CachedBackend(Slow(), tmp_path / "shared.jsonl", chunk=8) for _ in range(2)]
    answers = [None, None]

    def run(i):
        answers[i] = caches[i].complete(prompts)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert answers[0] == answers[1] == DeterministicBackend().complete(prompts)
    assert len(set(sent)) == 512 and len(sent) < 1.5 * 512


def test_a_cache_cleared_while_a_run_asks_still_gives_every_answer(tmp_path):
    """Another process deletes the cache file between two chunks: the run's answers (those it had, those it
    received) are still returned, and what it appends afterwards starts the new file."""
    path = tmp_path / "c.jsonl"
    CachedBackend(DeterministicBackend(), path).complete(["old"])

    class Clearing(DeterministicBackend):
        calls = 0

        def complete(self, prompts):
            Clearing.calls += 1
            if Clearing.calls == 2:
                path.unlink()
            return super().complete(prompts)

    prompts = ["old"] + [f"p{i}" for i in range(12)]
    got = CachedBackend(Clearing(), path, chunk=4).complete(prompts)
    assert got == DeterministicBackend().complete(prompts) and Clearing.calls == 3
    assert len(path.read_text().splitlines()) == 8  # the chunks appended after the deletion


def test_the_cli_dry_run_prints_the_count_and_exits_0_leaving_no_run(tmp_path, capsys, monkeypatch):
    from behaviorseq.cli import main

    _toy_store(tmp_path)
    args = ["train", "--model", "sracl", "--data", str(tmp_path / "toy"), "--out", str(tmp_path / "run"),
            "model.semantic.source=hashing", "model.semantic.llm.backend=deterministic", f"model.semantic.cache_dir="
            f"{tmp_path / 'sem'}", "data.cache_dir=" + str(tmp_path / "c"), "model.max_len=8", "model.k=2",
            "model.item_k=2", "eval.ks=[2,10]", "train.epochs=1", "train.early_stop_metric=ndcg@10",
            "model.semantic.llm.dry_run=true"]
    rc = main(args)
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("dry run, nothing sent: 4 prompt(s) of 4") and not (tmp_path / "run").exists()
    assert main(args[:-1] + ["model.semantic.llm.dry_run=false"]) == 0 and (tmp_path / "run" / "metrics.json").exists()
    capsys.readouterr()
    rc = main(args + ["--overwrite"])  # the index is cached now: the dry run stops all the same, the run untouched
    assert rc == 0 and "the semantic index" in capsys.readouterr().out and (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.setenv("RANK", "1")  # under torchrun: printed by rank 0 only
    assert main(args + ["--overwrite"]) == 0 and capsys.readouterr().out == ""


def _ddp_attach_worker(rank: int, world: int, init: str, cfg: dict, record: str | None = None) -> None:
    from datetime import timedelta

    import torch

    from behaviorseq.train.run import prepare, resolve_config

    # a default-group timeout shorter than rank 0's build: the other ranks must not wait on that group
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                                         timeout=timedelta(seconds=2))
    try:
        prepare(resolve_config(cfg))  # builds the model and attaches its semantic index
    except Exception as e:
        if record is None:
            raise
        with open(f"{record}.{rank}", "w") as f:  # what each rank raised
            f.write(f"{type(e).__name__}: {e}")
    torch.distributed.destroy_process_group()


def test_distributed_ranks_ask_the_llm_once(fake, tmp_path):
    """Under DDP rank 0 builds the index (and asks the LLM) first, for longer than the default group's timeout;
    the other ranks then read its cache entry."""
    import torch

    server = fake(delay=0.3)
    _toy_store(tmp_path)
    cfg = {"model": "sracl",
           "model_config": {"max_len": 8, "hidden_size": 16, "k": 2, "item_k": 2,
                            "semantic": {"source": "hashing", "dim": 16, "prefix_text": True, "cache_dir": str(tmp_path / "sem"),
                                         "llm": {"base_url": server.base_url, "model": "m", "retry_wait": 0,
                                                 "concurrency": 1}}},
           "data": {"dataset": str(tmp_path / "toy"), "cache_dir": str(tmp_path / "c")},
           "train": {"epochs": 1, "batch_size": 8, "seed": 1, "threads": 1}, "eval": {"ks": [2, 10]}}
    t0 = time.perf_counter()
    torch.multiprocessing.spawn(_ddp_attach_worker, args=(2, f"file://{tmp_path / 'pg'}", cfg), nprocs=2)
    prompts = [r[1]["messages"][0]["content"] for r in server.requests]
    assert len(prompts) == len(set(prompts)) > 4  # each item and prefix prompt asked once, by one rank
    assert time.perf_counter() - t0 > 3  # rank 0's build outlasted the default group's timeout


def test_a_failure_of_rank_0_is_every_ranks(tmp_path):
    """A dry run (or an LLM error) on rank 0, which builds the index: every rank raises the same exception, none is
    left with a broken connection (the CLI prints the dry run and exits 0 on each)."""
    import torch

    _toy_store(tmp_path)
    cfg = {"model": "sracl",
           "model_config": {"max_len": 8, "hidden_size": 16, "k": 2, "item_k": 2,
                            "semantic": {"source": "hashing", "dim": 16, "cache_dir": str(tmp_path / "sem"),
                                         "llm": {"backend": "deterministic", "dry_run": True}}},
           "data": {"dataset": str(tmp_path / "toy"), "cache_dir": str(tmp_path / "c")},
           "train": {"epochs": 1, "batch_size": 8, "seed": 1, "threads": 1}, "eval": {"ks": [2, 10]}}
    record = str(tmp_path / "raised")
    torch.multiprocessing.spawn(_ddp_attach_worker, args=(2, f"file://{tmp_path / 'pg'}", cfg, record), nprocs=2)
    raised = [open(f"{record}.{r}").read() for r in range(2)]
    assert raised[0] == raised[1] and raised[0].startswith("LLMDryRun: dry run, nothing sent: 4 prompt(s) of 4")


def _rank0_worker(rank: int, world: int, init: str, record: str) -> None:
    import urllib.error

    import torch

    from behaviorseq.utils import rank0_first

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)

    def build():
        raise urllib.error.HTTPError("http://x/v1", 503, "busy", {}, None)  # its constructor needs 5 arguments

    try:
        rank0_first(build, __import__("datetime").timedelta(seconds=30))
    except Exception as e:
        with open(f"{record}.{rank}", "w") as f:
            f.write(f"{type(e).__name__}: {e}")
    torch.distributed.destroy_process_group()


def test_an_exception_that_cannot_be_pickled_reaches_the_other_ranks_by_name(tmp_path):
    import torch

    record = str(tmp_path / "raised")
    torch.multiprocessing.spawn(_rank0_worker, args=(2, f"file://{tmp_path / 'pg'}", record), nprocs=2)
    assert open(f"{record}.0").read() == "HTTPError: HTTP Error 503: busy"
    assert open(f"{record}.1").read() == "RuntimeError: rank 0 failed: HTTPError: HTTP Error 503: busy"



def test_a_connect_timeout_is_unreachable_and_a_proxy_is_named(monkeypatch):
    import urllib.error
    import urllib.request

    from behaviorseq.llm import backends

    calls = []

    def dropped(req, timeout=None):  # a host that drops packets: the connect times out (URLError around it)
        calls.append(timeout)
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(urllib.request, "urlopen", dropped)
    with pytest.raises(LLMError, match="cannot reach the LLM endpoint"):
        OpenAIChatBackend(LLMConfig(base_url="http://10.255.255.1/v1", model="m", retries=6, retry_wait=0.01),
                          "semantic.llm").complete(["a"])
    assert len(calls) == 1  # not 7 tries of the whole timeout each before anything was ever reached
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert "NO_PROXY=llm.example bypasses it" in backends._proxy_note("http://llm.example/v1/chat/completions")
    monkeypatch.setenv("NO_PROXY", "llm.example")
    assert backends._proxy_note("http://llm.example/v1/chat/completions") == ""
