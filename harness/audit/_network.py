"""Static checks on what a script reaches outside itself: the network and other processes."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from harness.audit._context import Ctx, arg, const_str, finding, kwarg, module_prefix
from harness.audit._findings import ERROR, WARNING, Finding

NETWORK_MODULES = (
    "socket", "socketserver", "ssl", "urllib.request", "urllib3", "requests", "http.client",
    "http.server", "httpx", "aiohttp", "huggingface_hub", "ftplib", "smtplib", "poplib", "imaplib",
    "nntplib", "telnetlib", "websocket", "websockets", "xmlrpc", "paramiko", "pycurl", "boto3",
    "botocore", "gdown", "wget", "grpc", "zmq",
)  # fmt: skip
NETWORK_CAPABLE = ("datasets", "kernels", "tiktoken", "transformers", "torch.hub", "modelscope")


def check_network(ctx: Ctx) -> Iterator[Finding]:
    """Imports/calls of networking modules (error) and of libraries that download on use (warning)."""
    reported: set[str] = set()

    def module_finding(mod: str, node: ast.AST, how: str) -> Iterator[Finding]:
        if m := module_prefix(mod, NETWORK_MODULES):
            reported.add(m)
            yield finding(
                "network_import", ERROR,
                f"{how} `{mod}`: network access is banned in a submission; remove it and ship "
                "everything inside the artifact",
                node,
            )  # fmt: skip
        elif m := module_prefix(mod, NETWORK_CAPABLE):
            reported.add(m)
            yield finding(
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
            if module_prefix(node.module, NETWORK_MODULES + NETWORK_CAPABLE):
                yield from module_finding(node.module, node, "imports from")
            else:
                for a in node.names:
                    yield from module_finding(f"{node.module}.{a.name}", node, "imports")
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("__import__", "importlib.import_module"):
            mod = const_str(arg(call, 0, "name"))
            if mod:
                yield from module_finding(mod, call, "dynamically imports")
            continue
        m = module_prefix(name, NETWORK_MODULES + NETWORK_CAPABLE)
        if m and m not in reported:
            reported.add(m)
            yield from module_finding(name, call, "calls")


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
    cmd = arg(call, 0, "args")
    if isinstance(cmd, (ast.List, ast.Tuple)) and cmd.elts:
        parts = [const_str(e) for e in cmd.elts]
        if parts[0] == "nvidia-smi":
            return [p if p is not None else "?" for p in parts]
    return None


def check_processes(ctx: Ctx) -> Iterator[Finding]:
    """subprocess / os.system / exec* / pty / process pools. Exactly `subprocess.run(["nvidia-smi"])` passes."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in SUBPROCESS_FUNCS:
            shell = kwarg(call, "shell")
            uses_shell = shell is not None and not (isinstance(shell, ast.Constant) and not shell.value)
            argv = _nvidia_smi_argv(call)
            if argv == ["nvidia-smi"] and name == "subprocess.run" and not uses_shell:
                continue  # what the official baseline does to log the GPU inventory
            if argv is not None and not uses_shell:
                yield finding(
                    "subprocess_nvidia_smi_variant", WARNING,
                    f"`{name}({argv})`: only `subprocess.run([\"nvidia-smi\"])` is pre-approved; "
                    "use exactly that call or log the GPU inventory through torch.cuda",
                    call,
                )  # fmt: skip
                continue
            yield finding(
                "subprocess_call", ERROR,
                f"`{name}(...)` runs an external program{' through a shell' if uses_shell else ''}; "
                "a submission may not run other programs (only `subprocess.run([\"nvidia-smi\"])` is allowed)",
                call,
            )  # fmt: skip
        elif name in SHELL_FUNCS or _OS_EXEC_RE.match(name):
            yield finding(
                "shell_exec", ERROR,
                f"`{name}(...)` spawns or replaces a process; remove it (no shells or external programs)",
                call,
            )  # fmt: skip
        elif module_prefix(name, PROCESS_PREFIXES) and name.rsplit(".", 1)[-1] in (
            "Process", "Pool", "get_context", "spawn", "start_processes", "ProcessPoolExecutor", "Popen",
        ):  # fmt: skip
            yield finding(
                "process_spawn", WARNING,
                f"`{name}(...)` starts extra processes; make sure they run no shells, no network and no "
                "hidden compute outside the timed budget, or use torchrun's ranks instead",
                call,
            )  # fmt: skip
