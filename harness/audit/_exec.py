"""Static checks on code the audit cannot read directly: exec/eval/compile, dynamic imports, builtins tricks,
native code. Literal self-extracting wrappers are decoded and their inner source audited like the outer one."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from harness.audit._context import Ctx, arg, const_str, finding, module_prefix
from harness.audit._decode import Undecodable, WrapperEval
from harness.audit._findings import INFO, WARNING, Finding

MAX_WRAPPER_DEPTH = 4

def check_exec(ctx: Ctx) -> Iterator[Finding]:
    """exec/eval/compile of strings: decode known wrappers and audit the inner source, else warn."""
    evaluator = WrapperEval(ctx)
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("__import__", "importlib.import_module") and const_str(arg(call, 0, "name")) is None:
            yield finding(
                "dynamic_import", WARNING,
                f"`{name}` of a computed module name cannot be audited; import modules by name",
                call,
            )  # fmt: skip
            continue
        if name in ("runpy.run_path", "runpy.run_module"):
            yield finding("unauditable_exec", WARNING, f"`{name}` runs code this audit cannot see; inline it", call)
            continue
        if name not in ("exec", "eval", "compile", "builtins.exec", "builtins.eval") or not call.args:
            continue
        payload_node = call.args[0]
        if name == "compile" and _inside_exec(ctx, call):
            continue  # compile(...) nested inside exec(...): handled by the exec
        try:
            payload = evaluator.eval(payload_node)
        except Undecodable as exc:
            yield finding(
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
                yield finding("unauditable_exec", WARNING, f"`{name}` payload is not UTF-8 text", call)
                continue
        if not isinstance(payload, str):
            yield finding("unauditable_exec", WARNING, f"`{name}` of a non-string value cannot be audited", call)
            continue
        if ctx.depth + 1 > MAX_WRAPPER_DEPTH:
            yield finding("unauditable_exec", WARNING, "wrappers nested too deeply to audit; unwrap the source", call)
            continue
        is_literal = isinstance(payload_node, ast.Constant)
        if not is_literal:
            yield finding(
                "wrapped_source", INFO,
                f"`{name}` runs a decoded payload ({len(payload.encode())} bytes of source); audited the "
                "inner source, findings below are prefixed [payload]",
                call,
            )  # fmt: skip
        for inner in ctx.audit_inner(payload, ctx.depth + 1, "eval" if name.endswith("eval") else "exec"):
            msg = inner.message if is_literal else f"[payload line {inner.line}] {inner.message}"
            yield Finding(inner.code, inner.severity, msg, call.lineno)


def _inside_exec(ctx: Ctx, call: ast.Call) -> bool:
    """Whether `call` is an argument of an exec/eval (compile(...) nested in exec(...))."""
    return any(
        other is not call and call in other.args and ctx.call_name(other) in ("exec", "eval", "builtins.exec")
        for other in ctx.calls
    )


def check_dynamic_access(ctx: Ctx) -> Iterator[Finding]:
    """getattr on builtins / globals()[...] tricks that hide exec or imports, and ctypes."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if (
            name == "getattr"
            and ctx.qualname(arg(call, 0)) in ("__builtins__", "builtins")
            and const_str(arg(call, 1)) is None
        ):
            yield finding(
                "dynamic_builtin", WARNING,
                "getattr on builtins with a computed name hides what is called; call builtins directly",
                call,
            )  # fmt: skip
    for node in ctx.nodes:
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call):
            if ctx.call_name(node.value) in ("globals", "vars", "locals") and const_str(node.slice) is None:
                yield finding(
                    "dynamic_builtin", WARNING,
                    "indexes globals()/vars() with a computed name; refer to objects by name",
                    node,
                )  # fmt: skip
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(module_prefix(m, ("ctypes", "cffi")) for m in mods):
                yield finding(
                    "native_code", WARNING,
                    "imports ctypes/cffi: native calls bypass this audit; document why it is needed",
                    node,
                )  # fmt: skip
