"""What a training run is asked to do (`RunSpec`) and what it came to (`RunOutcome`, `RunStatus`).

Plain data shared by the runner, the Ray slots, the driver and the store; `harness.runner` runs them.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    CRASH = "crash"
    TIMEOUT = "timeout"
    OVER_BUDGET = "over_budget"
    INVALID = "invalid"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    run_id: str
    run_dir: Path
    source: str  # full text of the (patched) train_gpt.py
    patch: str = ""  # unified diff vs the baseline (may be empty), saved as patch.diff
    env: dict[str, str] = field(default_factory=dict)  # trainer env: knobs, rung settings, DATA_PATH, SEED...
    nproc: int = 1  # processes; > 1 runs under torchrun --standalone --nproc_per_node=N
    time_cap_s: float  # the track's training cap (what MAX_WALLCLOCK_SECONDS defaults to)
    grace_s: float = 30.0
    eval_cap_s: float | None = None  # the trainer's own final eval allowance; the re-score's cap
    byte_cap: int = 16_000_000
    rescore: bool = True
    python: str = sys.executable
    startup_s: float = 120.0  # interpreter + imports + compile + data loading, on top of the caps
    term_grace_s: float = 5.0  # SIGTERM -> SIGKILL delay when the harness kills a run
    time_tolerance_s: float = 0.5  # reported train time may exceed time_cap_s by this before over_time
    rescore_nproc: int | None = None  # processes for the re-score (None = nproc)
    max_log_bytes: int = 256 * 1024 * 1024  # a run printing more is killed (disk protection)
    keep_fp_model: bool = False  # keep the trainer's unquantized final_model.pt (tens of MB per run)
    keep_scratch: bool = False  # keep home/ and tmp/ (compile caches) after the run
    # Folders the training process may read but not change, and no network for it: the CPU smoke of untrusted
    # code on the driver's machine (harness/smoke.py). Needs user, network and mount namespaces; where there are
    # none the run goes ahead without, and `RunOutcome.isolation` says so.
    confine: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        if not isinstance(self.run_id, str) or not _RUN_ID_RE.match(self.run_id):
            raise ValueError(f"RunSpec.run_id {self.run_id!r}: use 1-200 chars of [A-Za-z0-9._-]")
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError("RunSpec.source must be the non-empty text of train_gpt.py")
        try:
            self.source.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"RunSpec.source is not encodable as UTF-8: {e}") from None
        if not isinstance(self.patch, str):
            raise ValueError("RunSpec.patch must be a string (may be empty)")
        if not isinstance(self.env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in self.env.items()):
            raise ValueError("RunSpec.env must map str to str (format numbers as the trainer parses them)")
        bad = [k for k in self.env if not k or "=" in k or "\0" in k or "\0" in self.env[k]]
        if bad:
            raise ValueError(f"RunSpec.env has unusable names or values: {bad}")
        if not (isinstance(self.nproc, int) and self.nproc >= 1):
            raise ValueError(f"RunSpec.nproc must be an int >= 1, got {self.nproc!r}")
        if self.rescore_nproc is not None and not (isinstance(self.rescore_nproc, int) and self.rescore_nproc >= 1):
            raise ValueError(f"RunSpec.rescore_nproc must be None or an int >= 1, got {self.rescore_nproc!r}")
        for name in ("time_cap_s", "grace_s", "startup_s", "term_grace_s", "time_tolerance_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name == "time_cap_s" and v == 0):
                raise ValueError(f"RunSpec.{name} must be a finite number >= 0 (time_cap_s > 0), got {v!r}")
        if self.eval_cap_s is not None and not (isinstance(self.eval_cap_s, (int, float)) and self.eval_cap_s > 0):
            raise ValueError(f"RunSpec.eval_cap_s must be None or > 0, got {self.eval_cap_s!r}")
        if not (isinstance(self.byte_cap, int) and self.byte_cap > 0):
            raise ValueError(f"RunSpec.byte_cap must be a positive int, got {self.byte_cap!r}")
        if not self.python:
            raise ValueError("RunSpec.python must name an interpreter")
        if not isinstance(self.confine, tuple) or not all(isinstance(p, str) and os.path.isabs(p)
                                                          for p in self.confine):
            raise ValueError(f"RunSpec.confine must be a tuple of absolute paths, got {self.confine!r}")

    @property
    def kill_after_s(self) -> float:
        """Wall seconds after which the training process group is killed."""
        return self.time_cap_s + (self.eval_cap_s or 0.0) + self.grace_s + self.startup_s

    @property
    def rescore_kill_after_s(self) -> float:
        return (self.eval_cap_s or self.time_cap_s) + self.grace_s + self.startup_s


@dataclass
class RunOutcome:
    """What one run came to. JSON-serializable via to_dict()/from_dict().

    `val_bpb`/`val_loss` are official (the re-score) when status is OK and `not_rescored` is not
    in `flags`; for OVER_BUDGET they repeat the candidate's claim for information; otherwise None
    (the claim, if any, stays in `claimed_val_bpb`). Flags: bytes_mismatch, rescore_mismatch,
    log_result_mismatch, over_time, over_eval_time, code_modified, env_secret_stripped,
    not_rescored, rescore_network_not_isolated, rescore_fs_not_isolated, harness_error.
    """

    run_id: str
    status: RunStatus
    error: str | None = None  # ONE line: cause + fix
    val_loss: float | None = None  # official: the re-score when there is one
    val_bpb: float | None = None
    pre_quant_val_loss: float | None = None
    pre_quant_val_bpb: float | None = None
    claimed_val_loss: float | None = None  # what the candidate reported for its artifact
    claimed_val_bpb: float | None = None
    bytes_total: int | None = None  # recounted by the harness
    bytes_code: int | None = None
    bytes_model: int | None = None
    steps: int | None = None
    train_time_ms: float | None = None  # reported by the trainer
    eval_time_ms: float | None = None
    wall_s: float | None = None  # training process, measured by the harness from outside
    rescore_wall_s: float | None = None
    rescore_val_bpb: float | None = None
    rescore_val_loss: float | None = None
    exit_code: int | None = None  # negative = killed by that signal
    stopped_early: bool | None = None
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one human-readable line per flag / oddity
    val_history: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)  # the raw result file
    peak_memory_mib: float | None = None
    device: str | None = None
    world_size: int | None = None
    code_sha256: str | None = None
    artifact_sha256: str | None = None
    run_dir: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    isolation: dict = field(default_factory=dict)  # stage ("training", "rescore") -> what contained it

    def flag(self, name: str, note: str | None = None) -> None:
        if name not in self.flags:
            self.flags.append(name)
        if note:
            self.notes.append(f"{name}: {note}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunOutcome:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["status"] = RunStatus(kwargs.get("status", RunStatus.CRASH))
        return cls(**kwargs)
