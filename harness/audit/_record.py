"""Record folders (records/<track>/<YYYY-MM-DD>_<Name>/): loaded once, then every check in `RECORD_CHECKS`.

Shape (folder name, README, submission.json's fields and types), bytes against the track's cap, each log's
size, score and logged source, the claimed score and per-seed results against the logs, the seed count, and
the static audit of train_gpt.py.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.audit._files import load_source, read_text
from harness.audit._findings import ERROR, INFO, WARNING, AuditReport, Finding, in_file
from harness.audit._logs import LogSummary, find_logs, is_num, log_checks, parse_train_log
from harness.audit._source import audit_source
from harness.audit._tracks import DEFAULT_CAP, RECORD_TRACKS, cap_for_track

SUBMISSION_FIELDS: dict[str, tuple[type, ...]] = {
    "author": (str,),
    "github_id": (str,),
    "name": (str,),
    "blurb": (str,),
    "date": (str,),
    "val_loss": (int, float),
    "val_bpb": (int, float),
    "bytes_total": (int,),
    "bytes_code": (int,),
}
FOLDER_NAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})_([A-Za-z0-9][A-Za-z0-9_.+\-]*)$")


@dataclass
class _Record:
    """A record folder's contents as loaded once for every record check."""

    folder: Path
    track: str  # --track, else the parent folder name, else submission.json "track"
    cap: int
    source: str | None  # train_gpt.py, None when missing/unreadable
    sub: dict | None  # submission.json, None when missing/invalid
    logs: list[LogSummary]

    def rel(self, p: str) -> str:
        try:
            return str(Path(p).relative_to(self.folder))
        except ValueError:
            return p


def _sub_finding(code: str, severity: str, message: str) -> Finding:
    return Finding(code, severity, message, file="submission.json")


def _load_submission(folder: Path) -> tuple[dict | None, list[Finding]]:
    path = folder / "submission.json"
    if not path.is_file():
        return None, [Finding(
            "missing_submission_json", ERROR,
            "submission.json is missing; add author, github_id, name, blurb, date, val_loss, val_bpb, "
            "bytes_total, bytes_code",
        )]  # fmt: skip
    text, err = read_text(path)
    if text is None:
        return None, [_sub_finding("submission_json_invalid", ERROR, err or "unreadable")]
    try:
        sub = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [
            _sub_finding("submission_json_invalid", ERROR, f"not valid JSON ({exc.msg} at line {exc.lineno})")
        ]
    if not isinstance(sub, dict):
        return None, [_sub_finding("submission_json_invalid", ERROR, "top level must be a JSON object")]
    return sub, []


def _load_logs(folder: Path) -> tuple[list[LogSummary], list[Finding]]:
    paths = find_logs(folder)
    if not paths:
        return [], [Finding(
            "missing_train_log", ERROR,
            "no train log (*.log or train*.txt); include the automatically produced log of every seed",
        )]  # fmt: skip
    logs, findings = [], []
    for lp in paths:
        text, err = read_text(lp)
        if text is None:
            findings.append(Finding("unreadable_log", ERROR, err or "unreadable", file=str(lp.relative_to(folder))))
        else:
            logs.append(parse_train_log(text, str(lp)))
    return logs, findings


def check_folder_name(rec: _Record) -> Iterator[Finding]:
    """YYYY-MM-DD_ShortName with a real date."""
    m = FOLDER_NAME_RE.match(rec.folder.name)
    if not m:
        yield Finding(
            "bad_folder_name", ERROR,
            f"folder name {rec.folder.name!r} is not YYYY-MM-DD_ShortName; rename it (letters, digits, _ . + -)",
        )  # fmt: skip
        return
    try:
        _dt.date.fromisoformat(m.group(1))
    except ValueError:
        yield Finding("bad_folder_name", ERROR, f"{m.group(1)!r} in the folder name is not a real date")


def check_readme(rec: _Record) -> Iterator[Finding]:
    readme = rec.folder / "README.md"
    if not readme.is_file():
        yield Finding("missing_readme", ERROR, "README.md is missing; explain the submission in reasonable detail")
        return
    text, _ = read_text(readme)
    if text is not None and len(text.strip()) < 40:
        yield Finding(
            "thin_readme", WARNING, "README.md is nearly empty; describe what changed and why", file="README.md"
        )


def check_submission_fields(rec: _Record) -> Iterator[Finding]:
    """The baseline's 9 keys, with their JSON types; an ISO date."""
    if rec.sub is None:
        return
    for key, types in SUBMISSION_FIELDS.items():
        value = rec.sub.get(key)
        if key not in rec.sub:
            yield _sub_finding("submission_missing_field", ERROR, f"required field {key!r} is missing; add it")
        elif isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            yield _sub_finding(
                "submission_bad_type", ERROR, f"{key!r} is {type(value).__name__} ({value!r:.40}), expected {want}"
            )
    date = rec.sub.get("date")
    if isinstance(date, str):
        try:
            _dt.datetime.fromisoformat(date.replace("Z", "+00:00"))
        except ValueError:
            yield _sub_finding("submission_bad_date", WARNING, f"date {date!r} is not ISO 8601")


def check_bytes(rec: _Record) -> Iterator[Finding]:
    """bytes_code == UTF-8 size of train_gpt.py; bytes_total (and every seed's artifact) <= the cap."""
    if rec.sub is None:
        return
    bc, bt, cap = rec.sub.get("bytes_code"), rec.sub.get("bytes_total"), rec.cap
    if rec.source is not None and is_num(bc):
        actual = len(rec.source.encode("utf-8"))
        if bc < actual:
            yield _sub_finding(
                "bytes_code_mismatch", ERROR,
                f"bytes_code {bc:,} < UTF-8 size of train_gpt.py {actual:,}; count the shipped file's bytes",
            )  # fmt: skip
        elif bc > actual:
            yield _sub_finding(
                "bytes_code_mismatch", WARNING,
                f"bytes_code {bc:,} > UTF-8 size of train_gpt.py {actual:,}; was a different file run?",
            )  # fmt: skip
    if is_num(bt) and bt > cap:
        yield _sub_finding("over_byte_cap", ERROR, f"bytes_total {bt:,} exceeds the {cap:,}-byte cap; shrink it")
    if is_num(bt) and is_num(bc) and bt < bc:
        yield _sub_finding("bytes_total_below_code", ERROR, f"bytes_total {bt:,} < bytes_code {bc:,}")
    results = rec.sub.get("seed_results")
    for seed, res in results.items() if isinstance(results, dict) else []:
        ab = res.get("artifact_bytes") if isinstance(res, dict) else None
        if is_num(ab) and ab > cap:
            yield _sub_finding("over_byte_cap", ERROR, f"seed {seed}: artifact_bytes {ab:,} exceeds the cap {cap:,}")


def check_logs(rec: _Record) -> Iterator[Finding]:
    """Every log: artifact size <= cap, a final score line, logged source == train_gpt.py."""
    yield from log_checks(rec.logs, rec.cap, rec.rel, rec.source)


def check_claimed_score(rec: _Record) -> Iterator[Finding]:
    """submission.json val_bpb == mean of the logs' final *_exact val_bpb (1e-4)."""
    scored = [lg.val_bpb for lg in rec.logs if lg.val_bpb is not None and math.isfinite(lg.val_bpb)]
    if rec.sub is None or not is_num(rec.sub.get("val_bpb")) or not scored:
        return
    claimed = float(rec.sub["val_bpb"])
    mean = sum(scored) / len(scored)
    if abs(mean - claimed) <= 1e-4:
        return
    if any(abs(v - claimed) <= 1e-4 for v in scored):
        yield _sub_finding(
            "val_bpb_not_mean", WARNING,
            f"val_bpb {claimed} matches one seed's log but not the mean over {len(scored)} logs ({mean:.8f}); "
            "report the mean of all seeds",
        )  # fmt: skip
    else:
        yield _sub_finding(
            "val_bpb_mismatch", ERROR,
            f"val_bpb {claimed} matches neither the logs' mean ({mean:.8f}) nor any seed's final *_exact line; "
            "report what the logs show",
        )  # fmt: skip


def check_seed_results(rec: _Record) -> Iterator[Finding]:
    """Per-seed claims (val_bpb, steps) == that seed's log (#86: 4.1k steps logged vs 10k claimed)."""
    results = rec.sub.get("seed_results") if rec.sub is not None else None
    if not isinstance(results, dict):
        return
    by_seed = {lg.seed: lg for lg in rec.logs if lg.seed is not None}
    for seed_key, res in results.items():
        try:
            seed = int(seed_key)
        except (TypeError, ValueError):
            continue
        lg = by_seed.get(seed)
        if lg is None:
            yield _sub_finding("seed_log_missing", WARNING, f"seed {seed} has results but no log with `seed:{seed}`")
            continue
        if not isinstance(res, dict):
            continue
        if is_num(res.get("val_bpb")) and lg.val_bpb is not None and abs(float(res["val_bpb"]) - lg.val_bpb) > 1e-4:
            yield _sub_finding(
                "seed_result_mismatch", ERROR,
                f"seed {seed}: val_bpb {res['val_bpb']} in submission.json vs {lg.val_bpb} in its log",
            )  # fmt: skip
        if is_num(res.get("steps")) and lg.steps is not None and int(res["steps"]) != lg.steps:
            yield _sub_finding(
                "seed_result_mismatch", ERROR,
                f"seed {seed}: steps {res['steps']} in submission.json vs {lg.steps} in its log (#86)",
            )  # fmt: skip


def check_seed_count(rec: _Record) -> Iterator[Finding]:
    """A record-track claim normally needs >= 3 seeds (p < 0.01)."""
    if Path(rec.track).name not in RECORD_TRACKS or not rec.logs:
        return
    seeds = {lg.seed for lg in rec.logs if lg.seed is not None}
    n_runs = len(seeds) if seeds else len(rec.logs)
    if n_runs < 3:
        yield Finding(
            "few_seeds", WARNING,
            f"{n_runs} seed log(s) for a record-track claim; significance (p < 0.01) usually needs >= 3 seeds",
        )  # fmt: skip


def check_record_source(rec: _Record) -> Iterator[Finding]:
    """The static audit of train_gpt.py."""
    if rec.source is not None:
        yield from in_file(audit_source(rec.source), "train_gpt.py")


RECORD_CHECKS: list[Callable[[_Record], Iterable[Finding]]] = [
    check_folder_name,
    check_readme,
    check_submission_fields,
    check_bytes,
    check_logs,
    check_claimed_score,
    check_seed_results,
    check_seed_count,
    check_record_source,
]


def audit_record_folder(path: str | Path, byte_cap: int | None = None, track: str | None = None) -> AuditReport:
    """Audit a record folder in the official layout. Never raises for missing or garbled files.

    The cap comes from ``byte_cap``, else ``track``, else the parent folder's name
    (``track_10min_16mb`` ...), else submission.json's ``track``, else 16,000,000 (with an info finding).
    """
    folder = Path(path)
    report = AuditReport([], str(folder), "record")
    if not folder.is_dir():
        report.findings.append(Finding("folder_missing", ERROR, f"{folder} is not a directory; pass a record folder"))
        return report
    source, f_src = load_source(folder)
    sub, f_sub = _load_submission(folder)
    logs, f_logs = _load_logs(folder)
    report.findings += f_src + f_sub + f_logs
    track_name = track or folder.resolve().parent.name
    if cap_for_track(track_name) is None and sub is not None and isinstance(sub.get("track"), str):
        track_name = sub["track"]
    cap = byte_cap or cap_for_track(track_name)
    if cap is None:
        cap = DEFAULT_CAP
        report.findings.append(Finding(
            "cap_assumed", INFO,
            f"track unknown from the folder's parent; assumed the {DEFAULT_CAP:,}-byte cap (pass --cap/--track)",
        ))  # fmt: skip
    rec = _Record(folder, track_name, cap, source, sub, logs)
    for check in RECORD_CHECKS:
        report.findings.extend(check(rec))
    return report
