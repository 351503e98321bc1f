"""Backends that answer profile prompts, and a resumable driver that runs them.

* ``TemplateBackend``: offline and deterministic; writes a profile from the words most shared by
  the user's training items, in the ``<think>...</think><answer>...</answer>`` form, so the whole
  pipeline runs without an LLM.
* ``OpenAIBackend``: POST ``{base_url}/chat/completions`` of any OpenAI-compatible server (vLLM,
  llama.cpp, Ollama, OpenAI...), standard library only, with a timeout and retries with
  exponential back-off on network errors, 429 and 5xx.
* ``generate_answers``: runs a backend over the requests on a thread pool. Each answer is appended
  to the output JSONL and flushed as it arrives; answers already in the file are kept and not
  asked again, so an interrupted run resumes where it stopped. When every user is answered the
  file is rewritten in request order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import http.client
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

from tqdm.auto import tqdm

from recgoat_jax.data.dataset import DataError
from recgoat_jax.features.profiles import ProfileRequest
from recgoat_jax.io_utils import JsonlWriter, write_jsonl_atomic


class Backend(Protocol):
    def complete(self, request: ProfileRequest) -> str:
        """The LLM's full output for one request."""


# --- offline template ----------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_][\w'&-]*", re.UNICODE)
_STOPWORDS = frozenset("""
a an and are as at be but by for from has have in into is it its of on or our that the their this
to was were will with without your you we all any can more most new not one other set so than
very up out over under de la le les et du des
""".split())


def _item_words(text: str) -> set[str]:
    words = {w.strip("'-&").lower() for w in _WORD.findall(text)}
    return {w for w in words if len(w) > 2 and w not in _STOPWORDS}


@dataclasses.dataclass(frozen=True)
class TemplateBackend:
    """Deterministic profile: the words found in the most of the user's items, and a few items.

    Attributes:
      top_words: how many shared words the answer names.
      examples: how many item texts (alphabetically first, cut to 80 characters) it quotes.
    """

    top_words: int = 8
    examples: int = 3

    def complete(self, request: ProfileRequest) -> str:
        counts = collections.Counter()
        for text in request.item_texts:
            counts.update(_item_words(text))
        n = len(request.item_texts)
        # Ties broken alphabetically so the profile never depends on set or dict order.
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.top_words]
        examples = [t if len(t) <= 80 else t[:77] + "..."
                    for t in sorted(request.item_texts)[:self.examples]]
        shared = ", ".join(f"{w} ({c}/{n})" for w, c in ranked) or "no recurring words"
        main = ", ".join(w for w, _ in ranked[:3]) or "varied items"
        think = (f"The user has {n} training item(s). Words shared across them, with how many "
                 f"items mention each: {shared}.")
        answer = (f"Shared attributes: {main}. "
                  f"Style & Aesthetics: drawn to items described as {main}. "
                  f"Function & Usability: prefers items for {main}. "
                  f"Context & Emotion: returns to {main} across {n} item(s). "
                  f"Other: recurring terms {', '.join(w for w, _ in ranked) or 'none'}. "
                  f"Examples: {'; '.join(examples)}.")
        return f"<think>{think}</think><answer>{answer}</answer>"


# --- OpenAI-compatible HTTP ----------------------------------------------------------------------

class LLMRequestError(RuntimeError):
    """A request that failed for good (non-retryable status, or retries exhausted)."""


_RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


@dataclasses.dataclass(frozen=True)
class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server.

    Attributes:
      base_url: e.g. ``http://127.0.0.1:8000/v1``; requests go to ``{base_url}/chat/completions``.
      model: the model name the server expects.
      api_key: sent as ``Authorization: Bearer``; ``None`` sends no header.
      timeout_s: per-request socket timeout.
      max_retries: further attempts after the first on network errors, timeouts, 408/409/429/5xx.
      backoff_s: the first wait; doubled each retry, capped at ``max_backoff_s``. A 429's
        ``Retry-After`` (seconds) is honoured up to that cap.
      temperature, max_tokens: sampling settings sent with every request (``max_tokens`` only
        when set).
      sleep: the waiting function (tests pass a fake).
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int | None = None
    sleep: Callable[[float], None] = time.sleep

    def _body(self, prompt: str) -> bytes:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return json.dumps(body).encode("utf-8")

    def _post(self, data: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions", data=data,
                                     headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))

    def complete(self, request: ProfileRequest) -> str:
        data = self._body(request.prompt)
        where = f"user {request.user}"
        for attempt in range(self.max_retries + 1):
            wait = min(self.backoff_s * 2 ** attempt, self.max_backoff_s)
            try:
                reply = self._post(data)
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                if e.code not in _RETRYABLE_STATUS:
                    raise LLMRequestError(f"{where}: HTTP {e.code} from {self.base_url}: "
                                          f"{detail}") from None
                failure = f"HTTP {e.code}: {detail}"
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.strip().isdigit():
                    wait = min(float(retry_after), self.max_backoff_s)
            except (urllib.error.URLError, TimeoutError, ConnectionError,
                    http.client.HTTPException) as e:
                failure = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except json.JSONDecodeError as e:
                failure = f"reply is not JSON ({e.msg})"
            else:
                return _message_content(reply, where)
            if attempt < self.max_retries:
                self.sleep(wait)
        raise LLMRequestError(f"{where}: gave up after {self.max_retries + 1} attempts; "
                              f"last error: {failure}")


def _message_content(reply: dict, where: str) -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMRequestError(f"{where}: reply has no choices[0].message.content: "
                              f"{json.dumps(reply)[:300]}") from None
    if not isinstance(content, str):
        raise LLMRequestError(f"{where}: choices[0].message.content is not a string")
    return content


# --- resumable driver ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GenerationReport:
    """Outcome of one ``generate_answers`` run.

    Attributes:
      kept: users already answered in the output file before this run (not asked again).
      answered: users answered in this run, in arrival order.
      failed: ``{dense user id: error}`` for the requests that failed for good.
    """

    kept: list[int]
    answered: list[int]
    failed: dict[int, str]


def _answer_record(request: ProfileRequest, text: str) -> dict:
    record = {"user": request.user}
    if request.user_raw is not None:
        record["user_raw"] = request.user_raw
    record["text"] = text
    return record


def load_finished_answers(path: str | os.PathLike) -> dict[int, dict]:
    """Answers already in an output JSONL: ``{dense user id: record}``.

    A last line cut short (the previous run was killed while writing it) is dropped from the file
    with a warning, so that appending goes on from a clean line end.
    """
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        content = f.read()
    complete_end = content.rfind(b"\n") + 1
    if complete_end < len(content):
        warnings.warn(f"{path}: dropped an incomplete last line ({len(content) - complete_end} "
                      "bytes), left by an interrupted run", stacklevel=2)
        with open(path, "r+b") as f:
            f.truncate(complete_end)
    done: dict[int, dict] = {}
    for lineno, line in enumerate(content[:complete_end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            user = record["user"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}:{lineno}: expected a JSON object with a 'user' field; "
                            "move the file away to start over") from None
        done[int(user)] = record
    return done


class _NotSent(Exception):
    """A request left unsent: the failure limit was reached first."""


def generate_answers(requests: Sequence[ProfileRequest], backend: Backend,
                     out_path: str | os.PathLike, *, workers: int = 4,
                     max_consecutive_failures: int = 20,
                     progress: bool = True) -> GenerationReport:
    """Answer every request not yet answered in ``out_path``, appending each as it arrives.

    Args:
      requests: one per user (``profile_requests``).
      backend: anything with ``complete(request) -> str``.
      out_path: answers JSONL (``{"user", "user_raw"?, "text"}`` per line); created if absent.
      workers: concurrent requests.
      max_consecutive_failures: after this many failed requests in a row (server down, wrong
        model name...) the remaining requests are not sent; 0 = never stop early.
    Returns:
      a ``GenerationReport``. When nothing failed, ``out_path`` holds exactly one answer per
      request, in request order. Failed users are not written; running again retries them.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    done = load_finished_answers(out_path)
    wanted = {r.user for r in requests}
    kept = [r.user for r in requests if r.user in done]
    pending = [r for r in requests if r.user not in done]
    answered, failed = [], {}
    with JsonlWriter(out_path, "a", sort_keys=False) as out, \
            concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        # The count of failures in a row lives with the workers: the main thread may fall behind
        # them (a loaded machine), and requests queued behind the limit must not be sent.
        lock, stop, in_a_row = threading.Lock(), threading.Event(), [0]

        def send(request):
            if stop.is_set():
                raise _NotSent()
            try:
                text = backend.complete(request)
            except Exception:
                with lock:
                    in_a_row[0] += 1
                    if in_a_row[0] == max_consecutive_failures:
                        stop.set()
                raise
            with lock:
                in_a_row[0] = 0
            return text

        futures = {pool.submit(send, r): r for r in pending}

        def record(future) -> None:
            """Write the future's answer, or note its failure."""
            request = futures[future]
            if future.cancelled() or isinstance(future.exception(), _NotSent):
                failed[request.user] = (f"not sent: stopped after {max_consecutive_failures} "
                                        "failed requests in a row")
                return
            try:
                text = future.result()
            except Exception as e:  # one user's failure must not lose the others' answers
                failed[request.user] = f"{type(e).__name__}: {e}"
                return
            done[request.user] = _answer_record(request, text)
            out.write(done[request.user])
            answered.append(request.user)

        recorded = set()
        try:
            for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                               desc="profiles", unit="user", disable=not progress):
                recorded.add(future)
                record(future)
                if stop.is_set():
                    for f in futures:
                        f.cancel()
        except BaseException:
            # Interrupted: ask nothing new, but keep the answers of requests already in flight.
            for f in futures:
                f.cancel()
            in_flight = [f for f in futures if f not in recorded and not f.cancelled()]
            for f in concurrent.futures.as_completed(in_flight):
                if f.exception() is None or isinstance(f.exception(), Exception):
                    record(f)
            raise
    if not failed:
        extra = sorted(set(done) - wanted)
        if extra:
            warnings.warn(f"{out_path}: keeps {len(extra)} answers of users with no request "
                          f"(e.g. {extra[:5]})", stacklevel=2)
        ordered = [done[r.user] for r in requests] + [done[u] for u in extra]
        write_jsonl_atomic(out_path, ordered)
    return GenerationReport(kept, answered, failed)
