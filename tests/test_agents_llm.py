"""LLMProposer through the real openai client against a real scripted HTTP server on 127.0.0.1.

Every test ends by checking that the API key went out only in the Authorization header: never in
a request body, another header, an event, or a proposal.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from dataclasses import dataclass, field

import pytest
from openai_server import Answer, Malformed, ScriptedOpenAIServer, Sleep, Status

from agents.llm import Budget, LLMConfig, LLMProposer, llm_unavailable_reason, make_proposer, redact
from agents.patches import PatchError, apply_patch, diff_hash, make_diff
from agents.prompts import estimate_tokens, explorer_messages, prompt_version
from harness.proposals import FailedCandidate, Proposal, ScoredCandidate, SearchView, Validation

KEY = "sk-test-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
KEY_ENV = "PGOLF_TEST_LLM_KEY"

MINI = textwrap.dedent(
    """\
    import glob
    import os

    import numpy as np
    import torch


    class Hyperparameters:
        data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
        train_files = os.path.join(data_path, "fineweb_train_*.bin")
        val_files = os.path.join(data_path, "fineweb_val_*.bin")
        iterations = int(os.environ.get("ITERATIONS", 20))
        model_dim = int(os.environ.get("MODEL_DIM", 64))
        matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))


    def load_data_shard(path):
        return torch.from_numpy(np.fromfile(path, dtype=np.uint16, offset=1024).astype(np.int64))


    def mlp(x):
        x = torch.relu(x)
        return x * x


    def eval_val(model, val_tokens):
        with torch.no_grad():
            loss = model(val_tokens).mean()
        return float(loss), float(loss) / 0.6931


    def main():
        args = Hyperparameters()
        train_tokens = load_data_shard(sorted(glob.glob(args.train_files))[0])
        model = torch.nn.Embedding(1024, args.model_dim)
        opt = torch.optim.SGD(model.parameters(), lr=args.matrix_lr)
        for step in range(args.iterations):
            x = train_tokens[step * 64 : (step + 1) * 64]
            loss = mlp(model(x)).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
        val_tokens = load_data_shard(sorted(glob.glob(args.val_files))[0])
        val_loss, val_bpb = eval_val(lambda t: mlp(model(t)), val_tokens)
        print(f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")


    if __name__ == "__main__":
        main()
    """
)


def edit_answer(search: str, replace: str, rationale: str, knobs: dict | None = None) -> str:
    text = f"RATIONALE: {rationale}\n\n```python\ntrain_gpt.py\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n"
    text += ">>>>>>> REPLACE\n```\n"
    if knobs:
        text += "\n```json\n" + json.dumps({"knobs": knobs}) + "\n```\n"
    return text


LEAKY = 'torch.nn.functional.leaky_relu(x, float(os.environ.get("LEAKY_SLOPE", 0.5)))'
GOOD = edit_answer(
    "def mlp(x):\n    x = torch.relu(x)\n    return x * x",
    f"def mlp(x):\n    x = {LEAKY}\n    return x * x",
    "LeakyReLU(0.5) squared: -0.002 bpb on the real leaderboard.",
    {"LEAKY_SLOPE": {"low": 0.1, "high": 0.9}, "NOT_IN_FILE": {"low": 1, "high": 2}},
)
GOOD_2 = edit_answer(
    "        opt.step()\n        opt.zero_grad()",
    "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n        opt.step()\n        opt.zero_grad()",
    "Clip gradients at norm 1.",
)
GOOD_3 = edit_answer(
    "    model = torch.nn.Embedding(1024, args.model_dim)",
    "    model = torch.nn.Embedding(1024, args.model_dim)\n    torch.nn.init.normal_(model.weight, std=0.005)",
    "Smaller embedding init.",
)
NOT_APPLYING = edit_answer(
    "def mlp(x):\n    x = torch.gelu(x)\n    return x * x", "def mlp(x):\n    return x", "Simplify the MLP."
)
VAL_LEAK = edit_answer(
    "        x = train_tokens[step * 64 : (step + 1) * 64]",
    "        extra = load_data_shard(sorted(glob.glob(args.val_files))[0])\n"
    "        x = torch.cat([train_tokens, extra])[step * 64 : (step + 1) * 64]",
    "Train on more tokens.",
)


def compile_validator(patch: str) -> Validation:
    try:
        source = apply_patch(MINI, patch)
    except PatchError as e:
        return Validation(False, "apply", str(e))
    try:
        compile(source, "train_gpt.py", "exec")
    except SyntaxError as e:
        return Validation(False, "compile", f"line {e.lineno}: {e.msg}")
    return Validation(True, "ok", "", source, len(source.encode()))


def view(**kw) -> SearchView:
    fields = dict(
        baseline_source=MINI, baseline_hash="b0", track="cpu-smoke", byte_cap=16_000_000, baseline_bytes=15_100_000
    )
    fields.update(kw)
    return SearchView(**fields)


@dataclass
class Rig:
    server: ScriptedOpenAIServer
    events: list[dict] = field(default_factory=list)
    proposals: list[Proposal] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)

    def proposer(self, validator=compile_validator, catalog=(), budget=None, **overrides) -> LLMProposer:
        settings = dict(
            model="scripted-model",
            base_url=self.server.base_url,
            api_key_env=KEY_ENV,
            timeout_s=2.0,
            max_retries=2,
            backoff_s=0.01,
            backoff_max_s=1.0,
            max_repairs=1,
            concurrency=1,
            price_per_1k_input=0.002,
            price_per_1k_output=0.008,
        )
        settings.update(overrides)

        def record(event: dict) -> None:
            self.threads.add(threading.current_thread().name)
            self.events.append(event)

        return LLMProposer(
            LLMConfig(**settings), validator, api_key=KEY, on_event=record, catalog=catalog, budget=budget
        )

    def propose(self, proposer: LLMProposer, v: SearchView | None = None, n: int = 1) -> list[Proposal]:
        """The blocking form: these tests are about one round of conversations, not the timing."""
        out = proposer.propose_and_wait(v or view(), n, timeout=60)
        self.proposals += out
        return out

    def outcomes(self) -> list[str]:
        return [e["outcome"] for e in self.events]


@pytest.fixture()
def rig():
    with ScriptedOpenAIServer() as server:
        r = Rig(server)
        yield r
    for req in server.requests:
        assert KEY not in req.body.decode(), f"API key in the body of {req.path}"
        others = {k: v for k, v in req.headers.items() if k.lower() != "authorization"}
        assert KEY not in json.dumps(others)
        if req.method == "POST":
            assert req.headers.get("authorization") == f"Bearer {KEY}"
    assert KEY not in json.dumps(r.events)
    assert all(KEY not in repr(p) for p in r.proposals)
    assert r.threads <= {threading.main_thread().name}, "on_event must run in the caller's thread"


# --- the happy path ---------------------------------------------------------------------------


def test_valid_patch_becomes_a_validated_proposal(rig):
    rig.server.push(Answer(GOOD, prompt_tokens=1200, completion_tokens=300))
    proposer = rig.proposer(catalog=[("leaky_relu_sq", "LeakyReLU(0.5) squared MLP"), ("ema", "EMA of weights")])
    [p] = rig.propose(proposer)
    assert p.proposer == "llm:explorer" and p.parents == () and p.env == {}
    assert "leaky_relu" in apply_patch(MINI, p.patch)
    assert p.rationale.startswith("LeakyReLU(0.5) squared")
    assert p.knob_ranges == {"LEAKY_SLOPE": {"low": 0.1, "high": 0.9, "log": False, "type": "float"}}
    [event] = rig.events
    assert event["outcome"] == "ok" and event["role"] == "explorer" and event["model"] == "scripted-model"
    assert (event["prompt_tokens"], event["completion_tokens"]) == (1200, 300)
    assert event["cost_usd"] == pytest.approx(1.2 * 0.002 + 0.3 * 0.008)
    assert event["patch_hash"] == diff_hash(p.patch) and event["prompt_version"] == prompt_version()
    assert event["latency_s"] > 0 and len(event["prompt_hash"]) == 16
    assert proposer.budget.spent_tokens == 1500

    [req] = rig.server.chat_requests
    body = req.json
    assert body["model"] == "scripted-model" and body["max_tokens"] == 4096 and body["temperature"] == 0.7
    system, user = body["messages"]
    assert "16,000,000" in system["content"] and "score-first" in system["content"]
    assert "<<<<<<< SEARCH" in system["content"]
    for section in ("def mlp(x):", "Byte headroom", "900,000 bytes are left", "leaky_relu_sq", "EMA of weights"):
        assert section in user["content"]


def test_prompt_shows_leaderboard_with_diffs_and_failures_with_reasons(rig):
    best = make_diff(MINI, MINI.replace("0.04))", "0.05))"))
    failed = make_diff(MINI, MINI.replace("iterations = int", "iterations =  2 * int"))
    v = view(
        leaderboard=(ScoredCandidate("c-best", 1.2100, 15_200_000, "screen", best, {}, "catalog", ("lr",), "lr up"),),
        failures=(FailedCandidate("c-fail", failed, {}, "crash", "NaN loss at step 3", "llm:explorer"),),
    )
    rig.server.push(Answer(GOOD))
    rig.propose(rig.proposer(explore_from_baseline=0.0), v)
    user = rig.server.chat_requests[0].messages[1]["content"]
    assert "c-best: val_bpb 1.2100 at rung screen, 15,200,000 B" in user and "+    matrix_lr = float" in user
    assert "c-fail [crash] NaN loss at step 3" in user
    assert "the current best candidate c-best" in user and 'os.environ.get("MATRIX_LR", 0.05)' in user
    assert "800,000 bytes are left" in user


def test_explorer_builds_on_the_best_candidate(rig):
    best = make_diff(MINI, MINI.replace("0.04))", "0.05))"))
    v = view(leaderboard=(ScoredCandidate("c-best", 1.21, None, "screen", best, {"SEED": "7"}, "catalog"),))
    rig.server.push(Answer(GOOD))
    [p] = rig.propose(rig.proposer(explore_from_baseline=0.0), v)
    patched = apply_patch(MINI, p.patch)
    assert "0.05))" in patched and "leaky_relu" in patched  # the diff is against the baseline
    assert p.parents == ("c-best",) and p.env == {"SEED": "7"}


# --- answers that need another turn -----------------------------------------------------------


def test_malformed_answer_is_a_parse_error_and_the_next_proposal_works(rig):
    proposer = rig.proposer(max_repairs=0)
    rig.server.push(Answer("I would lower the learning rate and add EMA."), Answer(GOOD))
    assert rig.propose(proposer) == []
    assert rig.outcomes() == ["parse_error"] and "no SEARCH/REPLACE block" in rig.events[0]["reason"]
    assert len(rig.propose(proposer)) == 1
    assert rig.outcomes() == ["parse_error", "ok"]


def test_malformed_response_body_is_retried(rig):
    rig.server.push(Malformed(), Answer(GOOD))
    assert len(rig.propose(rig.proposer())) == 1
    assert rig.outcomes() == ["http_error", "ok"]
    assert rig.events[0]["will_retry"] and "malformed response" in rig.events[0]["reason"]


def test_patch_that_does_not_apply_is_repaired_in_one_turn(rig):
    rig.server.push(Answer(NOT_APPLYING), Answer(GOOD))
    [p] = rig.propose(rig.proposer(max_repairs=2))
    assert "leaky_relu" in apply_patch(MINI, p.patch)
    first, second = rig.events
    assert (first["outcome"], first["turn"], second["outcome"], second["turn"]) == ("apply_error", 0, "ok", 1)
    assert first["conversation"] == second["conversation"]
    assert "first line that did not match: 'x = torch.gelu(x)'" in first["reason"]
    repair = rig.server.chat_requests[1].messages
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"] == NOT_APPLYING and "x = torch.gelu(x)" in repair[3]["content"]
    assert "rejected at the apply stage" in repair[3]["content"]


def test_repairs_are_bounded(rig):
    rig.server.push(Answer(NOT_APPLYING), Answer(NOT_APPLYING), Answer(GOOD))
    assert rig.propose(rig.proposer(max_repairs=1)) == []
    assert rig.outcomes() == ["apply_error", "apply_error"] and rig.server.pending == 1


def audit_validator(audit):
    def validate(patch: str) -> Validation:
        checked = compile_validator(patch)
        if not checked.ok:
            return checked
        errors = [f for f in audit(checked.source) if f.severity == "error"]
        if errors:
            return Validation(False, "audit", f"{errors[0].code}: {getattr(errors[0], 'message', '')}", checked.source)
        return checked

    return validate


def test_audit_rejection_goes_back_to_the_agent(rig):
    @dataclass
    class Finding:
        code: str
        severity: str
        message: str

    def toy_audit(source: str) -> list[Finding]:  # the pipeline's plumbing, independent of harness.audit
        train = source.split("def main():", 1)[1].split("val_tokens = load_data_shard", 1)[0]
        if "val_files" in train:
            return [Finding("VAL_DURING_TRAINING", "error", "validation files read before scoring")]
        return []

    rig.server.push(Answer(VAL_LEAK), Answer(GOOD))
    [p] = rig.propose(rig.proposer(validator=audit_validator(toy_audit)))
    assert rig.outcomes() == ["audit_error", "ok"]
    assert "VAL_DURING_TRAINING" in rig.events[0]["reason"] and rig.events[0]["patch_hash"]
    assert "rejected at the audit stage" in rig.server.chat_requests[1].messages[-1]["content"]


def test_real_audit_rejects_reading_validation_data_during_training(rig):
    audit = pytest.importorskip("harness.audit", reason="harness/audit.py (audit_source) is not in this tree yet")
    rig.server.push(Answer(VAL_LEAK))
    assert rig.propose(rig.proposer(validator=audit_validator(audit.audit_source), max_repairs=0)) == []
    assert rig.outcomes() == ["audit_error"], rig.events[0]["reason"]


def test_duplicate_of_a_tried_candidate_is_not_proposed_again(rig):
    same = make_diff(MINI, MINI.replace("x = torch.relu(x)", "x = torch.nn.functional.leaky_relu(x, 0.5)"))
    v = view(failures=(FailedCandidate("c-old", same, {}, "crash", "boom"),))
    rig.server.push(
        Answer(
            edit_answer("    x = torch.relu(x)", "    x = torch.nn.functional.leaky_relu(x, 0.7)", "leaky with 0.7")
        ),
        Answer(GOOD_2),
    )
    [p] = rig.propose(rig.proposer(), v)
    assert rig.outcomes() == ["duplicate", "ok"] and "clip_grad_norm_" in p.patch
    assert "similar to candidate c-old" in rig.events[0]["reason"]
    rig.server.push(Answer(GOOD_2), Answer(GOOD_2))
    assert rig.propose(rig.proposer(), view(tried_patch_hashes=frozenset({diff_hash(p.patch)}))) == []
    assert rig.outcomes()[-2:] == ["duplicate", "duplicate"]
    assert "the same change as an earlier candidate" in rig.events[-1]["reason"]


# --- HTTP trouble -----------------------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds(rig):
    rig.server.push(Status(429, retry_after="0.3"), Answer(GOOD))
    # backoff alone would wait >= 2.5 s: finishing sooner shows Retry-After was used
    [p] = rig.propose(rig.proposer(backoff_s=5.0, backoff_max_s=10.0))
    first, second = rig.server.chat_requests
    assert 0.28 <= second.time - first.time < 2.0
    assert rig.outcomes() == ["http_error", "ok"]
    assert "HTTP 429" in rig.events[0]["reason"] and rig.events[0]["will_retry"]
    assert rig.events[1]["retry"] == 1 and p.patch


def test_repeated_5xx_gives_up_after_max_retries_and_the_search_goes_on(rig):
    proposer = rig.proposer(max_retries=2)
    rig.server.push(Status(500), Status(503), Status(502))
    assert rig.propose(proposer) == []
    assert rig.outcomes() == ["http_error"] * 3 and len(rig.server.chat_requests) == 3
    assert [e["will_retry"] for e in rig.events] == [True, True, False]
    assert "HTTP 502" in rig.events[-1]["reason"] and "retry" not in rig.events[-1]["reason"]
    rig.server.push(Answer(GOOD))
    assert len(rig.propose(proposer)) == 1


def test_timeout_gives_up_after_max_retries_and_the_search_goes_on(rig):
    proposer = rig.proposer(timeout_s=0.3, max_retries=1)
    rig.server.push(Sleep(5, Answer(GOOD)), Sleep(5, Answer(GOOD)))
    assert rig.propose(proposer) == []
    assert rig.outcomes() == ["http_error", "http_error"]
    assert all("timed out after 0.3 s" in e["reason"] for e in rig.events)
    rig.server.push(Answer(GOOD))
    assert len(rig.propose(proposer)) == 1


def test_client_errors_are_not_retried_and_echoed_keys_are_redacted(rig):
    rig.server.push(Status(401, message=f"Incorrect API key provided: {KEY}"))
    assert rig.propose(rig.proposer()) == []
    [event] = rig.events
    assert event["outcome"] == "http_error" and not event["will_retry"]
    assert "HTTP 401" in event["reason"] and "[REDACTED]" in event["reason"]


# --- budget -----------------------------------------------------------------------------------


def test_token_budget_stops_the_search_between_calls(rig):
    estimate = estimate_tokens(explorer_messages(view(), MINI, "the baseline"))
    budget = Budget(max_total_tokens=estimate + 500 + 100)
    proposer = rig.proposer(max_tokens=500, budget=budget)
    rig.server.push(*(Answer(g, prompt_tokens=estimate // 2, completion_tokens=100) for g in (GOOD, GOOD_2, GOOD_3)))
    assert len(rig.propose(proposer, n=3)) == 1
    assert rig.outcomes() == ["ok", "budget"] and len(rig.server.chat_requests) == 1
    assert "token budget" in rig.events[-1]["reason"] and proposer.exhausted
    assert rig.propose(proposer, n=2) == []  # stays stopped, quietly
    assert len(rig.events) == 2 and len(rig.server.chat_requests) == 1
    assert budget.spent_tokens == estimate // 2 + 100 <= budget.max_total_tokens


def test_cost_budget_stops_a_conversation_before_its_repair(rig):
    # ~0.5 of the budget per call: the first answer fits, its repair turn does not
    estimate = estimate_tokens(explorer_messages(view(), MINI, "the baseline"))
    per_call = (estimate * 0.002 + 200 * 0.008) / 1000
    proposer = rig.proposer(max_tokens=200, max_cost_usd=per_call * 1.5)
    rig.server.push(Answer(NOT_APPLYING, prompt_tokens=estimate, completion_tokens=200), Answer(GOOD))
    assert rig.propose(proposer) == []
    assert rig.outcomes() == ["apply_error", "budget"] and "cost budget" in rig.events[-1]["reason"]
    assert len(rig.server.chat_requests) == 1 and rig.server.pending == 1
    assert proposer.budget.spent_usd <= per_call * 1.5


def test_budget_check_is_shared_by_concurrent_conversations(rig):
    estimate = estimate_tokens(explorer_messages(view(), MINI, "the baseline"))
    proposer = rig.proposer(max_tokens=400, concurrency=3, max_total_tokens=2 * (estimate + 400))
    rig.server.push(Sleep(0.2, Answer(GOOD)), Sleep(0.2, Answer(GOOD_2)), Sleep(0.2, Answer(GOOD_3)))
    out = rig.propose(proposer, n=3)
    assert len(out) == 2 and len(rig.server.chat_requests) == 2  # never more calls than the budget holds
    assert sorted(rig.outcomes()) == ["budget", "ok", "ok"]


# --- roles and concurrency --------------------------------------------------------------------


def two_candidates(patch_a: str, patch_b: str) -> SearchView:
    a = ScoredCandidate("c-a", 1.20, 15_000_000, "screen", patch_a, {}, "catalog", (), "leaky relu")
    b = ScoredCandidate("c-b", 1.21, 15_000_000, "screen", patch_b, {}, "llm:explorer", (), "clip grads")
    return view(leaderboard=(a, b))


def test_combiner_merges_disjoint_candidates_without_a_call(rig):
    a = make_diff(MINI, MINI.replace("x = torch.relu(x)", "x = torch.nn.functional.leaky_relu(x, 0.5)"))
    b = make_diff(MINI, MINI.replace("        opt.step()\n", "        clip(model)\n        opt.step()\n"))
    [p] = rig.propose(rig.proposer(combiner_share=1.0), two_candidates(a, b))
    assert p.proposer == "llm:combiner" and p.parents == ("c-a", "c-b")
    merged = apply_patch(MINI, p.patch)
    assert "leaky_relu" in merged and "clip(model)" in merged
    assert rig.server.chat_requests == [] and rig.outcomes() == ["ok"]
    assert rig.events[0]["reason"] == "merged without conflicts" and rig.events[0]["prompt_tokens"] == 0


def test_combiner_asks_the_agent_to_resolve_a_conflict(rig):
    a = make_diff(MINI, MINI.replace("x = torch.relu(x)", "x = torch.nn.functional.leaky_relu(x, 0.5)"))
    b = make_diff(MINI, MINI.replace("x = torch.relu(x)", "x = torch.relu(x).clamp(max=6)"))
    resolved = edit_answer(
        "    x = torch.nn.functional.leaky_relu(x, 0.5)",
        "    x = torch.nn.functional.leaky_relu(x, 0.5).clamp(max=6)",
        "Both: leaky, then clamp.",
    )
    rig.server.push(Answer(resolved))
    proposer = rig.proposer(combiner_share=1.0, explore_from_baseline=1.0)
    [p] = rig.propose(proposer, two_candidates(a, b))
    assert p.proposer == "llm:combiner" and p.parents == ("c-a", "c-b")
    assert "leaky_relu(x, 0.5).clamp(max=6)" in apply_patch(MINI, p.patch)
    user = rig.server.chat_requests[0].messages[1]["content"]
    assert "conflict: A and B both change train_gpt.py" in user and "clamp(max=6)" in user
    assert "leaky_relu(x, 0.5)" in user.split("## Candidate A")[0]  # the file shown already has A
    rig.server.push(Answer(GOOD_2))
    [q] = rig.propose(proposer, two_candidates(a, b))
    assert q.proposer == "llm:explorer"  # the only pair was combined already


def test_concurrent_conversations_return_distinct_proposals(rig):
    answers = {"a": GOOD, "b": GOOD_2, "c": GOOD_3}
    rig.server.push(*(Sleep(0.3, Answer(a)) for a in answers.values()))
    proposer = rig.proposer(concurrency=3)
    out = rig.propose(proposer, n=3)
    assert len({p.patch for p in out}) == 3
    starts = sorted(r.time for r in rig.server.chat_requests)
    assert starts[-1] - starts[0] < 0.25  # all three were in flight together
    assert rig.outcomes() == ["ok"] * 3


def test_observe_feeds_outcomes_into_the_next_prompt(rig):
    rig.server.push(Answer(GOOD), Answer(GOOD_2))
    proposer = rig.proposer()
    [p] = rig.propose(proposer)
    proposer.observe("c-123", p, 1.2345, "ok")
    rig.propose(proposer)
    user = rig.server.chat_requests[1].messages[1]["content"]
    assert "[ok, val_bpb 1.2345 (c-123)] LeakyReLU(0.5) squared" in user


# --- secrets and set-up -----------------------------------------------------------------------


def test_key_never_reaches_prompts_even_if_the_view_carries_it(rig):
    leaky = ScoredCandidate("c-x", 1.2, None, "screen", "", {"SNEAKY": KEY}, "user", (), f"key is {KEY}")
    rig.server.push(Answer(GOOD))
    rig.propose(rig.proposer(), view(leaderboard=(leaky,)))
    assert "[REDACTED]" in rig.server.chat_requests[0].body.decode()


def test_no_key_means_no_llm_proposer_and_a_clear_reason():
    config = LLMConfig(api_key_env="PGOLF_SURELY_UNSET_KEY")
    proposer, reason = make_proposer(config, compile_validator, environ={})
    assert proposer is None
    assert "PGOLF_SURELY_UNSET_KEY" in reason and llm_unavailable_reason(config, environ={}) == reason
    proposer, reason = make_proposer(config, compile_validator, environ={"PGOLF_SURELY_UNSET_KEY": KEY})
    assert isinstance(proposer, LLMProposer) and reason == "" and KEY not in repr(proposer)


def test_config_from_the_search_config_section():
    from harness.config import LLM

    config = LLMConfig.coerce(LLM())
    assert config.base_url is None and config.model == LLM().model and config.max_cost_usd == LLM().max_cost_usd
    with pytest.raises(ValueError, match="unknown key 'modle'"):
        LLMConfig.from_mapping({"modle": "x"})
    with pytest.raises(ValueError, match="invalid concurrency"):
        LLMConfig(concurrency=0)
    assert Budget(max_total_tokens=0, max_cost_usd=0).reserve(10**9, 10**9) is not None  # 0 = unlimited


def test_key_never_reaches_a_candidates_environment(rig, monkeypatch):
    sandbox = pytest.importorskip("harness.sandbox", reason="harness/sandbox.py is not in this tree yet")
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config = LLMConfig(base_url=rig.server.base_url, api_key_env=KEY_ENV, smoke=False)  # MINI is no real trainer
    proposer, _ = make_proposer(config, compile_validator)
    rig.server.push(Answer(GOOD))
    [p] = rig.propose(proposer)
    env = sandbox.child_environ(p.env, {"RUN_ID": "c1"})
    assert KEY not in json.dumps(env) and KEY_ENV not in env and "OPENAI_API_KEY" not in env


def test_redact_catches_the_key_and_key_shaped_strings():
    assert redact(f"auth {KEY} ok", [KEY]) == "auth [REDACTED] ok"
    assert redact("Bearer abcdefghijklmnop", []) == "[REDACTED]"
    assert redact("sk-proj-ABCDEFGHIJKLMNOP1234", []) == "[REDACTED]"
    assert redact("ask-questions and tasks", []) == "ask-questions and tasks"


# --- background conversations: propose never waits -------------------------------------------


def poll(proposer: LLMProposer, want: int, v: SearchView | None = None, deadline_s: float = 30.0) -> list[Proposal]:
    """Ask like the loop does, every tick, for what is still missing, until `want` proposals came."""
    got: list[Proposal] = []
    end = time.monotonic() + deadline_s
    while len(got) < want and time.monotonic() < end:
        got += proposer.propose(v or view(), want - len(got))
        time.sleep(0.05)
    return got


def asked(server: ScriptedOpenAIServer, n: int) -> None:
    end = time.monotonic() + 10
    while len(server.chat_requests) < n and time.monotonic() < end:
        time.sleep(0.01)
    assert len(server.chat_requests) >= n


def test_a_slow_answer_does_not_block_propose(rig):
    rig.server.push(Sleep(3.0, Answer(GOOD)))
    proposer = rig.proposer(timeout_s=20)
    started = time.monotonic()
    assert proposer.propose(view(), 1) == []
    assert time.monotonic() - started < 2.0, "propose waited for the answer"  # the answer takes 3 s
    assert proposer.busy and proposer.saturated and rig.events == []  # nothing answered yet
    assert proposer.propose(view(), 1) == []  # asking again while it thinks starts nothing more
    [p] = poll(proposer, 1)
    assert "leaky_relu" in apply_patch(MINI, p.patch) and not proposer.busy
    assert rig.outcomes() == ["ok"] and len(rig.server.chat_requests) == 1
    assert proposer.close(timeout=5)


def test_background_proposals_arrive_later_each_exactly_once(rig):
    rig.server.push(Sleep(0.3, Answer(GOOD)), Sleep(1.5, Answer(GOOD_2)))
    proposer = rig.proposer(concurrency=2, timeout_s=20)
    first = proposer.propose(view(), 2)
    assert first == [] and proposer.busy
    got = poll(proposer, 2)
    assert len(got) == 2 and len({p.patch for p in got}) == 2  # none handed over twice
    assert len(rig.server.chat_requests) == 2 and rig.outcomes() == ["ok", "ok"]
    assert proposer.close(timeout=5) and proposer.propose(view(), 2) == []  # closed: nothing more, no call
    assert len(rig.server.chat_requests) == 2


def test_each_conversation_keeps_the_view_it_was_started_with(rig):
    old = make_diff(MINI, MINI.replace("0.04))", "0.05))"))
    v1 = view(leaderboard=(ScoredCandidate("c-old", 1.21, None, "screen", old, {}, "catalog"),))
    rig.server.push(Sleep(0.5, Answer(NOT_APPLYING)), Answer(GOOD))  # a repair turn after the view changed
    proposer = rig.proposer(explore_from_baseline=0.0, timeout_s=20)
    assert proposer.propose(v1, 1) == []
    [p] = poll(proposer, 1, view())  # the driver's later views show no leaderboard at all
    assert p.parents == ("c-old",) and "0.05))" in apply_patch(MINI, p.patch)
    assert all("c-old" in r.messages[1]["content"] for r in rig.server.chat_requests)


def test_a_round_that_proposes_nothing_lets_the_loop_back_off(rig):
    rig.server.push(Status(401))
    proposer = rig.proposer(max_retries=0)
    assert proposer.propose(view(), 1) == [] and proposer.busy
    assert proposer.wait(timeout=10) and rig.outcomes() == ["http_error"]
    assert proposer.propose(view(), 1) == [] and not proposer.busy  # empty and idle: "ask again later"
    assert len(rig.server.chat_requests) == 1
    rig.server.push(Answer(GOOD))
    assert proposer.propose(view(), 1) == [] and proposer.busy  # after the back-off: a new round
    assert len(poll(proposer, 1)) == 1


def test_close_waits_for_the_running_conversation_and_makes_no_further_call(rig):
    rig.server.push(Sleep(0.5, Answer(NOT_APPLYING)), Answer(GOOD))
    proposer = rig.proposer(max_repairs=1, timeout_s=20)
    assert proposer.propose(view(), 1) == []
    asked(rig.server, 1)  # the conversation is under way (a plan not started yet is simply dropped)
    assert proposer.close(timeout=10) and not proposer.busy
    assert rig.outcomes() == ["apply_error"]  # its attempt was delivered by close, in this thread
    assert len(rig.server.chat_requests) == 1 and rig.server.pending == 1  # the repair turn was never asked


def test_close_is_bounded_when_an_answer_hangs(rig):
    rig.server.push(Sleep(20, Answer(GOOD)))
    proposer = rig.proposer(timeout_s=30)
    assert proposer.propose(view(), 1) == []
    asked(rig.server, 1)
    started = time.monotonic()
    assert proposer.close(timeout=0.3) is False and proposer.busy
    assert time.monotonic() - started < 5 and rig.events == []  # the unfinished attempt is not recorded


def test_a_bug_in_a_conversation_surfaces_from_the_next_propose(rig):
    def broken(patch: str) -> Validation:
        raise RuntimeError("validator bug")

    rig.server.push(Answer(GOOD))
    proposer = rig.proposer(validator=broken)
    assert proposer.propose(view(), 1) == []
    assert proposer.wait(timeout=10)
    with pytest.raises(RuntimeError, match="validator bug"):
        proposer.propose(view(), 1)


def test_budget_stops_background_conversations_between_calls(rig):
    estimate = estimate_tokens(explorer_messages(view(), MINI, "the baseline"))
    budget = Budget(max_total_tokens=estimate + 500 + 100)  # one call fits, a second one cannot
    proposer = rig.proposer(max_tokens=500, budget=budget)
    rig.server.push(Answer(GOOD, prompt_tokens=estimate // 2, completion_tokens=100), Answer(GOOD_2))
    assert proposer.propose(view(), 1) == []
    assert len(poll(proposer, 1)) == 1
    assert proposer.propose(view(), 1) == [] and proposer.wait(timeout=10)  # its call is never made
    assert rig.outcomes() == ["ok", "budget"] and proposer.exhausted and not proposer.busy
    assert proposer.propose(view(), 1) == [] and not proposer.busy  # stopped: the loop backs off quietly
    assert len(rig.server.chat_requests) == 1 and len(rig.events) == 2
