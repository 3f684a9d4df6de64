"""One chat completion with our own retries, under a shared token and money budget.

Retries are ours, not the SDK's (the client is built with max_retries=0): every HTTP attempt is
reported through `on_http_error` (the proposer turns it into a run-store event), the budget is checked
before each one, Retry-After is honoured up to `backoff_max_s`, and the tests drive each path through a
real HTTP server.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import openai

from agents.llm.config import LLMConfig, redact
from agents.patches import one_line
from agents.prompts import estimate_tokens, messages_hash


@dataclass
class Reservation:
    tokens: int
    cost: float


class Budget:
    """Tokens and money for the whole search. Thread-safe.

    Before each call the proposer reserves the most the call could use (its prompt estimate plus
    max_tokens); a call that could overrun the budget is never made. Once that happens the budget
    is exhausted for good, so the search stops between calls, never inside one.
    """

    def __init__(
        self,
        max_total_tokens: int | None = None,
        max_cost_usd: float | None = None,
        price_per_1k_input: float = 0.0,
        price_per_1k_output: float = 0.0,
        spent_tokens: int = 0,
        spent_usd: float = 0.0,
    ) -> None:
        self.max_total_tokens = max_total_tokens or None  # 0 = unlimited
        self.max_cost_usd = max_cost_usd or None
        self.price_in = price_per_1k_input
        self.price_out = price_per_1k_output
        self.spent_tokens = spent_tokens  # start from the run store's totals when resuming
        self.spent_usd = spent_usd
        self.exhausted = False
        self.why = ""
        self._reserved = Reservation(0, 0.0)
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: LLMConfig, spent_tokens: int = 0, spent_usd: float = 0.0) -> Budget:
        return cls(
            config.max_total_tokens,
            config.max_cost_usd,
            config.price_per_1k_input,
            config.price_per_1k_output,
            spent_tokens,
            spent_usd,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens / 1000 * self.price_in + completion_tokens / 1000 * self.price_out

    def reserve(self, prompt_tokens: int, max_completion: int) -> Reservation | None:
        need = Reservation(prompt_tokens + max_completion, self.cost(prompt_tokens, max_completion))
        with self._lock:
            if self.exhausted:
                return None
            tokens = self.spent_tokens + self._reserved.tokens + need.tokens
            usd = self.spent_usd + self._reserved.cost + need.cost
            if self.max_total_tokens is not None and tokens > self.max_total_tokens:
                spent = f"{self.spent_tokens:,} of {self.max_total_tokens:,} tokens spent"
                self._stop(f"token budget: {spent}, the next call may need {need.tokens:,}")
                return None
            if self.max_cost_usd is not None and usd > self.max_cost_usd + 1e-12:
                spent = f"${self.spent_usd:.4f} of ${self.max_cost_usd:.2f} spent"
                self._stop(f"cost budget: {spent}, the next call may cost ${need.cost:.4f}")
                return None
            self._reserved = Reservation(self._reserved.tokens + need.tokens, self._reserved.cost + need.cost)
            return need

    def _stop(self, why: str) -> None:
        self.exhausted, self.why = True, why

    def release(self, r: Reservation) -> None:
        with self._lock:
            self._reserved = Reservation(self._reserved.tokens - r.tokens, self._reserved.cost - r.cost)

    def settle(self, r: Reservation, prompt_tokens: int, completion_tokens: int) -> float:
        """Replace a reservation by what the call used; returns its cost."""
        cost = self.cost(prompt_tokens, completion_tokens)
        with self._lock:
            self._reserved = Reservation(self._reserved.tokens - r.tokens, self._reserved.cost - r.cost)
            self.spent_tokens += prompt_tokens + completion_tokens
            self.spent_usd += cost
        return cost


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_usd: float
    latency_s: float
    retry: int
    finish_reason: str
    prompt_hash: str


class CallStopped(Exception):
    """A conversation ends without an answer: http_error (already reported) or budget."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


# (reason, retry, will_retry, latency_s, prompt_hash) of one failed HTTP attempt
HttpErrorSink = Callable[[str, int, bool, float, str], None]


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The server's requested wait in seconds (Retry-After-Ms, Retry-After as seconds or a date)."""
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            return parsed.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return None


def classify(e: Exception, timeout_s: float) -> tuple[bool, float | None, str]:
    """(retryable, server's Retry-After, one-line reason) for an exception from the SDK call."""
    if isinstance(e, openai.APITimeoutError):
        return True, None, f"timed out after {timeout_s:g} s"
    if isinstance(e, openai.APIConnectionError):
        return True, None, f"connection error: {one_line(str(e.__cause__ or e), 200)}"
    if isinstance(e, openai.APIStatusError):
        code = e.status_code
        message = one_line(str(getattr(e, "message", "") or e), 200)
        wait = retry_after(e.response.headers) if e.response is not None else None
        if code == 429:
            return True, wait, f"HTTP 429 rate limited: {message}"
        if code >= 500 or code in (408, 409):
            return True, wait, f"HTTP {code}: {message}"
        return False, None, f"HTTP {code} (not retried): {message}"
    if isinstance(e, openai.APIResponseValidationError | ValueError):
        return True, None, f"malformed response: {one_line(str(e), 200)}"
    raise e


class ChatClient:
    """The openai SDK client, our retries and the budget; thread-safe (conversations share one)."""

    def __init__(self, config: LLMConfig, budget: Budget, api_key: str) -> None:
        self.config = config
        self.budget = budget
        self._secrets = (api_key,)
        self._client = openai.OpenAI(api_key=api_key, base_url=config.base_url, timeout=config.timeout_s, max_retries=0)
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()

    def complete(self, messages: list[dict], on_http_error: HttpErrorSink) -> Completion:
        """One answer, after up to max_retries retries; raises CallStopped when there is none."""
        cfg = self.config
        messages = [{**m, "content": redact(str(m["content"]), self._secrets)} for m in messages]
        estimate = estimate_tokens(messages)
        prompt_hash = messages_hash(messages)
        for retry in range(cfg.max_retries + 1):
            reservation = self.budget.reserve(estimate, cfg.max_tokens)
            if reservation is None:
                raise CallStopped("budget", self.budget.why)
            start = time.monotonic()
            try:
                response = self._client.chat.completions.create(
                    model=cfg.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=cfg.temperature,
                    **{cfg.token_limit_param: cfg.max_tokens},
                )
                if not response.choices:
                    raise ValueError("no choices in the response")
            except Exception as e:  # noqa: BLE001 - classify re-raises what it does not know
                self.budget.release(reservation)
                retryable, server_wait, reason = classify(e, cfg.timeout_s)
                latency = time.monotonic() - start
                will_retry = retryable and retry < cfg.max_retries
                delay = self._delay(retry, server_wait) if will_retry else 0.0
                if will_retry:
                    reason += f"; retry {retry + 1}/{cfg.max_retries} in {delay:.2f} s"
                on_http_error(reason, retry, will_retry, latency, prompt_hash)
                if not will_retry:
                    raise CallStopped("http_error", reason) from None
                time.sleep(delay)
                continue
            latency = time.monotonic() - start
            choice = response.choices[0]
            text = redact(choice.message.content or "", self._secrets)
            usage = response.usage
            estimated = usage is None
            prompt_tokens = usage.prompt_tokens if usage is not None else estimate
            completion_tokens = usage.completion_tokens if usage is not None else math.ceil(len(text) / 3)
            cost = self.budget.settle(reservation, prompt_tokens, completion_tokens)
            return Completion(
                text, prompt_tokens, completion_tokens, estimated, cost, latency, retry,
                choice.finish_reason or "", prompt_hash,
            )  # fmt: skip
        raise AssertionError("unreachable")

    def _delay(self, retry: int, server_wait: float | None) -> float:
        cfg = self.config
        if server_wait is not None and server_wait >= 0:
            return min(server_wait, cfg.backoff_max_s)
        base = min(cfg.backoff_max_s, cfg.backoff_s * 2**retry)
        with self._lock:
            jitter = self._rng.random()
        return base * (0.5 + 0.5 * jitter)  # "equal jitter": spreads concurrent retries apart
