"""The CPU smoke stage of the pre-flight, end to end: the real openai client against the scripted
server, the real pre-flight (apply, compile, static audit, size estimate), the real trainer run by the
real sandboxed runner on the locally built corpus, and the real run store.

A patch that applies, compiles and audits clean but crashes in forward reaches the agent as a repair
turn; the repaired patch passes and becomes a proposal. A patch that keeps crashing uses up the repair
bound and is rejected with its reason in the run store, and the next conversation goes on.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from openai_server import Answer, ScriptedOpenAIServer

from agents.llm import LLMConfig, LLMProposer, make_proposer
from agents.patches import apply_patch
from harness.config import load_config, load_track
from harness.errors import ConfigError
from harness.preflight import Preflight
from harness.proposals import SearchView
from harness.smoke import CpuSmoke, describe_failure
from harness.store import Store
from trainer import BASELINE_PATH

KEY = "sk-test-smoke-0123456789abcdef"
MLP_LINE = "        return self.proj(F.relu(self.fc(x)).square())"
SHAPE_BUG = "        return self.proj(F.relu(self.fc(x)).square()[..., : x.size(-1)])"  # hidden width cut to model_dim
NAME_BUG = "        return self.proj(F.relu(self.fc(x)).square() * mlp_gain)"  # a name defined nowhere
LEAKY = "        return self.proj(F.leaky_relu(self.fc(x), 0.5).square())"
STEPS = 2


def answer(replace: str, rationale: str) -> str:
    block = f"train_gpt.py\n<<<<<<< SEARCH\n{MLP_LINE}\n=======\n{replace}\n>>>>>>> REPLACE"
    return f"RATIONALE: {rationale}\n\n```python\n{block}\n```\n"


@pytest.fixture(scope="module")
def smoke(local_data) -> CpuSmoke:
    return CpuSmoke(steps=STEPS, timeout_s=150, data=(local_data.dataset_dir, local_data.tokenizer_path))


@pytest.fixture()
def setup(smoke, tmp_path):
    baseline = BASELINE_PATH.read_text()
    assert MLP_LINE in baseline
    track = load_track("cpu-smoke")
    preflight = Preflight(baseline, track.env, track.byte_cap)
    store = Store(tmp_path / "search")
    view = SearchView(baseline, "b0", track.name, track.byte_cap, None)
    with ScriptedOpenAIServer() as server:
        config = LLMConfig(model="scripted-model", base_url=server.base_url, api_key_env="", max_repairs=1,
                           concurrency=1, timeout_s=10, price_per_1k_input=0.002, price_per_1k_output=0.008)
        proposer = LLMProposer(config, preflight, api_key=KEY, on_event=store.add_llm_call, smoke=smoke)
        yield server, proposer, store, view, preflight


def calls(store: Store) -> list[dict]:
    rows = store.query("SELECT outcome, reason, patch_hash, prompt_tokens, completion_tokens, cost_usd, extra FROM"
                       " llm_calls ORDER BY id")
    return [{**r.extra, "outcome": r.outcome, "reason": r.reason, "patch_hash": r.patch_hash, "tokens": r.prompt_tokens
             + r.completion_tokens, "cost_usd": r.cost_usd} for r in rows]


def test_runtime_crash_goes_back_as_a_repair_and_the_repaired_patch_becomes_a_proposal(setup):
    server, proposer, store, view, preflight = setup
    assert preflight("").ok  # the baseline passes the static stages: what fails below is the smoke
    server.push(Answer(answer(SHAPE_BUG, "Narrower MLP output."), prompt_tokens=900, completion_tokens=120),
                Answer(answer(LEAKY, "LeakyReLU(0.5) squared."), prompt_tokens=1100, completion_tokens=110))
    [p] = proposer.propose_and_wait(view, 1)
    assert "F.leaky_relu(self.fc(x), 0.5)" in apply_patch(view.baseline_source, p.patch)
    assert p.proposer == "llm:explorer" and p.rationale.startswith("LeakyReLU")

    first, second = calls(store)
    assert (first["outcome"], first["turn"], second["outcome"], second["turn"]) == ("smoke_error", 0, "ok", 1)
    reason = first["reason"]
    assert "RuntimeError" in reason and "shapes cannot be multiplied" in reason, reason
    assert "train_gpt.py line" in reason and "[..., : x.size(-1)]" in reason and "fix that code" in reason
    assert "\n" not in reason and "see train.log" not in reason
    assert first["smoke_s"] > 0 and second["smoke_s"] > 0
    assert (first["tokens"], second["tokens"]) == (1020, 1210) and first["cost_usd"] > 0

    repair = server.chat_requests[1].messages
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert "rejected at the smoke stage" in repair[-1]["content"]
    assert "shapes cannot be multiplied" in repair[-1]["content"]
    assert not list(Path(str(store.root)).rglob("train.log")), "the smoke's scratch folder is outside the store"


def test_a_patch_that_keeps_crashing_is_rejected_with_its_reason_and_the_search_goes_on(setup):
    server, proposer, store, view, _ = setup
    server.push(Answer(answer(SHAPE_BUG, "Narrower MLP output.")), Answer(answer(NAME_BUG, "A gain on the MLP.")),
                Answer(answer(LEAKY, "LeakyReLU(0.5) squared.")))
    assert proposer.propose_and_wait(view, 1) == []  # max_repairs=1: the first answer and one repair, both crash
    rows = calls(store)
    assert [(r["outcome"], r["turn"]) for r in rows] == [("smoke_error", 0), ("smoke_error", 1)]
    assert "NameError" in rows[1]["reason"] and "mlp_gain" in rows[1]["reason"], rows[1]["reason"]
    assert all(r["patch_hash"] and r["tokens"] > 0 for r in rows)
    assert len(server.chat_requests) == 2 and server.pending == 1

    [p] = proposer.propose_and_wait(view, 1)  # the next conversation is not held back by the rejected one
    assert "leaky_relu" in p.patch and [r["outcome"] for r in calls(store)][-1] == "ok"


def test_failure_line_names_the_exception_and_the_candidates_lines(tmp_path):
    log = tmp_path / "rescore" / "train.log"
    log.parent.mkdir()
    log.write_text(textwrap.dedent("""\
        step:2/2 train_loss:6.84
        Traceback (most recent call last):
          File "/tmp/x/run/rescore/train_gpt.py", line 540, in <module>
            main()
          File "/tmp/x/run/rescore/train_gpt.py", line 512, in main
            state = load_quantized(path)
          File "/usr/lib/python3/site-packages/torch/serialization.py", line 99, in load
            raise KeyError(key)
        KeyError: 'blocks.0.mlp.fc.weight'
        """))
    line = describe_failure(log, "re-score failed: exit code 1 (see rescore/train.log)", "2-layer, 64-wide model")
    assert line.startswith("KeyError: 'blocks.0.mlp.fc.weight' at train_gpt.py line 540 in <module> `main()` -> "
                           "line 512 in main `state = load_quantized(path)`")
    assert "while re-scoring the exported artifact" in line and "2-layer, 64-wide model" in line
    log.write_text("step:1/2 train_loss:nan\nFAIL: non-finite loss at step 1\n")
    assert describe_failure(log, "exit code 1 (see train.log)").startswith("FAIL: non-finite loss at step 1; fix")
    assert describe_failure(tmp_path / "missing.log", "artifact missing (see train.log)") == "artifact missing"


def test_smoke_env_is_tiny_but_keeps_the_candidates_shapes_and_knobs(smoke):
    env = smoke.env({"MODEL_DIM": "768", "NUM_LAYERS": "11", "ITERATIONS": "20000", "NUM_HEADS": "8",
                     "NUM_KV_HEADS": "4", "MLP_MULT": "3", "LEAKY_SLOPE": "0.3", "DEVICE": "cuda"})
    assert (env["NUM_LAYERS"], env["ITERATIONS"], env["DEVICE"], env["COMPILE"]) == ("2", str(STEPS), "cpu", "0")
    assert (env["NUM_HEADS"], env["NUM_KV_HEADS"], env["MODEL_DIM"], env["MLP_MULT"]) == ("8", "4", "128", "3")
    assert env["LEAKY_SLOPE"] == "0.3" and env["OMP_NUM_THREADS"] == "1" and env["VOCAB_SIZE"] == "1024"


def test_smoke_is_configured_from_the_llm_section(local_data):
    cfg = load_config(preset="smoke")
    assert cfg.llm.smoke and cfg.llm.smoke_steps == 4 and cfg.llm.smoke_concurrency == 1
    with pytest.raises(ConfigError, match="llm.smoke_timeout_s"):
        load_config(preset="smoke", llm={"smoke_timeout_s": 0})
    on, _ = make_proposer(LLMConfig.coerce(cfg.llm), Preflight("x = 1\n", {}, 1), environ={"OPENAI_API_KEY": KEY},
                          protect=[Path("/srv/pgolf-store")])
    assert isinstance(on._checker.smoke, CpuSmoke) and on._checker.smoke.steps == 4
    assert on._checker.smoke.protect[-1] == Path("/srv/pgolf-store")  # the run store, besides pgolf's own folders
    assert Path(__file__).resolve().parents[1] in on._checker.smoke.protect
    off, _ = make_proposer(LLMConfig(smoke=False), Preflight("x = 1\n", {}, 1), environ={"OPENAI_API_KEY": KEY})
    assert off._checker.smoke is None


def test_the_smoke_has_a_hard_timeout(local_data):
    hang = "import time\n\nwhile True:  # a trainer that never reaches its first step\n    time.sleep(0.05)\n"
    smoke = CpuSmoke(steps=1, timeout_s=3, data=(local_data.dataset_dir, local_data.tokenizer_path))
    start = time.monotonic()
    verdict = smoke(hang)
    assert time.monotonic() - start < 20
    assert (verdict.ok, verdict.stage) == (False, "smoke")
    assert "did not finish within 3 s" in verdict.reason and "stop after ITERATIONS steps" in verdict.reason


def test_smoke_runs_are_bounded_in_concurrency(local_data):
    slow = "import sys\nimport time\n\ntime.sleep(1.5)\nsys.exit('ValueError: no trainer here')\n"
    smoke = CpuSmoke(steps=1, timeout_s=30, concurrency=1, data=(local_data.dataset_dir, local_data.tokenizer_path))
    start = time.monotonic()
    threads = [threading.Thread(target=smoke, args=(slow,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start >= 3.0 and len(smoke.seconds) == 2  # one after the other, not together
    assert all(s >= 1.5 for s in smoke.seconds)


def test_the_smoke_is_offline_and_cannot_change_what_it_is_told_to_protect(local_data, tmp_path):
    """An LLM's code runs for the first time in the smoke, on the driver's machine: it reaches no network and
    cannot write into the protected folders (pgolf's checkout and site-packages by default; a stand-in here)."""
    from faulty_trainers.scenarios import Listener

    from harness import sandbox

    if not {"net", "fs"} <= set(sandbox.isolation_support(sys.executable)):
        pytest.skip("no user, network and mount namespaces here: the smoke runs unconfined (its outcome says so)")
    owned = tmp_path / "owned"
    owned.mkdir()
    (owned / "harness.py").write_text("trusted\n")
    listener = Listener()
    attack = textwrap.dedent(f"""
        import socket
        from pathlib import Path

        try:
            Path({str(owned / "harness.py")!r}).write_text("changed by the candidate")
            wrote = "yes"
        except OSError as e:
            wrote = f"refused ({{e.strerror}})"
        try:
            socket.create_connection(("127.0.0.1", {listener.port}), timeout=3).sendall(b"leak")
            net = "yes"
        except OSError as e:
            net = f"refused ({{e.strerror}})"
        raise RuntimeError(f"write {{wrote}}; network {{net}}")
    """)
    smoke = CpuSmoke(steps=1, timeout_s=60, data=(local_data.dataset_dir, local_data.tokenizer_path),
                     protect=(owned,))
    try:
        verdict = smoke(attack)
        time.sleep(0.5)  # a connection that did get through is recorded by now
    finally:
        listener.close()
    assert (verdict.ok, verdict.stage) == (False, "smoke")
    assert "write refused (Read-only file system)" in verdict.reason, verdict.reason
    assert "network refused" in verdict.reason, verdict.reason
    assert (owned / "harness.py").read_text() == "trusted\n" and listener.hits == []
    # and by default the checkout that holds this harness is among the protected folders
    from harness.smoke import protected_folders

    assert Path(__file__).resolve().parents[1] in protected_folders()
