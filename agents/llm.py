"""The LLM proposer: any OpenAI-compatible chat-completions endpoint, through the openai SDK.

Each proposal slot is one conversation: the agent gets the rules, the file to improve (the
baseline or the current best), the leaderboard, recent failures, the technique catalog and the
byte headroom; its answer is parsed, applied, checked for duplicates and validated, and a
rejection goes back with its one-line reason for at most `max_repairs` repairs.

Roles: `explorer` (a new structural idea, on the baseline or the current best) and `combiner`
(merge two good candidates: mechanically when their diffs don't overlap, by the agent when they
conflict). Proposals carry the knob ranges the agent declared, for the loop's nested Optuna
search.

Retries are ours, not the SDK's (the client is built with max_retries=0): every HTTP attempt
becomes an event in the run store, the budget is checked before each one, Retry-After is honoured
up to `backoff_max_s`, and the tests drive each path through a real HTTP server.

The API key is read from the environment variable named in the config, handed to the SDK
client and nowhere else: prompts, answers, reasons and events are redacted. Candidates never see
it because the runner builds their environment from an allowlist (harness.sandbox).
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields

import openai

from agents.events import STAGE_OUTCOME, attempt_event
from agents.patches import (
    PatchError,
    apply_answer,
    apply_patch,
    combine,
    diff_hash,
    make_diff,
    one_line,
    parse_edits,
    similarity,
    structure,
)
from agents.prompts import (
    best_first,
    combiner_messages,
    estimate_tokens,
    explorer_messages,
    messages_hash,
    prompt_version,
    repair_message,
)
from harness.proposals import Proposal, ScoredCandidate, SearchView, Validator

log = logging.getLogger(__name__)

EventSink = Callable[[dict], None]


@dataclass(frozen=True)
class LLMConfig:
    """The `[llm]` part of a search config. Prices are per 1,000 tokens, in US dollars."""

    model: str = "gpt-4.1-mini"
    base_url: str | None = None  # None: the SDK's default (api.openai.com, or OPENAI_BASE_URL)
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the variable holding the key; "" = endpoint needs none
    temperature: float = 0.7
    max_tokens: int = 4096  # completion limit per call
    token_limit_param: str = "max_tokens"  # "max_completion_tokens" for OpenAI reasoning models
    max_prompt_tokens: int = 30_000  # context shown is cut down to fit
    concurrency: int = 2  # conversations in flight at once
    max_total_tokens: int | None = None  # budget over the whole search (None or 0 = unlimited)
    max_cost_usd: float | None = None  # None or 0 = unlimited, as in the search config's budget
    price_per_1k_input: float = 0.0
    price_per_1k_output: float = 0.0
    timeout_s: float = 120.0  # per HTTP request
    max_retries: int = 4  # per call, on 429 / 5xx / timeouts / connection errors / malformed bodies
    backoff_s: float = 1.0  # first retry delay; doubles, with jitter
    backoff_max_s: float = 60.0  # cap on any wait, Retry-After included
    max_repairs: int = 2  # rejected answers sent back per conversation
    similarity_threshold: float = 0.9  # near-duplicate above this (see patches.similarity)
    combiner_share: float = 0.3  # share of slots given to the combiner when pairs exist
    explore_from_baseline: float = 0.25  # share of explorer slots that start from the baseline, not the best
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "model": bool(self.model),
            "temperature": 0 <= self.temperature <= 2,
            "max_tokens": self.max_tokens > 0,
            "token_limit_param": self.token_limit_param in ("max_tokens", "max_completion_tokens"),
            "max_prompt_tokens": self.max_prompt_tokens > 0,
            "concurrency": self.concurrency >= 1,
            "max_total_tokens": self.max_total_tokens is None or self.max_total_tokens >= 0,
            "max_cost_usd": self.max_cost_usd is None or self.max_cost_usd >= 0,
            "price_per_1k_input": self.price_per_1k_input >= 0,
            "price_per_1k_output": self.price_per_1k_output >= 0,
            "timeout_s": self.timeout_s > 0,
            "max_retries": self.max_retries >= 0,
            "backoff_s": self.backoff_s >= 0,
            "backoff_max_s": self.backoff_max_s >= 0,
            "max_repairs": self.max_repairs >= 0,
            "similarity_threshold": 0 < self.similarity_threshold <= 1,
            "combiner_share": 0 <= self.combiner_share <= 1,
            "explore_from_baseline": 0 <= self.explore_from_baseline <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"LLMConfig: invalid {bad[0]}={getattr(self, bad[0])!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> LLMConfig:
        """From a TOML table; unknown keys are an error (a typo must not silently do nothing)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"LLMConfig: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = dict(values)
        if values.get("base_url") == "":
            values["base_url"] = None  # "" in TOML: the SDK's default endpoint
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def coerce(cls, config: object) -> LLMConfig:
        """An LLMConfig from itself, a mapping, or any object (such as the search config's `llm`
        section) whose attributes carry some of these fields' names."""
        if isinstance(config, LLMConfig):
            return config
        if isinstance(config, Mapping):
            return cls.from_mapping(config)
        names = [f.name for f in fields(cls)]
        return cls.from_mapping({n: getattr(config, n) for n in names if hasattr(config, n)})


# --------------------------------------------------------------------------------------------
# Secrets

_SECRET_VALUE = re.compile(r"\b(sk|pk|rk|ghp|gho|hf|xox[abp])[-_][A-Za-z0-9_\-]{12,}|Bearer\s+[A-Za-z0-9._\-]{8,}")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with the given secret values and anything shaped like an API key replaced."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "[REDACTED]")
    return _SECRET_VALUE.sub("[REDACTED]", text)


# --------------------------------------------------------------------------------------------
# Budget


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


# --------------------------------------------------------------------------------------------
# One chat completion with retries


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


class _Stop(Exception):
    """A conversation ends without an answer: http_error (event already sent) or budget."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
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


def _classify(e: Exception, timeout_s: float) -> tuple[bool, float | None, str]:
    """(retryable, server's Retry-After, one-line reason) for an exception from the SDK call."""
    if isinstance(e, openai.APITimeoutError):
        return True, None, f"timed out after {timeout_s:g} s"
    if isinstance(e, openai.APIConnectionError):
        return True, None, f"connection error: {one_line(str(e.__cause__ or e), 200)}"
    if isinstance(e, openai.APIStatusError):
        code = e.status_code
        message = one_line(str(getattr(e, "message", "") or e), 200)
        wait = _retry_after(e.response.headers) if e.response is not None else None
        if code == 429:
            return True, wait, f"HTTP 429 rate limited: {message}"
        if code >= 500 or code in (408, 409):
            return True, wait, f"HTTP {code}: {message}"
        return False, None, f"HTTP {code} (not retried): {message}"
    if isinstance(e, openai.APIResponseValidationError | ValueError):
        return True, None, f"malformed response: {one_line(str(e), 200)}"
    raise e


# --------------------------------------------------------------------------------------------
# The proposer


@dataclass
class _Plan:
    role: str  # explorer or combiner
    source: str  # the file the agent edits (baseline, best, or A for the combiner)
    base_label: str
    parents: tuple[ScoredCandidate, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    pair: tuple[ScoredCandidate, ScoredCandidate] | None = None


class LLMProposer:
    """Proposer "llm": see the module docstring."""

    name = "llm"

    def __init__(
        self,
        config: LLMConfig,
        validator: Validator,
        *,
        api_key: str | None = None,
        on_event: EventSink | None = None,
        catalog: Iterable[object] = (),
        budget: Budget | None = None,
    ) -> None:
        config = LLMConfig.coerce(config)
        if api_key is None:
            api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else "unused"
            if not api_key:
                raise ValueError(f"no API key in environment variable {config.api_key_env}")
        self.config = config
        self.techniques = technique_notes(catalog)
        self.budget = budget or Budget.from_config(config)
        self._validator = validator
        self._on_event = on_event or (lambda event: None)
        self._secrets = (api_key,)
        self._client = openai.OpenAI(api_key=api_key, base_url=config.base_url, timeout=config.timeout_s, max_retries=0)
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._seen: set[str] = set()  # hashes of patches this proposer returned
        self._combined: set[frozenset[str]] = set()  # candidate pairs already given to the combiner
        self._history: dict[str, list[str]] = {}  # patch hash or conversation -> [rationale, outcome]
        self._budget_reported = False

    def __repr__(self) -> str:
        return f"LLMProposer(model={self.config.model!r}, base_url={self.config.base_url!r})"

    @property
    def exhausted(self) -> bool:
        """True once the budget stops further calls; the loop may then fall back to the catalog."""
        return self.budget.exhausted

    # Proposer protocol ------------------------------------------------------------------------

    def propose(self, view: SearchView, n: int) -> list[Proposal]:
        if n <= 0:
            return []
        events: queue.Queue[dict] = queue.Queue()
        if self.budget.exhausted:
            self._report_budget(events.put)
            self._drain(events)
            return []
        plans = self._plan(view, n)
        results: list[Proposal | None] = []
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(plans))) as pool:
            futures = [pool.submit(self._run, view, plan, events.put) for plan in plans]
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
                self._drain(events)  # on_event runs in the caller's thread only
            results = [f.result() for f in futures]
        self._drain(events)
        return [p for p in results if p is not None]

    def observe(self, candidate_id: str, proposal: Proposal, val_bpb: float | None, status: str) -> None:
        key = diff_hash(proposal.patch)
        with self._lock:
            if key in self._history:
                score = f", val_bpb {val_bpb:.4f}" if val_bpb is not None else ""
                self._history[key][1] = f"{status}{score} ({candidate_id})"

    # Planning ---------------------------------------------------------------------------------

    def _plan(self, view: SearchView, n: int) -> list[_Plan]:
        ranked = best_first(view.leaderboard)
        with self._lock:
            pairs = [
                (a, b)
                for i, a in enumerate(ranked[:6])
                for b in ranked[i + 1 : 6]
                if a.patch
                and b.patch
                and frozenset((a.candidate_id, b.candidate_id)) not in self._combined
                and self._worth_combining(a.patch, b.patch)
            ]
            plans = []
            for _ in range(n):
                if pairs and self._rng.random() < self.config.combiner_share:
                    a, b = pairs.pop(0)
                    self._combined.add(frozenset((a.candidate_id, b.candidate_id)))
                    plans.append(_Plan("combiner", "", "", (a, b), {**b.env, **a.env}, (a, b)))
                else:
                    from_best = self._rng.random() >= self.config.explore_from_baseline
                    plans.append(self._explorer_plan(view, ranked, from_best))
        return plans

    def _worth_combining(self, a: str, b: str) -> bool:
        """Not when one contains the other (a child and its parent) or they are near-duplicates."""
        sa, sb = structure(a), structure(b)
        return not (sa <= sb or sb <= sa) and similarity(a, b) < self.config.similarity_threshold

    def _explorer_plan(self, view: SearchView, ranked: list[ScoredCandidate], from_best: bool) -> _Plan:
        best = next((c for c in ranked if c.patch), None) if from_best else None
        if best is not None:
            try:
                source = apply_patch(view.baseline_source, best.patch)
                label = f"the current best candidate {best.candidate_id}: the baseline with its diff applied"
                return _Plan("explorer", source, label, (best,), dict(best.env))
            except PatchError:
                pass
        return _Plan("explorer", view.baseline_source, "the baseline")

    # One conversation -------------------------------------------------------------------------

    def _run(self, view: SearchView, plan: _Plan, emit: EventSink) -> Proposal | None:
        conversation = uuid.uuid4().hex[:10]
        first_reason = ""
        if plan.role == "combiner":
            merged, first_reason = self._merge(view, plan, conversation, emit)
            if isinstance(merged, Proposal) or merged is None:
                return merged
        if plan.role == "combiner":
            a, b = plan.pair  # type: ignore[misc]
            messages = combiner_messages(
                view, plan.source, a, b, first_reason, max_tokens=self.config.max_prompt_tokens
            )
        else:
            with self._lock:
                history = [tuple(v) for v in self._history.values()]
            messages = explorer_messages(
                view,
                plan.source,
                plan.base_label,
                parent=plan.parents[0] if plan.parents else None,
                techniques=self.techniques,
                history=history,  # type: ignore[arg-type]
                max_tokens=self.config.max_prompt_tokens,
            )
        return self._converse(view, plan, messages, conversation, emit)

    def _merge(self, view: SearchView, plan: _Plan, conversation: str, emit: EventSink):
        """Try the combiner without the agent. Returns (Proposal | None | "ask", reason for the agent)."""
        a, b = plan.pair  # type: ignore[misc]
        try:
            patch = combine(view.baseline_source, a.patch, b.patch)
        except PatchError as e:
            if e.detail:  # a real conflict: the agent resolves it starting from A
                plan.source = apply_patch(view.baseline_source, a.patch)
                return "ask", f"{e}\n\n{e.detail}"
            self._emit(emit, plan, conversation, 0, "apply_error", str(e))
            return None, ""
        reason = self._duplicate(view, patch, plan.parents)
        if reason:
            self._emit(emit, plan, conversation, 0, "duplicate", reason, patch=patch)
            return None, ""
        validation = self._validator(patch)
        if validation.ok:
            proposal = self._proposal(plan, patch, f"merge of {a.candidate_id} and {b.candidate_id}", {})
            if proposal is not None:
                self._emit(emit, plan, conversation, 0, "ok", "merged without conflicts", patch=patch)
                return proposal, ""
            self._emit(emit, plan, conversation, 0, "duplicate", "proposed already in this batch", patch=patch)
            return None, ""
        outcome = STAGE_OUTCOME.get(validation.stage, "apply_error")
        self._emit(emit, plan, conversation, 0, outcome, f"mechanical merge: {validation.reason}", patch=patch)
        plan.source = apply_patch(view.baseline_source, patch)
        return "ask", f"The diffs merge without overlap, but the merge fails {validation.stage}: {validation.reason}"

    def _converse(
        self, view: SearchView, plan: _Plan, messages: list[dict], conversation: str, emit: EventSink
    ) -> Proposal | None:
        for turn in range(self.config.max_repairs + 1):
            try:
                done = self._complete(messages, plan, conversation, turn, emit)
            except _Stop as stop:
                if stop.outcome == "budget":
                    self._report_budget(emit)
                return None
            outcome, stage, reason, patch, proposal = self._judge(view, plan, done.text)
            if outcome != "ok" and done.finish_reason == "length":
                reason += f" (the answer was cut at {self.config.max_tokens} tokens; answer shorter)"
            self._emit(emit, plan, conversation, turn, outcome, reason, patch=patch, done=done)
            if proposal is not None:
                self._remember(diff_hash(patch), proposal.rationale, "proposed")
                return proposal
            if turn < self.config.max_repairs:
                messages = [*messages, {"role": "assistant", "content": done.text}, repair_message(stage, reason)]
        self._remember(conversation, parse_edits(done.text).rationale, f"{outcome}: {reason}")
        return None

    def _judge(self, view: SearchView, plan: _Plan, text: str) -> tuple[str, str, str, str, Proposal | None]:
        """(outcome, stage, reason, patch, proposal) for one answer."""
        parsed = parse_edits(text)
        if parsed.errors:
            return "parse_error", "parse", parsed.errors[0], "", None
        try:
            new_source = apply_answer(plan.source, parsed)
        except PatchError as e:
            return "apply_error", "apply", str(e), "", None
        patch = make_diff(view.baseline_source, new_source)
        if not patch:
            return "apply_error", "apply", "the change undoes the parent's patch: the file is the baseline", "", None
        reason = self._duplicate(view, patch, plan.parents)
        if reason:
            return "duplicate", "dedup", reason, patch, None
        validation = self._validator(patch)
        if not validation.ok:
            stage = validation.stage if validation.stage in STAGE_OUTCOME else "apply"
            return STAGE_OUTCOME[stage], stage, validation.reason or f"failed at {stage}", patch, None
        source = validation.source or new_source
        knobs = {k: v for k, v in parsed.knob_ranges.items() if re.search(rf"[\"']{k}[\"']", source)}
        proposal = self._proposal(plan, patch, parsed.rationale, knobs)
        if proposal is None:
            return "duplicate", "dedup", "the same change was proposed in this batch", patch, None
        return "ok", "ok", "", patch, proposal

    def _proposal(self, plan: _Plan, patch: str, rationale: str, knobs: dict) -> Proposal | None:
        key = diff_hash(patch)
        with self._lock:
            if key in self._seen:
                return None
            self._seen.add(key)
        return Proposal(
            patch=patch,
            env=dict(plan.env),
            proposer=f"llm:{plan.role}",
            rationale=redact(rationale, self._secrets),
            parents=tuple(c.candidate_id for c in plan.parents),
            knob_ranges=knobs,
        )

    def _duplicate(self, view: SearchView, patch: str, parents: Sequence[ScoredCandidate]) -> str:
        """Why the patch is a (near-)duplicate of an earlier candidate, or "" when it is new."""
        key = diff_hash(patch)
        with self._lock:
            seen = key in self._seen
        if seen or key in view.tried_patch_hashes:
            return f"the same change as an earlier candidate (patch hash {key})"
        base = "".join(c.patch for c in parents)
        if base and not structure(patch) - structure(base):
            return ""  # adds nothing beyond its parents' lines: a merge, new if its hash is
        ids = {c.candidate_id for c in parents}
        earlier = [(c.candidate_id, c.patch) for c in (*view.leaderboard, *view.failures) if c.patch]
        for cid, other in earlier:
            if cid in ids:
                continue
            score = similarity(patch, other, base)
            if score >= self.config.similarity_threshold:
                return f"{score:.2f} similar to candidate {cid}, which was tried already; propose a different idea"
        return ""

    # Calls ------------------------------------------------------------------------------------

    def _complete(self, messages: list[dict], plan: _Plan, conversation: str, turn: int, emit: EventSink) -> Completion:
        cfg = self.config
        messages = [{**m, "content": redact(str(m["content"]), self._secrets)} for m in messages]
        estimate = estimate_tokens(messages)
        prompt_hash = messages_hash(messages)
        for retry in range(cfg.max_retries + 1):
            reservation = self.budget.reserve(estimate, cfg.max_tokens)
            if reservation is None:
                raise _Stop("budget", self.budget.why)
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
            except Exception as e:  # noqa: BLE001 - _classify re-raises what it does not know
                self.budget.release(reservation)
                retryable, server_wait, reason = _classify(e, cfg.timeout_s)
                latency = time.monotonic() - start
                will_retry = retryable and retry < cfg.max_retries
                delay = self._delay(retry, server_wait) if will_retry else 0.0
                if will_retry:
                    reason += f"; retry {retry + 1}/{cfg.max_retries} in {delay:.2f} s"
                self._emit(
                    emit, plan, conversation, turn, "http_error", reason,
                    retry=retry, will_retry=will_retry, latency_s=latency, prompt_hash=prompt_hash,
                )  # fmt: skip
                if not will_retry:
                    raise _Stop("http_error", reason) from None
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

    # Events -----------------------------------------------------------------------------------

    def _emit(
        self,
        emit: EventSink,
        plan: _Plan,
        conversation: str,
        turn: int,
        outcome: str,
        reason: str,
        *,
        patch: str = "",
        done: Completion | None = None,
        retry: int = 0,
        will_retry: bool = False,
        latency_s: float = 0.0,
        prompt_hash: str = "",
    ) -> None:
        event = attempt_event(
            kind="llm_call",
            proposer=f"llm:{plan.role}" if plan.role else "llm",
            role=plan.role,
            outcome=outcome,
            reason=one_line(redact(reason, self._secrets)),
            model=self.config.model,
            conversation=conversation,
            turn=turn,
            retry=done.retry if done else retry,
            will_retry=will_retry,
            prompt_version=prompt_version(),
            prompt_hash=done.prompt_hash if done else prompt_hash,
            prompt_tokens=done.prompt_tokens if done else 0,
            completion_tokens=done.completion_tokens if done else 0,
            usage_estimated=done.usage_estimated if done else False,
            cost_usd=done.cost_usd if done else 0.0,
            latency_s=done.latency_s if done else latency_s,
            patch_hash=diff_hash(patch) if patch else None,
            patch=patch,
            answer=done.text if done else "",
            parents=tuple(c.candidate_id for c in plan.parents),
            spent_tokens=self.budget.spent_tokens,
            spent_usd=self.budget.spent_usd,
        )
        emit(event)

    def _report_budget(self, emit: EventSink) -> None:
        with self._lock:
            if self._budget_reported:
                return
            self._budget_reported = True
        log.warning("LLM proposer stopped: %s", self.budget.why)
        self._emit(emit, _Plan("", "", ""), "", 0, "budget", self.budget.why or "budget exhausted")

    def _drain(self, events: queue.Queue[dict]) -> None:
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                return
            self._on_event(event)

    def _remember(self, key: str, rationale: str, outcome: str) -> None:
        with self._lock:
            self._history[key] = [rationale or "(no rationale)", outcome]


# --------------------------------------------------------------------------------------------
# Construction


def technique_notes(catalog: Iterable[object]) -> list[tuple[str, str]]:
    """(name, description) pairs for the prompt, from pairs or from technique objects with a
    name and a description (or summary)."""
    notes = []
    for t in catalog:
        if isinstance(t, tuple | list) and len(t) == 2:
            notes.append((str(t[0]), str(t[1])))
            continue
        text = getattr(t, "description", None) or getattr(t, "summary", None) or ""
        notes.append((str(getattr(t, "name", t)), str(text)))
    return notes


def llm_unavailable_reason(config: object, environ: Mapping[str, str] | None = None) -> str | None:
    """Why no LLM proposer can run with this config and environment, or None when one can."""
    config = LLMConfig.coerce(config)
    env = os.environ if environ is None else environ
    if config.api_key_env and not env.get(config.api_key_env):
        return f"no API key: environment variable {config.api_key_env} is not set"
    return None


def make_proposer(
    config: object,
    validator: Validator,
    *,
    on_event: EventSink | None = None,
    catalog: Iterable[object] = (),
    budget: Budget | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[LLMProposer | None, str]:
    """(LLMProposer, "") or (None, the reason no LLM can be used) so the loop falls back to the
    offline catalog agent. `config` is an LLMConfig, a mapping or the search config's llm section.
    `on_event` is not called here: the loop records the reason itself."""
    config = LLMConfig.coerce(config)
    env = os.environ if environ is None else environ
    reason = llm_unavailable_reason(config, env)
    if reason is not None:
        log.warning("LLM proposer disabled: %s", reason)
        return None, reason
    key = env[config.api_key_env] if config.api_key_env else "unused"
    proposer = LLMProposer(config, validator, api_key=key, on_event=on_event, catalog=catalog, budget=budget)
    return proposer, ""
