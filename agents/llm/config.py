"""The `[llm]` settings of the LLM proposer, and the redaction every text leaving it goes through."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields


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
    smoke: bool = True  # make_proposer adds the CPU smoke stage (harness.smoke) after the validator
    smoke_timeout_s: float = 120.0  # hard limit of one smoke run
    smoke_steps: int = 4
    smoke_concurrency: int = 1  # smoke runs at once across all conversations: they use CPU cores

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
            "smoke_timeout_s": self.smoke_timeout_s > 0,
            "smoke_steps": self.smoke_steps >= 1,
            "smoke_concurrency": self.smoke_concurrency >= 1,
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


_SECRET_VALUE = re.compile(r"\b(sk|pk|rk|ghp|gho|hf|xox[abp])[-_][A-Za-z0-9_\-]{12,}|Bearer\s+[A-Za-z0-9._\-]{8,}")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with the given secret values and anything shaped like an API key replaced."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "[REDACTED]")
    return _SECRET_VALUE.sub("[REDACTED]", text)
