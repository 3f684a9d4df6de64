"""Findings and reports: the severities, one `Finding`, and the `AuditReport` that collects them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}


@dataclass(frozen=True)
class Finding:
    code: str  # stable snake_case identifier, e.g. "network_import"
    severity: str  # "error" | "warning" | "info"
    message: str  # one line: the cause and the fix
    line: int | None = None  # 1-based line in `file` (for sources) when known
    file: str | None = None  # file inside the audited folder the finding is about

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_ORDER:
            raise ValueError(f"bad severity {self.severity!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def where(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        if self.file:
            return self.file
        return f"line {self.line}" if self.line else ""

    def __str__(self) -> str:
        where = self.where()
        return f"{self.severity.upper()} {self.code}{' [' + where + ']' if where else ''}: {self.message}"


def in_file(findings: Iterable[Finding], file: str) -> list[Finding]:
    """The same findings, said to be about `file` (a source audit's findings placed inside a folder)."""
    return [Finding(f.code, f.severity, f.message, f.line, file) for f in findings]


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    target: str = ""
    kind: str = ""  # "source" | "record" | "run" | "records"

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings and info do not fail an audit)."""
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    def codes(self, severity: str | None = None) -> set[str]:
        return {f.code for f in self.findings if severity is None or f.severity == severity}

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "kind": self.kind,
            "ok": self.ok,
            "counts": {s: sum(f.severity == s for f in self.findings) for s in (ERROR, WARNING, INFO)},
            "findings": [f.to_dict() for f in self.findings],
        }
