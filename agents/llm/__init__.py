"""The LLM proposer: any OpenAI-compatible chat-completions endpoint, through the openai SDK.

- `agents.llm.config`: `LLMConfig` (the `[llm]` settings) and `redact`.
- `agents.llm.client`: `ChatClient`, one chat completion with our own retries; `Budget`, the tokens and
  money shared by every conversation.
- `agents.llm.answers`: `AnswerChecker`, an answer to a checked patch: parse, apply, dedup, then the
  pre-flight pipeline (apply, compile, static audit, size estimate, CPU smoke).
- `agents.llm.proposer`: `LLMProposer` (explorer and combiner conversations, bounded repairs, the
  attempt events for the run store), `make_proposer`, `llm_unavailable_reason`.

The API key is read from the environment variable named in the config, handed to the SDK client and
nowhere else: prompts, answers, reasons and events are redacted. Candidates never see it because the
runner builds their environment from an allowlist (harness.sandbox).
"""

from agents.llm.answers import AnswerChecker, Verdict
from agents.llm.client import Budget, CallStopped, ChatClient, Completion, Reservation
from agents.llm.config import LLMConfig, redact
from agents.llm.proposer import LLMProposer, llm_unavailable_reason, make_proposer, technique_notes

__all__ = [
    "AnswerChecker",
    "Budget",
    "CallStopped",
    "ChatClient",
    "Completion",
    "LLMConfig",
    "LLMProposer",
    "Reservation",
    "Verdict",
    "llm_unavailable_reason",
    "make_proposer",
    "redact",
    "technique_notes",
]
