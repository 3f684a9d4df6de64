"""`pgolf audit PATH`: what PATH is (a .py file, run folder, record folder, folder of records), the
human-readable report, and the argument parser."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.audit._files import read_text
from harness.audit._findings import ERROR, SEVERITY_ORDER, AuditReport, Finding, in_file
from harness.audit._record import FOLDER_NAME_RE, audit_record_folder
from harness.audit._run import audit_run_dir
from harness.audit._source import audit_source
from harness.audit._tracks import cap_for_track


def format_report(report: AuditReport) -> str:
    """Human-readable report for the CLI: one line per finding, errors first, then a verdict."""
    lines = [f"audit {report.kind or 'target'}: {report.target}"] if report.target else []
    for f in sorted(report.findings, key=lambda f: (SEVERITY_ORDER[f.severity], f.file or "", f.line or 0)):
        where = f.where()
        lines.append(f"  {f.severity.upper():7} {f.code:32} {where + ': ' if where else ''}{f.message}")
    n_err, n_warn = len(report.errors), len(report.warnings)
    n_info = len(report.findings) - n_err - n_warn
    verdict = "PASS" if report.ok else "FAIL"
    lines.append(f"{verdict}: {n_err} error(s), {n_warn} warning(s), {n_info} info")
    return "\n".join(lines)


def audit_path(path: str | Path, byte_cap: int | None = None, track: str | None = None) -> AuditReport:
    """Audit whatever PATH is: a .py file, a run folder, a record folder, or a folder of records."""
    p = Path(path)
    if p.is_file():
        text, err = read_text(p)
        findings = audit_source(text) if text is not None else [Finding("unreadable_source", ERROR, err or "")]
        return AuditReport(in_file(findings, p.name), str(p), "source")
    run_folder = (p / "result.json").is_file() or (p / "outcome.json").is_file()  # a killed run has no result
    if run_folder and not (p / "submission.json").is_file():
        return audit_run_dir(p, byte_cap or cap_for_track(track))
    if not (p / "train_gpt.py").exists() and not (p / "submission.json").exists():
        subs = sorted(d for d in p.iterdir() if d.is_dir() and FOLDER_NAME_RE.match(d.name)) if p.is_dir() else []
        if subs:
            agg = AuditReport([], str(p), "records")
            for d in subs:
                sub = audit_record_folder(d, byte_cap, track)
                agg.findings.extend(
                    Finding(f.code, f.severity, f.message, f.line, f"{d.name}/{f.file}" if f.file else d.name)
                    for f in sub.findings
                )  # fmt: skip
            return agg
    return audit_record_folder(p, byte_cap, track)


def _cli(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        print(f"pgolf audit: {path} does not exist", file=sys.stderr)
        return 2
    if args.cap is not None and args.cap <= 0:
        print("pgolf audit: --cap must be a positive number of bytes", file=sys.stderr)
        return 2
    report = audit_path(path, args.cap, args.track)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `audit PATH [--cap N] [--track NAME] [--json]`; func(args) returns the exit code."""
    p = subparsers.add_parser(
        "audit",
        help="legality audit of a record folder, run folder or train_gpt.py",
        description="Static legality checks on train_gpt.py plus folder shape, submission.json, byte cap "
        "and log consistency. Exit 0 = no errors, 1 = errors found, 2 = bad input.",
    )
    p.add_argument("path", help="record folder, folder of records, run folder, or a .py file")
    p.add_argument("--cap", type=int, default=None, help="byte cap (default: from --track or the parent folder)")
    p.add_argument("--track", default=None, help="track name, e.g. track_10min_16mb or local-30min-2mb")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cli)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgolf")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
