"""Static checks on the clock and the environment: patched clocks, timer signals, time knobs, secrets."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from harness.audit._context import Ctx, arg, assign_targets, const_str, finding, module_prefix
from harness.audit._findings import ERROR, WARNING, Finding

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


def _is_environ(ctx: Ctx, node: ast.AST | None) -> bool:
    return ctx.qualname(node) in ("os.environ", "posix.environ")


def _env_writes(ctx: Ctx) -> Iterator[tuple[ast.AST, list[str | None]]]:
    """(node, keys) for each write to the process environment; a None key = not a literal."""
    for node in ctx.nodes:
        targets = node.targets if isinstance(node, ast.Delete) else assign_targets(node)
        for t in targets:
            if isinstance(t, ast.Subscript) and _is_environ(ctx, t.value):
                yield node, [const_str(t.slice)]
            elif _is_environ(ctx, t):
                yield node, [None]
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("os.putenv", "os.unsetenv"):
            yield call, [const_str(arg(call, 0))]
        elif isinstance(call.func, ast.Attribute) and _is_environ(ctx, call.func.value):
            if call.func.attr in _ENV_WRITE_METHODS:
                keys: list[str | None] = [kw.arg for kw in call.keywords]
                if call.args:
                    first = call.args[0]
                    if isinstance(first, ast.Dict):
                        keys += [const_str(k) for k in first.keys]
                    else:
                        keys.append(const_str(first))
                yield call, keys or [None]


def check_clock(ctx: Ctx) -> Iterator[Finding]:
    """Monkeypatched clocks, runtime writes of time knobs to os.environ, alarm/timer and signal games."""
    clock_aliases = {alias for alias, target in ctx.aliases.items() if module_prefix(target, CLOCK_MODULES)}
    for node in ctx.nodes:
        for t in assign_targets(node):
            q = ctx.qualname(t) if isinstance(t, ast.Attribute) else None
            rebinds_alias = isinstance(t, ast.Name) and t.id in clock_aliases
            if (q and module_prefix(q, CLOCK_MODULES)) or rebinds_alias:
                what = q or f"{t.id} (= {ctx.aliases[t.id]})"  # type: ignore[union-attr]
                yield finding(
                    "clock_monkeypatch", ERROR,
                    f"assigns `{what}`: replacing a clock makes the wall-clock budget unverifiable; "
                    "leave the time module alone",
                    node,
                )  # fmt: skip
            if isinstance(t, ast.Attribute) and t.attr in ("max_wallclock_seconds", "max_wallclock_ms"):
                value = getattr(node, "value", None)
                if isinstance(value, ast.Constant) and isinstance(value.value, (int, float)):
                    yield finding(
                        "wallclock_override", WARNING,
                        f"hard-codes `{t.attr} = {value.value}` at runtime; the time cap must come "
                        "from MAX_WALLCLOCK_SECONDS as the track sets it",
                        node,
                    )  # fmt: skip
    for call in ctx.calls:
        name = ctx.call_name(call)
        target = ctx.qualname(arg(call, 0))
        lit = const_str(arg(call, 0))
        if name == "setattr" and target and module_prefix(target, CLOCK_MODULES):
            yield finding("clock_monkeypatch", ERROR, f"`setattr({target}, ...)` replaces a clock; remove it", call)
        elif (
            name.endswith(("patch", "patch.object", "setattr"))
            and name != "setattr"
            and (
                (lit and module_prefix(lit, CLOCK_MODULES)) or (target and module_prefix(target, CLOCK_MODULES))
            )
        ):
            yield finding("clock_monkeypatch", ERROR, f"`{name}` patches the clock ({lit or target}); remove it", call)
        elif name in ("signal.alarm", "signal.setitimer", "signal.ualarm"):
            yield finding(
                "signal_timer", ERROR,
                f"`{name}(...)` arms a timer signal; the harness owns the time budget, remove it",
                call,
            )  # fmt: skip
        elif name == "signal.signal":
            sig = ctx.qualname(arg(call, 0)) or ""
            handler = ctx.qualname(arg(call, 1)) or ""
            if sig.rsplit(".", 1)[-1] in ("SIGTERM", "SIGINT", "SIGALRM", "SIGVTALRM", "SIGXCPU", "SIGHUP", "SIGUSR1"):
                if handler.endswith("SIG_IGN"):
                    yield finding(
                        "signal_ignore", ERROR,
                        f"ignores {sig}: the run must stay killable at the time cap; remove the handler",
                        call,
                    )  # fmt: skip
                else:
                    yield finding(
                        "signal_handler", WARNING,
                        f"installs a handler for {sig}; make sure it cannot delay or swallow the "
                        "harness's kill at the time cap",
                        call,
                    )  # fmt: skip
        elif name == "signal.pthread_sigmask":
            yield finding("signal_handler", WARNING, "`signal.pthread_sigmask` can block the harness's kill", call)
    for node, keys in _env_writes(ctx):
        for key in keys:
            if key is not None and TIME_KNOB_RE.search(key):
                yield finding(
                    "clock_env_write", ERROR,
                    f"writes os.environ[{key!r}] at runtime: time knobs are set by the track, not by the "
                    "script; remove the write",
                    node,
                )  # fmt: skip


def check_environment(ctx: Ctx) -> Iterator[Finding]:
    """Reads of secret-looking env vars (error) and wholesale environment dumps (warning)."""

    def secret(key: str | None, node: ast.AST, how: str) -> Iterator[Finding]:
        if key and SECRET_RE.search(key):
            yield finding(
                "secret_env_read", ERROR,
                f"{how} env var {key!r}, which looks like a credential; a submission has no use for "
                "secrets, remove the read",
                node,
            )  # fmt: skip

    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("os.getenv", "os.environ.get", "os.environ.pop", "os.environ.setdefault"):
            yield from secret(const_str(arg(call, 0)), call, "reads")
        elif isinstance(call.func, ast.Attribute) and _is_environ(ctx, call.func.value):
            if call.func.attr in _ENV_ENUM_METHODS:
                yield finding(
                    "env_enumeration", WARNING,
                    f"`os.environ.{call.func.attr}()` reads the whole environment (credentials included); "
                    "read only the variables the script needs",
                    call,
                )  # fmt: skip
        elif name in ("dict", "json.dumps", "json.dump", "str", "repr", "print", "list") and any(
            _is_environ(ctx, a) for a in call.args
        ):
            yield finding(
                "env_enumeration", WARNING,
                f"`{name}(os.environ)` copies the whole environment (credentials included); read only "
                "the variables the script needs",
                call,
            )  # fmt: skip
    for node in ctx.nodes:
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(ctx, node.value):
            yield from secret(const_str(node.slice), node, "reads")
        elif isinstance(node, ast.Compare) and any(_is_environ(ctx, c) for c in node.comparators):
            yield from secret(const_str(node.left), node, "probes")
        elif isinstance(node, (ast.For, ast.comprehension)) and _is_environ(ctx, node.iter):
            yield finding(
                "env_enumeration", WARNING,
                "iterates over os.environ (credentials included); read only the variables the script needs",
                node if isinstance(node, ast.For) else node.iter,
            )  # fmt: skip
