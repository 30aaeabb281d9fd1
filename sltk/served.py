"""Generation from a served model through an OpenAI-compatible HTTP API.

`OpenAIBackend` has the same `generate()` contract as `HFBackend`, so a model behind vLLM,
llama.cpp, `transformers serve` or any OpenAI-compatible endpoint (a stronger judge, say) can
stand in for the in-process model. Requests without a pre-fill go to `/chat/completions`;
requests that continue an assistant pre-fill go to `/completions` with the prompt rendered
locally by the model's chat template, since chat endpoints cannot continue a partial turn.
Only the standard library is used for HTTP.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from . import faults, progress
from .chat import (
    BASE,
    FINISH_REASONS,
    ChatRequest,
    Completion,
    ModelError,
    PromptError,
    Sampling,
    first_tokens,
    render_prompt,
    request_seeds,
    validate,
)

MAX_STOPS = 4  # the OpenAI API accepts at most four stop strings
TOP_LOGPROBS = 20  # vLLM's default limit of log-probabilities per position
EXTRA_FIELDS = ("top_k", "repetition_penalty")  # sampling fields outside the OpenAI schema
FIX = "is the server running, and is the base_url right?"


class ServerError(RuntimeError):
    """The server could not be reached or kept failing; the message names the URL and the fix."""


class RequestRejected(ServerError):
    """The server refused a request (a 4xx other than 429); the message carries its reason."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LogprobsUnavailable(ServerError):
    """The server answered without the log-probabilities that a forced choice reads."""


class _HTTPFailure(Exception):
    """One failed attempt: the HTTP status (None for a connection error or timeout) and a message."""

    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def _error_message(body: bytes) -> str:
    """The server's reason from an error body: OpenAI's error.message, FastAPI's detail, or the text."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("detail", "message", "error"):
            if data.get(key):
                return str(data[key])
    return text.strip()[:500]


def _logsumexp(values: list[float]) -> float:
    if not values:
        return float("-inf")
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def cut_at_stops(text: str, stops) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class OpenAIBackend:
    """Generation through an OpenAI-compatible server, with HFBackend's `generate()` contract.

    `roles` maps an sltk role ("generator", "extender"; None or "base" for the base model) to a
    served model or LoRA name; roles not listed fall back to `model` only for the base.
    `tokenizer` (a Hugging Face tokenizer or a path to one) renders prompts for pre-filled
    requests. `context` (the served model's context length, with a tokenizer) caps each request's
    max_tokens to the room its prompt leaves, as servers such as vLLM refuse anything longer.
    `extra_body` is merged into every request body (e.g. a server's own options).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        roles: dict[str | None, str] | None = None,
        concurrency: int = 8,
        timeout: float = 600.0,
        retries: int = 4,
        backoff: float = 1.0,
        tokenizer=None,
        progress: bool = True,
        extra_body: dict | None = None,
        context: int | None = None,
    ):
        if context and tokenizer is None:
            raise ModelError("context= needs tokenizer= to count prompt tokens: pass the served model's tokenizer.")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "none"  # sent, never shown
        self.roles = dict(roles or {})
        self.concurrency = max(1, int(concurrency))
        self.timeout, self.retries, self.backoff = timeout, max(0, int(retries)), backoff
        self._tokenizer = tokenizer
        self.progress = progress
        self.extra_body = dict(extra_body or {})
        self.context = context
        self.send_extra_fields = True  # turned off once the server rejects top_k / repetition_penalty
        self.last_stats: dict = {}

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    # -- public -------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The tokenizer, loaded on first use when given as a path."""
        if isinstance(self._tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer)
        return self._tokenizer

    def served_model(self, role: str | None) -> str:
        """The served model name for an sltk role."""
        if role in self.roles:
            return self.roles[role]
        if role in (None, BASE):
            return self.roles.get(None) or self.roles.get(BASE) or self.model
        raise ModelError(f"No served model for role '{role}': pass roles={{'{role}': '<served model or LoRA name>'}} "
                         f"(known roles: {sorted(map(str, self.roles))}).")

    def models(self) -> list[str]:
        """The model ids the server lists at /models."""
        data = self._call("GET", "/models", None)
        return [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]

    def load_adapter(self, name: str, folder: str | os.PathLike) -> bool:
        """Ask the server to load a LoRA adapter folder as `name`: vLLM's runtime LoRA API under the base URL,
        else SGLang's at the server's root. False when the server has neither; True when it loaded it or had
        it already."""
        try:
            self._adapter_call("load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        except RequestRejected as exc:
            if exc.status in (404, 405):
                return False
            if "already" not in str(exc).lower():
                raise
        return True

    def unload_adapter(self, name: str) -> None:
        """Ask the server to unload the LoRA adapter `name`; one it does not have is not an error."""
        try:
            self._adapter_call("unload_lora_adapter", {"lora_name": name})
        except RequestRejected as exc:
            if exc.status not in (400, 404, 405):
                raise

    def _adapter_call(self, endpoint: str, body: dict) -> None:
        try:
            self._call("POST", f"/{endpoint}", body, json_answer=False)
        except RequestRejected as exc:
            if exc.status not in (404, 405) or not self.base_url.endswith("/v1"):
                raise
            self._call("POST", f"/{endpoint}", body, json_answer=False, base=self.base_url.removesuffix("/v1"))

    def choice_logprobs(self, requests: list[ChatRequest], options: dict[str, list[str]],
                        desc: str = "score") -> list[dict[str, float]]:
        """HFBackend's forced choice through `/completions`: for each request, the log-probability that the
        answer starts with each option (its spellings' first tokens, summed), read from the first answer
        token's top log-probabilities. An option outside them counts as -inf. Raises LogprobsUnavailable
        when the server answers without log-probabilities."""
        tok = self.tokenizer
        if tok is None:
            raise ModelError("A forced choice on a server renders the prompt locally: pass tokenizer=<the served "
                             "model's tokenizer or its path>.")
        firsts = {label: [tok.decode([i]) for i in ids] for label, ids in first_tokens(tok, options).items()}
        for req in requests:
            validate(req)
        bodies = [{"model": self.served_model(r.role), "prompt": self._prompt(r), "max_tokens": 1,
                   "temperature": 0.0, "logprobs": TOP_LOGPROBS, **self.extra_body} for r in requests]
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="sltk-served") as pool:
                answers = list(pool.map(lambda b: self._call("POST", "/completions", b), bodies))
        except RequestRejected as exc:
            if "logprobs" not in str(exc):
                raise
            raise LogprobsUnavailable(f"{exc}; use the sampled judge with this server.") from None
        out = []
        for data in answers:
            try:
                top = data["choices"][0]["logprobs"]["top_logprobs"][0]
            except (KeyError, IndexError, TypeError):
                raise LogprobsUnavailable(f"{self.base_url}/completions answered without top_logprobs, which a "
                                          "forced choice reads; use the sampled judge with this server.") from None
            out.append({label: _logsumexp([top[t] for t in toks if t in top]) for label, toks in firsts.items()})
        faults.point(desc)
        return out

    def generate(
        self,
        requests: list[ChatRequest],
        sampling: Sampling | None = None,
        seed: int | None = 0,
        desc: str = "generate",
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """Generate for every request; results come back in the order of `requests`.

        `on_result(index, completion)` is called in this thread as each request finishes, so a
        caller can save finished work before a later failure raises.
        """
        sampling = sampling or Sampling()
        for req in requests:
            validate(req)
            self.served_model(req.role)
            if req.prefill and self.tokenizer is None:
                raise ModelError(f"Request {req.id or ''} has an assistant pre-fill, which needs the chat template "
                                 "rendered locally: pass tokenizer=<the served model's tokenizer or its path>.")
        seeds = request_seeds(requests, seed)
        results: list[Completion | None] = [None] * len(requests)
        started, tokens, error = time.perf_counter(), 0, None
        bar = progress.bar(len(requests), desc, enabled=self.progress)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="sltk-served")
        try:
            # Prompts are rendered and answers read here: tokenizers are not shared with the threads.
            calls = [self._body(r, sampling, s) for r, s in zip(requests, seeds)]
            pending = {pool.submit(self._one, *call): i for i, call in enumerate(calls)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        results[i] = self._completion(requests[i], fut.result(), sampling)
                    except Exception as exc:  # keep collecting the requests already in flight
                        if error is None:
                            error = exc
                            for other in pending:
                                other.cancel()
                        continue
                    tokens += results[i].tokens
                    if bar is not None:
                        bar.set_postfix_str(f"{tokens / max(time.perf_counter() - started, 1e-9):.1f} tok/s",
                                            refresh=False)
                        bar.update(1)
                    if on_result is not None:
                        on_result(i, results[i])
                pending = {f: i for f, i in pending.items() if not f.cancelled()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # requests left only if on_result raised
            if bar is not None:
                bar.close()
            self._stats(requests, results, tokens, time.perf_counter() - started)
        if error is not None:
            finished = sum(r is not None for r in results)
            if isinstance(error, ServerError):
                raise type(error)(f"{error} ({finished} of {len(requests)} requests finished first)") from error
            raise error
        faults.point(desc)
        return results  # type: ignore[return-value]

    # -- internals ----------------------------------------------------------------------------
    def _stats(self, requests, results, tokens: int, elapsed: float) -> None:
        done = [c for c in results if c is not None]
        self.last_stats = {
            "requests": len(requests),
            "completed": len(done),
            "tokens": tokens,
            "prompt_tokens": sum(c.prompt_tokens for c in done),
            "seconds": elapsed,
            "tokens_per_second": tokens / elapsed if elapsed else 0.0,
            "finish_reasons": {r: sum(c.finish_reason == r for c in done) for r in FINISH_REASONS},
        }

    def _body(self, req: ChatRequest, sampling: Sampling, seed: int) -> tuple[str, dict]:
        """The endpoint and JSON body for one request."""
        body = {
            "model": self.served_model(req.role),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": self._max_tokens(req, req.max_new_tokens or sampling.max_new_tokens),
            "seed": seed,
        }
        stops = [s for s in sampling.stop if s][:MAX_STOPS]
        if stops:
            body["stop"] = stops
        if self.send_extra_fields:
            body.update(top_k=sampling.top_k, repetition_penalty=sampling.repetition_penalty)
            if req.min_new_tokens:
                body["min_tokens"] = req.min_new_tokens  # vLLM's name
        body.update(self.extra_body)
        if req.prefill:
            return "/completions", {**body, "prompt": self._prompt(req)}
        return "/chat/completions", {**body, "messages": req.messages}

    def _max_tokens(self, req: ChatRequest, cap: int) -> int:
        """The token cap, within the room the prompt leaves in `context` when that is known."""
        if not self.context:
            return cap
        prompt = render_prompt(self.tokenizer, req)
        used = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if used >= self.context:
            raise PromptError(f"Request {req.id or ''} has {used} prompt tokens, at or over the served model's "
                              f"context of {self.context}. Shorten the prompt or serve a model with a longer context.")
        return min(cap, self.context - used)

    def _prompt(self, req: ChatRequest) -> str:
        """The chat template with the pre-fill, less a leading BOS the server's tokenizer adds again."""
        tok = self.tokenizer
        text = render_prompt(tok, req)
        bos = getattr(tok, "bos_token", None)
        if bos and text.startswith(bos) and tok("x")["input_ids"][:1] == [tok.bos_token_id]:
            text = text[len(bos):]
        return text

    def _one(self, path: str, body: dict) -> dict:
        """Send one request, dropping the sampling fields outside the OpenAI schema if the server refuses them."""
        if not self.send_extra_fields:
            body = {k: v for k, v in body.items() if k not in EXTRA_FIELDS}
        try:
            return self._call("POST", path, body)
        except RequestRejected as exc:
            if not any(f in body and f in str(exc) for f in EXTRA_FIELDS):
                raise
            self.send_extra_fields = False
            return self._call("POST", path, {k: v for k, v in body.items() if k not in EXTRA_FIELDS})

    def _completion(self, req: ChatRequest, data: dict, sampling: Sampling) -> Completion:
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.base_url}: unexpected answer without choices: {str(data)[:300]}") from None
        raw = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")
        text, stopped = cut_at_stops(raw or "", sampling.stop)
        finish = "length" if choice.get("finish_reason") == "length" and not stopped else "stop"
        usage = data.get("usage") or {}
        tokens = usage.get("completion_tokens")
        if tokens is None:
            tokens = self._count(raw or "")
        return Completion(text, int(tokens), finish, int(usage.get("prompt_tokens") or 0), req.id)

    def _count(self, text: str) -> int:
        """Tokens in `text` when the server reports no usage: by the tokenizer, else a word count."""
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return len(text.split())

    def _call(self, method: str, path: str, body: dict | None, json_answer: bool = True,
              base: str | None = None) -> dict:
        """One API call to `base` (default: the base URL) + `path`, with retries on connection errors, timeouts,
        429 and 5xx (`json_answer=False`: an answer that is not JSON, such as vLLM's plain-text adapter
        messages, reads as {})."""
        url = (base or self.base_url) + path
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 60) * (1 + random.random() / 2))
            try:
                return self._send(method, url, body, json_answer)
            except _HTTPFailure as exc:
                if not exc.retryable:
                    raise RequestRejected(f"{url} refused the request (HTTP {exc.status}): {exc.message}",
                                          exc.status) from None
                last = exc
        tries = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        raise ServerError(f"{url} failed after {tries}; last error: {last.message}. {FIX}")

    def _send(self, method: str, url: str, body: dict | None, json_answer: bool = True) -> dict:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
            if not json_answer:
                try:
                    return json.loads(raw)
                except ValueError:
                    return {}
            return json.loads(raw)
        except urllib.error.HTTPError as exc:
            raise _HTTPFailure(exc.code, _error_message(exc.read())) from None
        except urllib.error.URLError as exc:
            raise _HTTPFailure(None, f"cannot connect ({exc.reason})") from None
        except TimeoutError:
            raise _HTTPFailure(None, f"no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:  # reset or closed mid-answer
            raise _HTTPFailure(None, f"connection lost ({exc.__class__.__name__}: {exc})") from None
        except ValueError as exc:
            raise _HTTPFailure(None, f"answer is not JSON ({exc})") from None
