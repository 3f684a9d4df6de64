"""The record every proposer attempt produces, for the loop to persist in the run store.

One record per LLM request (failed HTTP attempts included) and per catalog attempt. The loop
passes an `on_event` callable to the proposers and stores what it receives; the proposers call
it from the thread that calls them (`propose`, and the LLM proposer's `drain`, `wait`, `close`),
never from worker threads: their conversations queue events for that thread to deliver.
"""

from __future__ import annotations

import time

OUTCOMES = (
    "ok",  # a proposal that passed validation was returned
    "parse_error",  # the answer held no usable edits
    "apply_error",  # the edits or diff did not apply (or changed nothing)
    "compile_error",
    "audit_error",  # the static legality audit (or a frozen region) rejected the patch
    "size_error",  # the estimated artifact is over the byte cap
    "smoke_error",  # the CPU smoke run failed
    "duplicate",  # same or near-same change as an earlier candidate
    "http_error",  # the request failed (429, 5xx, timeout, connection, malformed body, 4xx)
    "budget",  # the token or money budget stops further calls
)
STAGE_OUTCOME = {
    "parse": "parse_error",
    "apply": "apply_error",
    "compile": "compile_error",
    "audit": "audit_error",
    "size": "size_error",
    "smoke": "smoke_error",
    "dedup": "duplicate",
}


def attempt_event(
    *,
    kind: str,
    proposer: str,
    role: str,
    outcome: str,
    reason: str = "",
    model: str = "",
    conversation: str = "",
    turn: int = 0,
    retry: int = 0,
    will_retry: bool = False,
    prompt_version: str = "",
    prompt_hash: str = "",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    usage_estimated: bool = False,
    cost_usd: float = 0.0,
    latency_s: float = 0.0,
    patch_hash: str | None = None,
    patch: str = "",
    answer: str = "",
    parents: tuple[str, ...] | list[str] = (),
    techniques: tuple[str, ...] | list[str] = (),
    spent_tokens: int = 0,
    spent_usd: float = 0.0,
    smoke_s: float = 0.0,
) -> dict:
    """One attempt record; every key is always present (see the module docstring)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
    return {
        "kind": kind,  # "llm_call" or "catalog"
        "time": time.time(),
        "proposer": proposer,  # the Proposal.proposer it would carry: "llm:explorer", "catalog", ...
        "role": role,  # explorer, combiner, catalog
        "outcome": outcome,
        "reason": reason,  # one line
        "model": model,
        "conversation": conversation,  # id shared by a first answer and its repairs
        "turn": turn,  # 0 = first answer, 1.. = repairs
        "retry": retry,  # HTTP retries taken before this request
        "will_retry": will_retry,  # http_error only: another try follows
        "prompt_version": prompt_version,  # hash of the template files
        "prompt_hash": prompt_hash,  # hash of the exact messages sent
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usage_estimated": usage_estimated,  # the endpoint sent no usage; counted from characters
        "cost_usd": cost_usd,
        "latency_s": latency_s,
        "patch_hash": patch_hash,  # diff_hash of the canonical patch, when the answer produced one
        "patch": patch,
        "answer": answer,  # the raw answer text (secrets redacted)
        "parents": list(parents),
        "techniques": list(techniques),
        "spent_tokens": spent_tokens,  # the budget's totals after this attempt
        "spent_usd": spent_usd,
        "smoke_s": smoke_s,  # seconds this attempt's CPU smoke run took (0 when it did not get that far)
    }
