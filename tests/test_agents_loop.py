"""The search driver with the LLM proposer thinking in the background: while an answer is on its way,
the loop still dispatches and collects runs, and the answer becomes one candidate when it arrives.

The real Search loop, store, pre-flight and LLM proposer (the real openai client against the scripted
server on 127.0.0.1); the executor is an in-process stand-in whose runs finish a moment after they
start, and a planted proposer keeps it busy meanwhile. No file the harness owns is watched or put back
(the tripwire is off): the test process is not a real search.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from faulty_trainers.scenarios import search_toml, track_toml
from openai_server import Answer, Request, ScriptedOpenAIServer, Status

from harness import loop, tamper_watch
from harness.config import load_config
from harness.proposals import Proposal
from harness.runner import RunOutcome, RunSpec, RunStatus
from harness.store import Store

KEY_ENV = "PGOLF_TEST_LOOP_LLM_KEY"
MLP_LINE = "        return self.proj(F.relu(self.fc(x)).square())"
LEAKY = "        return self.proj(F.leaky_relu(self.fc(x), 0.5).square())"
ANSWER = (f"RATIONALE: LeakyReLU(0.5) squared.\n\n```python\ntrain_gpt.py\n<<<<<<< SEARCH\n{MLP_LINE}\n=======\n"
          f"{LEAKY}\n>>>>>>> REPLACE\n```\n")
THINK_S = 3.0  # how long the scripted agent takes over its first answer


class QuickExecutor:
    """What the loop uses of RayExecutor, in-process: every run is OK `run_s` seconds after it starts."""

    def __init__(self, slots: int = 2, run_s: float = 0.2) -> None:
        self.slots, self.run_s = slots, run_s
        self.waiting: list[RunSpec] = []
        self.started: dict[str, float] = {}

    def submit(self, spec: RunSpec, gpus: int, priority: int = 0, same_gpu_model: str | None = None) -> None:
        self.waiting.append(spec)

    def poll(self, timeout: float = 0) -> list[RunOutcome]:
        time.sleep(min(timeout, 0.1))
        while self.waiting and len(self.started) < self.slots:
            self.started[self.waiting.pop(0).run_id] = time.monotonic()
        done = [rid for rid, t in self.started.items() if time.monotonic() - t >= self.run_s]
        for rid in done:
            del self.started[rid]
        return [RunOutcome(rid, RunStatus.OK, val_loss=2.0 + len(rid) % 7 / 100, val_bpb=1.2 + len(rid) % 7 / 100,
                           bytes_total=100_000) for rid in done]

    def progress(self) -> dict[str, dict]:
        return {}

    def running(self) -> list[str]:
        return list(self.started)

    def cancel(self, run_id: str) -> bool:
        return False

    def capacity(self) -> dict:
        return {"cpus": self.slots, "gpus": 0}

    def busy_fraction(self) -> float:
        return len(self.started) / self.slots

    def shutdown(self, grace_s: float = 0.0) -> None:
        pass


class Planted:
    """Env-only proposals, one per call, then out of ideas: the work the executor has meanwhile."""

    name = "planted"

    def __init__(self, values: list[str]) -> None:
        self.values = list(values)

    def propose(self, view, n: int) -> list[Proposal]:
        if not self.values:
            return []
        return [Proposal(env={"MATRIX_LR": self.values.pop(0)}, proposer="planted", rationale="planted")]

    def observe(self, candidate_id, proposal, val_bpb, status) -> None:
        pass


class SlowAgent:
    """The first request is answered after THINK_S seconds; later ones are refused at once (401, not
    retried), so the LLM runs out of ideas and the search ends by itself."""

    def __init__(self) -> None:
        self.asked_at: list[float] = []
        self.answered_at: float | None = None

    def __call__(self, request: Request):
        self.asked_at.append(time.time())
        if len(self.asked_at) > 1:
            return Status(401, message="no more")
        time.sleep(THINK_S)  # this handler's own thread: the server keeps serving meanwhile
        self.answered_at = time.time()
        return Answer(ANSWER, prompt_tokens=900, completion_tokens=100)


@pytest.fixture()
def search_config(tmp_path: Path, local_data, monkeypatch):
    root = local_data.dataset_dir.parent.parent
    (tmp_path / "track.toml").write_text(track_toml("llm-async", root=root))
    with ScriptedOpenAIServer() as server:
        agent = SlowAgent()
        server.set_responder(agent)
        (tmp_path / "search.toml").write_text(search_toml(tmp_path, "llm-async", f"""
[budget]
max_candidates = 20
[proposers]
optuna = 0.0
catalog = 0.0
llm = 1.0
[llm]
model = "scripted-model"
base_url = "{server.base_url}"
api_key_env = "{KEY_ENV}"
concurrency = 1
max_retries = 0
max_repairs = 0
timeout_s = 30
smoke = false
[promotion]
enabled = false
[knobs]
include = ["MATRIX_LR"]
"""))
        monkeypatch.setenv(KEY_ENV, "sk-test-loop-0123456789abcdef")
        monkeypatch.setattr(tamper_watch.Tripwire, "for_harness", staticmethod(lambda paths: None))
        yield load_config(tmp_path / "search.toml"), agent, tmp_path


def test_runs_are_dispatched_and_collected_while_the_llm_thinks(search_config, monkeypatch):
    cfg, agent, tmp = search_config
    writers: set[str] = set()
    add_llm_call = Store.add_llm_call

    def recording(self, event):
        writers.add(threading.current_thread().name)
        return add_llm_call(self, event)

    monkeypatch.setattr(Store, "add_llm_call", recording)
    search = loop.Search(cfg, executor_factory=QuickExecutor, announce=lambda msg: None)
    assert "llm" in search.proposers
    search.proposers["planted"] = Planted(["0.03", "0.035", "0.045", "0.05"])
    summary = search.run()

    assert summary["stop_reason"] == "every proposer is out of ideas"
    assert agent.answered_at is not None and len(agent.asked_at) == 2
    store = search.store
    runs = store.query("SELECT r.id, r.started_at, r.finished_at, r.status, c.proposer FROM runs r"
                       " JOIN candidates c ON c.id = r.candidate_id")
    others = [r for r in runs if not r.proposer.startswith("llm")]
    asked, answered = agent.asked_at[0], agent.answered_at
    # while the agent was thinking, the loop started and finished the other runs
    assert sum(asked < r.started_at and r.finished_at < answered for r in others) >= 3, runs
    # the answer became exactly one candidate, after it came, and it was trained
    [llm_run] = [r for r in runs if r.proposer.startswith("llm")]
    [cand] = store.query("SELECT id, created_at FROM candidates WHERE proposer LIKE 'llm%'")
    assert cand.created_at > answered and llm_run.status == "ok"
    # both attempts reached the store, written by the driver's thread only
    calls = store.query("SELECT outcome FROM llm_calls ORDER BY id")
    assert [c.outcome for c in calls] == ["ok", "http_error"]
    assert writers == {threading.current_thread().name}
    assert all(r.status == "ok" for r in runs)
    assert not search.proposers["llm"].busy
    assert not store.events(kind="proposer_error")
