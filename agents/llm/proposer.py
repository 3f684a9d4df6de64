"""The LLM proposer: explorer and combiner conversations, their repairs, and the attempt events.

Each proposal slot is one conversation: the agent gets the rules, the file to improve (the
baseline or the current best), the leaderboard, recent failures, the technique catalog and the
byte headroom; its answer is parsed, applied, checked for duplicates and validated (agents.llm.answers:
apply, compile, static audit, size estimate, then the CPU smoke), and a rejection goes back with its
one-line reason for at most `max_repairs` repairs. Every attempt, with its stage, reason, tokens, cost
and smoke seconds, becomes an event for the run store.

Roles: `explorer` (a new structural idea, on the baseline or the current best) and `combiner`
(merge two good candidates: mechanically when their diffs don't overlap, by the agent when they
conflict). Proposals carry the knob ranges the agent declared, for the loop's nested Optuna
search.

Conversations run in the background, at most `concurrency` at once, each on a snapshot of the view
it was started with; the CPU smoke inside them is bounded on its own (`smoke_concurrency`), so HTTP
waits overlap with smoke runs but smoke runs do not pile up on the CPU. `propose` never waits for
them: it hands over the proposals finished so far and starts new conversations, so the driver keeps
collecting and dispatching runs while an answer (30-60 s with the smoke) is on its way. Attempt
events are queued by the conversation threads and delivered to `on_event` only by the caller's
thread (`propose`, `drain`, `wait`, `close`): the loop's SQLite store is written from the driver
thread alone. `busy` tells the loop that an empty answer means "not yet", not "out of ideas";
`close(timeout)` stops starting conversations and waits, bounded, for the running ones.
`propose_and_wait` is the blocking form, for benchmarks and tests.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agents.events import attempt_event
from agents.llm.answers import AnswerChecker, Verdict, rejected
from agents.llm.client import Budget, CallStopped, ChatClient, Completion
from agents.llm.config import LLMConfig, redact
from agents.patches import PatchError, apply_patch, combine, diff_hash, one_line, parse_edits, similarity, structure
from agents.prompts import best_first, combiner_messages, explorer_messages, prompt_version, repair_message
from harness.proposals import Proposal, ScoredCandidate, SearchView, SmokeCheck, Validator

log = logging.getLogger(__name__)

EventSink = Callable[[dict], None]


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
        smoke: SmokeCheck | None = None,
    ) -> None:
        """`smoke`: the CPU smoke stage run after `validator` passes (make_proposer builds it from the
        config); None skips it."""
        config = LLMConfig.coerce(config)
        if api_key is None:
            api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else "unused"
            if not api_key:
                raise ValueError(f"no API key in environment variable {config.api_key_env}")
        self.config = config
        self.techniques = technique_notes(catalog)
        self.budget = budget or Budget.from_config(config)
        self._on_event = on_event or (lambda event: None)
        self._secrets = (api_key,)
        self._chat = ChatClient(config, self.budget, api_key)
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._checker = AnswerChecker(validator, smoke, config.similarity_threshold, self._returned)
        self._seen: set[str] = set()  # hashes of patches this proposer returned
        self._combined: set[frozenset[str]] = set()  # candidate pairs already given to the combiner
        self._history: dict[str, list[str]] = {}  # patch hash or conversation -> [rationale, outcome]
        self._budget_reported = False
        # The background conversations; everything below is guarded by self._lock.
        self._events: queue.Queue[dict] = queue.Queue()  # filled by conversation threads, emptied by drain()
        self._queued: deque[tuple[SearchView, _Plan]] = deque()  # planned, waiting for a worker
        self._unfinished = 0  # conversations queued or running
        self._workers = 0  # live worker threads, at most config.concurrency
        self._ready: list[Proposal] = []  # finished proposals not handed over yet
        self._errors: list[Exception] = []  # bugs raised in a conversation, re-raised by the next propose
        self._fruitless = 0  # conversations that ended without a proposal since the last one that made one
        self._done = threading.Condition(self._lock)  # notified whenever a conversation ends
        self._closed = threading.Event()

    def _returned(self, key: str) -> bool:
        with self._lock:
            return key in self._seen

    def __repr__(self) -> str:
        return f"LLMProposer(model={self.config.model!r}, base_url={self.config.base_url!r})"

    @property
    def exhausted(self) -> bool:
        """True once the budget stops further calls; the loop may then fall back to the catalog."""
        return self.budget.exhausted

    # Proposer protocol ------------------------------------------------------------------------

    def propose(self, view: SearchView, n: int) -> list[Proposal]:
        """Up to n proposals finished so far, at once; starts conversations on `view` so that, with those
        still running, n are under way (at most `concurrency` at a time). Call from one thread only.

        Empty with `busy` set means "still thinking". Empty with `busy` clear after a round of
        conversations that all failed means "ask again later" (the endpoint is down or the agent keeps
        missing): the loop backs off, and the next call starts a new round."""
        if not self._may_start(n):
            return self._take(n) if n > 0 and self.budget.exhausted else []  # what finished before the budget ran out
        out = self._take(n)
        with self._lock:
            if not out and not self._unfinished and self._fruitless >= self.config.concurrency:
                self._fruitless = 0  # this empty answer makes the loop back off; its next call starts afresh
                return []
            start = min(self.config.concurrency, n - len(out)) - self._unfinished
        if start > 0:
            self._start(view, start)
        return out

    def _may_start(self, n: int) -> bool:
        """Store what finished and re-raise a conversation's error; False when no conversation may start
        (nothing asked for, closed, or the budget is spent: its event is stored here)."""
        self.drain()
        self._raise_error()
        if n <= 0 or self._closed.is_set():
            return False
        if self.budget.exhausted:
            self._report_budget(self._events.put)
            self.drain()
            return False
        return True

    def propose_and_wait(self, view: SearchView, n: int, timeout: float | None = None) -> list[Proposal]:
        """The blocking form: run n conversations on `view` (at most `concurrency` at a time) and return
        what they proposed once they are done or `timeout` seconds have passed."""
        if not self._may_start(n):
            return []
        self._start(view, n)
        self.wait(timeout)
        self._raise_error()
        return self._take(None)

    def observe(self, candidate_id: str, proposal: Proposal, val_bpb: float | None, status: str) -> None:
        key = diff_hash(proposal.patch)
        with self._lock:
            if key in self._history:
                score = f", val_bpb {val_bpb:.4f}" if val_bpb is not None else ""
                self._history[key][1] = f"{status}{score} ({candidate_id})"

    @property
    def busy(self) -> bool:
        """Conversations are queued or running: their proposals (or rejections) are still to come."""
        with self._lock:
            return self._unfinished > 0

    @property
    def saturated(self) -> bool:
        """A propose call now would hand over nothing and start nothing: every slot is busy."""
        with self._lock:
            return not self._ready and self._unfinished >= self.config.concurrency

    def drain(self) -> None:
        """Deliver the events the conversations queued to `on_event`, in the caller's thread. The
        driver calls it every tick, so attempts reach the store while it asks for nothing."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._on_event(event)

    def wait(self, timeout: float | None = None) -> bool:
        """Until no conversation is queued or running (True) or `timeout` seconds passed (False),
        delivering their events meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.drain()
            with self._lock:
                if not self._unfinished:
                    break
                left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if left <= 0:
                    break
                self._done.wait(left)  # wakes early when a conversation ends
        self.drain()
        with self._lock:
            return not self._unfinished

    def close(self, timeout: float = 0.0) -> bool:
        """Start no more conversations, drop the queued ones, ask the running ones to stop before their
        next call, and wait up to `timeout` seconds for them (events delivered). True when none is left.
        A conversation still running afterwards is a daemon thread: it never holds up the process's exit,
        and its events are not delivered (its partial work is simply not recorded)."""
        self._closed.set()
        with self._lock:
            self._unfinished -= len(self._queued)
            self._queued.clear()
            self._done.notify_all()
        return self.wait(timeout)

    def _take(self, n: int | None) -> list[Proposal]:
        """Hand over up to n finished proposals (all with None); each is handed over once."""
        with self._lock:
            cut = len(self._ready) if n is None else n
            out, self._ready = self._ready[:cut], self._ready[cut:]
        return out

    def _raise_error(self) -> None:
        with self._lock:
            error = self._errors.pop(0) if self._errors else None
        if error is not None:
            raise error

    # Background conversations ------------------------------------------------------------------

    def _start(self, view: SearchView, n: int) -> None:
        plans = self._plan(view, n)
        with self._lock:
            self._queued.extend((view, plan) for plan in plans)  # the view is frozen: each keeps its snapshot
            self._unfinished += len(plans)
            spawn = min(self.config.concurrency - self._workers, len(self._queued))
            self._workers += max(spawn, 0)
        for _ in range(spawn):
            # daemon: a conversation stuck in an HTTP call or a smoke run never keeps the driver from exiting
            threading.Thread(target=self._work, name="llm-conversation", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queued:
                    self._workers -= 1
                    return
                view, plan = self._queued.popleft()
            proposal = None
            try:
                if not self._closed.is_set():
                    proposal = self._run(view, plan, self._events.put)
            except Exception as e:  # a bug: the driver hears of it from its next propose call
                log.exception("LLM conversation failed")
                with self._lock:
                    self._errors.append(e)
            with self._lock:
                self._unfinished -= 1
                if proposal is not None:
                    self._ready.append(proposal)
                    self._fruitless = 0
                else:
                    self._fruitless += 1
                self._done.notify_all()

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
            self._emit(emit, plan, conversation, 0, rejected("apply", str(e)))
            return None, ""
        verdict = self._checker.patch(view, patch, plan.parents, plan.env)
        if verdict.stage == "dedup":
            self._emit(emit, plan, conversation, 0, verdict)
            return None, ""
        if verdict.ok:
            proposal = self._proposal(plan, patch, f"merge of {a.candidate_id} and {b.candidate_id}", {})
            if proposal is not None:
                merged = Verdict("ok", "ok", "merged without conflicts", patch, smoke_s=verdict.smoke_s)
                self._emit(emit, plan, conversation, 0, merged)
                return proposal, ""
            self._emit(emit, plan, conversation, 0, rejected("dedup", "proposed already in this batch", patch))
            return None, ""
        failed = Verdict(verdict.outcome, verdict.stage, f"mechanical merge: {verdict.reason}", patch,
                         smoke_s=verdict.smoke_s)
        self._emit(emit, plan, conversation, 0, failed)
        plan.source = apply_patch(view.baseline_source, patch)
        return "ask", f"The diffs merge without overlap, but the merge fails {verdict.stage}: {verdict.reason}"

    def _converse(
        self, view: SearchView, plan: _Plan, messages: list[dict], conversation: str, emit: EventSink
    ) -> Proposal | None:
        """Ask, judge, and send a rejection back for repair, at most max_repairs times."""
        for turn in range(self.config.max_repairs + 1):
            if self._closed.is_set():  # the search is finishing: no new call, nothing half-recorded
                return None
            try:
                done = self._chat.complete(messages, self._http_error_sink(emit, plan, conversation, turn))
            except CallStopped as stop:
                if stop.outcome == "budget":
                    self._report_budget(emit)
                return None
            verdict = self._checker.answer(view, plan.source, plan.parents, plan.env, done.text)
            proposal = self._proposal(plan, verdict.patch, verdict.rationale, verdict.knobs) if verdict.ok else None
            if verdict.ok and proposal is None:
                verdict = rejected("dedup", "the same change was proposed in this batch", verdict.patch)
            if not verdict.ok and done.finish_reason == "length":
                cut = f" (the answer was cut at {self.config.max_tokens} tokens; answer shorter)"
                verdict = Verdict(verdict.outcome, verdict.stage, verdict.reason + cut, verdict.patch,
                                  smoke_s=verdict.smoke_s)
            self._emit(emit, plan, conversation, turn, verdict, done=done)
            if proposal is not None:
                self._remember(diff_hash(proposal.patch), proposal.rationale, "proposed")
                return proposal
            if turn < self.config.max_repairs:
                repair = repair_message(verdict.stage, verdict.reason)
                messages = [*messages, {"role": "assistant", "content": done.text}, repair]
        self._remember(conversation, parse_edits(done.text).rationale, f"{verdict.outcome}: {verdict.reason}")
        return None

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

    # Events -----------------------------------------------------------------------------------

    def _emit(
        self,
        emit: EventSink,
        plan: _Plan,
        conversation: str,
        turn: int,
        verdict: Verdict,
        *,
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
            outcome=verdict.outcome,
            reason=one_line(redact(verdict.reason, self._secrets)),
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
            patch_hash=diff_hash(verdict.patch) if verdict.patch else None,
            patch=verdict.patch,
            smoke_s=round(verdict.smoke_s, 3),
            answer=done.text if done else "",
            parents=tuple(c.candidate_id for c in plan.parents),
            spent_tokens=self.budget.spent_tokens,
            spent_usd=self.budget.spent_usd,
        )
        emit(event)

    def _http_error_sink(self, emit: EventSink, plan: _Plan, conversation: str, turn: int):
        """Where the chat client reports each failed HTTP attempt: an http_error event of this turn."""

        def report(reason: str, retry: int, will_retry: bool, latency_s: float, prompt_hash: str) -> None:
            self._emit(emit, plan, conversation, turn, Verdict("http_error", "http", reason), retry=retry,
                       will_retry=will_retry, latency_s=latency_s, prompt_hash=prompt_hash)

        return report

    def _report_budget(self, emit: EventSink) -> None:
        with self._lock:
            if self._budget_reported:
                return
            self._budget_reported = True
        log.warning("LLM proposer stopped: %s", self.budget.why)
        self._emit(emit, _Plan("", "", ""), "", 0, Verdict("budget", "budget", self.budget.why or "budget exhausted"))

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
    smoke: SmokeCheck | None = None,
    protect: Iterable[Path] = (),
) -> tuple[LLMProposer | None, str]:
    """(LLMProposer, "") or (None, the reason no LLM can be used) so the loop falls back to the
    offline catalog agent. `config` is an LLMConfig, a mapping or the search config's llm section.
    `on_event` is not called here: the loop records the reason itself. With `config.smoke` on, every
    proposal passes the CPU smoke after `validator` (harness.smoke.CpuSmoke on the cpu-smoke track, or
    `smoke` when given). `protect`: folders the smoke may not change besides pgolf's own (the run store)."""
    config = LLMConfig.coerce(config)
    env = os.environ if environ is None else environ
    reason = llm_unavailable_reason(config, env)
    if reason is not None:
        log.warning("LLM proposer disabled: %s", reason)
        return None, reason
    key = env[config.api_key_env] if config.api_key_env else "unused"
    if config.smoke and smoke is None:
        from harness.smoke import CpuSmoke, protected_folders  # torch-free harness code, only when smoking

        smoke = CpuSmoke(steps=config.smoke_steps, timeout_s=config.smoke_timeout_s,
                         concurrency=config.smoke_concurrency, protect=(*protected_folders(), *protect))
    proposer = LLMProposer(config, validator, api_key=key, on_event=on_event, catalog=catalog, budget=budget,
                           smoke=smoke if config.smoke else None)
    return proposer, ""
