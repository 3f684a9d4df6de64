"""The parsed source every static check reads: import-alias resolution plus small AST helpers."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator

from harness.audit._findings import Finding

# audit_inner(source, depth, mode): the whole static audit, for sources found inside this one
AuditInner = Callable[[str, int, str], list[Finding]]
_DEFS = (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class Ctx:
    """Parsed source plus import-alias resolution, shared by every check."""

    def __init__(self, tree: ast.Module, depth: int, audit_inner: AuditInner) -> None:
        self.tree = tree
        self.depth = depth  # how many self-extracting wrappers this source sits inside
        self.audit_inner = audit_inner
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


def finding(code: str, severity: str, message: str, node: ast.AST | int | None = None) -> Finding:
    """A source finding at `node`'s line (or at a line number)."""
    line = node if isinstance(node, int) else getattr(node, "lineno", None)
    return Finding(code, severity, message, line)


def const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def kwarg(call: ast.Call, name: str) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def arg(call: ast.Call, index: int, name: str | None = None) -> ast.AST | None:
    """The argument at `index` (when no *args come before it), else the keyword `name`."""
    if len(call.args) > index and not any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
        return call.args[index]
    return kwarg(call, name) if name else None


def module_prefix(name: str, modules: Iterable[str]) -> str | None:
    """The module of `modules` that `name` is or lies inside, if any."""
    for m in modules:
        if name == m or name.startswith(m + "."):
            return m
    return None


def assign_targets(node: ast.AST) -> list[ast.AST]:
    """What an Assign / AugAssign / AnnAssign binds; [] for any other node."""
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    return []


def walk_no_defs(node: ast.AST) -> Iterator[ast.AST]:
    """`node` and what lies under it, without entering nested functions, lambdas or classes."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, _DEFS):
                stack.append(child)


def unparse(node: ast.AST) -> str:
    """Short source text of an expression for messages (40 characters at most)."""
    try:
        text = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse of odd nodes
        return "<expr>"
    return text if len(text) <= 40 else text[:37] + "..."
