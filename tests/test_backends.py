"""Backends: the OpenAI-compatible client against a loopback server; vLLM when installed."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from malt_lake.backends import BackendSettings, build_backend
from malt_lake.backends.base import BackendError, GenerationRequest, SamplingParams
from malt_lake.backends.openai_backend import OpenAIBackend
from malt_lake.errors import ConfigError


class ChatServer:
    """A tiny OpenAI-style /v1/chat/completions on 127.0.0.1 with scripted failures."""

    def __init__(self, fail_first: int = 0, status: int = 503, honours_n: bool = True) -> None:
        self.requests: list[dict] = []
        self.fail_first, self.status, self.honours_n = fail_first, status, honours_n
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    failing = len(server.requests) <= server.fail_first
                threading.Event().wait(0.02)
                with server.lock:  # done before replying: the client cannot send its next
                    server.in_flight -= 1  # request before this runs, so no overcount
                if failing:
                    self.send_response(server.status)
                    self.end_headers()
                    self.wfile.write(b'{"error": "busy"}')
                    return
                user = body["messages"][-1]["content"]
                n = body["n"] if server.honours_n else 1
                payload = {"choices": [
                    {"index": i, "message": {"role": "assistant",
                                             "content": f"{user} #{i} Final Answer: {i}"},
                     "finish_reason": "stop"} for i in range(n)],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 5 * n}}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def server():
    srv = ChatServer(fail_first=2)
    yield srv
    srv.close()


def requests(k: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"q{i}", [{"role": "user", "content": f"question {i}"}],
                              adapter="my-lora" if i == 0 else None) for i in range(k)]


def test_openai_backend_retries_bounds_concurrency_and_keeps_order(server):
    backend = OpenAIBackend(server.url, "served-model", concurrency=3)
    out = backend.generate(requests(12), SamplingParams(n=2, max_tokens=9, seed=4))
    assert [len(samples) for samples in out] == [2] * 12
    assert out[5][1].text == "question 5 #1 Final Answer: 1"
    assert out[5][1].n_prompt_tokens == 7 and out[5][1].n_tokens == 5
    assert server.max_in_flight <= 3
    assert len(server.requests) == 12 + 2  # two transient 503s retried
    first = next(r for r in server.requests if r["messages"][-1]["content"] == "question 0")
    assert first["model"] == "my-lora" and first["n"] == 2 and first["seed"] == 4


def test_openai_backend_records_permanent_failures_and_raises_when_all_fail():
    srv = ChatServer(fail_first=1, status=400)
    try:
        backend = OpenAIBackend(srv.url, "m", concurrency=1)
        out = backend.generate(requests(2), SamplingParams(n=2))
        assert out[0][0].error.startswith("HTTP 400") and out[0][1].text is None
        assert out[1][0].text.startswith("question 1")
    finally:
        srv.close()
    dead = OpenAIBackend("http://127.0.0.1:9/v1", "m", max_retries=1)
    with pytest.raises(BackendError, match=r"every request to http://127\.0\.0\.1:9/v1 failed"):
        dead.generate(requests(2), SamplingParams(n=1))


def test_openai_backend_asks_a_server_that_ignores_n_for_the_missing_samples():
    srv = ChatServer(honours_n=False)  # like transformers serve: one choice per request
    try:
        backend = OpenAIBackend(srv.url, "m", concurrency=1)
        out = backend.generate(requests(1), SamplingParams(n=3, max_tokens=9, seed=40))
    finally:
        srv.close()
    assert [c.error for c in out[0]] == [None, None, None]
    assert [(r["n"], r["seed"]) for r in srv.requests] == [(3, 40), (2, 41), (1, 42)]


def test_backend_settings_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="needs base_url"):
        build_backend(BackendSettings(kind="openai", model="m"))
    with pytest.raises(ConfigError, match=r"has no config\.json"):
        build_backend(BackendSettings(kind="transformers", model=str(tmp_path)))
    with pytest.raises(ConfigError, match="does not exist"):
        build_backend(BackendSettings(kind="transformers", model=str(tmp_path / "nope")))


def test_offline_hub_model_is_a_clear_error(monkeypatch):
    from malt_lake.errors import HubUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable, match="not reachable"):
        build_backend(BackendSettings(kind="transformers", model="someorg/some-model"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")
def test_vllm_backend_generates_n_samples_per_request():  # pragma: no cover - GPU only
    backend = build_backend(BackendSettings(kind="vllm", model="embedded"))
    out = backend.generate(requests(3)[1:], SamplingParams(n=3, max_tokens=16))
    assert [len(s) for s in out] == [3, 3]
    assert all(c.text is not None and c.n_tokens > 0 for s in out for c in s)
