"""The OpenAI-compatible backend against a stub server on 127.0.0.1: retries, failures, resume."""

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recgoat_jax.features.llm_backends import (LLMRequestError, OpenAIBackend,
                                               generate_answers, load_finished_answers)
from recgoat_jax.features.profiles import ProfileRequest

N_USERS = 8
MAX_REQUESTS = 60  # the stub refuses to serve more than this: a retry loop cannot run away


def reply_for(prompt: str) -> str:
    return f"<think>about {prompt}</think><answer>profile of {prompt}</answer>"


class StubLLM:
    """Chat-completions stub. ``plan[prompt]`` is a list of statuses to give before succeeding;
    prompts in ``refuse`` always get 400. Counts every request per prompt."""

    def __init__(self):
        self.plan: dict[str, list[int]] = {}
        self.refuse: set[str] = set()
        self.calls: Counter = Counter()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with stub.lock:
                    stub.calls[prompt] += 1
                    stub.bodies.append(body)
                    stub.headers.append(dict(self.headers))
                    total = sum(stub.calls.values())
                    planned = stub.plan.get(prompt, [])
                    status = planned.pop(0) if planned else 200
                if total > MAX_REQUESTS or self.path != "/v1/chat/completions":
                    status = 404
                if prompt in stub.refuse:
                    status = 400
                if status != 200:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "planned failure"}')
                    return
                data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                            "content": reply_for(prompt)}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    with StubLLM() as server:
        yield server


def make_requests(n: int = N_USERS) -> list[ProfileRequest]:
    return [ProfileRequest(u, f"U{u}", (u,), (f"item {u}",), f"prompt-{u}") for u in range(n)]


def backend_for(stub: StubLLM, sleeps: list | None = None, **kw) -> OpenAIBackend:
    sleeps = [] if sleeps is None else sleeps
    kw = {"max_retries": 3, "backoff_s": 0.01, "timeout_s": 5.0, **kw}
    return OpenAIBackend(base_url=stub.url, model="stub-model", sleep=sleeps.append, **kw)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected_records(users):
    return [{"user": u, "user_raw": f"U{u}", "text": reply_for(f"prompt-{u}")} for u in users]


def test_request_carries_model_messages_and_key(stub):
    backend = backend_for(stub, api_key="sk-test", temperature=0.3, max_tokens=77)
    assert backend.complete(make_requests(1)[0]) == reply_for("prompt-0")
    body = stub.bodies[0]
    assert body["model"] == "stub-model" and body["temperature"] == 0.3
    assert body["max_tokens"] == 77
    assert body["messages"] == [{"role": "user", "content": "prompt-0"}]
    assert stub.headers[0]["Authorization"] == "Bearer sk-test"


def test_retries_5xx_and_429_with_exponential_backoff(stub, tmp_path):
    stub.plan = {"prompt-1": [500, 502], "prompt-4": [429], "prompt-6": [503, 500, 500]}
    sleeps = []
    out = tmp_path / "answers.jsonl"
    report = generate_answers(make_requests(), backend_for(stub, sleeps), out, workers=4,
                              progress=False)
    assert report.failed == {} and report.kept == []
    assert sorted(report.answered) == list(range(N_USERS))
    assert stub.calls["prompt-1"] == 3 and stub.calls["prompt-4"] == 2
    assert stub.calls["prompt-6"] == 4
    assert sum(stub.calls.values()) == N_USERS + 6
    # prompt-6 waited 0.01, 0.02, 0.04; prompt-1 0.01, 0.02; the 429's Retry-After: 0 -> 0
    assert sorted(sleeps) == pytest.approx(sorted([0.01, 0.02, 0.04, 0.01, 0.02, 0.0]))
    assert read_jsonl(out) == expected_records(range(N_USERS))  # complete and in user order


def test_gives_up_after_max_retries_and_never_retries_4xx(stub):
    stub.plan = {"prompt-0": [500] * 10}
    stub.refuse = {"prompt-1"}
    backend = backend_for(stub, max_retries=2)
    with pytest.raises(LLMRequestError, match="gave up after 3 attempts; last error: HTTP 500"):
        backend.complete(make_requests(1)[0])
    with pytest.raises(LLMRequestError, match="HTTP 400"):
        backend.complete(make_requests(2)[1])
    assert stub.calls["prompt-0"] == 3 and stub.calls["prompt-1"] == 1


def test_unreachable_server_is_retried_then_reported():
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = []
    backend = OpenAIBackend(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2,
                            backoff_s=0.01, timeout_s=2.0, sleep=sleeps.append)
    with pytest.raises(LLMRequestError, match="gave up after 3 attempts"):
        backend.complete(make_requests(1)[0])
    assert sleeps == [0.01, 0.02]


def test_resume_after_failures_asks_only_for_missing_answers(stub, tmp_path):
    out = tmp_path / "answers.jsonl"
    stub.refuse = {"prompt-2", "prompt-5"}
    report = generate_answers(make_requests(), backend_for(stub), out, workers=3, progress=False)
    assert sorted(report.failed) == [2, 5]
    first_run = read_jsonl(out)  # the answers that did arrive are on disk already
    assert sorted(r["user"] for r in first_run) == [0, 1, 3, 4, 6, 7]

    stub.refuse = set()
    stub.calls.clear()
    report = generate_answers(make_requests(), backend_for(stub), out, workers=3, progress=False)
    assert report.failed == {}
    assert sorted(report.kept) == [0, 1, 3, 4, 6, 7] and sorted(report.answered) == [2, 5]
    assert dict(stub.calls) == {"prompt-2": 1, "prompt-5": 1}
    assert read_jsonl(out) == expected_records(range(N_USERS))


class InterruptAfter:
    """Wraps a backend; the client 'dies' (KeyboardInterrupt) on call number `n`."""

    def __init__(self, backend, n):
        self.backend, self.n, self.count = backend, n, 0
        self.lock = threading.Lock()

    def complete(self, request):
        with self.lock:
            self.count += 1
            if self.count == self.n:
                raise KeyboardInterrupt
        return self.backend.complete(request)


def test_resume_after_the_client_is_killed_midway(stub, tmp_path):
    out = tmp_path / "answers.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_answers(make_requests(), InterruptAfter(backend_for(stub), 4), out, workers=1,
                         progress=False)
    on_disk = [r["user"] for r in read_jsonl(out)]
    # 0, 1, 2 answered before the kill; 4 too if the worker had already sent it (its answer is
    # then kept rather than thrown away); 3 was never sent.
    assert on_disk in ([0, 1, 2], [0, 1, 2, 4])
    assert read_jsonl(out) == expected_records(on_disk)
    assert stub.calls["prompt-3"] == 0
    # The kill also cut a line short while it was being written.
    with open(out, "a") as f:
        f.write('{"user": 3, "user_raw": "U3", "te')
    with pytest.warns(UserWarning, match="incomplete last line"):
        report = generate_answers(make_requests(), backend_for(stub), out, workers=4,
                                  progress=False)
    assert sorted(report.kept) == on_disk
    assert sorted(report.answered) == sorted(set(range(N_USERS)) - set(on_disk))
    assert dict(stub.calls) == {f"prompt-{u}": 1 for u in range(N_USERS)}  # nobody asked twice
    assert read_jsonl(out) == expected_records(range(N_USERS))


def test_load_finished_answers_rejects_a_corrupt_middle_line(tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_text('{"user": 0, "text": "a"}\nnot json\n{"user": 2, "text": "c"}\n')
    with pytest.raises(ValueError, match="answers.jsonl:2"):
        load_finished_answers(out)


def test_stops_sending_after_consecutive_failures(stub, tmp_path):
    stub.refuse = {f"prompt-{u}" for u in range(N_USERS)}  # e.g. a wrong model name: all 400
    report = generate_answers(make_requests(), backend_for(stub), tmp_path / "a.jsonl",
                              workers=1, max_consecutive_failures=3, progress=False)
    assert sum(stub.calls.values()) <= 4  # 3 failures, at most one more already in flight
    assert sorted(report.failed) == list(range(N_USERS)) and report.answered == []
    assert sum("not sent" in why for why in report.failed.values()) >= N_USERS - 4
