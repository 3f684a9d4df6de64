"""Write a promoted candidate as a record folder in the official parameter-golf layout.

``write_record`` produces ``<dest_root>/<track_folder>/<YYYY-MM-DD>_<Slug>/`` (``dest_root`` is a
``records/`` folder: pgolf's, or the one in a clone of openai/parameter-golf) with
``train_gpt.py`` (the exact source that ran), ``train_seed<N>.log`` (byte-for-byte copies of the
harness's own run logs, never regenerated or edited), ``submission.json``, ``README.md`` and
``statistics.md``. The folder is built in a hidden temp sibling, audited with
``harness.audit.audit_record_folder`` and renamed into place only when the audit has no errors, so
a reader never sees a half-written record. An existing folder is never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import secrets
import shlex
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.audit import DEFAULT_CAP, ERROR, AuditReport, audit_record_folder, audit_source, cap_for_track
from harness.judge import Judgement

__all__ = ["RecordAuditError", "RecordMeta", "SeedRun", "record_folder_name", "write_record"]

# submission.json "track" values seen upstream, by records/ subfolder
TRACK_LABELS = {
    "track_10min_16mb": "10min_16mb",
    "track_non_record_16mb": "non-record-16mb",
    "track_30min_2mb_local": "30min_2mb_local",
}


@dataclass(frozen=True)
class SeedRun:
    """One finished seed of a run, as the harness measured it (numbers from its result + recount)."""

    seed: int
    val_loss: float  # final (roundtrip / re-scored) val_loss, nats
    val_bpb: float
    bytes_total: int  # recounted: code + artifact
    bytes_code: int
    steps: int | None
    step_avg_ms: float | None
    train_time_ms: float | None  # None = not measured (shown as n/a, compliance unknown)
    eval_time_ms: float | None
    log_path: Path | str  # the harness's own log of this run; copied verbatim
    pre_quant_val_bpb: float | None = None
    bytes_model: int | None = None


@dataclass(frozen=True)
class RecordMeta:
    """Who/what/why of a record, plus how it was run."""

    author: str
    github_id: str
    name: str  # human title, e.g. "10 layers + EMA"
    blurb: str  # one or two sentences for submission.json and the README head
    rationale: str = ""  # what changed and why (markdown), for the README
    hardware: str = "8xH100 80GB SXM"
    pytorch_version: str = ""
    command: str = "torchrun --standalone --nproc_per_node=8 train_gpt.py"
    env: Mapping[str, str] = field(default_factory=dict)  # env overrides the runs used (SEED/RUN_ID excluded)
    reference_name: str = "baseline"
    track: str | None = None  # submission.json "track"; default derived from the track folder
    byte_cap: int | None = None  # default from the track folder name
    train_time_cap_s: float | None = 600.0
    eval_time_cap_s: float | None = 600.0
    unlimited_compute: bool = False
    techniques: Sequence[str] = ()
    credits: str = ""  # lineage / attribution (markdown)
    extra: Mapping[str, object] = field(default_factory=dict)  # merged into submission.json last


class RecordAuditError(ValueError):
    """The written folder failed the audit; nothing was moved into records/."""

    def __init__(self, report: AuditReport) -> None:
        self.report = report
        codes = ", ".join(sorted({f.code for f in report.errors}))
        super().__init__(f"record folder fails the audit ({codes}); fix the run or the metadata and retry")


_SLUG_OK = re.compile(r"[^A-Za-z0-9_.+\-]")


def record_folder_name(date: str, slug: str) -> str:
    """``YYYY-MM-DD_Slug``; the slug keeps letters, digits and ``_ . + -`` (spaces become ``_``)."""
    try:
        parsed = _dt.date.fromisoformat(date)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}") from exc
    if parsed.isoformat() != date:
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
    clean = _SLUG_OK.sub("", re.sub(r"\s+", "_", slug.strip()))
    clean = re.sub(r"_+", "_", clean).lstrip("_.+-")
    if not clean:
        raise ValueError(f"slug {slug!r} has no usable characters (letters, digits, _ . + -)")
    return f"{date}_{clean[:80]}"


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _known(xs: Sequence[float | None]) -> list[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = _known(xs)
    return _finite(statistics.fmean(vals)) if vals else None


def _std(xs: Sequence[float | None]) -> float | None:
    vals = _known(xs)
    return _finite(statistics.stdev(vals)) if len(vals) >= 2 else None


def _max(xs: Sequence[float | None]) -> float | None:
    vals = _known(xs)
    return max(vals) if vals else None


def _fmt(x: float | None, digits: int = 4, scale: float = 1.0) -> str:
    return "n/a" if x is None else f"{x / scale:.{digits}f}"


def _all_under(values: Sequence[float | None], cap_ms: float) -> bool | None:
    """True/False when every value is known, None when some run did not report it."""
    if any(v is None for v in values):
        return None
    return all(v <= cap_ms for v in values)  # type: ignore[operator]


def _validate(source: str, seed_runs: Sequence[SeedRun], cap: int) -> None:
    if not seed_runs:
        raise ValueError("write_record needs at least one seed run")
    seeds = [r.seed for r in seed_runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds in seed_runs: {seeds}")
    code_bytes = len(source.encode("utf-8"))
    for r in seed_runs:
        if r.bytes_code != code_bytes:
            raise ValueError(
                f"seed {r.seed} ran {r.bytes_code} code bytes but the source is {code_bytes} bytes; "
                "write the exact train_gpt.py that produced the runs"
            )
        if r.bytes_total > cap:
            raise ValueError(f"seed {r.seed}: {r.bytes_total:,} bytes is over the {cap:,}-byte cap")
        if not math.isfinite(r.val_loss) or not math.isfinite(r.val_bpb):
            raise ValueError(f"seed {r.seed} has no finite score; a crashed seed cannot be in a record")
        if not Path(r.log_path).is_file():
            raise ValueError(f"seed {r.seed}: log {r.log_path} does not exist; records need the run's own log")


def _compliance(
    source: str, runs: Sequence[SeedRun], cap: int, meta: RecordMeta, judgement: Judgement | None
) -> dict[str, bool | None]:
    codes = {f.code for f in audit_source(source) if f.severity == ERROR}
    out: dict[str, bool | None] = {}
    if meta.train_time_cap_s and not meta.unlimited_compute:
        out[f"train_under_{meta.train_time_cap_s:g}s"] = _all_under(
            [r.train_time_ms for r in runs], meta.train_time_cap_s * 1000
        )
    if meta.eval_time_cap_s:
        out[f"eval_under_{meta.eval_time_cap_s:g}s"] = _all_under(
            [r.eval_time_ms for r in runs], meta.eval_time_cap_s * 1000
        )
    out[f"artifact_under_{cap / 1e6:g}mb"] = all(r.bytes_total <= cap for r in runs)
    out["three_seeds"] = len(runs) >= 3
    out["static_audit_clean"] = not codes
    out["no_val_data_in_training"] = not codes & {
        "val_in_train_path",
        "val_used_for_training",
        "val_used_for_calibration",
    }
    out["score_first_ttt"] = not codes & {"ttt_adapt_before_score", "ttt_rescore"}
    out["no_network"] = not codes & {"network_import"}
    out["significant_vs_reference"] = None if judgement is None else judgement.promoted
    return out


def _submission(
    date: str,
    track_folder: str,
    source: str,
    runs: Sequence[SeedRun],
    refs: Sequence[SeedRun],
    judgement: Judgement | None,
    meta: RecordMeta,
    cap: int,
    compliance: dict[str, bool | None],
) -> dict:
    losses = [r.val_loss for r in runs]
    bpbs = [r.val_bpb for r in runs]
    totals = [r.bytes_total for r in runs]
    welch = judgement.welch if judgement is not None else None
    ref_loss = _mean([r.val_loss for r in refs])
    ref_bpb = _mean([r.val_bpb for r in refs])
    sub: dict[str, object] = {
        "author": meta.author,
        "github_id": meta.github_id,
        "name": meta.name,
        "blurb": meta.blurb,
        "date": date,
        "val_loss": _mean(losses),
        "val_bpb": _mean(bpbs),
        "bytes_total": max(totals),
        "bytes_code": len(source.encode("utf-8")),
        "track": meta.track or TRACK_LABELS.get(track_folder, track_folder.removeprefix("track_")),
        "seeds": [r.seed for r in runs],
        "seed_results": {
            str(r.seed): {
                "val_loss": r.val_loss,
                "val_bpb": r.val_bpb,
                "pre_quant_val_bpb": _finite(r.pre_quant_val_bpb),
                "artifact_bytes": r.bytes_total,
                "steps": r.steps,
                "step_avg_ms": r.step_avg_ms,
                "train_time_ms": r.train_time_ms,
                "eval_time_s": round(r.eval_time_ms / 1000.0, 3) if r.eval_time_ms is not None else None,
            }
            for r in runs
        },
        "val_loss_std": _std(losses),
        "val_bpb_std": _std(bpbs),
        "artifact_bytes_mean": _mean(totals),
        "artifact_bytes_max": max(totals),
        "byte_cap": cap,
        "train_steps_mean": _mean([r.steps for r in runs]),
        "step_avg_ms_mean": _mean([r.step_avg_ms for r in runs]),
        "hardware": meta.hardware,
        "pytorch_version": meta.pytorch_version,
        "compliance": compliance,
        "p_value": _finite(welch.p) if welch else None,
        "t_statistic": _finite(welch.t) if welch else None,
        "welch_df": _finite(welch.df) if welch else None,
        "margin_nats": judgement.margin_nats if judgement else None,
        "alpha": judgement.alpha if judgement else None,
        "verdict": judgement.verdict.value if judgement else None,
        "comparison": meta.reference_name,
        "reference_seeds": [r.seed for r in refs],
        "reference_val_loss": ref_loss,
        "reference_val_bpb": ref_bpb,
        "delta_vs_reference_nats": _finite(judgement.delta_nats) if judgement else None,
        "delta_vs_reference_bpb": (
            _finite(judgement.delta_bpb)
            if judgement and judgement.delta_bpb is not None
            else (_mean(bpbs) - ref_bpb if ref_bpb is not None else None)
        ),  # fmt: skip
        "technique_summary": ", ".join(meta.techniques),
        "unlimited_compute": meta.unlimited_compute,
        "generated_by": "pgolf",
    }
    sub.update(meta.extra)
    return sub


def _run_command(meta: RecordMeta, seeds: Sequence[int]) -> str:
    env = {k: v for k, v in sorted(meta.env.items()) if k not in ("SEED", "RUN_ID")}
    assigns = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
    seed_list = " ".join(str(s) for s in seeds)
    line = f'RUN_ID="seed$SEED" SEED=$SEED {assigns + " " if assigns else ""}{meta.command}'
    return f"for SEED in {seed_list}; do\n  {line}\ndone"


def _fence(text: str, lang: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip(chr(10))}\n{ticks}"


def _readme(
    track_folder: str,
    source: str,
    patch: str,
    runs: Sequence[SeedRun],
    refs: Sequence[SeedRun],
    judgement: Judgement | None,
    meta: RecordMeta,
    cap: int,
    compliance: dict[str, bool | None],
) -> str:
    n = len(runs)
    losses, bpbs = [r.val_loss for r in runs], [r.val_bpb for r in runs]
    code_bytes = len(source.encode("utf-8"))
    max_total = max(r.bytes_total for r in runs)
    lines = [
        f"# {meta.name}",
        "",
        f"**val_bpb {_fmt(_mean(bpbs))} ± {_fmt(_std(bpbs))}** (mean ± std over {n} seed{'s' * (n != 1)}; "
        f"val_loss {_fmt(_mean(losses))} ± {_fmt(_std(losses))} nats), track `{track_folder}`, "
        f"{max_total:,} bytes max.",
        "",
        meta.blurb,
        "",
    ]
    if meta.unlimited_compute:
        lines += ["**Unlimited compute:** this run does not respect the track's training time limit.", ""]
    lines += ["## What changed and why", "", meta.rationale.strip() or "(no rationale given)", ""]
    if meta.techniques:
        lines += ["Techniques: " + ", ".join(f"`{t}`" for t in meta.techniques), ""]
    lines += ["## Diff against the baseline trainer", ""]
    if patch.strip():
        lines += [_fence(patch, "diff"), ""]
    else:
        lines += ["No code change: the runs differ from the baseline only in the environment below.", ""]
    lines += [
        "## Per-seed results",
        "",
        "| seed | steps | ms/step | train s | eval s | pre-quant val_bpb | val_loss | val_bpb | bytes total |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.seed} | {r.steps if r.steps is not None else 'n/a'} | {_fmt(r.step_avg_ms, 2)} | "
            f"{_fmt(r.train_time_ms, 1, 1000)} | {_fmt(r.eval_time_ms, 1, 1000)} | "
            f"{_fmt(_finite(r.pre_quant_val_bpb))} | {r.val_loss:.8f} | {r.val_bpb:.8f} | {r.bytes_total:,} |"
        )
    lines.append(
        f"| **mean** | {_fmt(_mean([r.steps for r in runs]), 0)} | {_fmt(_mean([r.step_avg_ms for r in runs]), 2)} "
        f"| | | | {_fmt(_mean(losses), 8)} | {_fmt(_mean(bpbs), 8)} | {max_total:,} (max) |"
    )
    lines += [
        "",
        "Logs: " + ", ".join(f"`train_seed{r.seed}.log`" for r in runs) + " (copied unedited from the runs).",
        "",
    ]
    model_bytes = [r.bytes_model for r in runs if r.bytes_model is not None]
    lines += [
        "## Artifact size",
        "",
        f"- code (`train_gpt.py`, UTF-8): {code_bytes:,} bytes",
        *([f"- compressed model: {max(model_bytes):,} bytes (max over seeds)"] if model_bytes else []),
        f"- total: {max_total:,} bytes (max over seeds); cap {cap:,}; headroom {cap - max_total:,} bytes",
        "",
        "## Timing",
        "",
        f"- training: max {_fmt(_max([r.train_time_ms for r in runs]), 1, 1000)} s"
        + (f" (cap {meta.train_time_cap_s:g} s)" if meta.train_time_cap_s and not meta.unlimited_compute else ""),
        f"- evaluation: max {_fmt(_max([r.eval_time_ms for r in runs]), 1, 1000)} s"
        + (f" (cap {meta.eval_time_cap_s:g} s)" if meta.eval_time_cap_s else ""),
        f"- hardware: {meta.hardware}" + (f", PyTorch {meta.pytorch_version}" if meta.pytorch_version else ""),
        "",
        "## Reproduce",
        "",
        "From inside this folder, with the data under `./data` (the challenge's default paths):",
        "",
        _fence(_run_command(meta, [r.seed for r in runs]), "bash"),
        "",
        "## Compliance",
        "",
    ]
    for key, ok in compliance.items():
        mark = "x" if ok else " "
        lines.append(f"- [{mark}] {key.replace('_', ' ')}" + (" (not judged)" if ok is None else ""))
    lines += ["", f"## Statistics vs {meta.reference_name}", ""]
    lines += _stats_lines(runs, refs, judgement, meta)
    lines += ["", "Full table: `statistics.md`.", ""]
    if meta.credits.strip():
        lines += ["## Credits", "", meta.credits.strip(), ""]
    return "\n".join(lines)


def _stats_lines(
    runs: Sequence[SeedRun], refs: Sequence[SeedRun], judgement: Judgement | None, meta: RecordMeta
) -> list[str]:
    rows = [("candidate", runs), (meta.reference_name, refs)]
    lines = ["| | n | mean val_loss | std | mean val_bpb | std |", "|---|---:|---:|---:|---:|---:|"]
    for label, rs in rows:
        ls, bs = [r.val_loss for r in rs], [r.val_bpb for r in rs]
        lines.append(f"| {label} | {len(rs)} | {_fmt(_mean(ls), 6)} | {_fmt(_std(ls), 6)} | "
                     f"{_fmt(_mean(bs), 6)} | {_fmt(_std(bs), 6)} |")  # fmt: skip
    lines.append("")
    if judgement is None:
        return lines + ["Not judged."]
    w = judgement.welch
    lines.append(
        f"- delta (candidate − {meta.reference_name}): {_fmt(_finite(judgement.delta_nats), 5)} nats"
        + (f", {_fmt(_finite(judgement.delta_bpb), 5)} bpb" if judgement.delta_bpb is not None else "")
    )
    if w is not None:
        lines.append(
            f"- one-sided Welch t-test, H1: improvement > {judgement.margin_nats:g} nats: "
            f"t = {_fmt(_finite(w.t), 3)}, df = {_fmt(_finite(w.df), 2)}, p = "
            + (f"{w.p:.3g}" if math.isfinite(w.p) else f"n/a ({w.note})")
        )
    lines.append(f"- verdict: **{judgement.verdict.value}** (alpha {judgement.alpha:g}): {judgement.reason}")
    return lines


def _statistics_md(
    runs: Sequence[SeedRun], refs: Sequence[SeedRun], judgement: Judgement | None, meta: RecordMeta
) -> str:
    lines = [
        f"# Statistics: {meta.name} vs {meta.reference_name}",
        "",
        "Every seed that ran is listed; none were dropped. val_loss is in nats (natural log per token).",
        "",
        "| run | seed | val_loss | val_bpb | steps | bytes total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, rs in (("candidate", runs), (meta.reference_name, refs)):
        for r in rs:
            steps = r.steps if r.steps is not None else "n/a"
            lines.append(f"| {label} | {r.seed} | {r.val_loss:.8f} | {r.val_bpb:.8f} | {steps} | {r.bytes_total:,} |")
    lines += ["", *_stats_lines(runs, refs, judgement, meta), ""]
    return "\n".join(lines)


def _target_parent(dest_root: Path, track_folder: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", track_folder) or track_folder in (".", ".."):
        raise ValueError(f"track_folder must be a plain folder name like track_10min_16mb, got {track_folder!r}")
    return dest_root / track_folder


def write_record(
    dest_root: Path,
    track_folder: str,
    date: str,
    slug: str,
    source: str,
    patch: str,
    seed_runs: list[SeedRun],
    reference_runs: list[SeedRun],
    judgement: Judgement | None,
    meta: RecordMeta,
    *,
    audit: bool = True,
) -> Path:
    """Write ``<dest_root>/<track_folder>/<date>_<slug>/`` atomically and return its path.

    ``dest_root`` is the ``records/`` folder (config ``records``, default ``records``). Raises
    ``FileExistsError`` if the folder exists,
    ``ValueError`` for bad input (seed runs that do not match ``source``, over the cap, missing logs),
    and ``RecordAuditError`` when the finished folder has audit errors (nothing is left behind).
    """
    parent = _target_parent(Path(dest_root), track_folder)
    name = record_folder_name(date, slug)
    final = parent / name
    if final.exists():
        raise FileExistsError(f"{final} already exists; records are never overwritten, pick another slug or date")
    cap = meta.byte_cap or cap_for_track(track_folder) or DEFAULT_CAP
    runs = sorted(seed_runs, key=lambda r: r.seed)
    refs = sorted(reference_runs, key=lambda r: r.seed)
    _validate(source, runs, cap)
    compliance = _compliance(source, runs, cap, meta, judgement)

    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{name}.partial-{secrets.token_hex(4)}"
    folder = staging / name
    try:
        folder.mkdir(parents=True)
        (folder / "train_gpt.py").write_bytes(source.encode("utf-8"))
        for r in runs:
            shutil.copyfile(r.log_path, folder / f"train_seed{r.seed}.log")
        sub = _submission(date, track_folder, source, runs, refs, judgement, meta, cap, compliance)
        (folder / "submission.json").write_text(json.dumps(sub, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        readme = _readme(track_folder, source, patch, runs, refs, judgement, meta, cap, compliance)
        (folder / "README.md").write_text(readme, encoding="utf-8")
        (folder / "statistics.md").write_text(_statistics_md(runs, refs, judgement, meta), encoding="utf-8")
        if audit:
            report = audit_record_folder(folder, byte_cap=cap, track=track_folder)
            if not report.ok:
                raise RecordAuditError(report)
        if final.exists():  # someone else got there while we were writing
            raise FileExistsError(f"{final} appeared while writing; records are never overwritten")
        os.rename(folder, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
