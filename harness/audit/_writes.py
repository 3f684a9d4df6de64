"""Static check on file writes that leave the working directory (absolute, home, `..` and temp paths)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from harness.audit._context import Ctx, arg, const_str, finding
from harness.audit._findings import ERROR, WARNING, Finding

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


def _literal_path(ctx: Ctx, node: ast.AST | None) -> str | None:
    """The leading literal of a path expression: "/abs/x" for Path("/abs") / "x", f"/abs/{n}", ..."""
    if node is None:
        return None
    if (s := const_str(node)) is not None:
        return s
    if isinstance(node, ast.JoinedStr) and node.values:
        return const_str(node.values[0])
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


def check_writes(ctx: Ctx) -> Iterator[Finding]:
    """open(..., 'w'), Path.write_*, os/shutil/torch.save writes to absolute, home or '..' paths."""

    def judge_path(node: ast.AST | None, call: ast.Call, how: str) -> Iterator[Finding]:
        path = _literal_path(ctx, node)
        sev = _outside_workdir(path) if path is not None else None
        if sev == ERROR:
            yield finding(
                "write_outside_workdir", ERROR,
                f"{how} {path!r}, outside the working directory; write only under the run folder "
                "(relative paths)",
                call,
            )  # fmt: skip
        elif sev == WARNING:
            yield finding(
                "write_to_tmp", WARNING,
                f"{how} {path!r}; keep outputs in the working directory so the harness sees them",
                call,
            )  # fmt: skip

    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("open", "io.open", "builtins.open", "codecs.open", "os.open", "gzip.open", "lzma.open",
                    "bz2.open"):  # fmt: skip
            if name == "os.open":
                flags = arg(call, 1, "flags")
                dump = ast.dump(flags) if flags is not None else ""
                writes = any(flag in dump for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"))
            else:
                mode_s = const_str(arg(call, 1, "mode"))
                writes = mode_s is not None and any(c in mode_s for c in "wax+")
            if writes:
                yield from judge_path(arg(call, 0, "file"), call, "opens for writing")
        elif isinstance(call.func, ast.Attribute) and call.func.attr in _WRITE_METHODS:
            yield from judge_path(call.func.value, call, f"`.{call.func.attr}()` on")
        elif isinstance(call.func, ast.Attribute) and call.func.attr == "open":
            mode_s = const_str(arg(call, 0, "mode"))
            if mode_s and any(c in mode_s for c in "wax+"):
                yield from judge_path(call.func.value, call, "opens for writing")
        else:
            canonical = name.replace("np.", "numpy.", 1) if name.startswith("np.") else name
            for idx in _PATH_WRITE_FUNCS.get(canonical, ()):
                yield from judge_path(arg(call, idx), call, f"`{name}` writes")
