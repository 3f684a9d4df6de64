"""Legality audit: static checks on a ``train_gpt.py`` plus record-folder and run-folder checks.

``pgolf audit PATH`` works on a record folder (``records/<track>/<YYYY-MM-DD>_<Name>/``), a folder of
record folders, a pgolf run folder (has ``result.json``), or a single ``.py`` file.

Static checks (``audit_source``) are AST-based and conservative: they look for the patterns that
got submissions rejected (PARAMETER_GOLF.md §1.4, §10). Each check is a small function in
``SOURCE_CHECKS``. What they can and cannot see:

* Validation data. Names that look like validation data (``val_tokens``, ``x_val``, ``args.val_files``;
  not metrics such as ``val_loss``) and val-shard path literals (``fineweb_val_*``) are tainted.
  Taint follows assignments in order, through branches, through loops (each body is walked twice so
  loop-carried values count) and into the parameters of module functions called with tainted
  arguments. Sizes (``len``, ``.numel()``, ``.shape``) do not carry taint.
  A ``backward()`` / ``autograd.grad`` on tainted data, or a call with tainted arguments to a module
  function that back-propagates on its arguments, is an *adaptation* on validation tokens. It is
  legal only inside a loop that also adds val losses into a score accumulator (``loss_sum += ...``,
  ``nlls.append(...)``; a name with loss/nll/bpb/bits/score that is not train/running/ema), and
  only after that iteration's score accumulation: an adaptation on data of the current iteration
  before the first accumulation is ``ttt_adapt_before_score``; an accumulation into the same
  accumulator after an adaptation, or a scoring loop nested in an epoch/pass/round loop, is
  ``ttt_rescore``; an adaptation with no scoring loop around it is ``val_used_for_training``.
  "Data of the current iteration" = built from values assigned in this iteration (loop targets
  included) or read from a loop-invariant val source (``val_tokens[pos:pos + n]``).
  Limits: aliasing through containers, ``self`` state or other objects is not followed; adapting
  on the previous chunk before scoring the current one passes only when that chunk is carried over
  in a variable (``prev = chunk``), not when it is re-sliced by index (a false positive); scoring
  inside a helper that mutates an accumulator argument is not seen; whether the returned score is
  the one reported is only checked within the function (``ttt_score_not_returned``).
* Network, processes, clock and environment: imports and calls resolved through import aliases
  (``import lzma as L``, ``from os import system``) and ``getattr(module, "literal")``. Computed
  attribute names, ``eval`` of strings built at runtime, and native extensions are not seen.
* Self-extracting wrappers: ``exec``/``eval``/``compile`` of a payload built from string/bytes
  literals with base64/base85/ascii85/hex decoders and zlib/gzip/bz2/lzma (raw filters included)/
  brotli decompressors is decoded (size-capped) and the inner source audited recursively; anything
  else is reported as unauditable.
"""

from __future__ import annotations

import argparse
import ast
import base64
import binascii
import bz2
import datetime as _dt
import json
import lzma
import math
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "AuditReport",
    "Finding",
    "LogSummary",
    "RECORD_CHECKS",
    "SOURCE_CHECKS",
    "TRACK_CAPS",
    "add_parser",
    "audit_path",
    "audit_record_folder",
    "audit_run_dir",
    "audit_source",
    "cap_for_track",
    "format_report",
    "main",
    "parse_train_log",
]

ERROR, WARNING, INFO = "error", "warning", "info"
_SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}

DEFAULT_CAP = 16_000_000
TRACK_CAPS: dict[str, int] = {
    "track_10min_16mb": 16_000_000,
    "track_non_record_16mb": 16_000_000,
    "track_30min_2mb_local": 2_000_000,
    "main-10min-16mb": 16_000_000,
    "local-30min-2mb": 2_000_000,
    "10min_16mb": 16_000_000,
    "30min_2mb_local": 2_000_000,
}
RECORD_TRACKS = {"track_10min_16mb", "track_30min_2mb_local", "main-10min-16mb", "local-30min-2mb"}
MAX_DECODED_BYTES = 8_000_000
MAX_WRAPPER_DEPTH = 4


# ----------------------------------------------------------------------------------------------
# Findings and reports
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    code: str  # stable snake_case identifier, e.g. "network_import"
    severity: str  # "error" | "warning" | "info"
    message: str  # one line: the cause and the fix
    line: int | None = None  # 1-based line in `file` (for sources) when known
    file: str | None = None  # file inside the audited folder the finding is about

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITY_ORDER:
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


def format_report(report: AuditReport) -> str:
    """Human-readable report for the CLI: one line per finding, errors first, then a verdict."""
    lines = [f"audit {report.kind or 'target'}: {report.target}"] if report.target else []
    for f in sorted(report.findings, key=lambda f: (_SEVERITY_ORDER[f.severity], f.file or "", f.line or 0)):
        where = f.where()
        lines.append(f"  {f.severity.upper():7} {f.code:32} {where + ': ' if where else ''}{f.message}")
    n_err, n_warn = len(report.errors), len(report.warnings)
    n_info = len(report.findings) - n_err - n_warn
    verdict = "PASS" if report.ok else "FAIL"
    lines.append(f"{verdict}: {n_err} error(s), {n_warn} warning(s), {n_info} info")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Static source audit: shared context
# ----------------------------------------------------------------------------------------------


class _Ctx:
    """Parsed source plus import-alias resolution, shared by every check."""

    def __init__(self, source: str, tree: ast.Module, depth: int) -> None:
        self.source = source
        self.tree = tree
        self.depth = depth
        self.aliases: dict[str, str] = {}
        self.calls: list[ast.Call] = []
        self.nodes: list[ast.AST] = list(ast.walk(tree))  # every check iterates this instead of re-walking
        self.memo: dict[tuple[str, int], object] = {}  # per-node caches of the flow analysis
        for node in self.nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        root = a.name.split(".")[0]
                        self.aliases.setdefault(root, root)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name != "*":
                        self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Call):
                self.calls.append(node)

    def qualname(self, node: ast.AST | None) -> str | None:
        """Dotted name an expression refers to, through import aliases; None when not a name."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            base = self.qualname(node.args[0])
            return f"{base}.{node.args[1].value}" if base else None
        return None

    def call_name(self, call: ast.Call) -> str:
        return self.qualname(call.func) or ""


def _f(code: str, severity: str, message: str, node: ast.AST | int | None = None) -> Finding:
    line = node if isinstance(node, int) else getattr(node, "lineno", None)
    return Finding(code, severity, message, line)


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _kwarg(call: ast.Call, name: str) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _arg(call: ast.Call, index: int, name: str | None = None) -> ast.AST | None:
    if len(call.args) > index and not any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
        return call.args[index]
    return _kwarg(call, name) if name else None


def _is_module_prefix(name: str, modules: Iterable[str]) -> str | None:
    for m in modules:
        if name == m or name.startswith(m + "."):
            return m
    return None


# ----------------------------------------------------------------------------------------------
# (b) network
# ----------------------------------------------------------------------------------------------

NETWORK_MODULES = (
    "socket", "socketserver", "ssl", "urllib.request", "urllib3", "requests", "http.client",
    "http.server", "httpx", "aiohttp", "huggingface_hub", "ftplib", "smtplib", "poplib", "imaplib",
    "nntplib", "telnetlib", "websocket", "websockets", "xmlrpc", "paramiko", "pycurl", "boto3",
    "botocore", "gdown", "wget", "grpc", "zmq",
)  # fmt: skip
NETWORK_CAPABLE = ("datasets", "kernels", "tiktoken", "transformers", "torch.hub", "modelscope")


def check_network(ctx: _Ctx) -> Iterator[Finding]:
    """Imports/calls of networking modules (error) and of libraries that download on use (warning)."""
    reported: set[str] = set()

    def module_finding(mod: str, node: ast.AST, how: str) -> Iterator[Finding]:
        if m := _is_module_prefix(mod, NETWORK_MODULES):
            reported.add(m)
            yield _f(
                "network_import", ERROR,
                f"{how} `{mod}`: network access is banned in a submission; remove it and ship "
                "everything inside the artifact",
                node,
            )  # fmt: skip
        elif m := _is_module_prefix(mod, NETWORK_CAPABLE):
            reported.add(m)
            yield _f(
                "network_capable_import", WARNING,
                f"{how} `{mod}`, which can download at runtime; make sure nothing is fetched "
                "(pre-install files, set HF_HUB_OFFLINE=1) or drop the dependency",
                node,
            )  # fmt: skip

    for node in ctx.nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                yield from module_finding(a.name, node, "imports")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if _is_module_prefix(node.module, NETWORK_MODULES + NETWORK_CAPABLE):
                yield from module_finding(node.module, node, "imports from")
            else:
                for a in node.names:
                    yield from module_finding(f"{node.module}.{a.name}", node, "imports")
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("__import__", "importlib.import_module"):
            mod = _const_str(_arg(call, 0, "name"))
            if mod:
                yield from module_finding(mod, call, "dynamically imports")
            continue
        m = _is_module_prefix(name, NETWORK_MODULES + NETWORK_CAPABLE)
        if m and m not in reported:
            reported.add(m)
            yield from module_finding(name, call, "calls")


# ----------------------------------------------------------------------------------------------
# (c) processes
# ----------------------------------------------------------------------------------------------

SUBPROCESS_FUNCS = {
    "subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output",
    "subprocess.Popen", "subprocess.getoutput", "subprocess.getstatusoutput",
}  # fmt: skip
SHELL_FUNCS = {
    "os.system", "os.popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "pty.spawn",
    "pty.fork", "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell", "platform.popen",
    "commands.getoutput", "commands.getstatusoutput",
}  # fmt: skip
_OS_EXEC_RE = re.compile(r"^os\.(exec[lv]p?e?|spawn[lv]p?e?)$")
PROCESS_PREFIXES = ("multiprocessing", "torch.multiprocessing", "concurrent.futures.ProcessPoolExecutor")


def _nvidia_smi_argv(call: ast.Call) -> list[str] | None:
    cmd = _arg(call, 0, "args")
    if isinstance(cmd, (ast.List, ast.Tuple)) and cmd.elts:
        parts = [_const_str(e) for e in cmd.elts]
        if parts[0] == "nvidia-smi":
            return [p if p is not None else "?" for p in parts]
    return None


def check_processes(ctx: _Ctx) -> Iterator[Finding]:
    """subprocess / os.system / exec* / pty / process pools. Exactly `subprocess.run(["nvidia-smi"])` passes."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in SUBPROCESS_FUNCS:
            shell = _kwarg(call, "shell")
            uses_shell = shell is not None and not (isinstance(shell, ast.Constant) and not shell.value)
            argv = _nvidia_smi_argv(call)
            if argv == ["nvidia-smi"] and name == "subprocess.run" and not uses_shell:
                continue  # what the official baseline does to log the GPU inventory
            if argv is not None and not uses_shell:
                yield _f(
                    "subprocess_nvidia_smi_variant", WARNING,
                    f"`{name}({argv})`: only `subprocess.run([\"nvidia-smi\"])` is pre-approved; "
                    "use exactly that call or log the GPU inventory through torch.cuda",
                    call,
                )  # fmt: skip
                continue
            yield _f(
                "subprocess_call", ERROR,
                f"`{name}(...)` runs an external program{' through a shell' if uses_shell else ''}; "
                "a submission may not run other programs (only `subprocess.run([\"nvidia-smi\"])` is allowed)",
                call,
            )  # fmt: skip
        elif name in SHELL_FUNCS or _OS_EXEC_RE.match(name):
            yield _f(
                "shell_exec", ERROR,
                f"`{name}(...)` spawns or replaces a process; remove it (no shells or external programs)",
                call,
            )  # fmt: skip
        elif _is_module_prefix(name, PROCESS_PREFIXES) and name.rsplit(".", 1)[-1] in (
            "Process", "Pool", "get_context", "spawn", "start_processes", "ProcessPoolExecutor", "Popen",
        ):  # fmt: skip
            yield _f(
                "process_spawn", WARNING,
                f"`{name}(...)` starts extra processes; make sure they run no shells, no network and no "
                "hidden compute outside the timed budget, or use torchrun's ranks instead",
                call,
            )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# (d) clock and (e) environment
# ----------------------------------------------------------------------------------------------

CLOCK_MODULES = ("time", "datetime")
# The challenge's time knobs (MAX_WALLCLOCK_SECONDS, GPTQ_RESERVE_SECONDS, ...), not library timeouts like NCCL_TIMEOUT.
TIME_KNOB_RE = re.compile(
    r"WALLCLOCK|DEADLINE|TIME_BUDGET|TIME_LIMIT|RESERVE_SECONDS|(^|_)(TRAIN|EVAL|MAX|TOTAL)_(TIME|SECONDS|MINUTES)",
    re.I,
)
SECRET_RE = re.compile(  # OPENAI_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, ... but not TOKENIZER_PATH, VAL_TOKEN_LIMIT
    r"(^|_)(API_?KEY|SECRETS?|PASSWORD|PASSWD|CREDENTIALS?|PRIVATE_KEY|ACCESS_KEY)(_|$)|(^|_)(TOKEN|AUTH)$", re.I
)
_ENV_WRITE_METHODS = {"update", "setdefault", "pop", "clear", "__setitem__", "__delitem__", "popitem"}
_ENV_ENUM_METHODS = {"items", "keys", "values", "copy"}


def _is_environ(ctx: _Ctx, node: ast.AST | None) -> bool:
    return ctx.qualname(node) in ("os.environ", "posix.environ")


def _env_writes(ctx: _Ctx) -> Iterator[tuple[ast.AST, list[str | None]]]:
    """(node, keys) for each write to the process environment; a None key = not a literal."""
    for node in ctx.nodes:
        targets: list[ast.AST] = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            if isinstance(t, ast.Subscript) and _is_environ(ctx, t.value):
                yield node, [_const_str(t.slice)]
            elif _is_environ(ctx, t):
                yield node, [None]
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("os.putenv", "os.unsetenv"):
            yield call, [_const_str(_arg(call, 0))]
        elif isinstance(call.func, ast.Attribute) and _is_environ(ctx, call.func.value):
            if call.func.attr in _ENV_WRITE_METHODS:
                keys: list[str | None] = [kw.arg for kw in call.keywords]
                if call.args:
                    first = call.args[0]
                    if isinstance(first, ast.Dict):
                        keys += [_const_str(k) for k in first.keys]
                    else:
                        keys.append(_const_str(first))
                yield call, keys or [None]


def check_clock(ctx: _Ctx) -> Iterator[Finding]:
    """Monkeypatched clocks, runtime writes of time knobs to os.environ, alarm/timer and signal games."""
    clock_aliases = {alias for alias, target in ctx.aliases.items() if _is_module_prefix(target, CLOCK_MODULES)}
    for node in ctx.nodes:
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                q = ctx.qualname(t) if isinstance(t, ast.Attribute) else None
                rebinds_alias = isinstance(t, ast.Name) and t.id in clock_aliases
                if (q and _is_module_prefix(q, CLOCK_MODULES)) or rebinds_alias:
                    what = q or f"{t.id} (= {ctx.aliases[t.id]})"  # type: ignore[union-attr]
                    yield _f(
                        "clock_monkeypatch", ERROR,
                        f"assigns `{what}`: replacing a clock makes the wall-clock budget unverifiable; "
                        "leave the time module alone",
                        node,
                    )  # fmt: skip
                if isinstance(t, ast.Attribute) and t.attr in ("max_wallclock_seconds", "max_wallclock_ms"):
                    value = getattr(node, "value", None)
                    if isinstance(value, ast.Constant) and isinstance(value.value, (int, float)):
                        yield _f(
                            "wallclock_override", WARNING,
                            f"hard-codes `{t.attr} = {value.value}` at runtime; the time cap must come "
                            "from MAX_WALLCLOCK_SECONDS as the track sets it",
                            node,
                        )  # fmt: skip
    for call in ctx.calls:
        name = ctx.call_name(call)
        target = ctx.qualname(_arg(call, 0))
        lit = _const_str(_arg(call, 0))
        if name == "setattr" and target and _is_module_prefix(target, CLOCK_MODULES):
            yield _f("clock_monkeypatch", ERROR, f"`setattr({target}, ...)` replaces a clock; remove it", call)
        elif (
            name.endswith(("patch", "patch.object", "setattr"))
            and name != "setattr"
            and (
                (lit and _is_module_prefix(lit, CLOCK_MODULES)) or (target and _is_module_prefix(target, CLOCK_MODULES))
            )
        ):
            yield _f("clock_monkeypatch", ERROR, f"`{name}` patches the clock ({lit or target}); remove it", call)
        elif name in ("signal.alarm", "signal.setitimer", "signal.ualarm"):
            yield _f(
                "signal_timer", ERROR,
                f"`{name}(...)` arms a timer signal; the harness owns the time budget, remove it",
                call,
            )  # fmt: skip
        elif name == "signal.signal":
            sig = ctx.qualname(_arg(call, 0)) or ""
            handler = ctx.qualname(_arg(call, 1)) or ""
            if sig.rsplit(".", 1)[-1] in ("SIGTERM", "SIGINT", "SIGALRM", "SIGVTALRM", "SIGXCPU", "SIGHUP", "SIGUSR1"):
                if handler.endswith("SIG_IGN"):
                    yield _f(
                        "signal_ignore", ERROR,
                        f"ignores {sig}: the run must stay killable at the time cap; remove the handler",
                        call,
                    )  # fmt: skip
                else:
                    yield _f(
                        "signal_handler", WARNING,
                        f"installs a handler for {sig}; make sure it cannot delay or swallow the "
                        "harness's kill at the time cap",
                        call,
                    )  # fmt: skip
        elif name == "signal.pthread_sigmask":
            yield _f("signal_handler", WARNING, "`signal.pthread_sigmask` can block the harness's kill", call)
    for node, keys in _env_writes(ctx):
        for key in keys:
            if key is not None and TIME_KNOB_RE.search(key):
                yield _f(
                    "clock_env_write", ERROR,
                    f"writes os.environ[{key!r}] at runtime: time knobs are set by the track, not by the "
                    "script; remove the write",
                    node,
                )  # fmt: skip


def check_environment(ctx: _Ctx) -> Iterator[Finding]:
    """Reads of secret-looking env vars (error) and wholesale environment dumps (warning)."""

    def secret(key: str | None, node: ast.AST, how: str) -> Iterator[Finding]:
        if key and SECRET_RE.search(key):
            yield _f(
                "secret_env_read", ERROR,
                f"{how} env var {key!r}, which looks like a credential; a submission has no use for "
                "secrets, remove the read",
                node,
            )  # fmt: skip

    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("os.getenv", "os.environ.get", "os.environ.pop", "os.environ.setdefault"):
            yield from secret(_const_str(_arg(call, 0)), call, "reads")
        elif isinstance(call.func, ast.Attribute) and _is_environ(ctx, call.func.value):
            if call.func.attr in _ENV_ENUM_METHODS:
                yield _f(
                    "env_enumeration", WARNING,
                    f"`os.environ.{call.func.attr}()` reads the whole environment (credentials included); "
                    "read only the variables the script needs",
                    call,
                )  # fmt: skip
        elif name in ("dict", "json.dumps", "json.dump", "str", "repr", "print", "list") and any(
            _is_environ(ctx, a) for a in call.args
        ):
            yield _f(
                "env_enumeration", WARNING,
                f"`{name}(os.environ)` copies the whole environment (credentials included); read only "
                "the variables the script needs",
                call,
            )  # fmt: skip
    for node in ctx.nodes:
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(ctx, node.value):
            yield from secret(_const_str(node.slice), node, "reads")
        elif isinstance(node, ast.Compare) and any(_is_environ(ctx, c) for c in node.comparators):
            yield from secret(_const_str(node.left), node, "probes")
        elif isinstance(node, (ast.For, ast.comprehension)) and _is_environ(ctx, node.iter):
            yield _f(
                "env_enumeration", WARNING,
                "iterates over os.environ (credentials included); read only the variables the script needs",
                node if isinstance(node, ast.For) else node.iter,
            )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# (e) writes outside the working directory
# ----------------------------------------------------------------------------------------------

_PATH_WRAPPERS = {"pathlib.Path", "Path", "os.path.join", "os.path.expanduser", "os.path.abspath", "str",
                  "os.path.realpath", "pathlib.PurePath", "os.fspath"}  # fmt: skip
_SAFE_DEVICES = ("/dev/null", "/dev/stdout", "/dev/stderr")
_TMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/")
_WRITE_METHODS = {"write_text", "write_bytes", "touch", "mkdir", "unlink", "rmdir", "rename", "replace",
                  "symlink_to", "hardlink_to"}  # fmt: skip
_PATH_WRITE_FUNCS = {  # function -> indices of path arguments it writes / removes
    "os.makedirs": (0,), "os.mkdir": (0,), "os.remove": (0,), "os.unlink": (0,), "os.rmdir": (0,),
    "os.removedirs": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.symlink": (1,), "os.link": (1,),
    "os.truncate": (0,), "shutil.rmtree": (0,), "shutil.copy": (1,), "shutil.copy2": (1,),
    "shutil.copyfile": (1,), "shutil.copytree": (1,), "shutil.move": (0, 1), "torch.save": (1,),
    "numpy.save": (0,), "numpy.savez": (0,), "numpy.savez_compressed": (0,), "numpy.ndarray.tofile": (0,),
}  # fmt: skip


def _literal_path(ctx: _Ctx, node: ast.AST | None) -> str | None:
    """The leading literal of a path expression: "/abs/x" for Path("/abs") / "x", f"/abs/{n}", ..."""
    if node is None:
        return None
    if (s := _const_str(node)) is not None:
        return s
    if isinstance(node, ast.JoinedStr) and node.values:
        return _const_str(node.values[0])
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Add)):
        return _literal_path(ctx, node.left)
    if isinstance(node, ast.Call) and ctx.call_name(node) in _PATH_WRAPPERS and node.args:
        return _literal_path(ctx, node.args[0])
    return None


def _outside_workdir(path: str) -> str | None:
    """'error'/'warning' when a literal path leaves the working directory, else None."""
    if path.startswith(_SAFE_DEVICES):
        return None
    if path.startswith(_TMP_DIRS) or path in ("/tmp", "/dev/shm"):
        return WARNING
    if path.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", path):
        return ERROR
    if ".." in re.split(r"[\\/]", path):
        return ERROR
    return None


def check_writes(ctx: _Ctx) -> Iterator[Finding]:
    """open(..., 'w'), Path.write_*, os/shutil/torch.save writes to absolute, home or '..' paths."""

    def judge_path(node: ast.AST | None, call: ast.Call, how: str) -> Iterator[Finding]:
        path = _literal_path(ctx, node)
        sev = _outside_workdir(path) if path is not None else None
        if sev == ERROR:
            yield _f(
                "write_outside_workdir", ERROR,
                f"{how} {path!r}, outside the working directory; write only under the run folder "
                "(relative paths)",
                call,
            )  # fmt: skip
        elif sev == WARNING:
            yield _f(
                "write_to_tmp", WARNING,
                f"{how} {path!r}; keep outputs in the working directory so the harness sees them",
                call,
            )  # fmt: skip

    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("open", "io.open", "builtins.open", "codecs.open", "os.open", "gzip.open", "lzma.open",
                    "bz2.open"):  # fmt: skip
            if name == "os.open":
                flags = _arg(call, 1, "flags")
                dump = ast.dump(flags) if flags is not None else ""
                writes = any(flag in dump for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"))
            else:
                mode_s = _const_str(_arg(call, 1, "mode"))
                writes = mode_s is not None and any(c in mode_s for c in "wax+")
            if writes:
                yield from judge_path(_arg(call, 0, "file"), call, "opens for writing")
        elif isinstance(call.func, ast.Attribute) and call.func.attr in _WRITE_METHODS:
            yield from judge_path(call.func.value, call, f"`.{call.func.attr}()` on")
        elif isinstance(call.func, ast.Attribute) and call.func.attr == "open":
            mode_s = _const_str(_arg(call, 0, "mode"))
            if mode_s and any(c in mode_s for c in "wax+"):
                yield from judge_path(call.func.value, call, "opens for writing")
        else:
            canonical = name.replace("np.", "numpy.", 1) if name.startswith("np.") else name
            for idx in _PATH_WRITE_FUNCS.get(canonical, ()):
                yield from judge_path(_arg(call, idx), call, f"`{name}` writes")


# ----------------------------------------------------------------------------------------------
# (g) exec/eval and self-extracting wrappers
# ----------------------------------------------------------------------------------------------


class _Undecodable(Exception):
    pass


def _bounded(decompressor, data: bytes) -> bytes:
    out = decompressor.decompress(data, MAX_DECODED_BYTES + 1)
    if len(out) > MAX_DECODED_BYTES:
        raise _Undecodable(f"payload expands beyond {MAX_DECODED_BYTES} bytes")
    return out


def _zlib_decompress(data: bytes, wbits: int = zlib.MAX_WBITS, *_a, **_k) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, MAX_DECODED_BYTES + 1)
    if len(out) > MAX_DECODED_BYTES:
        raise _Undecodable(f"payload expands beyond {MAX_DECODED_BYTES} bytes")
    return out


def _lzma_decompress(data: bytes, format: int = lzma.FORMAT_AUTO, memlimit=None, filters=None) -> bytes:
    return _bounded(lzma.LZMADecompressor(format=format, memlimit=memlimit, filters=filters), data)


def _brotli_decompress(data: bytes, *_a, **_k) -> bytes:
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError as exc:
        raise _Undecodable("brotli payload, but the brotli package is not installed here") from exc
    out = brotli.decompress(data)
    if len(out) > MAX_DECODED_BYTES:
        raise _Undecodable(f"payload expands beyond {MAX_DECODED_BYTES} bytes")
    return out


def _codecs_decode(data, encoding: str = "utf-8", errors: str = "strict"):
    enc = encoding.lower().replace("-", "_")
    if enc in ("base64", "base64_codec"):
        return base64.b64decode(data)
    if enc in ("zlib", "zlib_codec"):
        return _zlib_decompress(data)
    if enc in ("bz2", "bz2_codec"):
        return _bounded(bz2.BZ2Decompressor(), data)
    if enc in ("hex", "hex_codec"):
        return binascii.unhexlify(data)
    if isinstance(data, bytes):
        return data.decode(encoding, errors)
    raise _Undecodable(f"codecs.decode with {encoding!r}")


_DECODERS: dict[str, Callable] = {
    "base64.b85decode": base64.b85decode,
    "base64.b64decode": base64.b64decode,
    "base64.urlsafe_b64decode": base64.urlsafe_b64decode,
    "base64.standard_b64decode": base64.standard_b64decode,
    "base64.a85decode": base64.a85decode,
    "base64.b32decode": base64.b32decode,
    "base64.b16decode": base64.b16decode,
    "base64.decodebytes": base64.decodebytes,
    "binascii.a2b_base64": binascii.a2b_base64,
    "binascii.unhexlify": binascii.unhexlify,
    "binascii.a2b_hex": binascii.a2b_hex,
    "bytes.fromhex": bytes.fromhex,
    "zlib.decompress": _zlib_decompress,
    "gzip.decompress": lambda data, *a, **k: _zlib_decompress(data, 31),
    "bz2.decompress": lambda data, *a, **k: _bounded(bz2.BZ2Decompressor(), data),
    "lzma.decompress": _lzma_decompress,
    "brotli.decompress": _brotli_decompress,
    "codecs.decode": _codecs_decode,
    "compile": lambda src, *a, **k: src,
}
_CONSTANT_MODULES = {"lzma": lzma, "zlib": zlib}


class _WrapperEval:
    """Evaluates the tiny expression language of self-extracting wrappers, nothing else."""

    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.bindings: dict[str, ast.AST] = {}
        for stmt in ctx.tree.body:  # module-level NAME = <expr> bindings (payload constants)
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
                self.bindings[name] = stmt.value if name not in self.bindings else ast.Constant(None)

    def eval(self, node: ast.AST, depth: int = 0):
        if depth > 40:
            raise _Undecodable("expression too deep")
        ctx = self.ctx
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes, int, float, bool, type(None))):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.eval(e, depth + 1) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {
                self.eval(k, depth + 1): self.eval(v, depth + 1)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            }
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.BitOr)):
            left, right = self.eval(node.left, depth + 1), self.eval(node.right, depth + 1)
            if isinstance(node.op, ast.Add) and type(left) is type(right) and isinstance(left, (str, bytes)):
                return left + right
            if isinstance(node.op, ast.BitOr) and isinstance(left, int) and isinstance(right, int):
                return left | right
            raise _Undecodable("unsupported operator in payload expression")
        if isinstance(node, ast.Name) and node.id in self.bindings and node.id not in ctx.aliases:
            return self.eval(self.bindings[node.id], depth + 1)
        if isinstance(node, ast.Attribute):
            q = ctx.qualname(node)
            mod_name, _, const = (q or "").rpartition(".")
            mod = _CONSTANT_MODULES.get(mod_name)
            if mod is not None and const.isupper() and isinstance(getattr(mod, const, None), int):
                return getattr(mod, const)
            raise _Undecodable(f"unsupported attribute {q or ast.dump(node)[:40]}")
        if isinstance(node, ast.Call):
            args = [self.eval(a, depth + 1) for a in node.args]
            kwargs = {kw.arg: self.eval(kw.value, depth + 1) for kw in node.keywords if kw.arg}
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("decode", "encode"):
                recv = self.eval(node.func.value, depth + 1)
                if node.func.attr == "decode" and isinstance(recv, bytes):
                    return recv.decode(*args, **kwargs)
                if node.func.attr == "encode" and isinstance(recv, str):
                    return recv.encode(*args, **kwargs)
                raise _Undecodable(f".{node.func.attr}() on {type(recv).__name__}")
            name = ctx.call_name(node)
            fn = _DECODERS.get(name)
            if fn is None:
                raise _Undecodable(f"unsupported call {name or '<expression>'}()")
            try:
                return fn(*args, **kwargs)
            except _Undecodable:
                raise
            except Exception as exc:  # corrupt payload, wrong filters, ...
                raise _Undecodable(f"{name} failed: {type(exc).__name__}: {exc}") from exc
        raise _Undecodable(f"unsupported expression {type(node).__name__}")


def check_exec(ctx: _Ctx) -> Iterator[Finding]:
    """exec/eval/compile of strings: decode known wrappers and audit the inner source, else warn."""
    evaluator = _WrapperEval(ctx)
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("__import__", "importlib.import_module") and _const_str(_arg(call, 0, "name")) is None:
            yield _f(
                "dynamic_import", WARNING,
                f"`{name}` of a computed module name cannot be audited; import modules by name",
                call,
            )  # fmt: skip
            continue
        if name in ("runpy.run_path", "runpy.run_module"):
            yield _f("unauditable_exec", WARNING, f"`{name}` runs code this audit cannot see; inline it", call)
            continue
        if name not in ("exec", "eval", "compile", "builtins.exec", "builtins.eval") or not call.args:
            continue
        payload_node = call.args[0]
        if name in ("compile", "builtins.compile") and isinstance(_outer_call(ctx, call), ast.Call):
            continue  # compile(...) nested inside exec(...): handled by the exec
        try:
            payload = evaluator.eval(payload_node)
        except _Undecodable as exc:
            yield _f(
                "unauditable_exec", WARNING,
                f"`{name}` of a computed string cannot be audited ({exc}); ship readable source or a "
                "plain lzma/zlib/brotli + base85/base64 wrapper",
                call,
            )  # fmt: skip
            continue
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                yield _f("unauditable_exec", WARNING, f"`{name}` payload is not UTF-8 text", call)
                continue
        if not isinstance(payload, str):
            yield _f("unauditable_exec", WARNING, f"`{name}` of a non-string value cannot be audited", call)
            continue
        if ctx.depth + 1 > MAX_WRAPPER_DEPTH:
            yield _f("unauditable_exec", WARNING, "wrappers nested too deeply to audit; unwrap the source", call)
            continue
        is_literal = isinstance(payload_node, ast.Constant)
        if not is_literal:
            yield _f(
                "wrapped_source", INFO,
                f"`{name}` runs a decoded payload ({len(payload.encode())} bytes of source); audited the "
                "inner source, findings below are prefixed [payload]",
                call,
            )  # fmt: skip
        for inner in _audit_source(payload, ctx.depth + 1, mode="eval" if name.endswith("eval") else "exec"):
            msg = inner.message if is_literal else f"[payload line {inner.line}] {inner.message}"
            yield Finding(inner.code, inner.severity, msg, call.lineno)


def _outer_call(ctx: _Ctx, call: ast.Call) -> ast.AST | None:
    for other in ctx.calls:
        if other is not call and call in other.args and ctx.call_name(other) in ("exec", "eval", "builtins.exec"):
            return other
    return None


def check_dynamic_access(ctx: _Ctx) -> Iterator[Finding]:
    """getattr on builtins / globals()[...] tricks that hide exec or imports, and ctypes."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if (
            name == "getattr"
            and ctx.qualname(_arg(call, 0)) in ("__builtins__", "builtins")
            and _const_str(_arg(call, 1)) is None
        ):
            yield _f(
                "dynamic_builtin", WARNING,
                "getattr on builtins with a computed name hides what is called; call builtins directly",
                call,
            )  # fmt: skip
    for node in ctx.nodes:
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call):
            if ctx.call_name(node.value) in ("globals", "vars", "locals") and _const_str(node.slice) is None:
                yield _f(
                    "dynamic_builtin", WARNING,
                    "indexes globals()/vars() with a computed name; refer to objects by name",
                    node,
                )  # fmt: skip
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(_is_module_prefix(m, ("ctypes", "cffi")) for m in mods):
                yield _f(
                    "native_code", WARNING,
                    "imports ctypes/cffi: native calls bypass this audit; document why it is needed",
                    node,
                )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# (a) validation data paths and (a)+(f) validation-data flow / test-time training
# ----------------------------------------------------------------------------------------------

_VAL_WORD = r"(?:val|valid|validation|heldout|held_out)"
VAL_NAME_RE = re.compile(rf"(?:^|_){_VAL_WORD}(?:_|\d)|_{_VAL_WORD}$", re.I)
VAL_METRIC_RE = re.compile(  # val-named values that are metrics or settings, not validation data
    rf"(?:^|_){_VAL_WORD}_(?:loss|losses|bpb|nll|ppl|acc|accuracy|score|bits|metric|metrics|every|batch_size|"
    r"batch_tokens|freq|interval|stride|log|time|time_ms|seq_len|frac|fraction|doc_fraction|steps)(?:_|$)",
    re.I,
)
VAL_LITERAL_RE = re.compile(
    r"fineweb_val|(?:^|[_/])val(?:id|idation)?_(?:\*|\d+)|/val(?:id|idation)?/|_val\.(?:bin|npy|pt|txt)", re.I
)
GLOB_BOTH_RE = re.compile(r"(?:^|/)(?:fineweb_?)?\*+(?:_\d+)?\*?\.bin$", re.I)
TRAIN_PATH_RE = re.compile(
    r"(?:^|_|\.)train(?:ing)?_(?:files?|pattern|glob|shards?|paths?|dir|loader|data|dataset|stream|tokens|iter)"
    r"(?:$|_)",
    re.I,
)
SCORE_ACC_RE = re.compile(r"loss|nll|bpb|bits|score|xent|entropy|logprob", re.I)
NOT_SCORE_RE = re.compile(r"train|running|ema|smooth|warm", re.I)
EPOCH_RE = re.compile(r"epoch|(?:^|_)(?:ep|pass|passes|rounds?|repeats?|sweeps?)(?:_|$|\d)", re.I)
CALIB_RE = re.compile(r"hessian|calib|gptq", re.I)
_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "numel", "size", "dim", "nelement"}
_META_FUNCS = {"len", "isinstance", "type", "id", "hasattr", "callable"}

_LOCAL = "local"  # taint source kinds: "local" (val data named/loaded in this scope) or "param:<name>"


def _key(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _key(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _refs(node: ast.AST | None) -> tuple[set[str], bool]:
    """Keys an expression reads (skipping size/shape metadata) and whether it has a val-path literal."""
    keys: set[str] = set()
    literal = False
    if node is None:
        return keys, literal
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name) and f.id in _META_FUNCS:
                continue
            if isinstance(f, ast.Attribute) and f.attr in _META_ATTRS:
                continue
        if isinstance(n, ast.Attribute) and n.attr in _META_ATTRS:
            continue
        if isinstance(n, (ast.Name, ast.Attribute)):
            k = _key(n)
            if k:
                keys.add(k)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and VAL_LITERAL_RE.search(n.value):
            literal = True
        elif isinstance(n, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(n))
    return keys, literal


def _looks_val(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return bool(VAL_NAME_RE.search(last)) and not VAL_METRIC_RE.search(last)


def _is_score_acc(key: str | None) -> bool:
    if not key:
        return False
    last = key.rsplit(".", 1)[-1]
    return bool(SCORE_ACC_RE.search(last)) and not NOT_SCORE_RE.search(last)


@dataclass
class _Event:
    kind: str  # "B" (adaptation: backward / grad / adapting call) or "S" (score accumulation)
    seq: int
    line: int
    loops: tuple[int, ...]  # ids of enclosing loops in this scope, outermost first
    fresh: frozenset[int]  # loops relative to whose current iteration the data is fresh
    sources: frozenset[str]
    what: str
    target: str | None = None  # S: the accumulator key


@dataclass
class _Scope:
    node: ast.AST  # Module, ClassDef, FunctionDef or AsyncFunctionDef
    name: str
    params: list[str]
    is_function: bool


@dataclass
class _ScopeResult:
    events: list[_Event] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    tainted_calls: list[tuple[str, bool, list[int | str]]] = field(default_factory=list)  # callee, is_attr, params
    deps: dict[str, set[str]] = field(default_factory=dict)  # flow-insensitive key -> keys it was built from
    return_refs: set[str] = field(default_factory=set)
    loop_info: dict[int, tuple[int, bool]] = field(default_factory=dict)  # loop id -> (line, epoch-like)


class _LoopLevel:
    def __init__(self, loop_id: int, fresh: set[str], assigned: set[str]) -> None:
        self.id = loop_id
        self.fresh = fresh  # keys holding data produced in the current iteration
        self.assigned = assigned  # keys assigned anywhere in the loop (the rest is loop-invariant)


def _assigned_keys(loop: ast.AST) -> set[str]:
    out: set[str] = set()

    def add(t: ast.AST) -> None:
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                add(e)
        elif isinstance(t, ast.Starred):
            add(t.value)
        elif isinstance(t, ast.Subscript):
            add(t.value)
        elif (k := _key(t)) is not None:
            out.add(k)

    for n in _walk_no_defs(loop):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                add(t)
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.NamedExpr)):
            add(n.target)
        elif isinstance(n, ast.withitem) and n.optional_vars is not None:
            add(n.optional_vars)
    return out


class _FlowWalker:
    """Flow-sensitive taint + freshness walk of one scope; records adaptation and scoring events."""

    MAX_DOUBLE_PASS_DEPTH = 6

    def __init__(self, ctx: _Ctx, scope: _Scope, tainted_params: set[str], adapting: set[str]) -> None:
        self.ctx = ctx
        self.scope = scope
        self.params = set(scope.params)
        self.adapting = adapting
        self.state: dict[str, frozenset[str]] = {p: frozenset({f"param:{p}"}) for p in tainted_params}
        self.loops: list[_LoopLevel] = []
        self.silent = 0
        self.seq = 0
        self.res = _ScopeResult()

    # -- cached per-node helpers (the walk visits loop bodies several times) ----------------------
    def _refs(self, node: ast.AST | None) -> tuple[set[str], bool]:
        if node is None:
            return set(), False
        key = ("refs", id(node))
        if key not in self.ctx.memo:
            self.ctx.memo[key] = _refs(node)
        keys, literal = self.ctx.memo[key]  # type: ignore[misc]
        return set(keys), literal

    def _calls_in(self, node: ast.AST) -> list[ast.Call]:
        key = ("calls", id(node))
        if key not in self.ctx.memo:
            calls = [n for n in _walk_no_defs(node) if isinstance(n, ast.Call)]
            calls.sort(key=lambda c: (getattr(c, "end_lineno", 0) or 0, getattr(c, "end_col_offset", 0) or 0))
            self.ctx.memo[key] = calls
        return self.ctx.memo[key]  # type: ignore[return-value]

    def _assigned(self, loop: ast.AST) -> set[str]:
        key = ("assigned", id(loop))
        if key not in self.ctx.memo:
            self.ctx.memo[key] = _assigned_keys(loop)
        return self.ctx.memo[key]  # type: ignore[return-value]

    # -- taint lookup --------------------------------------------------------------------------
    def _key_sources(self, key: str) -> frozenset[str]:
        if key in self.state:
            return self.state[key]
        if _looks_val(key):
            root = key.split(".", 1)[0]
            return frozenset({f"param:{root}"}) if root in self.params and "." not in key else frozenset({_LOCAL})
        return frozenset()

    def sources(self, node: ast.AST | None) -> tuple[frozenset[str], set[str]]:
        keys, literal = self._refs(node)
        out: set[str] = {_LOCAL} if literal else set()
        for k in keys:
            out |= self._key_sources(k)
        return frozenset(out), keys

    def _is_fresh(self, level: _LoopLevel, keys: set[str]) -> bool:
        """Data is fresh for a loop's iteration when built from this iteration's values, or read anew
        from a loop-invariant validation source (``val_tokens[pos:pos + n]`` in a while loop)."""
        if keys & level.fresh:
            return True
        return any(k not in level.assigned and self._key_sources(k) for k in keys)

    def _fresh_levels(self, keys: set[str]) -> frozenset[int]:
        return frozenset(level.id for level in self.loops if self._is_fresh(level, keys))

    # -- recording -----------------------------------------------------------------------------
    def _record(self, kind: str, node: ast.AST, srcs: frozenset[str], keys: set[str], what: str,
                target: str | None = None) -> None:  # fmt: skip
        self.seq += 1
        if self.silent:
            return
        self.res.events.append(
            _Event(kind, self.seq, getattr(node, "lineno", 0), tuple(level.id for level in self.loops),
                   self._fresh_levels(keys), srcs, what, target)
        )  # fmt: skip

    def _finding(self, finding: Finding) -> None:
        if not self.silent:
            self.res.findings.append(finding)

    # -- assignments ---------------------------------------------------------------------------
    def assign(self, target: ast.AST, srcs: frozenset[str], keys: set[str], weak: bool = False,
               value: ast.AST | None = None) -> None:  # fmt: skip
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self.assign(elt, srcs, keys, weak, None)
            return
        if isinstance(target, ast.Starred):
            self.assign(target.value, srcs, keys, weak, None)
            return
        if isinstance(target, ast.Subscript):
            base = target.value
            while isinstance(base, ast.Subscript):
                base = base.value
            k = _key(base)
            if k:
                idx_srcs, idx_keys = self.sources(target.slice)
                self._bind(k, srcs, keys | idx_keys, weak=True)
            return
        k = _key(target)
        if not k:
            return
        if srcs and TRAIN_PATH_RE.search(k) and "ttt" not in k.lower() and (_LOCAL in srcs):
            self._finding(
                _f(
                    "val_in_train_path", ERROR,
                    f"`{k}` is built from validation data/paths; training must read only fineweb_train_* "
                    "shards, point it at the train split",
                    target,
                )
            )  # fmt: skip
        if value is not None:
            lit = _literal_glob(value)
            if lit and TRAIN_PATH_RE.search(k):
                self._finding(
                    _f(
                        "val_in_train_path", ERROR,
                        f"`{k}` uses the glob {lit!r}, which also matches fineweb_val_* shards; use "
                        "fineweb_train_*.bin",
                        target,
                    )
                )  # fmt: skip
        self._bind(k, srcs, keys, weak)

    def _bind(self, k: str, srcs: frozenset[str], keys: set[str], weak: bool) -> None:
        self.res.deps.setdefault(k, set()).update(keys)
        if weak:
            self.state[k] = self._key_sources(k) | srcs
        else:
            self.state[k] = srcs
        for level in self.loops:
            if self._is_fresh(level, keys):
                level.fresh.add(k)
            elif not weak:
                level.fresh.discard(k)

    # -- expressions: events inside calls --------------------------------------------------------
    def scan_expr(self, node: ast.AST | None) -> None:
        if node is None:
            return
        for call in self._calls_in(node):  # sorted by end position: inner calls finish first
            self.scan_call(call)

    def scan_call(self, call: ast.Call) -> None:
        f = call.func
        name = self.ctx.call_name(call)
        simple = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        # adaptation events
        data: list[ast.AST] = []
        what = ""
        if isinstance(f, ast.Attribute) and f.attr == "backward":
            data, what = [f.value], f"{_unparse(f.value)}.backward()"
        elif name.endswith(("autograd.grad", "autograd.backward")) and call.args:
            data, what = [call.args[0]], f"{name}(...)"
        elif simple and simple in self.adapting and simple != self.scope.name:
            data, what = list(call.args) + [kw.value for kw in call.keywords], f"{simple}(...) (adapts the model)"
        if data:
            srcs: set[str] = set()
            keys: set[str] = set()
            for d in data:
                s, k = self.sources(d)
                srcs |= s
                keys |= k
            if srcs:
                self._record("B", call, frozenset(srcs), keys, what)
        # score accumulation through methods: acc.add_(x), accs.append(x)
        if isinstance(f, ast.Attribute) and f.attr in ("add_", "append", "extend", "addcmul_") and call.args:
            acc = _key(f.value)
            if _is_score_acc(acc):
                srcs2, keys2 = self.sources(call.args[0])
                if srcs2:
                    self._record("S", call, srcs2, keys2, f"{acc}.{f.attr}(...)", acc)
        # calibration on val data
        if simple and CALIB_RE.search(simple):
            srcs3 = frozenset().union(*(self.sources(a)[0] for a in call.args)) if call.args else frozenset()
            if _LOCAL in srcs3:
                self._finding(
                    _f(
                        "val_used_for_calibration", ERROR,
                        f"`{simple}(...)` is fed validation data; quantization calibration (Hessians, "
                        "GPTQ) must use training data or self-generated samples",
                        call,
                    )
                )  # fmt: skip
        # interprocedural: which parameters of module functions receive tainted data
        if simple and not self.silent:
            params: list[int | str] = []
            for i, a in enumerate(call.args):
                if isinstance(a, ast.Starred):
                    break
                if self.sources(a)[0]:
                    params.append(i)
            params += [kw.arg for kw in call.keywords if kw.arg and self.sources(kw.value)[0]]
            if params:
                self.res.tainted_calls.append((simple, isinstance(f, ast.Attribute), params))

    # -- statements ----------------------------------------------------------------------------
    def walk_body(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.walk_stmt(stmt)

    def walk_stmt(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return  # separate scopes
        if isinstance(stmt, ast.Assign):
            self.scan_expr(stmt.value)
            srcs, keys = self.sources(stmt.value)
            for t in stmt.targets:
                self.assign(t, srcs, keys, value=stmt.value)
                tk = _key(t)
                if _is_score_acc(tk) and srcs and tk in keys:  # acc = acc + x
                    self._record("S", stmt, srcs, keys, f"{tk} = {tk} + ...", tk)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self.scan_expr(stmt.value)
                srcs, keys = self.sources(stmt.value)
                self.assign(stmt.target, srcs, keys, value=stmt.value)
        elif isinstance(stmt, ast.AugAssign):
            self.scan_expr(stmt.value)
            srcs, keys = self.sources(stmt.value)
            tk = _key(stmt.target) or _key(getattr(stmt.target, "value", stmt.target))
            if _is_score_acc(tk) and srcs:
                self._record("S", stmt, srcs, keys, f"{tk} += ...", tk)
            self.assign(stmt.target, srcs, keys, weak=True)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.scan_expr(stmt.iter)
            srcs, keys = self.sources(stmt.iter)
            self._loop(stmt, stmt.target, srcs, keys)
        elif isinstance(stmt, ast.While):
            self.scan_expr(stmt.test)
            self._loop(stmt, None, frozenset(), set())
        elif isinstance(stmt, ast.If):
            self.scan_expr(stmt.test)
            self._branches([stmt.body, stmt.orelse])
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self.scan_expr(item.context_expr)
                if item.optional_vars is not None:
                    srcs, keys = self.sources(item.context_expr)
                    self.assign(item.optional_vars, srcs, keys)
            self.walk_body(stmt.body)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            self.walk_body(stmt.body)  # type: ignore[attr-defined]
            for handler in stmt.handlers:  # type: ignore[attr-defined]
                self.walk_body(handler.body)
            self.walk_body(stmt.orelse)  # type: ignore[attr-defined]
            self.walk_body(stmt.finalbody)  # type: ignore[attr-defined]
        elif isinstance(stmt, ast.Match):
            self.scan_expr(stmt.subject)
            self._branches([case.body for case in stmt.cases] + [[]])
        elif isinstance(stmt, ast.Return):
            self.scan_expr(stmt.value)
            if not self.silent:
                self.res.return_refs |= self._refs(stmt.value)[0]
        else:
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self.scan_expr(child)

    def _branches(self, bodies: list[list[ast.stmt]]) -> None:
        start_state = dict(self.state)
        start_fresh = [set(level.fresh) for level in self.loops]
        merged_state: dict[str, frozenset[str]] = {}
        merged_fresh = [set() for _ in self.loops]
        for body in bodies:
            self.state = dict(start_state)
            for level, fresh in zip(self.loops, start_fresh, strict=True):
                level.fresh = set(fresh)
            self.walk_body(body)
            for k, v in self.state.items():
                merged_state[k] = merged_state.get(k, frozenset()) | v
            for acc, level in zip(merged_fresh, self.loops, strict=True):
                acc |= level.fresh
        self.state = merged_state
        for level, fresh in zip(self.loops, merged_fresh, strict=True):
            level.fresh = fresh

    def _loop(self, stmt: ast.For | ast.AsyncFor | ast.While, target: ast.AST | None,
              srcs: frozenset[str], keys: set[str]) -> None:  # fmt: skip
        loop_id = id(stmt)
        epoch_like = False
        if target is not None:
            tk = self._refs(target)[0]
            epoch_like = any(EPOCH_RE.search(k.rsplit(".", 1)[-1]) for k in tk | keys)
        self.res.loop_info[loop_id] = (stmt.lineno, epoch_like)
        passes = 2 if len(self.loops) < self.MAX_DOUBLE_PASS_DEPTH else 1
        assigned = self._assigned(stmt)
        for p in range(passes):
            silent = p < passes - 1
            self.silent += silent
            level = _LoopLevel(loop_id, set(), assigned)
            if target is not None:
                self.assign(target, srcs, keys)
                level.fresh |= self._refs(target)[0]
            self.loops.append(level)
            self.walk_body(stmt.body)
            self.loops.pop()
            self.silent -= silent
        self.walk_body(stmt.orelse)


def _walk_no_defs(node: ast.AST) -> Iterator[ast.AST]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stack.append(child)


def _literal_glob(node: ast.AST) -> str | None:
    for n in _walk_no_defs(node):
        s = _const_str(n)
        if s and GLOB_BOTH_RE.search(s) and not re.search(r"train|val", s, re.I):
            return s
    return None


def _unparse(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse of odd nodes
        return "<expr>"
    return text if len(text) <= 40 else text[:37] + "..."


def _collect_scopes(tree: ast.Module) -> list[_Scope]:
    scopes = [_Scope(tree, "<module>", [], False)]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            params += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
            scopes.append(_Scope(node, node.name, params, True))
        elif isinstance(node, ast.ClassDef):
            scopes.append(_Scope(node, node.name, [], False))
    return scopes


def _scope_body(scope: _Scope) -> list[ast.stmt]:
    return scope.node.body  # type: ignore[attr-defined]


def _closure(deps: dict[str, set[str]], start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        k = todo.pop()
        if k in seen:
            continue
        seen.add(k)
        todo.extend(deps.get(k, ()))
        if "." in k:
            todo.append(k.split(".", 1)[0])
    return seen


def check_val_flow(ctx: _Ctx) -> Iterator[Finding]:
    """Validation data used for training, calibration, or TTT that adapts before (or re-)scoring."""
    scopes = _collect_scopes(ctx.tree)
    by_name: dict[str, list[_Scope]] = {}
    for s in scopes:
        if s.is_function:
            by_name.setdefault(s.name, []).append(s)
    called: set[str] = set()
    for call in ctx.calls:
        f = call.func
        called.add(f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "")
    # names referenced anywhere but as a call (passed as callbacks) also count as having callers
    for node in ctx.nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in by_name:
            called.add(node.id)

    tainted_params: dict[int, set[str]] = {id(s.node): set() for s in scopes}
    adapting: set[str] = set()
    results: dict[int, _ScopeResult] = {}
    for _ in range(8):  # fixpoint over parameter taint and adapting helpers
        results = {}
        for s in scopes:
            walker = _FlowWalker(ctx, s, tainted_params[id(s.node)], adapting)
            walker.walk_body(_scope_body(s))
            results[id(s.node)] = walker.res
        new_params = {k: set(v) for k, v in tainted_params.items()}
        for res in results.values():
            for callee, is_attr, params in res.tainted_calls:
                for target in by_name.get(callee, []):
                    names = target.params
                    offset = 1 if is_attr and names and names[0] in ("self", "cls") else 0
                    for p in params:
                        if isinstance(p, int) and p + offset < len(names):
                            new_params[id(target.node)].add(names[p + offset])
                        elif isinstance(p, str) and p in names:
                            new_params[id(target.node)].add(p)
        new_adapting = set(adapting)
        for s in scopes:
            res = results[id(s.node)]
            if s.is_function and s.name in called and _unguarded_adaptations(res, param_only=True):
                new_adapting.add(s.name)  # a helper that adapts on whatever its callers pass in
        if new_params == tainted_params and new_adapting == adapting:
            break
        tainted_params, adapting = new_params, new_adapting

    for s in scopes:
        res = results[id(s.node)]
        yield from res.findings
        yield from _judge_scope(s, res, has_callers=s.is_function and s.name in called)


def _guard_loop(res: _ScopeResult, b: _Event) -> int | None:
    """Innermost loop enclosing `b` that also contains a score accumulation, if any."""
    for loop_id in reversed(b.loops):
        if any(e.kind == "S" and loop_id in e.loops for e in res.events):
            return loop_id
    return None


def _unguarded_adaptations(res: _ScopeResult, param_only: bool) -> list[_Event]:
    out = []
    for e in res.events:
        if e.kind == "B" and _guard_loop(res, e) is None:
            if param_only and _LOCAL in e.sources:
                continue
            out.append(e)
    return out


def _judge_scope(scope: _Scope, res: _ScopeResult, has_callers: bool) -> Iterator[Finding]:
    val_b = [e for e in res.events if e.kind == "B"]
    if not val_b:
        return
    guarded: dict[int, list[_Event]] = {}
    for b in val_b:
        loop_id = _guard_loop(res, b)
        if loop_id is None:
            if _LOCAL in b.sources or not has_callers:
                yield _f(
                    "val_used_for_training", ERROR,
                    f"`{b.what}` on validation data with no score-first accumulation around it (pre-scoring "
                    "TTT / training on val); train only on train shards, and for TTT add each chunk's "
                    "loss to the score under no_grad before adapting on it",
                    b.line,
                )  # fmt: skip
            continue
        guarded.setdefault(loop_id, []).append(b)
    for loop_id, bs in guarded.items():
        loop_line, _ = res.loop_info.get(loop_id, (0, False))
        scores = sorted((e for e in res.events if e.kind == "S" and loop_id in e.loops), key=lambda e: e.seq)
        first_s = scores[0]
        early = [b for b in bs if b.seq < first_s.seq and loop_id in b.fresh]
        if early:
            b = early[0]
            yield _f(
                "ttt_adapt_before_score", ERROR,
                f"`{b.what}` at line {b.line} adapts on the current val chunk before its loss is scored "
                f"(`{first_s.what}` at line {first_s.line}, loop at line {loop_line}); score the chunk first "
                "under torch.no_grad(), then adapt",
                b.line,
            )  # fmt: skip
        late_b = [b for b in bs if b.seq > first_s.seq and loop_id in b.fresh]
        if late_b:
            rescored = [s for s in scores if s.seq > late_b[0].seq and s.target == first_s.target]
            if rescored:
                s = rescored[0]
                yield _f(
                    "ttt_rescore", ERROR,
                    f"`{s.what}` at line {s.line} adds a chunk's loss to the score again after adapting on it "
                    f"(line {late_b[0].line}); report only the first, pre-adaptation score of each token",
                    s.line,
                )  # fmt: skip
        # scoring loop nested inside an epoch/pass loop: every chunk is scored on each pass
        s_loops = first_s.loops
        if loop_id in s_loops:
            outer = s_loops[: s_loops.index(loop_id)]
            for outer_id in outer:
                line, epoch_like = res.loop_info.get(outer_id, (0, False))
                if epoch_like:
                    yield _f(
                        "ttt_rescore", ERROR,
                        f"TTT scoring loop (line {loop_line}) runs inside a multi-pass loop (line {line}): "
                        "chunks are scored again after earlier passes adapted on them; make one "
                        "left-to-right pass, epochs go inside the per-chunk adaptation step",
                        line,
                    )  # fmt: skip
                    break
        if scope.is_function:
            returned = _closure(res.deps, res.return_refs)
            if not any(s.target in returned for s in scores):
                yield _f(
                    "ttt_score_not_returned", WARNING,
                    f"`{scope.name}` adapts on val data after accumulating `{first_s.target}`, but does not "
                    "return that score; make sure the reported val_bpb is this first-pass score",
                    first_s.line,
                )  # fmt: skip


def check_val_globs(ctx: _Ctx) -> Iterator[Finding]:
    """Shard globs that match both splits ('fineweb_*.bin'); an error when they feed a train path."""
    for node in ctx.nodes:
        s = _const_str(node)
        if s and GLOB_BOTH_RE.search(s) and not re.search(r"train|val", s, re.I):
            yield _f(
                "shard_glob_includes_val", WARNING,
                f"glob {s!r} matches validation shards as well as training shards; use "
                "fineweb_train_*.bin / fineweb_val_*.bin explicitly",
                node,
            )  # fmt: skip


SOURCE_CHECKS: list[Callable[[_Ctx], Iterable[Finding]]] = [
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
                return _run_checks(source, tree, depth)
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
    return _run_checks(source, tree, depth)


def _run_checks(source: str, tree: ast.Module, depth: int) -> list[Finding]:
    try:
        ctx = _Ctx(source, tree, depth)
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
    return sorted(unique.values(), key=lambda f: (f.line or 0, _SEVERITY_ORDER[f.severity], f.code))


def audit_source(source: str) -> list[Finding]:
    """Static legality checks on a train_gpt.py source. Never raises: bad input yields findings."""
    try:
        return _audit_source(source, 0)
    except Exception as exc:  # pragma: no cover - last-resort guard, the checks already catch
        return [Finding("audit_check_failed", WARNING, f"audit crashed: {type(exc).__name__}: {exc}")]


# ----------------------------------------------------------------------------------------------
# Logs
# ----------------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^Total submission size(?: ([^:\n]+?))?: (\d+) bytes", re.M)
_NUM = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
_EXACT_RE = re.compile(rf"^(\S+?)_exact val_loss:{_NUM} val_bpb:{_NUM}", re.M)
_SEED_RE = re.compile(r"^seed:\s*(\d+)\s*$", re.M)
_STOP_RE = re.compile(r"^stopping_early: .*?step:(\d+)/(\d+)", re.M)
_VALSTEP_RE = re.compile(r"^step:(\d+)/(\d+) val_loss:", re.M)
_SEPARATOR = "=" * 100


@dataclass
class LogSummary:
    path: str
    size_bytes: int | None = None  # last qualified "Total submission size <fmt>: N bytes" (else unqualified)
    size_label: str | None = None
    exact_label: str | None = None  # e.g. "final_int8_zlib_roundtrip"
    val_loss: float | None = None
    val_bpb: float | None = None
    seed: int | None = None
    steps: int | None = None
    source_preamble: str | None = None  # the script source the trainer logged at the top, if any


def parse_train_log(text: str, path: str = "") -> LogSummary:
    """Pull the numbers reviewers check out of a train log (official line shapes)."""
    out = LogSummary(path)
    sizes = [(m.group(1), int(m.group(2))) for m in _SIZE_RE.finditer(text)]
    qualified = [s for s in sizes if s[0]]
    pick = qualified[-1] if qualified else sizes[-1] if sizes else None
    if pick:
        out.size_label, out.size_bytes = pick
    exacts = list(_EXACT_RE.finditer(text))
    if exacts:
        m = exacts[-1]
        out.exact_label, out.val_loss, out.val_bpb = m.group(1), float(m.group(2)), float(m.group(3))
    if m := _SEED_RE.search(text):
        out.seed = int(m.group(1))
    elif m := re.search(r"seed[_-]?(\d+)", Path(path).name, re.I):
        out.seed = int(m.group(1))
    if stops := list(_STOP_RE.finditer(text)):
        out.steps = int(stops[-1].group(1))
    elif vals := list(_VALSTEP_RE.finditer(text)):
        out.steps = int(vals[-1].group(1))
    sep = text.find("\n" + _SEPARATOR + "\n")
    if sep > 0:
        out.source_preamble = text[:sep]
    return out


def _read_text(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text(encoding="utf-8", errors="replace"), None
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _find_logs(folder: Path) -> list[Path]:
    def logs_in(d: Path) -> list[Path]:
        return sorted(
            p for p in d.iterdir()
            if p.is_file() and (p.suffix == ".log" or (p.name.startswith("train") and p.suffix == ".txt"))
        )  # fmt: skip

    found = logs_in(folder)
    if not found and (folder / "logs").is_dir():
        found = logs_in(folder / "logs")
    return found


def cap_for_track(track: str | None) -> int | None:
    """Byte cap of a track given by folder name, pgolf track name or submission.json 'track' value."""
    if not track:
        return None
    name = Path(track).name
    if name in TRACK_CAPS:
        return TRACK_CAPS[name]
    if m := re.search(r"(\d+)\s*mb", name, re.I):
        return int(m.group(1)) * 1_000_000
    return None


def _log_checks(logs: list[LogSummary], cap: int, rel: Callable[[str], str], source: str | None) -> Iterator[Finding]:
    for log in logs:
        if log.size_bytes is None:
            yield Finding(
                "log_missing_size", WARNING,
                "no `Total submission size ...: N bytes` line; the log must show the artifact size "
                "(rerun with the official logging)",
                file=rel(log.path),
            )  # fmt: skip
        elif log.size_bytes > cap:
            yield Finding(
                "log_over_byte_cap", ERROR,
                f"logged total {log.size_bytes:,} bytes ({log.size_label or 'unlabelled'}) exceeds the cap "
                f"{cap:,}; every seed must fit (PR #1835), shrink the model or code and rerun",
                file=rel(log.path),
            )  # fmt: skip
        if log.val_bpb is None:
            yield Finding(
                "log_missing_score", WARNING,
                "no `*_exact val_loss:... val_bpb:...` line; the run did not finish or the log is not the "
                "trainer's own",
                file=rel(log.path),
            )  # fmt: skip
        elif not math.isfinite(log.val_bpb):
            yield Finding("log_nonfinite_score", ERROR, f"final val_bpb is {log.val_bpb}", file=rel(log.path))
        if source is not None and log.source_preamble is not None:
            pre = log.source_preamble.strip()
            looks_like_code = pre.startswith(('"""', "'''", "#", "import", "from", "def", "class"))
            if looks_like_code and pre != source.strip():
                yield Finding(
                    "log_source_mismatch", WARNING,
                    "the source logged at the top of this log differs from train_gpt.py; logs must come "
                    "from running exactly this file (rerun and replace the log)",
                    file=rel(log.path),
                )  # fmt: skip


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ----------------------------------------------------------------------------------------------
# Record folders
# ----------------------------------------------------------------------------------------------

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


def _load_source(folder: Path) -> tuple[str | None, list[Finding]]:
    script = folder / "train_gpt.py"
    if not script.is_file():
        return None, [
            Finding("missing_train_gpt", ERROR, "train_gpt.py is missing; the record must run from its folder")
        ]
    try:
        return script.read_bytes().decode("utf-8"), []
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Finding("unreadable_train_gpt", ERROR, f"cannot read train_gpt.py as UTF-8 ({exc})",
                              file="train_gpt.py")]  # fmt: skip


def _load_submission(folder: Path) -> tuple[dict | None, list[Finding]]:
    path = folder / "submission.json"
    if not path.is_file():
        return None, [Finding(
            "missing_submission_json", ERROR,
            "submission.json is missing; add author, github_id, name, blurb, date, val_loss, val_bpb, "
            "bytes_total, bytes_code",
        )]  # fmt: skip
    text, err = _read_text(path)
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
    paths = _find_logs(folder)
    if not paths:
        return [], [Finding(
            "missing_train_log", ERROR,
            "no train log (*.log or train*.txt); include the automatically produced log of every seed",
        )]  # fmt: skip
    logs, findings = [], []
    for lp in paths:
        text, err = _read_text(lp)
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
    text, _ = _read_text(readme)
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
    if rec.source is not None and _num(bc):
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
    if _num(bt) and bt > cap:
        yield _sub_finding("over_byte_cap", ERROR, f"bytes_total {bt:,} exceeds the {cap:,}-byte cap; shrink it")
    if _num(bt) and _num(bc) and bt < bc:
        yield _sub_finding("bytes_total_below_code", ERROR, f"bytes_total {bt:,} < bytes_code {bc:,}")
    results = rec.sub.get("seed_results")
    for seed, res in results.items() if isinstance(results, dict) else []:
        ab = res.get("artifact_bytes") if isinstance(res, dict) else None
        if _num(ab) and ab > cap:
            yield _sub_finding("over_byte_cap", ERROR, f"seed {seed}: artifact_bytes {ab:,} exceeds the cap {cap:,}")


def check_logs(rec: _Record) -> Iterator[Finding]:
    """Every log: artifact size <= cap, a final score line, logged source == train_gpt.py."""
    yield from _log_checks(rec.logs, rec.cap, rec.rel, rec.source)


def check_claimed_score(rec: _Record) -> Iterator[Finding]:
    """submission.json val_bpb == mean of the logs' final *_exact val_bpb (1e-4)."""
    scored = [lg.val_bpb for lg in rec.logs if lg.val_bpb is not None and math.isfinite(lg.val_bpb)]
    if rec.sub is None or not _num(rec.sub.get("val_bpb")) or not scored:
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
        if _num(res.get("val_bpb")) and lg.val_bpb is not None and abs(float(res["val_bpb"]) - lg.val_bpb) > 1e-4:
            yield _sub_finding(
                "seed_result_mismatch", ERROR,
                f"seed {seed}: val_bpb {res['val_bpb']} in submission.json vs {lg.val_bpb} in its log",
            )  # fmt: skip
        if _num(res.get("steps")) and lg.steps is not None and int(res["steps"]) != lg.steps:
            yield _sub_finding(
                "seed_result_mismatch", ERROR,
                f"seed {seed}: steps {res['steps']} in submission.json vs {lg.steps} in its log (#86)",
            )  # fmt: skip


def check_seed_count(rec: _Record) -> Iterator[Finding]:
    """A record-track claim normally needs >= 3 seeds (p < 0.01)."""
    if Path(rec.track).name not in RECORD_TRACKS | {"10min_16mb", "30min_2mb_local"} or not rec.logs:
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
        for f in audit_source(rec.source):
            yield Finding(f.code, f.severity, f.message, f.line, "train_gpt.py")


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
    source, f_src = _load_source(folder)
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


# ----------------------------------------------------------------------------------------------
# Run folders (pgolf's own)
# ----------------------------------------------------------------------------------------------

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
                items.append((str(fl.get("code", "flag")), sev if sev in _SEVERITY_ORDER else None,
                              str(fl.get("message", ""))))  # fmt: skip
    for code, sev, msg in items:
        yield Finding("runner_flag", sev or RUNNER_FLAG_SEVERITY.get(code, ERROR), f"{code}: {msg}", file=origin)


def _load_json(path: Path, missing: Finding | None) -> tuple[object, list[Finding]]:
    """(value, findings) for an optional/required JSON file; value is None when absent or invalid."""
    if not path.is_file():
        return None, [missing] if missing else []
    text, err = _read_text(path)
    code = path.stem + "_json_invalid"
    if text is None:
        return None, [Finding(code, ERROR if missing else WARNING, err or "unreadable", file=path.name)]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        return None, [Finding(code, ERROR if missing else WARNING, f"not valid JSON ({exc.msg})", file=path.name)]


def _run_result_checks(result: dict) -> Iterator[Finding]:
    for key in ("val_loss", "val_bpb", "bytes_total", "bytes_code"):
        if key not in result:
            yield Finding("result_missing_field", ERROR, f"{key!r} missing", file="result.json")
        elif result[key] is not None and not _num(result[key]):
            yield Finding("result_bad_type", ERROR, f"{key!r} is {type(result[key]).__name__}", file="result.json")
    vb = result.get("val_bpb")
    if _num(vb) and not math.isfinite(vb):
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
        if actual is not None and _num(claimed) and claimed != actual:
            yield Finding(f"{key}_mismatch", ERROR, f"result {key} {claimed:,} vs recounted {actual:,} ({what})",
                          file="result.json")  # fmt: skip
    total = recount if recount is not None else res.get("bytes_total")
    if _num(total) and total > cap:
        yield Finding("over_byte_cap", ERROR, f"total {total:,} bytes exceeds the {cap:,}-byte cap")


def _run_log_checks(folder: Path, source: str | None, result: dict | None, cap: int) -> Iterator[Finding]:
    paths = [folder / "train.log"] if (folder / "train.log").is_file() else _find_logs(folder)
    if not paths:
        yield Finding("missing_train_log", ERROR, "train.log is missing; the run's full log must be kept")
    logs = [parse_train_log(text, str(p)) for p in paths if (text := _read_text(p)[0]) is not None]
    yield from _log_checks(logs, cap, lambda p: Path(p).name, source)
    claimed = (result or {}).get("val_bpb")
    if _num(claimed):
        for lg in logs:
            if lg.val_bpb is not None and abs(lg.val_bpb - float(claimed)) > 1e-6:
                msg = f"log's final val_bpb {lg.val_bpb} vs result.json {claimed}"
                yield Finding("log_result_mismatch", ERROR, msg, file=Path(lg.path).name)


def _runner_checks(folder: Path, result: dict | None) -> Iterator[Finding]:
    """Runner flags (outcome.json / flags.json / result.json), its status, and secrets in env.json."""
    if result is not None and "flags" in result:
        yield from _flag_findings(result["flags"], "result.json")
    outcome, found = _load_json(folder / "outcome.json", None)
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
    flags, found = _load_json(folder / "flags.json", None)
    yield from found
    if flags is not None:
        yield from _flag_findings(flags, "flags.json")
    env, found = _load_json(folder / "env.json", None)
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
    source, found = _load_source(folder)
    report.findings += found
    missing = Finding("missing_result_json", ERROR, "result.json is missing; the run did not finish or crashed")
    result, found = _load_json(folder / "result.json", missing)
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
        report.findings.extend(
            Finding(f.code, f.severity, f.message, f.line, "train_gpt.py") for f in audit_source(source)
        )
    return report


# ----------------------------------------------------------------------------------------------
# Dispatch + CLI
# ----------------------------------------------------------------------------------------------


def audit_path(path: str | Path, byte_cap: int | None = None, track: str | None = None) -> AuditReport:
    """Audit whatever PATH is: a .py file, a run folder, a record folder, or a folder of records."""
    p = Path(path)
    if p.is_file():
        text, err = _read_text(p)
        findings = audit_source(text) if text is not None else [Finding("unreadable_source", ERROR, err or "")]
        return AuditReport([Finding(f.code, f.severity, f.message, f.line, p.name) for f in findings], str(p),
                           "source")  # fmt: skip
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(["audit", *sys.argv[1:]]))
