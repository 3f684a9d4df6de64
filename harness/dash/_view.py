"""What one dashboard frame shows: `DashView` and its rows (leaderboard, runs in flight, failures)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness import views
from harness.dash._format import fmt_duration


@dataclass(frozen=True)
class BoardRow:
    """One leaderboard line: a candidate's evidence at the highest rung it finished."""

    rank: int
    candidate_id: str
    label: str
    proposer: str
    kind: str
    state: str
    rung: str
    seeds: int
    val_bpb: float
    val_bpb_std: float
    val_loss: float | None
    bytes_total: int | None
    byte_cap: int | None
    delta_bpb: float | None
    delta_nats: float | None
    p_value: float | None
    flags: tuple[str, ...]
    gpu_hours: float = 0.0  # held by all the candidate's runs (harness/ledger.py)

    @property
    def headroom(self) -> int | None:
        if self.bytes_total is None or self.byte_cap is None:
            return None
        return self.byte_cap - self.bytes_total

    def bpb_str(self, compact: bool = False) -> str:
        if self.seeds < 2:
            return f"{self.val_bpb:.4f}"
        std = f"{self.val_bpb_std:.4f}"
        return f"{self.val_bpb:.4f} ±{std[1:] if compact and std.startswith('0.') else std}"

    @property
    def flags_str(self) -> str:
        return ",".join(self.flags)

    @property
    def bad(self) -> bool:
        return "over_cap" in self.flags or any(f in views.BLOCKING_FLAGS for f in self.flags)


@dataclass(frozen=True)
class Job:
    """A run in flight and its latest progress report."""

    run_id: str
    candidate_id: str
    proposer: str
    rung: str
    seed: int
    gpus: int
    node: str | None
    gpu_ids: tuple[int, ...]
    step: int | None
    total: int | None
    val_bpb: float | None
    elapsed_s: float
    cap_s: float | None
    attempt: int

    @property
    def fraction(self) -> float:
        parts = []
        if self.step is not None and self.total:
            parts.append(self.step / self.total)
        if self.cap_s:
            parts.append(self.elapsed_s / self.cap_s)
        return min(1.0, max(parts, default=0.0))

    @property
    def where(self) -> str:
        gpus = "cpu" if self.gpus == 0 else f"{self.gpus}gpu"
        if self.gpu_ids:
            gpus = "gpu" + ",".join(str(g) for g in self.gpu_ids)
        return f"{self.node}:{gpus}" if self.node else gpus

    @property
    def step_str(self) -> str:
        if self.step is None:
            return "starting"
        return f"{self.step}/{self.total}" if self.total else str(self.step)

    @property
    def time_str(self) -> str:
        return fmt_duration(self.elapsed_s) + (f"/{fmt_duration(self.cap_s)}" if self.cap_s else "")

    @property
    def over_cap(self) -> bool:
        return bool(self.cap_s) and self.elapsed_s > self.cap_s


@dataclass(frozen=True)
class Failure:
    ts: float | None
    what: str  # run | candidate (a pre-flight rejection)
    ident: str
    rung: str
    status: str
    reason: str
    proposer: str

    @property
    def candidate_short(self) -> str:
        return self.ident.split("-")[0] if self.what == "run" else self.ident


@dataclass(frozen=True)
class DashView:
    """Everything one frame shows; built by load_view(), rendered by render()."""

    store_path: str
    now: float
    version: int = 0  # the store's newest event id when the slow parts were read
    loaded_at: float = 0.0
    name: str = ""
    track: str = ""
    byte_cap: int | None = None
    rungs: tuple[str, ...] = ()
    started_at: float | None = None
    finished: dict | None = None  # meta "summary" once the search has ended
    promotion: dict | None = None
    counts: dict[str, int] = field(default_factory=dict)  # runs per status
    queue: tuple[tuple[str, int], ...] = ()  # queued runs per rung, ladder order
    candidates: dict[str, int] = field(default_factory=dict)  # candidates per state
    board: tuple[BoardRow, ...] = ()
    ranked: int = 0
    baseline: dict[str, dict] = field(default_factory=dict)  # rung -> reference mean val_bpb / val_loss
    jobs: tuple[Job, ...] = ()
    cluster: dict = field(default_factory=dict)
    failures: tuple[Failure, ...] = ()
    proposers: dict[str, dict] = field(default_factory=dict)
    llm: dict = field(default_factory=dict)
    llm_budget_usd: float | None = None
    curve_rung: str = ""
    curve: tuple[float | None, ...] = ()
    curve_span_s: float = 0.0
    gpu_hours: float = 0.0  # held by runs (harness/ledger.py)
    gpu_price: float = 0.0  # config budget.price_per_gpu_hour (0: no money shown)
    sku_note: str | None = None  # runs on more than one GPU model: timings compare with a caveat
    load_ms: float = 0.0
    error: str = ""

    @property
    def n_runs(self) -> int:
        return sum(self.counts.values())

    @property
    def n_failed(self) -> int:
        return sum(self.counts.get(s, 0) for s in views.FAILED)
