"""LLM proposer throughput: proposals per minute, share of conversations that reach a trainable
candidate (Validation.ok), and tokens per trainable candidate.

By default it runs against the scripted OpenAI-compatible server of the tests (a real HTTP server
on 127.0.0.1, through the real openai client) answering with a seeded mix: valid patches, prose
with no edits, patches that do not apply, patches that read validation data during training
(rejected by the audit when harness/audit.py is present), patches that crash at runtime (a shape
error in the MLP: only the CPU smoke catches them), and 429s with a short Retry-After. Repair turns are
answered well most of the time, so the numbers show what repairs recover.

    python bench/agents.py [--proposals 60] [--concurrency 4] [--seed 0]
    python bench/agents.py --smoke --proposals 8   # the whole pipeline: CPU smoke included (seconds each)

Against a real endpoint (any OpenAI-compatible server; the key is read from the named variable
and never printed):

    OPENAI_API_KEY=... python bench/agents.py --base-url https://api.openai.com/v1 \\
        --model gpt-4.1-mini --api-key-env OPENAI_API_KEY --proposals 10 --concurrency 2
    python bench/agents.py --base-url http://127.0.0.1:8000/v1 --model my-model --api-key-env ""  # keyless

The validator is the search's pre-flight on the cpu-smoke track: apply -> compile -> the static audit ->
size estimate, then with --smoke the CPU smoke (a few steps of the tiny model through the sandboxed
runner, on the local corpus built once under data/), as a search runs it for every LLM proposal. Without
--smoke, "trainable" means "passes the checks that need no GPU and no data", and the runtime crashes of
the mix count as trainable; with it, they come back as repairs and the smoke's seconds are reported.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agents.llm import LLMConfig, LLMProposer  # noqa: E402
from agents.patches import diff_hash  # noqa: E402
from harness.proposals import SearchView, Validator  # noqa: E402

FALLBACK_BASELINE = """import os

import torch


class Hyperparameters:
    iterations = int(os.environ.get("ITERATIONS", 20))
    model_dim = int(os.environ.get("MODEL_DIM", 64))
    val_files = os.path.join(os.environ.get("DATA_PATH", "."), "fineweb_val_*.bin")


def mlp(x):
    return torch.relu(x) ** 2


def main():
    args = Hyperparameters()
    for step in range(args.iterations):
        loss = mlp(torch.randn(4, args.model_dim)).mean()
    print(f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{loss:.8f}")


if __name__ == "__main__":
    main()
"""


def load_baseline() -> str:
    path = ROOT / "trainer" / "train_gpt.py"
    return path.read_text() if path.exists() else FALLBACK_BASELINE


def make_validator(baseline: str) -> Validator:
    """The search's own static pre-flight (apply, compile, audit, size estimate) on the cpu-smoke track."""
    from harness.config import load_track
    from harness.preflight import Preflight

    track = load_track("cpu-smoke")
    return Preflight(baseline, track.env, track.byte_cap)


class ScriptedAgent:
    """Answers like an imperfect coding agent, from a seeded mix, against the real baseline."""

    MIX = {"good": 0.4, "prose": 0.1, "no_apply": 0.15, "val_leak": 0.1, "runtime_crash": 0.15, "rate_limit": 0.1}
    MLP = "        return self.proj(F.relu(self.fc(x)).square())"

    def __init__(self, baseline: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lines = baseline.split("\n")
        self.defs = [line for line in self.lines if re.match(r"^def \w+\(", line) and self.lines.count(line) == 1]
        self.n = 0

    def __call__(self, request):
        from openai_server import Answer, Status

        repair = len(request.messages) > 2
        kind = "good" if repair and self.rng.random() < 0.8 else self._pick()
        if kind == "rate_limit":
            return Status(429, retry_after="0.05")
        return Answer(getattr(self, kind)())

    def _pick(self) -> str:
        x, acc = self.rng.random(), 0.0
        for kind, p in self.MIX.items():
            acc += p
            if x < acc:
                return kind
        return "good"

    def _block(self, search: str, replace: str, why: str) -> str:
        block = f"train_gpt.py\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"
        return f"RATIONALE: {why}\n\n```python\n{block}\n```\n"

    def good(self) -> str:
        self.n += 1
        anchor = self.rng.choice(self.defs)
        name = f"BENCH_IDEA_{self.n}"
        knob = f'{name.lower()} = float(os.environ.get("{name}", 0.5))'
        answer = self._block(anchor, f"{knob}\n\n\n{anchor}", f"Idea {self.n}: a new tunable constant.")
        return answer + f'\n```json\n{{"knobs": {{"{name}": {{"low": 0.1, "high": 0.9}}}}}}\n```\n'

    def runtime_crash(self) -> str:
        """Applies, compiles and audits clean, then fails in forward: the MLP output loses columns."""
        if self.MLP not in self.lines:
            return self.no_apply()
        self.n += 1
        crash = self.MLP.replace(".square())", f".square()[..., : x.size(-1) - {self.n}])")
        return self._block(self.MLP, crash, f"Idea {self.n}: a narrower MLP output.")

    def prose(self) -> str:
        return "I would increase the model width and use a cosine schedule; that should help."

    def no_apply(self) -> str:
        anchor = self.rng.choice(self.defs)
        return self._block(anchor.replace("def ", "def  "), anchor, "Reformat a function.")

    def val_leak(self) -> str:
        self.n += 1
        anchor = self.rng.choice(self.defs)
        peek = f"def val_peek_{self.n}(model, val_tokens):\n    model(val_tokens).mean().backward()"
        return self._block(anchor, f"{peek}\n\n\n{anchor}", "Adapt on validation tokens first.")


def run(proposer: LLMProposer, baseline: str, target: int, batch: int) -> tuple[int, float]:
    tried: set[str] = set()
    slots = produced = 0
    start = time.monotonic()
    while slots < target and not proposer.exhausted:
        n = min(batch, target - slots)
        view = SearchView(baseline, "bench", "cpu-smoke", 400_000, None, (), (), frozenset(tried))  # as the validator
        out = proposer.propose_and_wait(view, n)  # one round at a time: slots are counted per round
        slots += n
        produced += len(out)
        tried |= {diff_hash(p.patch) for p in out}
    return produced, time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proposals", type=int, default=60, help="conversations (proposal slots) to run")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-repairs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-url", default="", help="a real OpenAI-compatible endpoint instead of the scripted one")
    ap.add_argument("--model", default="scripted-model")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help='variable holding the key ("" = none needed)')
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--price-in", type=float, default=0.002, help="USD per 1,000 prompt tokens")
    ap.add_argument("--price-out", type=float, default=0.008, help="USD per 1,000 completion tokens")
    ap.add_argument("--smoke", action="store_true", help="add the CPU smoke stage (seconds per proposal)")
    ap.add_argument("--smoke-steps", type=int, default=4)
    ap.add_argument("--smoke-concurrency", type=int, default=1)
    args = ap.parse_args()

    baseline = load_baseline()
    validate = make_validator(baseline)
    smoke = None
    if args.smoke:
        from harness.smoke import CpuSmoke

        smoke = CpuSmoke(steps=args.smoke_steps, concurrency=args.smoke_concurrency)
        smoke.data()  # the local corpus, built once before the clock starts
    events: list[dict] = []
    common = dict(
        model=args.model,
        concurrency=args.concurrency,
        max_repairs=args.max_repairs,
        max_tokens=args.max_tokens,
        price_per_1k_input=args.price_in,
        price_per_1k_output=args.price_out,
        seed=args.seed,
    )
    server = None
    if args.base_url:
        config = LLMConfig(base_url=args.base_url, api_key_env=args.api_key_env, **common)
        proposer = LLMProposer(config, validate, on_event=events.append, smoke=smoke)
        where = args.base_url
    else:
        from openai_server import ScriptedOpenAIServer

        server = ScriptedOpenAIServer().start()
        server.set_responder(ScriptedAgent(baseline, args.seed))
        config = LLMConfig(base_url=server.base_url, api_key_env="", backoff_s=0.05, timeout_s=10, **common)
        proposer = LLMProposer(config, validate, api_key="sk-bench-not-a-real-key", on_event=events.append,
                               smoke=smoke)
        where = "the scripted server (mix: " + ", ".join(f"{k} {v:.0%}" for k, v in ScriptedAgent.MIX.items()) + ")"
    try:
        produced, seconds = run(proposer, baseline, args.proposals, max(args.concurrency, 1))
    finally:
        if server is not None:
            server.close()

    calls = [e for e in events if e["outcome"] != "budget"]
    tokens = sum(e["prompt_tokens"] + e["completion_tokens"] for e in calls)
    answered = [e for e in calls if e["outcome"] != "http_error"]
    first_turn_ok = sum(1 for e in answered if e["outcome"] == "ok" and e["turn"] == 0)
    print(
        f"endpoint: {where}; model {args.model}; baseline {len(baseline.encode()):,} B; "
        f"pre-flight: apply, compile, audit, size{', CPU smoke' if smoke else ''}"
    )
    print(
        f"conversations {args.proposals}, concurrency {args.concurrency}, max repairs {args.max_repairs}, "
        f"wall {seconds:.1f} s"
    )
    print(f"{'proposals per minute':38s} {produced / seconds * 60:10.1f}")
    print(f"{'share reaching a trainable candidate':38s} {produced / max(args.proposals, 1):10.1%}")
    print(f"{'  of which on the first answer':38s} {first_turn_ok / max(args.proposals, 1):10.1%}")
    print(f"{'tokens per trainable candidate':38s} {tokens / max(produced, 1):10,.0f}")
    print(f"{'requests (HTTP attempts)':38s} {len(calls):10d}")
    print(f"{'cost (USD, at the configured prices)':38s} {proposer.budget.spent_usd:10.4f}")
    if smoke is not None and smoke.seconds:
        runs = sorted(smoke.seconds)
        print(f"{'smoke runs':38s} {len(runs):10d}")
        print(f"{'smoke seconds (median, mean, max)':38s} {runs[len(runs) // 2]:6.1f} {sum(runs) / len(runs):6.1f}"
              f" {runs[-1]:6.1f}")
        print(f"{'smoke seconds per trainable candidate':38s} {sum(runs) / max(produced, 1):10.1f}")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in Counter(e["outcome"] for e in events).most_common()))


if __name__ == "__main__":
    main()
