"""After the search phase: select, ablate to the minimal effective diff, confirm on fresh seeds,
judge against the baseline's own seeds, audit, and write the record folder.

A small state machine persisted in the store's meta table: each `step()` enqueues the next batch
of runs (returns True) or finishes (returns False). Killed and restarted, it picks up where it was
because every phase is derived from what the store already holds.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

from harness import ledger, views
from harness.candidate import Candidate
from harness.faults import kill_point
from harness.proposals import Proposal

CONFIRM_SEED_BASE = 1  # fresh seeds 1..N, never the search seed 1337


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def confirm_seeds(n: int) -> list[int]:
    return [CONFIRM_SEED_BASE + i for i in range(n)]


def split_hunks(patch: str) -> tuple[str, list[str]]:
    """A unified diff's file header and its hunks (each starting at an @@ line)."""
    header, hunks, cur = [], [], None
    for line in patch.splitlines(keepends=True):
        if line.startswith("@@"):
            cur = [line]
            hunks.append(cur)
        elif cur is None:
            header.append(line)
        else:
            cur.append(line)
    return "".join(header), ["".join(h) for h in hunks]


def join_hunks(header: str, hunks: list[str]) -> str:
    return header + "".join(hunks) if hunks else ""


def slugify(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text)[:6]
    return "_".join(w[:1].upper() + w[1:] for w in words) or "Candidate"


class Promoter:
    def __init__(self, search):
        self.s = search
        self.store = search.store
        self.cfg = search.cfg.promotion
        self.track = search.track
        self.top = len(self.track.rungs) - 1
        self.ablation_rung = max(0, self.top - 1)
        self.state = self.store.get_meta("promotion", {"phase": "select"})

    @property
    def record_path(self) -> str | None:
        return self.state.get("record")

    @property
    def alpha(self) -> float:
        """Each attempt is its own test: Bonferroni keeps the chance of any false promotion under alpha."""
        return self.cfg.alpha / self.cfg.attempts

    @property
    def verdict(self) -> str | None:
        return self.state.get("verdict")

    def _save(self, **kw) -> None:
        self.state.update(kw)
        self.store.set_meta("promotion", self.state)
        self.store.event("promotion_phase", **self.state)

    def _say(self, msg: str) -> None:
        self.s.announce(msg)

    def step(self) -> bool:
        if not self.cfg.enabled:
            return False
        phase = self.state["phase"]
        return getattr(self, f"_{phase}")()

    # --- phases ---------------------------------------------------------------------------
    def _select(self) -> bool:
        """The best top-rung candidate not judged yet, if its single-seed gain reaches the margin: one whose
        gain is already under the margin would need luck to pass the judge, and its confirm runs are wasted."""
        judged = set(self.state.get("judged", []))
        top = [s for s in views.standings(self.store, self.track.byte_cap) if s.rung_index == self.top]
        board = [s for s in top if not s.blocked and "over_cap" not in s.flags]
        ref = next((s for s in top if s.kind == "reference"), None)
        best = next((s for s in board if s.kind == "search" and s.candidate_id not in judged), None)
        why = None
        if best is None:
            why = "no candidate left that finished the top rung" if judged else "no candidate finished the top rung"
        elif ref is None:
            why = "the baseline did not finish the top rung"
        elif ref.blocked:
            why = (f"the baseline's top-rung runs are flagged ({', '.join(ref.flags)}); see pgolf runs show"
                   f" {ref.candidate_id}")
        elif best.val_bpb >= ref.val_bpb:
            why = f"best {best.candidate_id} {best.val_bpb:.4f} does not beat the baseline {ref.val_bpb:.4f}"
        elif math.isfinite(best.val_loss) and math.isfinite(ref.val_loss) and \
                ref.val_loss - best.val_loss < self.cfg.margin_nats:
            why = (f"best {best.candidate_id} gains {ref.val_loss - best.val_loss:.4f} nats over the baseline, under"
                   f" the {self.cfg.margin_nats} margin a confirmation must show")
        if why is not None:
            self._save(phase="done", verdict=self.state.get("verdict") or "none", reason=why)
            self._say(f"nothing to promote: {why}")
            return False
        self._say(f"best candidate {best.candidate_id}: val_bpb {best.val_bpb:.4f} vs baseline {ref.val_bpb:.4f}")
        self._save(phase="ablate", best=best.candidate_id, winner=best.candidate_id)
        return self._ablate()

    def _next_attempt(self, judged: list[str], reason: str) -> bool:
        """The judged candidate failed: confirm the next best, while attempts are left. One save moves the
        state on, so a driver killed here either judges again or starts the next attempt, never neither."""
        attempt = self.state.get("attempt", 1)
        if attempt >= self.cfg.attempts:
            return False
        self.state = {"phase": "select", "judged": judged, "attempt": attempt + 1,
                      "verdict": self.state.get("verdict"), "reason": reason}
        self._save()
        self._say(f"attempt {attempt + 1} of {self.cfg.attempts}: confirming the next best candidate")
        return self._select()

    def _components(self, cid: str) -> tuple[str, list[str], dict]:
        c = self.store.candidate(cid)
        header, hunks = split_hunks(c.patch)
        return header, hunks, dict(c.env)

    def _variant(self, header: str, hunks: list[str], env: dict) -> Proposal:
        """A part of the best candidate; it keeps the best's techniques, so a minimal diff that wins is named for
        what it is (the record folder and README), not as an anonymous tuning."""
        best = self.store.candidate(self.state["best"])
        return Proposal(patch=join_hunks(header, hunks), env=env, proposer="ablation", parents=(best.id,),
                        rationale=best.rationale or "ablation variant", techniques=tuple(best.techniques))

    def _variant_id(self, p: Proposal) -> str:
        return Candidate(self.s.baseline_hash, self.track.name, p.patch, dict(p.env)).id

    def _ablate(self) -> bool:
        header, hunks, env = self._components(self.state["best"])
        parts = [("hunk", i) for i in range(len(hunks))] + [("env", k) for k in sorted(env)]
        if not self.cfg.ablate or len(parts) < 2:
            self._save(phase="confirm")
            return self._confirm()
        variants = {}
        for kind, key in parts:
            h = [x for i, x in enumerate(hunks) if not (kind == "hunk" and i == key)]
            e = {k: v for k, v in env.items() if not (kind == "env" and k == key)}
            p = self._variant(header, h, e)
            variants[f"{kind}:{key}"] = self._variant_id(p)
            if self.store.candidate(variants[f"{kind}:{key}"]) is None:
                self.s.add_candidate(p, kind="ablation", rung_index=self.ablation_rung)
            else:
                self.s.enqueue(variants[f"{kind}:{key}"], self.ablation_rung, 1337, "ablation")
        self._say(f"ablating {len(parts)} components of {self.state['best']} at rung "
                  f"{self.track.rungs[self.ablation_rung].name}")
        self._save(phase="reduce", variants=variants)
        return True

    def _reduce(self) -> bool:
        rung = self.track.rungs[self.ablation_rung].name
        scores = views.rung_scores(self.store, rung, 1337)
        best, ref = self.state["best"], self.s.reference_id
        if best not in scores or ref not in scores:
            self._save(phase="confirm")
            return self._confirm()
        gain = scores[ref] - scores[best]
        tol = max(0.25 * gain, 1e-4)
        header, hunks, env = self._components(best)
        needed_hunks, needed_env, dropped = [], {}, []
        for name, vid in self.state["variants"].items():
            kind, key = name.split(":", 1)
            holds = vid in scores and scores[vid] <= scores[best] + tol
            if holds:
                dropped.append(name)
            elif kind == "hunk":
                needed_hunks.append(hunks[int(key)])
            else:
                needed_env[key] = env[key]
        if len(dropped) == len(self.state["variants"]):
            # Each part alone holds the gain (redundant parts, e.g. a patched default and the same env
            # override): dropping them all leaves the baseline. Keep the one whose removal cost the most.
            keep = max(dropped, key=lambda name: scores.get(self.state["variants"][name], math.inf))
            dropped.remove(keep)
            kind, key = keep.split(":", 1)
            if kind == "hunk":
                needed_hunks.append(hunks[int(key)])
            else:
                needed_env[key] = env[key]
        if not dropped:
            self._say("ablation: every component carries part of the gain")
            self._save(phase="confirm", dropped=[])
            return self._confirm()
        minimal = self._variant(header, needed_hunks, needed_env)
        mid = self._variant_id(minimal)
        self._say(f"ablation: dropping {', '.join(dropped)}; checking the minimal diff {mid}")
        if self.store.candidate(mid) is None:
            self.s.add_candidate(minimal, kind="ablation", rung_index=self.ablation_rung)
        self._save(phase="verify_minimal", minimal=mid, dropped=dropped, tol=tol)
        return True

    def _verify_minimal(self) -> bool:
        rung = self.track.rungs[self.ablation_rung].name
        scores = views.rung_scores(self.store, rung, 1337)
        best, mid = self.state["best"], self.state["minimal"]
        if mid in scores and best in scores and scores[mid] <= scores[best] + self.state["tol"]:
            self._say(f"minimal diff {mid} holds the gain ({scores[mid]:.4f} vs {scores[best]:.4f})")
            self._save(phase="confirm", winner=mid)
        else:
            self._say("the minimal diff lost the gain; confirming the full candidate")
            self._save(phase="confirm", winner=best)
        return self._confirm()

    def _confirm_seeds(self) -> list[int]:
        return confirm_seeds(self.cfg.seeds)

    def _confirm(self) -> bool:
        winner, ref = self.state["winner"], self.s.reference_id
        added = 0
        for seed in self._confirm_seeds():
            added += self.s.enqueue(winner, self.top, seed, "confirm")
            added += self.s.enqueue(ref, self.top, seed, "confirm")
        self._say(f"confirming {winner} against the baseline on seeds {self._confirm_seeds()}")
        self._save(phase="judge")
        return True if added else self._judge()

    def _seed_runs(self, cid: str) -> list:
        seeds = self._confirm_seeds()
        return [r for r in self.store.runs(candidate_id=cid, rung=self.track.rungs[self.top].name)
                if r.seed in seeds]

    def _judge(self) -> bool:
        from harness.judge import judge

        winner, ref = self.state["winner"], self.s.reference_id
        cand_runs, ref_runs = self._seed_runs(winner), self._seed_runs(ref)
        ok = lambda rs: [r for r in rs if r.status == "ok" and r.val_loss is not None]  # noqa: E731
        j = judge([r.val_loss for r in ok(cand_runs)], [r.val_loss for r in ok(ref_runs)],
                  margin_nats=self.cfg.margin_nats, alpha=self.alpha, min_seeds=self.cfg.seeds,
                  candidate_bpb=[r.val_bpb for r in ok(cand_runs)], reference_bpb=[r.val_bpb for r in ok(ref_runs)])
        blockers = self._blockers(cand_runs)
        verdict = str(getattr(j.verdict, "value", j.verdict))
        reason = j.reason if not blockers else f"{j.reason}; blocked: {'; '.join(blockers)}"
        # Candidate and baseline seeds on different GPU models: the verdict stands, with the caveat in its reason.
        sku = ledger.sku_note({"confirm": Counter(r.data.get("gpu_sku") or "unrecorded"
                                                  for r in ok(cand_runs) + ok(ref_runs))})
        reason += f"; caveat: {sku}" if sku else ""
        w = j.welch
        record = {"verdict": verdict if not blockers else "discard", "reason": reason,
                  "p_value": getattr(w, "p", None), "t_stat": getattr(w, "t", None), "df": getattr(w, "df", None),
                  "delta_nats": j.delta_nats, "delta_bpb": getattr(j, "delta_bpb", None),
                  "n_candidate": len(ok(cand_runs)), "n_reference": len(ok(ref_runs))}
        if verdict == "keep" and not blockers:
            path = self._record(winner, ok(cand_runs), ok(ref_runs), j)
            record["record_path"] = str(path)
            self.store.add_judgement(winner, record)  # before "done": a restart in between judges again
            self.store.set_candidate_state(winner, "promoted", reason)
            self._say(f"promoted {winner}: {reason} -> {path}")
            self._save(phase="done", verdict="keep", record=str(path), reason=reason)
        else:
            self.store.add_judgement(winner, record)
            self._say(f"not promoted: {reason}")
            judged = [*self.state.get("judged", []), *dict.fromkeys((self.state["best"], winner))]
            self.state["verdict"] = record["verdict"]
            if self._next_attempt(judged, reason):
                return True
            if self.state["phase"] != "done":
                self._save(phase="done", verdict=record["verdict"], reason=reason)
        return False

    def _blockers(self, runs) -> list[str]:
        from harness.audit import audit_run_dir

        out = []
        for r in runs:
            if r.status != "ok":
                out.append(f"seed {r.seed} {r.status}: {r.error}")
                continue
            if r.bytes_total is not None and r.bytes_total > self.track.byte_cap:
                out.append(f"seed {r.seed} artifact {r.bytes_total:,} B over the cap")
            report = audit_run_dir(Path(r.run_dir), self.track.byte_cap)
            out += [f"seed {r.seed} audit {f.code}: {f.message}" for f in report.findings if f.severity == "error"]
        return out

    def _record(self, winner: str, cand_runs: list, ref_runs: list, judgement) -> Path:
        """Write the record folder once. Its date and name are saved before writing, so a driver killed
        after the folder appeared but before the state says so finds it and keeps it (a second folder
        would be a duplicate record; the same name again would fail)."""
        from harness.records import record_folder_name

        target = self.state.get("record_target")
        if not target:
            target = {"date": dt.date.today().isoformat(), "slug": slugify(self._record_name(winner))}
            self._save(record_target=target)
        parent = Path(self.s.cfg.records) / self.track.records_folder
        name = record_folder_name(target["date"], target["slug"])
        path = parent / name
        for partial in parent.glob(f".{name}.partial-*"):  # a writer killed mid-write left its staging folder
            shutil.rmtree(partial, ignore_errors=True)
        if (path / "submission.json").is_file() and _read_json(path / "submission.json"):
            self._say(f"record folder {path} was written before the driver stopped; keeping it")
        else:
            path = self._write_record(winner, cand_runs, ref_runs, judgement, target["date"], target["slug"])
        kill_point("promote.record")
        return path

    def _record_name(self, winner: str) -> str:
        c = self.store.candidate(winner)
        techniques = list(c.techniques)
        what = ", ".join(techniques) if techniques else (c.rationale or "tuned knobs")
        env_desc = " ".join(f"{k}={v}" for k, v in sorted(c.env.items()))
        return slugify(what) if techniques else f"Tuned {slugify(env_desc)[:40]}"

    def _write_record(self, winner: str, cand_runs: list, ref_runs: list, judgement, date: str, slug: str) -> Path:
        from harness.records import RecordMeta, SeedRun, write_record

        c = self.store.candidate(winner)
        source = self.s.preflight.check(c.patch, {}).source if c.patch else self.s.baseline_source

        def seed_run(r) -> SeedRun:
            log = Path(r.run_dir) / "train.log"
            step_avg = (r.train_time_ms or 0) / max(1, r.steps or 1)
            return SeedRun(seed=r.seed, val_loss=r.val_loss, val_bpb=r.val_bpb, bytes_total=r.bytes_total,
                           bytes_code=r.bytes_code, steps=r.steps, step_avg_ms=step_avg,
                           train_time_ms=r.train_time_ms, eval_time_ms=None, log_path=log)

        techniques = list(c.techniques)
        what = ", ".join(techniques) if techniques else (c.rationale or "tuned knobs")
        top = self.track.top_rung
        result = _read_json(Path(cand_runs[0].run_dir) / "result.json")
        run_env = " ".join(f"{k}={v}" for k, v in sorted({**self.track.env, **c.env, **top.env}.items()))
        launcher = f"torchrun --standalone --nproc_per_node={top.gpus}" if top.gpus > 1 else "python3"
        name = self._record_name(winner)
        meta = RecordMeta(
            author=self.s.cfg.author or "pgolf", github_id=self.s.cfg.github_id, name=name,
            blurb=f"{what}; found by pgolf search '{self.s.cfg.name}'", rationale=c.rationale,
            hardware=ledger.measured_hardware(cand_runs, self.track.hardware),
            pytorch_version=str(result.get("torch_version", "")),
            command=f"{run_env} {launcher} train_gpt.py", env=dict(c.env), track=self.track.records_folder,
            byte_cap=self.track.byte_cap, train_time_cap_s=self.track.time_cap_s,
            eval_time_cap_s=self.track.eval_cap_s, techniques=tuple(techniques),
            credits=f"candidate {winner} ({c.proposer}), parents {', '.join(c.parents) or '-'}",
        )
        return write_record(Path(self.s.cfg.records), self.track.records_folder, date, slug, source,
                            c.patch, [seed_run(r) for r in cand_runs], [seed_run(r) for r in ref_runs],
                            judgement, meta)

    def _done(self) -> bool:
        return False
