"""Prompts for the LLM agents: versioned templates in agents/prompts/*.md, filled from a SearchView.

Templates use `string.Template` placeholders (`${name}`). `PROMPT_VERSION` is a hash of all the
template files, recorded with every call beside the hash of the exact messages sent, so a result
can always be traced to the prompt that produced it.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from agents.patches import changed_lines, one_line
from harness.proposals import FailedCandidate, ScoredCandidate, SearchView

PROMPT_DIR = Path(__file__).with_name("prompts")
TEMPLATES = ("system", "explorer", "combiner", "repair")
CHARS_PER_TOKEN = 3  # conservative for code; used to keep prompts inside max_prompt_tokens


@cache
def template(name: str) -> string.Template:
    return string.Template((PROMPT_DIR / f"{name}.md").read_text())


@cache
def prompt_version() -> str:
    """Hash of the template files: changes whenever a prompt is edited."""
    h = hashlib.sha256()
    for name in TEMPLATES:
        h.update(name.encode() + b"\0" + (PROMPT_DIR / f"{name}.md").read_bytes() + b"\0")
    return h.hexdigest()[:12]


def messages_hash(messages: Sequence[dict]) -> str:
    """Hash of the exact messages of one call."""
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()[:16]


def estimate_tokens(messages: Sequence[dict]) -> int:
    """An upper-side estimate of the prompt tokens (no tokenizer for arbitrary endpoints)."""
    return sum(len(str(m.get("content", ""))) // CHARS_PER_TOKEN + 8 for m in messages)


@dataclass(frozen=True)
class Detail:
    """How much of the context to show; `shrink` trades detail for prompt length."""

    leaderboard_k: int = 5
    failures_k: int = 8
    diff_lines: int = 80
    catalog_chars: int = 400

    def shrink(self) -> Detail | None:
        if self.diff_lines > 20:
            return Detail(self.leaderboard_k, self.failures_k, self.diff_lines // 2, self.catalog_chars)
        if self.catalog_chars > 120:
            return Detail(self.leaderboard_k, self.failures_k, self.diff_lines, self.catalog_chars // 2)
        if self.leaderboard_k > 1 or self.failures_k > 2:
            return Detail(max(1, self.leaderboard_k - 2), max(2, self.failures_k - 3), self.diff_lines, 120)
        return None


def truncate_diff(diff: str, max_lines: int) -> str:
    lines = diff.rstrip("\n").split("\n")
    if len(lines) <= max_lines:
        return "\n".join(lines)
    return "\n".join(lines[:max_lines] + [f"... ({len(lines) - max_lines} more diff lines)"])


_RUNGS = {"smoke": 0, "screen": 1, "full": 2, "confirm": 3}


def best_first(rows: Sequence[ScoredCandidate]) -> list[ScoredCandidate]:
    """Scored rows, highest rung first, then lowest val_bpb (scores of different rungs don't compare)."""
    scored = [c for c in rows if c.val_bpb is not None]
    return sorted(scored, key=lambda c: (-_RUNGS.get(c.rung, 0), c.val_bpb))


def _score(c: ScoredCandidate) -> str:
    bpb = f"{c.val_bpb:.4f}" if c.val_bpb is not None else "n/a"
    size = f"{c.bytes_total:,} B" if c.bytes_total is not None else "size n/a"
    return f"val_bpb {bpb} at rung {c.rung}, {size}"


def format_leaderboard(rows: Sequence[ScoredCandidate], detail: Detail) -> str:
    if not rows:
        return "(empty: nothing has been scored yet)"
    out = []
    for rank, c in enumerate(rows[: detail.leaderboard_k], 1):
        head = f"{rank}. {c.candidate_id}: {_score(c)}, by {c.proposer or '?'}"
        if c.techniques:
            head += f", techniques {', '.join(c.techniques)}"
        if c.env:
            head += f", env {json.dumps(c.env, sort_keys=True)}"
        block = [head]
        if c.rationale:
            block.append(f"   why: {one_line(c.rationale, 300)}")
        block.append(f"```diff\n{truncate_diff(c.patch, detail.diff_lines)}\n```" if c.patch else "   (no code change)")
        out.append("\n".join(block))
    if len(rows) > detail.leaderboard_k:
        out.append(f"({len(rows) - detail.leaderboard_k} more candidates not shown)")
    return "\n\n".join(out)


def format_failures(rows: Sequence[FailedCandidate], detail: Detail) -> str:
    if not rows:
        return "(none yet)"
    out = []
    for c in list(rows)[-detail.failures_k :]:
        changed = changed_lines(c.patch)[:8] if c.patch else []
        what = "; ".join(one_line(x, 100) for x in changed) or "(no code change)"
        out.append(f"- {c.candidate_id} [{c.status}] {one_line(c.reason, 240)}\n  changed: {one_line(what, 600)}")
    return "\n".join(out)


def format_catalog(techniques: Sequence[tuple[str, str]], detail: Detail) -> str:
    if not techniques:
        return "(no catalog given)"
    return "\n".join(f"- {name}: {one_line(text, detail.catalog_chars)}" for name, text in techniques)


def format_history(history: Sequence[tuple[str, str]]) -> str:
    if not history:
        return "(none yet)"
    return "\n".join(f"- [{outcome}] {one_line(why, 200)}" for why, outcome in list(history)[-10:])


def headroom(view: SearchView, parent: ScoredCandidate | None = None) -> str:
    used = parent.bytes_total if parent is not None and parent.bytes_total is not None else view.baseline_bytes
    code = len(view.baseline_source.encode())
    if used is None:
        return f"cap {view.byte_cap:,} bytes; artifact size not measured yet (the code alone is {code:,} bytes)"
    room = view.byte_cap - used
    what = "the file below" if parent is None else f"candidate {parent.candidate_id}"
    return f"cap {view.byte_cap:,} bytes; {what} uses {used:,} (code {code:,} + model), so {room:,} bytes are left"


def system_message(view: SearchView) -> dict:
    return {"role": "system", "content": template("system").substitute(byte_cap=f"{view.byte_cap:,}")}


def _fit(render, max_tokens: int) -> list[dict]:
    """Render with less and less detail until the messages fit max_tokens (or detail runs out)."""
    detail = Detail()
    while True:
        messages = render(detail)
        smaller = detail.shrink()
        if smaller is None or estimate_tokens(messages) <= max_tokens:
            return messages
        detail = smaller


def explorer_messages(
    view: SearchView,
    source: str,
    base_label: str,
    *,
    parent: ScoredCandidate | None = None,
    techniques: Sequence[tuple[str, str]] = (),
    history: Sequence[tuple[str, str]] = (),
    max_tokens: int = 30_000,
) -> list[dict]:
    def render(detail: Detail) -> list[dict]:
        user = template("explorer").substitute(
            base_label=base_label,
            source=source,
            headroom=headroom(view, parent),
            leaderboard=format_leaderboard(best_first(view.leaderboard), detail),
            failures=format_failures(view.failures, detail),
            history=format_history(history),
            catalog=format_catalog(techniques, detail),
        )
        return [system_message(view), {"role": "user", "content": user}]

    return _fit(render, max_tokens)


def combiner_messages(
    view: SearchView,
    source: str,
    a: ScoredCandidate,
    b: ScoredCandidate,
    conflict: str,
    *,
    max_tokens: int = 30_000,
) -> list[dict]:
    def render(detail: Detail) -> list[dict]:
        lines = max(detail.diff_lines, 40) * 2  # the two diffs are the point here: show more of them
        user = template("combiner").substitute(
            base_label=f"the baseline with candidate {a.candidate_id}'s change applied",
            source=source,
            headroom=headroom(view, a),
            a_label=f"{a.candidate_id}, {_score(a)}",
            a_rationale=one_line(a.rationale or "(none given)", 400),
            a_diff=truncate_diff(a.patch, lines),
            b_label=f"{b.candidate_id}, {_score(b)}",
            b_rationale=one_line(b.rationale or "(none given)", 400),
            b_diff=truncate_diff(b.patch, lines),
            conflict=conflict,
        )
        return [system_message(view), {"role": "user", "content": user}]

    return _fit(render, max_tokens)


_ADVICE = {
    "parse": "Use exactly the markers <<<<<<< SEARCH, =======, >>>>>>> REPLACE on lines of their own.",
    "apply": "Copy the SEARCH lines from the file exactly as they are, with a few unchanged lines around the change.",
    "compile": "The patched file must be valid Python 3.11.",
    "audit": "Keep the idea but remove what breaks the rules.",
    "size": "Make the model or the code smaller, or quantize or compress harder.",
    "smoke": "The tiny CPU run must finish: check shapes, dtypes and device handling.",
    "dedup": "Propose a different idea; if only a number differs, expose it as an environment knob with a range.",
}


def repair_message(stage: str, reason: str) -> dict:
    text = template("repair").substitute(stage=stage, reason=reason, advice=_ADVICE.get(stage, ""))
    return {"role": "user", "content": text.rstrip() + "\n"}
