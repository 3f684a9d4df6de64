"""The search driver: the only module that knows every role.

proposers -> pre-flight -> candidates -> rungs (asynchronous successive halving) on Ray ->
harness-owned results -> Optuna tell / proposer feedback -> confirm + ablate + judge -> records/.

The store is the source of truth. Every step is idempotent over it, so killing the driver at any
moment and running the same command again resumes: finished runs are kept, queued ones are
resubmitted, runs that were in flight are reaped and requeued, and nothing is trained twice.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import ledger, sandbox, views
from harness.candidate import Candidate, run_id, sha256_text
from harness.config import TRACKS_DIR, SearchConfig, config_to_dict, load_track
from harness.errors import BaselineError, ConfigError, PgolfError, StoreError
from harness.faults import kill_point
from harness.optuna_proposer import open_study
from harness.preflight import Preflight
from harness.promote import confirm_seeds
from harness.proposals import FailedCandidate, Proposal, ScoredCandidate, SearchView
from harness.proposer_pool import ProposerPool
from harness.runner import RunOutcome, RunSpec, RunStatus
from harness.store import Store
from harness.tamper_watch import CONVICTED, RERUN_ALONE, TamperWatch
from harness.track_data import candidate_vocab, ensure_data, track_for_vocab
from trainer import BASELINE_PATH

log = logging.getLogger(__name__)

# Confirm seeds, the candidate's and the baseline's, run on one GPU model: under a wall-clock cap a faster GPU
# trains more steps, and the judge would measure the hardware (harness/node_rules.py).
CONFIRM_GROUP = "confirm"
SEARCH_SEED = 1337  # the official default SEED: every search-phase run uses it, confirm seeds are fresh
# "prefetch": the baseline's confirm seeds at the top rung, queued at the start below everything else: any
# promotion needs them, and they fill slots that would idle while a rung drains.
PRIORITY = {"prefetch": -1, "search": 0, "reference": 5, "ablation": 8, "confirm": 10}
# How long the end of a search waits for proposals still being written (an LLM conversation's current call
# or CPU smoke run), so their attempts reach the store; what is still running after it is not recorded.
PROPOSER_CLOSE_WAIT_S = 60.0


def load_baseline(path: str) -> str:
    p = Path(path) if path else BASELINE_PATH
    try:
        source = p.read_text(encoding="utf-8")
    except OSError as e:
        raise BaselineError(f"cannot read baseline {p}: {e.strerror}; pass --baseline PATH to a train_gpt.py") from None
    try:
        compile(source, str(p), "exec")
    except SyntaxError as e:
        raise BaselineError(f"baseline {p} does not compile (line {e.lineno}: {e.msg})") from None
    if "os.environ" not in source or "val_bpb" not in source:
        raise BaselineError(f"baseline {p} is not a Parameter Golf trainer: it reads no env knobs or reports no "
                            "val_bpb; see docs/architecture.md for the trainer contract")
    return source


DISK_FULL_FREE_BYTES = 64 << 20  # below this much free space under the store, a write error means "disk full"
_DISK_FULL = re.compile(r"No space left on device|Errno 28|ENOSPC|database or disk is full|Disk quota exceeded")


def disk_full_error(e: BaseException) -> bool:
    """Is this exception (or its cause) the disk filling up: ENOSPC / EDQUOT, or SQLite's SQLITE_FULL?"""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if _DISK_FULL.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def finished_outcome(run_dir: Path, run_id: str) -> RunOutcome | None:
    """The outcome a runner left in `run_dir` when it is a whole run's verdict, else None.

    A run the dying driver took down with it (its trainer killed by a signal, a cancel, a harness
    error) is not a verdict on the candidate: that run is trained again."""
    try:
        o = RunOutcome.from_dict(json.loads((run_dir / "outcome.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if o.run_id != run_id or not o.status.is_finished() or o.status == RunStatus.CANCELLED:
        return None
    if "harness_error" in o.flags or "killed by SIG" in (o.error or "") or _DISK_FULL.search(o.error or ""):
        return None
    return o


@dataclass
class Phase:
    """Where the search is: proposing, draining (no new ideas), confirming, done."""

    name: str = "search"
    started: float = field(default_factory=time.time)


class Search:
    def __init__(self, cfg: SearchConfig, executor_factory: Callable[[], object] | None = None,
                 announce: Callable[[str], None] = print, config_path: str | Path | None = None):
        self.cfg = cfg
        self.config_path = config_path
        self.track = load_track(cfg.track)
        self.announce = announce
        self.baseline_source = load_baseline(cfg.baseline)
        self.baseline_hash = sha256_text(self.baseline_source)[:16]
        # Everything that can be wrong with the input is checked before the store folder is created.
        self.dataset, self.tokenizer = ensure_data(self.track, announce)
        self._data_by_vocab = {self.track.data.vocab_size: (self.dataset, self.tokenizer)}
        self._run_inputs: dict[str, tuple[str, Path, Path]] = {}  # candidate id -> (source, dataset, tokenizer)
        self.confirm_seeds = confirm_seeds(cfg.promotion.seeds)
        self.space = self._search_space()
        self.store = Store(cfg.search_dir())
        self.rung_names = [r.name for r in self.track.rungs]
        self.tamper = TamperWatch(self.store, announce)  # which run changed what the harness owns
        self.executor_factory = executor_factory
        self.executor = None
        self.submitted: set[str] = set()
        self.proposal_of: dict[str, Proposal] = {}
        self.preflight = Preflight(self.baseline_source, self.track.env, self.track.byte_cap, self._calibration)
        self.study = open_study(self.store.db_path, cfg.name, cfg.seed, pareto=cfg.objective == "pareto")
        self.pool = ProposerPool(cfg, self.track, self.preflight, self.study, self.space, self.store, announce)
        self.optuna = self.pool.optuna

    @property
    def proposers(self) -> dict[str, object]:
        """The proposers by name (the pool's live dict: adding one here makes it a proposer)."""
        return self.pool.by_name

    # --- set-up ---------------------------------------------------------------------------
    def _search_space(self):
        from search_space.knobs import SearchSpace

        try:
            return SearchSpace.from_config(self.baseline_source, self.cfg.knobs, base_env=self.track.env)
        except ValueError as e:
            raise ConfigError(f"knobs: {' '.join(str(e).split())}") from None

    def _calibration(self):
        from search_space.size_estimate import Calibration

        data = self.store.get_meta("size_calibration")
        return Calibration.from_dict(data) if data else None  # None = the official baseline's fit

    # --- the view proposers see -----------------------------------------------------------
    def view(self) -> SearchView:
        standings = views.standings(self.store, self.track.byte_cap)
        board = tuple(
            ScoredCandidate(s.candidate_id, s.val_bpb, s.bytes_total, s.rung, s.patch, s.env, s.proposer,
                            s.techniques, s.rationale)
            for s in standings if s.kind == "search" and not s.blocked and "over_cap" not in s.flags
        )
        fails = tuple(
            FailedCandidate(r.candidate_id, self.store.candidate(r.candidate_id).patch, {}, r.status, r.error or "",
                            r.proposer)
            for r in views.failures(self.store, 10)
        ) + tuple(FailedCandidate(r.id, "", {}, "rejected", r.reason, r.proposer)
                  for r in views.rejections(self.store, 10))
        ref = next((s for s in standings if s.kind == "reference"), None)
        tried = frozenset(r.patch_hash for r in self.store.query("SELECT patch_hash FROM candidates"))
        return SearchView(self.baseline_source, self.baseline_hash, self.track.name, self.track.byte_cap,
                          ref.bytes_total if ref else None, board, fails, tried)

    # --- candidates and runs --------------------------------------------------------------
    def add_candidate(self, p: Proposal, kind: str = "search", rung_index: int = 0) -> str | None:
        cand = Candidate(self.baseline_hash, self.track.name, p.patch, dict(p.env))
        if self.store.candidate(cand.id):
            if p.trial_number is not None and self.optuna:
                self.optuna.finish(p.trial_number, None, None, completed=False)
            return None
        cost = self.pool.technique_cost(p.techniques)
        check = self.preflight.check(p.patch, p.env, cost) if kind != "reference" else None
        state, reason = ("active", "") if check is None or check.ok else ("rejected", f"{check.stage}: {check.reason}")
        if state == "active" and (p.patch or "VOCAB_SIZE" in p.env):
            try:  # the data a candidate's vocabulary needs exists (or is built) before it is queued
                self.data_paths(check.source if check else self.baseline_source, p.env)
            except PgolfError as e:
                state, reason = "rejected", f"data: {e}"
        self.store.add_candidate({
            "id": cand.id, "baseline_hash": self.baseline_hash, "track": self.track.name, "patch": p.patch,
            "patch_hash": cand.patch_hash, "env": dict(p.env), "proposer": p.proposer, "rationale": p.rationale,
            "parents": list(p.parents), "techniques": list(p.techniques), "trial_number": p.trial_number,
            "kind": kind, "state": state, "reason": reason,
            "estimated_bytes": check.estimated_bytes if check else None,
        })
        self.proposal_of[cand.id] = p
        if state == "rejected":
            if p.trial_number is not None and self.optuna:
                self.optuna.finish(p.trial_number, None, check.estimated_bytes, completed=False)
            self.announce(f"rejected {cand.id} ({p.proposer}): {reason}")
            return None
        self.enqueue(cand.id, rung_index, SEARCH_SEED, kind)
        return cand.id

    def data_paths(self, source: str, env: dict[str, str]) -> tuple[Path, Path]:
        """Dataset and tokenizer for a candidate's vocabulary, built or checked once per vocabulary."""
        vocab = candidate_vocab(self.track, source, env)
        if vocab not in self._data_by_vocab:
            self._data_by_vocab[vocab] = ensure_data(track_for_vocab(self.track, vocab), self.announce)
        return self._data_by_vocab[vocab]

    def enqueue(self, candidate_id: str, rung_index: int, seed: int, purpose: str) -> bool:
        rung = self.track.rungs[rung_index]
        rid = run_id(candidate_id, rung.name, seed)
        return self.store.enqueue_run(rid, candidate_id, rung.name, rung_index, seed, rung.gpus, PRIORITY[purpose])

    def run_spec(self, run) -> RunSpec:
        cand = self.store.candidate(run.candidate_id)
        rung = self.track.rungs[run.rung_index]
        if cand.id not in self._run_inputs:  # the patch applied and its vocabulary parsed once per candidate
            source = self.preflight.check(cand.patch, {}).source if cand.patch else self.baseline_source
            self._run_inputs[cand.id] = (source, *self.data_paths(source, cand.env))
        source, dataset, tokenizer = self._run_inputs[cand.id]
        env = self.track.run_env(rung, cand.env, dataset=dataset, tokenizer=tokenizer, seed=run.seed, run_id=run.id)
        run_dir = Path(run.run_dir)
        if run_dir.exists():  # a reaped orphan's half-written folder: start clean
            import shutil

            shutil.rmtree(run_dir)
        return RunSpec(run_id=run.id, run_dir=run_dir, source=source, patch=cand.patch, env=env,
                       nproc=max(1, rung.gpus), time_cap_s=rung.time_cap_s, grace_s=self.cfg.grace_s,
                       eval_cap_s=self.track.eval_cap_s, byte_cap=self.track.byte_cap, startup_s=self.track.startup_s)

    # --- driver steps ---------------------------------------------------------------------
    def dispatch(self) -> None:
        queued = [r for r in self.store.runs(status="queued") if r.id not in self.submitted]
        queued = self.tamper.admit(queued, self.executor, in_flight=bool(self.submitted or self.executor.running()))
        for run in queued:
            self.executor.submit(self.run_spec(run), run.gpus, priority=run.priority,
                                 same_gpu_model=CONFIRM_GROUP if self._is_confirm(run) else None)
            kill_point("dispatch")
            self.submitted.add(run.id)
        for rid in self.executor.running():
            r = self.store.run(rid)
            if r is not None and r.status == "queued":
                self.store.mark_running(rid)

    def _is_confirm(self, run) -> bool:
        """A confirm seed (candidate's or baseline's): the runs the judge compares for a record."""
        return run.rung_index == len(self.track.rungs) - 1 and run.seed in self.confirm_seeds

    def _hold_confirm_gpu_model(self) -> None:
        """A resumed search keeps its confirm seeds on the GPU model most of its earlier ones used."""
        where = f"rung_index=? AND gpus>0 AND seed IN ({','.join('?' * len(self.confirm_seeds))})"
        by_rung = ledger.skus(self.store, where, (len(self.track.rungs) - 1, *self.confirm_seeds))
        models = Counter({m: n for m, n in by_rung.get(self.track.top_rung.name, {}).items()
                          if m not in ("unrecorded", *ledger.UNNAMED_GPUS)})
        hold = getattr(self.executor, "hold_gpu_model", None)  # a test's executor may not place on nodes
        if models and hold is not None:
            hold(CONFIRM_GROUP, models.most_common(1)[0][0])

    def collect(self, outcomes: list[RunOutcome]) -> None:
        for o in outcomes:
            self.submitted.discard(o.run_id)
            run = self.store.run(o.run_id)
            if run is None:
                continue
            verdict = self.tamper.judge(run, o)
            if verdict == CONVICTED:
                self.store.finish_run(o.run_id, o.to_dict())
                self._after_run(run, o)
                continue
            if verdict == RERUN_ALONE:
                (Path(run.run_dir) / "outcome.json").unlink(missing_ok=True)
                self.store.requeue(o.run_id, "rerun alone: files or store rows it does not own changed while"
                                             " it ran beside other runs")
                continue
            if o.status == RunStatus.CRASH and (o.error or "").startswith("ray worker died") and run.attempt < 2:
                self.store.requeue(o.run_id, o.error)  # the node died, not the candidate: try elsewhere
                continue
            if self._ran_out_of_disk(o):  # not the candidate's fault either; nothing can run until space is freed
                (Path(run.run_dir) / "outcome.json").unlink(missing_ok=True)
                self.store.requeue(o.run_id, "disk full")
                raise StoreError(self._disk_full_message())
            self.store.finish_run(o.run_id, o.to_dict())
            self._after_run(run, o)

    def _ran_out_of_disk(self, o: RunOutcome) -> bool:
        """A run that failed writing: the disk under the store is (nearly) full. Checked against the free
        space, so a candidate that merely prints 'No space left on device' is still its own crash."""
        if o.status not in (RunStatus.CRASH, RunStatus.INVALID) or not _DISK_FULL.search(o.error or ""):
            return False
        try:
            return shutil.disk_usage(self.store.root).free < DISK_FULL_FREE_BYTES
        except OSError:
            return True

    def _after_run(self, run, o: RunOutcome) -> None:
        cand = self.store.candidate(run.candidate_id)
        ok = o.status == RunStatus.OK and o.val_bpb is not None
        top_rung = run.rung_index == len(self.track.rungs) - 1
        if ok and top_rung and not cand.patch and o.bytes_model:  # calibrate on what the cap is checked against
            self._add_calibration_point({**self.track.env, **cand.env, **self.track.rungs[run.rung_index].env},
                                        o.bytes_model)
        if cand.kind != "search" or run.seed != SEARCH_SEED:
            return
        if ok and self.optuna and cand.trial_number is not None:
            self.optuna.report(cand.trial_number, run.rung_index, None, o.val_bpb)
        top = top_rung
        if not ok or top:
            if cand.trial_number is not None and self.optuna:
                self.optuna.finish(cand.trial_number, o.val_bpb if ok else None, o.bytes_total, completed=ok and top)
            if not ok:
                self.store.set_candidate_state(cand.id, "stopped", f"{o.status.value} at {run.rung}: {o.error or ''}")
        p = self.proposal_of.get(cand.id)
        if p is not None:
            self.pool.observe(cand.proposer, cand.id, p, o.val_bpb if ok else None, o.status.value)

    def _add_calibration_point(self, env: dict, bytes_model: int) -> None:
        from search_space.size_estimate import calibrate

        points = self.store.get_meta("size_points", [])
        points = (points + [[env, bytes_model]])[-200:]
        self.store.set_meta("size_points", points)
        try:
            self.store.set_meta("size_calibration", calibrate([(e, b) for e, b in points]).to_dict())
        except ValueError:
            pass

    def sync_progress(self) -> None:
        for rid, p in self.executor.progress().items():
            self.store.update_progress(rid, p)
            run = self.store.run(rid)
            if run is None or p.get("val_bpb") is None or not self.optuna:
                continue
            cand = self.store.candidate(run.candidate_id)
            if cand.kind == "search" and cand.trial_number is not None and run.seed == SEARCH_SEED:
                if self.optuna.report(cand.trial_number, run.rung_index, int(p.get("step") or 0), p["val_bpb"]):
                    self.announce(f"optuna pruned {rid} at step {p.get('step')} (val_bpb {p['val_bpb']:.4f})")
                    self.executor.cancel(rid)

    def promote_rungs(self, draining: bool) -> None:
        """Asynchronous successive halving: a rung's top `keep` fraction goes up a rung. Two grouped queries per
        tick whatever the number of candidates, and an enqueue only for what is not queued yet."""
        rows = self.store.query(
            "SELECT r.rung_index, r.candidate_id, AVG(r.val_bpb) AS v, c.kind, c.state FROM runs r"
            " JOIN candidates c ON c.id = r.candidate_id WHERE r.status='ok' AND r.seed=? AND r.val_bpb IS NOT NULL"
            " AND c.kind IN ('search', 'reference') GROUP BY r.rung_index, r.candidate_id", (SEARCH_SEED,))
        have = {(r.candidate_id, r.rung_index)
                for r in self.store.query("SELECT candidate_id, rung_index FROM runs WHERE seed=?", (SEARCH_SEED,))}
        for i, rung in enumerate(self.track.rungs[:-1]):
            done = [r for r in rows if r.rung_index == i]
            k = math.ceil(len(done) * rung.keep) if draining else math.floor(len(done) * rung.keep + 1e-9)
            ranked = sorted((r for r in done if r.kind == "search" and r.state == "active"), key=lambda r: r.v)
            for r in ranked[:k]:
                if (r.candidate_id, i + 1) not in have:
                    self.enqueue(r.candidate_id, i + 1, SEARCH_SEED, "search")
            if any(r.candidate_id == self.reference_id for r in done) and (self.reference_id, i + 1) not in have:
                self.enqueue(self.reference_id, i + 1, SEARCH_SEED, "reference")

    def refill(self) -> int:
        # prefetched baseline runs are not the search's queue: they only fill otherwise idle slots
        pending = self.store.scalar("SELECT COUNT(*) FROM runs WHERE status='queued' AND priority >= 0")
        target = max(2, math.ceil(self.slots() * self.cfg.queue_depth))
        n_search = self.store.scalar("SELECT COUNT(*) FROM candidates WHERE kind='search' AND state!='rejected'")
        budget_left = self.cfg.budget.max_candidates - n_search
        added, attempts = 0, 0
        thinking: set[str] = set()  # proposers whose answers are on their way: asked again next tick
        while pending + added < target and added < budget_left and attempts < 3 * target:
            name = self.pool.next(thinking)
            if name is None:
                break
            attempts += 1
            want = max(1, min(self.cfg.llm.concurrency, target - pending - added)) if name == "llm" else 1
            props = self.pool.ask(name, self.view, want)
            if props is None:
                thinking.add(name)
                continue
            for p in props:
                if self.add_candidate(p):
                    added += 1
        return added

    def slots(self) -> int:
        cap = self.executor.capacity()
        return int(cap.get("gpus") or 0) if any(r.gpus for r in self.track.rungs) else int(cap.get("cpus") or 1)

    # --- budgets --------------------------------------------------------------------------
    def out_of_budget(self) -> str | None:
        b = self.cfg.budget
        started = self.store.get_meta("started_at", time.time())
        if b.max_wall_hours and time.time() - started > b.max_wall_hours * 3600:
            return f"wall-time budget of {b.max_wall_hours} h reached"
        spent = self.spent_budget()
        if spent:
            return spent
        n = self.store.scalar("SELECT COUNT(*) FROM candidates WHERE kind='search' AND state!='rejected'")
        if n >= b.max_candidates:
            return f"{n} candidates proposed (max_candidates)"
        return None

    def spent_budget(self) -> str | None:
        """The GPU-hour or money budget is spent: unlike the other stops, no run may start any more."""
        b = self.cfg.budget
        gh = views.gpu_hours(self.store)
        if b.max_gpu_hours and gh >= b.max_gpu_hours:
            return f"GPU-hour budget of {b.max_gpu_hours} reached"
        if b.max_cost_usd and gh * b.price_per_gpu_hour >= b.max_cost_usd:
            return f"cost budget of ${b.max_cost_usd} reached"
        return None

    def stop_spending(self, reason: str) -> None:
        """Cancel every run not started yet (queued in the store or in the executor); in-flight runs finish."""
        for run in self.store.runs(status="queued"):
            if run.id in self.submitted:
                self.executor.cancel(run.id)  # its CANCELLED outcome comes back through collect()
            else:
                self.store.finish_run(run.id, {"status": "cancelled", "error": f"not started: {reason}"})

    # --- main -----------------------------------------------------------------------------
    def start(self) -> None:
        s = self.store
        if s.get_meta("config") is None:
            s.set_meta("config", config_to_dict(self.cfg))
            s.set_meta("started_at", time.time())
            s.set_meta("baseline_hash", self.baseline_hash)
            s.event("search_started", name=self.cfg.name, track=self.track.name, host=socket.gethostname())
        elif s.get_meta("baseline_hash") != self.baseline_hash:
            raise BaselineError(f"{s.root} was started with another baseline; use a new --name or the same baseline")
        s.track_own_writes()
        self.tamper.start([self.config_path, self._baseline_path(), self._track_path()])
        adopted = self._adopt_finished()
        reaped = s.reap_orphans()
        known = {c.trial_number for c in s.candidates() if c.trial_number is not None}
        if self.optuna:
            self.optuna.fail_orphans(known)
            self._reattach_trials()
        if reaped or adopted:
            self.announce(f"resumed: {len(reaped)} interrupted run(s) requeued, {len(adopted)} finished run(s) "
                          "recorded from their run folders")
        ref = Candidate(self.baseline_hash, self.track.name)
        self.reference_id = ref.id
        if s.candidate(ref.id) is None:
            self.add_candidate(Proposal(proposer="baseline", rationale="the unmodified baseline"), kind="reference")
        if self.cfg.promotion.enabled:
            for seed in self.confirm_seeds:
                self.enqueue(ref.id, len(self.track.rungs) - 1, seed, "prefetch")
        s.event("driver_started", pid=os.getpid())

    def _baseline_path(self) -> Path:
        return Path(self.cfg.baseline) if self.cfg.baseline else BASELINE_PATH

    def _track_path(self) -> Path:
        p = Path(self.cfg.track)
        return p if p.suffix else TRACKS_DIR / f"{self.cfg.track}.toml"

    def _adopt_finished(self) -> list[str]:
        """Runs that finished while the last driver was dying (their runner wrote outcome.json, the store
        never heard): record them instead of training them again."""
        adopted = []
        for run in self.store.runs(status=("queued", "running")):
            o = finished_outcome(Path(run.run_dir), run.id)
            if o is not None:
                self.collect([o])
                self.store.event("adopted", run_id=run.id, status=o.status.value)
                adopted.append(run.id)
        return adopted

    def _reattach_trials(self) -> None:
        """Candidates whose trial is still open: the proposer needs them to finish the trial later."""
        for c in self.store.candidates(state="active", kind="search"):
            if c.trial_number is not None:
                self.proposal_of.setdefault(c.id, Proposal(patch=c.patch, env=c.env, proposer=c.proposer,
                                                           trial_number=c.trial_number))

    def idle(self) -> bool:
        return not self.store.runs(status=("queued", "running")) and not self.executor.running()

    def run(self) -> dict:
        """Run (or resume) the search to its end; returns the summary."""
        try:
            return self._run()
        except Exception as e:
            if not disk_full_error(e):
                raise
            raise StoreError(self._disk_full_message()) from None

    def _disk_full_message(self) -> str:
        return f"disk full under {self.store.root.absolute()}: free space or move --store, then run the same command"

    def _run(self) -> dict:
        from harness.promote import Promoter

        self.start()
        scrubbed = sandbox.scrub_secrets_from_environ()  # keys were read; Ray and candidates inherit none
        if scrubbed:
            self.store.event("secrets_scrubbed", names=scrubbed)
        self.executor = self.executor_factory() if self.executor_factory else self._default_executor()
        self._hold_confirm_gpu_model()
        try:
            promoter = Promoter(self)
            stop_reason = None
            spent_said = False
            while True:
                outcomes = self.executor.poll(timeout=0.5)
                self.tamper.check(outcomes, self.executor)
                self.collect(outcomes)
                self.pool.drain()
                self.sync_progress()
                self.store.set_meta("cluster", {**self.executor.capacity(),
                                                "busy_fraction": self.executor.busy_fraction(),
                                                "updated_at": time.time()})
                if stop_reason is None:
                    stop_reason = self.out_of_budget()
                    if stop_reason:
                        self.announce(f"search phase over: {stop_reason}; finishing what is in flight")
                        self.store.event("search_phase_over", reason=stop_reason)
                spent = self.spent_budget()
                if spent and not spent_said:  # checked while draining too: a hard stop, promotion's runs included
                    spent_said = True
                    if stop_reason != spent:
                        self.announce(f"{spent}: no run starts any more; finishing what is in flight")
                    self.store.event("budget_spent", reason=spent)
                    stop_reason = stop_reason or spent
                draining = stop_reason is not None
                self.promote_rungs(draining)
                if spent:
                    self.stop_spending(spent)
                if (not draining and self.refill() == 0 and self.idle() and self.pool.next() is None
                        and not self.pool.busy()):
                    stop_reason = "every proposer is out of ideas"
                    continue
                if draining and self.idle():
                    if spent or not promoter.step():
                        break
                self.dispatch()
            return self.finish(stop_reason, promoter)
        finally:
            try:  # after an error or Ctrl-C: stop conversations now; attempts already finished are stored
                self.pool.close(0.0)
            except Exception:  # noqa: BLE001 - the error being raised matters more than these events
                log.exception("closing the proposers failed")
            self.executor.shutdown()

    def finish(self, stop_reason: str | None, promoter) -> dict:
        self.pool.close(PROPOSER_CLOSE_WAIT_S)  # their last attempts are stored before the summary
        top = self.rung_names[-1]
        for c in self.store.candidates(state="active", kind="search"):
            reached = self.store.one("SELECT rung, val_bpb FROM runs WHERE candidate_id=? AND status='ok'"
                                     " AND seed=? ORDER BY rung_index DESC LIMIT 1", (c.id, SEARCH_SEED))
            if reached is not None and reached.rung == top:
                continue
            if c.trial_number is not None and self.optuna:
                self.optuna.finish(c.trial_number, reached.val_bpb if reached else None, None, completed=False)
            self.store.set_candidate_state(c.id, "stopped", f"not promoted past {reached.rung if reached else 'smoke'}")
        summary = {
            "stop_reason": stop_reason,
            "candidates": self.store.scalar("SELECT COUNT(*) FROM candidates WHERE kind='search'"),
            "runs": self.store.scalar("SELECT COUNT(*) FROM runs"),
            "rung_agreement": views.rung_agreement(self.store, self.rung_names),
            "size_estimate_error": views.size_estimate_error(self.store, top),
            "record": promoter.record_path,
            "verdict": promoter.verdict,
        }
        self.store.set_meta("summary", summary)
        self.store.event("search_finished", **{k: v for k, v in summary.items()
                                               if k not in ("rung_agreement", "size_estimate_error")})
        return summary

    def _default_executor(self):
        from harness.executor import RayExecutor

        address = self.cfg.ray_address or None
        if address:
            return RayExecutor(address=address)
        return RayExecutor(num_gpus=self.cfg.logical_gpus or None)
