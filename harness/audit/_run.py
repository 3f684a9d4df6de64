"""pgolf run folders (harness/runner.py layout): result.json, recounted bytes, train.log, the runner's flags,
secrets in env.json, and the static audit of train_gpt.py."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from harness.audit._clock_env import SECRET_RE
from harness.audit._files import load_json, load_source, read_text
from harness.audit._findings import ERROR, INFO, SEVERITY_ORDER, WARNING, AuditReport, Finding, in_file
from harness.audit._logs import find_logs, is_num, log_checks, parse_train_log
from harness.audit._source import audit_source
from harness.audit._tracks import DEFAULT_CAP

_ARTIFACT_NAMES = ("final_model.int8.ptz", "final_model.ptz", "artifact.ptz", "model.ptz")


def _find_artifact(folder: Path, result: dict | None) -> Path | None:
    if isinstance(result, dict):
        for key in ("artifact_path", "artifact"):
            v = result.get(key)
            if isinstance(v, str) and v:
                p = Path(v) if Path(v).is_absolute() else folder / v
                if p.is_file():
                    return p
    for name in _ARTIFACT_NAMES:
        if (folder / name).is_file():
            return folder / name
    ptz = sorted(folder.glob("*.ptz"))
    return ptz[0] if ptz else None


# Runner flags (harness/runner.py RunOutcome.flags) that describe the environment rather than the
# candidate; everything else a runner flags is an error.
RUNNER_FLAG_SEVERITY = {
    "rescore_network_not_isolated": WARNING,
    "rescore_fs_not_isolated": WARNING,
    "env_secret_stripped": WARNING,
    "not_rescored": WARNING,
}


def _flag_findings(flags: object, origin: str, notes: object = None) -> Iterator[Finding]:
    """Runner flags: ["name", ...] (+ notes "name: text"), {"name": "text"}, or [{"code", "severity", "message"}]."""
    note_for: dict[str, str] = {}
    if isinstance(notes, list):
        for n in notes:
            if isinstance(n, str) and ":" in n:
                k, _, v = n.partition(":")
                note_for.setdefault(k.strip(), v.strip())
    items: list[tuple[str, str | None, str]] = []
    if isinstance(flags, dict):
        items = [(str(k), None, str(v)) for k, v in flags.items()]
    elif isinstance(flags, list):
        for fl in flags:
            if isinstance(fl, str):
                items.append((fl, None, note_for.get(fl, "flagged by the runner")))
            elif isinstance(fl, dict):
                sev = fl.get("severity")
                items.append((str(fl.get("code", "flag")), sev if sev in SEVERITY_ORDER else None,
                              str(fl.get("message", ""))))  # fmt: skip
    for code, sev, msg in items:
        yield Finding("runner_flag", sev or RUNNER_FLAG_SEVERITY.get(code, ERROR), f"{code}: {msg}", file=origin)


def _run_result_checks(result: dict) -> Iterator[Finding]:
    for key in ("val_loss", "val_bpb", "bytes_total", "bytes_code"):
        if key not in result:
            yield Finding("result_missing_field", ERROR, f"{key!r} missing", file="result.json")
        elif result[key] is not None and not is_num(result[key]):
            yield Finding("result_bad_type", ERROR, f"{key!r} is {type(result[key]).__name__}", file="result.json")
    vb = result.get("val_bpb")
    if is_num(vb) and not math.isfinite(vb):
        yield Finding("nonfinite_score", ERROR, f"val_bpb is {vb}", file="result.json")


def _run_byte_checks(folder: Path, source: str | None, result: dict | None, cap: int) -> Iterator[Finding]:
    """Recount code + artifact bytes from the files and compare with result.json and the cap."""
    artifact = _find_artifact(folder, result)
    if artifact is None:
        yield Finding("missing_artifact", ERROR, "no artifact (*.ptz) in the run folder; bytes cannot be recounted")
    code = len(source.encode("utf-8")) if source is not None else None
    model = artifact.stat().st_size if artifact is not None else None
    recount = code + model if code is not None and model is not None else None
    res = result or {}
    for key, actual, what in (("bytes_code", code, "train_gpt.py"), ("bytes_model", model, "the artifact file"),
                              ("bytes_total", recount, "code + artifact")):  # fmt: skip
        claimed = res.get(key)
        if actual is not None and is_num(claimed) and claimed != actual:
            yield Finding(f"{key}_mismatch", ERROR, f"result {key} {claimed:,} vs recounted {actual:,} ({what})",
                          file="result.json")  # fmt: skip
    total = recount if recount is not None else res.get("bytes_total")
    if is_num(total) and total > cap:
        yield Finding("over_byte_cap", ERROR, f"total {total:,} bytes exceeds the {cap:,}-byte cap")


def _run_log_checks(folder: Path, source: str | None, result: dict | None, cap: int) -> Iterator[Finding]:
    paths = [folder / "train.log"] if (folder / "train.log").is_file() else find_logs(folder)
    if not paths:
        yield Finding("missing_train_log", ERROR, "train.log is missing; the run's full log must be kept")
    logs = [parse_train_log(text, str(p)) for p in paths if (text := read_text(p)[0]) is not None]
    yield from log_checks(logs, cap, lambda p: Path(p).name, source)
    claimed = (result or {}).get("val_bpb")
    if is_num(claimed):
        for lg in logs:
            if lg.val_bpb is not None and abs(lg.val_bpb - float(claimed)) > 1e-6:
                msg = f"log's final val_bpb {lg.val_bpb} vs result.json {claimed}"
                yield Finding("log_result_mismatch", ERROR, msg, file=Path(lg.path).name)


def _runner_checks(folder: Path, result: dict | None) -> Iterator[Finding]:
    """Runner flags (outcome.json / flags.json / result.json), its status, and secrets in env.json."""
    if result is not None and "flags" in result:
        yield from _flag_findings(result["flags"], "result.json")
    outcome, found = load_json(folder / "outcome.json", None)
    yield from found
    if isinstance(outcome, dict):
        yield from _flag_findings(outcome.get("flags") or [], "outcome.json", outcome.get("notes"))
        isolation = outcome.get("isolation")
        for stage, how in (isolation.items() if isinstance(isolation, dict) else ()):
            yield Finding("isolation", INFO, f"{stage}: {how}", file="outcome.json")
        status = outcome.get("status")
        if isinstance(status, str) and status.lower() != "ok":
            yield Finding("run_not_ok", ERROR, f"runner status {status!r}: {outcome.get('error') or 'see train.log'}",
                          file="outcome.json")  # fmt: skip
    flags, found = load_json(folder / "flags.json", None)
    yield from found
    if flags is not None:
        yield from _flag_findings(flags, "flags.json")
    env, found = load_json(folder / "env.json", None)
    yield from found
    for key in env if isinstance(env, dict) else ():
        if SECRET_RE.search(str(key)):
            yield Finding("secret_in_env", ERROR,
                          f"{key!r} was in the candidate's environment; credentials must never reach a run",
                          file="env.json")  # fmt: skip


def audit_run_dir(path: str | Path, byte_cap: int | None = None) -> AuditReport:
    """Audit a pgolf run folder (harness/runner.py layout): train_gpt.py, result.json, train.log, the
    artifact, plus the runner's flags from outcome.json / flags.json / result.json["flags"] and env.json."""
    folder = Path(path)
    report = AuditReport([], str(folder), "run")
    if not folder.is_dir():
        report.findings.append(Finding("folder_missing", ERROR, f"{folder} is not a directory; pass a run folder"))
        return report
    cap = byte_cap or DEFAULT_CAP
    source, found = load_source(folder)
    report.findings += found
    missing = Finding("missing_result_json", ERROR, "result.json is missing; the run did not finish or crashed")
    result, found = load_json(folder / "result.json", missing)
    report.findings += found
    if result is not None and not isinstance(result, dict):
        report.findings.append(Finding("result_json_invalid", ERROR, "top level must be a JSON object",
                                       file="result.json"))  # fmt: skip
        result = None
    if result is not None:
        report.findings.extend(_run_result_checks(result))
    report.findings.extend(_run_byte_checks(folder, source, result, cap))
    report.findings.extend(_run_log_checks(folder, source, result, cap))
    report.findings.extend(_runner_checks(folder, result))
    if source is not None:
        report.findings.extend(in_file(audit_source(source), "train_gpt.py"))
    return report
