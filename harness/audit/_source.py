"""The static audit of one source: parse it, run every check in `SOURCE_CHECKS`, merge their findings.

Each check is `check(ctx) -> Iterable[Finding]` over a shared `Ctx`; a crash in one check becomes an
`audit_check_failed` warning and never hides the others' findings.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable

from harness.audit._clock_env import check_clock, check_environment
from harness.audit._context import Ctx
from harness.audit._exec import check_dynamic_access, check_exec
from harness.audit._findings import ERROR, SEVERITY_ORDER, WARNING, Finding
from harness.audit._network import check_network, check_processes
from harness.audit._val import check_val_flow, check_val_globs
from harness.audit._writes import check_writes

SOURCE_CHECKS: list[Callable[[Ctx], Iterable[Finding]]] = [
    check_network,
    check_processes,
    check_clock,
    check_environment,
    check_writes,
    check_exec,
    check_dynamic_access,
    check_val_globs,
    check_val_flow,
]


def _audit_source(source: str, depth: int, mode: str = "exec") -> list[Finding]:
    if not isinstance(source, str):
        return [Finding("unparseable_source", ERROR, f"source is {type(source).__name__}, not text")]
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        if mode == "eval":  # eval("1 + 2") style payloads are expressions, never statements
            try:
                tree = ast.Module(body=[ast.Expr(ast.parse(source, mode="eval").body)], type_ignores=[])
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                tree = None
            if tree is not None:
                return _run_checks(tree, depth)
        return [
            Finding(
                "unparseable_source", ERROR,
                f"not valid Python ({exc.msg}); the file must compile: python -m py_compile train_gpt.py",
                exc.lineno,
            )
        ]  # fmt: skip
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return [
            Finding(
                "unparseable_source", ERROR,
                f"cannot parse the source ({type(exc).__name__}: {str(exc)[:80]}); the file must compile",
            )
        ]  # fmt: skip
    return _run_checks(tree, depth)


def _run_checks(tree: ast.Module, depth: int) -> list[Finding]:
    try:
        ctx = Ctx(tree, depth, _audit_source)
    except RecursionError:
        return [Finding("unparseable_source", ERROR, "source nests too deeply to audit; flatten it")]
    findings: list[Finding] = []
    for check in SOURCE_CHECKS:
        try:
            findings.extend(check(ctx))
        except RecursionError:
            findings.append(Finding("audit_check_failed", WARNING, f"{check.__name__}: source nests too deeply"))
        except Exception as exc:  # a bug in one check must not hide the others' findings
            findings.append(
                Finding(
                    "audit_check_failed", WARNING,
                    f"{check.__name__} crashed ({type(exc).__name__}: {str(exc)[:80]}); please report it",
                )
            )  # fmt: skip
    unique: dict[tuple, Finding] = {}
    for f in findings:
        unique.setdefault((f.code, f.line, f.message), f)
    return sorted(unique.values(), key=lambda f: (f.line or 0, SEVERITY_ORDER[f.severity], f.code))


def audit_source(source: str) -> list[Finding]:
    """Static legality checks on a train_gpt.py source. Never raises: bad input yields findings."""
    try:
        return _audit_source(source, 0)
    except Exception as exc:  # pragma: no cover - last-resort guard, the checks already catch
        return [Finding("audit_check_failed", WARNING, f"audit crashed: {type(exc).__name__}: {exc}")]
