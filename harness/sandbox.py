"""Process containment for candidate runs: the supervisor shim, the child environment, isolation checks.

This file has two roles and imports only the standard library, because it runs under the
candidate's interpreter with no `harness` package on its path:

* As a script it is the **supervisor shim** that sits between the harness and a trainer:
  ``python sandbox.py --parent-pid P [--lo-up] [--hide DIR]... -- CMD...``.
  It is started in a new session (its pid is the run's process group id) and

  - asks the kernel for ``PR_SET_PDEATHSIG(SIGTERM)`` and also polls ``getppid()``, so it
    notices the harness process dying even by SIGKILL (pdeathsig is immediate; the poll
    closes the window between fork and prctl and covers kernels without prctl);
  - makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so a grandchild that is
    orphaned, or that escaped the process group with ``setsid``, is re-parented to the shim
    and can still be found (by walking ``/proc``) and killed;
  - runs CMD, waits for it, then kills every remaining descendant (SIGTERM, then SIGKILL
    after ``--term-grace`` seconds) and exits with CMD's status (a signal death is re-raised);
  - on SIGTERM/SIGINT/SIGHUP, or when the harness dies, terminates the whole tree the same
    way and dies of SIGTERM.

  ``--lo-up`` brings the loopback interface up (for a fresh network namespace, so torchrun can
  rendezvous on localhost), ``--hide DIR`` mounts an empty read-only tmpfs over DIR and
  ``--readonly DIR`` bind-mounts DIR read-only onto itself (both need a fresh mount namespace).
  All three are used for the eval-only re-score under ``unshare -rnm``.

* As a module it offers the environment allowlist (`child_environ`), the secret-name test
  (`is_secret_name`), a cached probe of which namespaces work here (`isolation_support`) and
  `protect_own_environ`, which makes a process that holds secrets in its initial environment
  non-dumpable so a same-uid candidate cannot read ``/proc/<pid>/environ`` of its ancestors, and
  `scrub_secrets_from_environ`, which the driver calls once its LLM proposer has read its key and
  before Ray starts, so no process of the search shows a secret (not even in /proc/<pid>/environ).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
SETUP_FAILED = 121  # exit status of the shim when it could not set up what it was asked for

# --------------------------------------------------------------------------------------------
# Environment policy
# --------------------------------------------------------------------------------------------

# Variables a candidate may inherit from the harness process. Everything else is dropped.
ALLOW_EXACT = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_HOME", "CUDA_PATH", "CUDA_MODULE_LOADING",
    "CUDA_LAUNCH_BLOCKING", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "LD_LIBRARY_PATH",
    "PYTHONHASHSEED", "VIRTUAL_ENV", "CONDA_PREFIX", "CC", "CXX",
})
ALLOW_PREFIXES = ("LC_", "NCCL_", "TORCH_", "TORCHINDUCTOR_", "PYTORCH_", "TRITON_", "CUBLAS_", "CUDNN_",
                  "GLOO_", "KMP_")

# A name is secret when one of its `_`-separated words is one of these (TRAIN_BATCH_TOKENS and
# TOKENIZER_PATH are not: the words are TOKENS and TOKENIZER) or it starts with a cloud/vendor prefix.
_SECRET_WORDS = frozenset({"KEY", "APIKEY", "TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "CREDENTIAL",
                           "CREDENTIALS", "AUTH", "COOKIE", "PRIVATE"})
_SECRET_PREFIXES = ("AWS_", "OPENAI_", "ANTHROPIC_", "AZURE_", "GITHUB_", "GH_", "HF_", "HUGGING", "GOOGLE_",
                    "GCP_", "WANDB_")
_MIN_SECRET_VALUE = 8  # shorter values are not searched for inside other variables


# Not secrets though they read like ones: the driver needs them to join a token-authenticated Ray cluster.
_NOT_SECRET = frozenset({"RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"})


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    if upper in _NOT_SECRET:
        return False
    if upper.startswith(_SECRET_PREFIXES):
        return True
    return any(word in _SECRET_WORDS for word in re.split(r"[^A-Z0-9]+", upper))


def is_allowed_name(name: str) -> bool:
    return (name in ALLOW_EXACT or name.startswith(ALLOW_PREFIXES)) and not is_secret_name(name)


def secret_values(base: Mapping[str, str]) -> list[str]:
    """Values of the secret-named variables in `base`, long enough to search for."""
    return [v for k, v in base.items() if is_secret_name(k) and len(v) >= _MIN_SECRET_VALUE]


def sanitize_overrides(overrides: Mapping[str, str], base: Mapping[str, str] | None = None
                       ) -> tuple[dict[str, str], list[str]]:
    """Drop secret-named entries, and entries whose value carries a secret value of `base`.

    Returns (clean overrides, names dropped).
    """
    base = os.environ if base is None else base
    secrets = secret_values(base)
    clean, dropped = {}, []
    for k, v in overrides.items():
        if is_secret_name(k) or any(s in v for s in secrets):
            dropped.append(k)
        else:
            clean[k] = v
    return clean, dropped


def child_environ(overrides: Mapping[str, str], forced: Mapping[str, str],
                  base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a candidate: allowlisted names of `base` (default os.environ),
    then `overrides` (already sanitized), then `forced` (the harness's own settings)."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if is_allowed_name(k)}
    env.setdefault("PATH", os.defpath)
    env.update(overrides)
    env.update(forced)
    return env


def initial_environ_names(pid: int | str = "self") -> list[str]:
    """Names in a process's initial environment block (what /proc/<pid>/environ exposes)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return []
    return [e.split(b"=", 1)[0].decode("utf-8", "replace") for e in data.split(b"\0") if b"=" in e]


def protect_own_environ() -> bool:
    """Make this process non-dumpable when its initial environment holds a secret-named variable.

    A same-uid process (a candidate) can otherwise read /proc/<this pid>/environ. Non-dumpable
    processes have root-owned /proc entries and refuse ptrace from unprivileged processes; side
    effects: no core dumps, and debuggers/profilers (py-spy) need root to attach. Returns whether
    the protection was applied. Root candidates outside a user namespace are not stopped by this.
    """
    if not any(is_secret_name(n) for n in initial_environ_names()):
        return False
    try:
        _prctl(PR_SET_DUMPABLE, 0)
    except OSError:
        return False
    return True


def scrub_secrets_from_environ() -> list[str]:
    """Remove secret-named variables from this process's environment, for good.

    For the driver, after whatever needed a key (the LLM proposer) has read it and before anything
    is started that inherits the environment (Ray's processes, and through them every candidate).
    Unsetting is not enough: /proc/<pid>/environ shows the environment block the process was
    started with, so the values are also overwritten in place there, and the process is made
    non-dumpable (see protect_own_environ). Returns the names removed.
    """
    names = sorted(n for n in os.environ if is_secret_name(n))
    if not names:
        return []
    try:
        libc = ctypes.CDLL(None)
        environ = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ")
        addrs = ctypes.cast(environ, ctypes.POINTER(ctypes.c_void_p))
        i = 0
        while environ[i] is not None:
            name, eq, value = environ[i].partition(b"=")
            if eq and is_secret_name(name.decode("utf-8", "replace")):
                ctypes.memset(addrs[i] + len(name) + 1, ord("x"), len(value))
            i += 1
    except (OSError, ValueError, AttributeError):
        pass  # not glibc-like: unsetting below still keeps the values from every child
    for n in names:
        os.environ.pop(n, None)
    try:
        _prctl(PR_SET_DUMPABLE, 0)
    except OSError:
        pass
    return names


# --------------------------------------------------------------------------------------------
# Isolation probe (cached per interpreter)
# --------------------------------------------------------------------------------------------

_ISOLATION: dict[str, tuple[str, ...]] = {}
_ISOLATION_LOCK = threading.Lock()


def isolation_support(python: str = sys.executable) -> tuple[str, ...]:
    """Which isolation runs can use here: ("user", "net", "fs"), ("user", "net"), ("user",) or ().

    "user": `unshare -r` (a user namespace): a process inside cannot read the memory or the
    environment of processes outside it (the driver), even as root; used for training.
    "net": `unshare -rn` (user + network namespace: no interface but a loopback we bring up).
    "fs": additionally `-m` (mount namespace) so the training data folder can be hidden.
    "net" and "fs" are for the re-score. Probed once per interpreter by starting the shim that way.
    """
    with _ISOLATION_LOCK:
        if python not in _ISOLATION:
            _ISOLATION[python] = _probe(python)
        return _ISOLATION[python]


def _probe(python: str) -> tuple[str, ...]:
    shim = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory(prefix="pgolf-probe-") as tmp:
        tiers = ((("user", "net", "fs"), ["unshare", "-rnm"], ["--lo-up", "--hide", tmp, "--readonly", tmp]),
                 (("user", "net"), ["unshare", "-rn"], ["--lo-up"]),
                 (("user",), ["unshare", "-r"], []))
        for caps, prefix, opts in tiers:
            cmd = [*prefix, python, shim, *opts, "--check"]
            try:
                r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=30, env=child_environ({}, {}))
            except (OSError, subprocess.SubprocessError):
                continue
            if r.returncode == 0:
                return caps
    return ()


# --------------------------------------------------------------------------------------------
# Shim internals
# --------------------------------------------------------------------------------------------

def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh22x", b"lo", 0)  # struct ifreq: 16-byte name + 24-byte union
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, req)[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh22x", b"lo", flags | iff_up))


def _hide(path: str) -> None:
    ms_rdonly, ms_nosuid, ms_nodev, ms_noexec = 1, 2, 4, 8
    libc = ctypes.CDLL(None, use_errno=True)
    flags = ms_rdonly | ms_nosuid | ms_nodev | ms_noexec
    if libc.mount(b"none", os.fsencode(path), b"tmpfs", ctypes.c_ulong(flags), b"size=4k,mode=0555") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs over {path}: {os.strerror(err)}")


def _readonly(path: str) -> None:
    """Bind-mount `path` onto itself read-only (the val shards are hard links to the real files)."""
    ms_rdonly, ms_remount, ms_bind, ms_rec = 1, 32, 4096, 16384
    # A remount inside a user namespace must keep the flags the outer mount locked.
    keep = {os.ST_NOSUID: 2, os.ST_NODEV: 4, os.ST_NOEXEC: 8, os.ST_NOATIME: 1024, os.ST_NODIRATIME: 2048,
            os.ST_RELATIME: 1 << 21}
    f_flag = os.statvfs(path).f_flag
    locked = 0
    for st, ms in keep.items():
        if f_flag & st:
            locked |= ms
    libc = ctypes.CDLL(None, use_errno=True)
    target = os.fsencode(path)
    if libc.mount(target, target, None, ctypes.c_ulong(ms_bind | ms_rec), None) != 0 or libc.mount(
            None, target, None, ctypes.c_ulong(ms_remount | ms_bind | ms_rdonly | locked), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"read-only bind mount of {path}: {os.strerror(err)}")


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) for every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2:].split()
        if len(rest) >= 2:
            table[int(name)] = (int(rest[1]), rest[0].decode())
    return table


def live_descendants(root: int) -> list[int]:
    """Descendants of `root` that are not zombies."""
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        for child in kids.get(stack.pop(), ()):
            stack.append(child)
            if table[child][1] != "Z":
                out.append(child)
    return out


class _Shim:
    def __init__(self, parent_pid: int | None, term_grace: float):
        self.parent_pid = parent_pid
        self.term_grace = term_grace
        self.signalled = False
        self.child: int | None = None
        self.child_status: int | None = None

    def on_signal(self, signum, frame) -> None:
        self.signalled = True

    def parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.child:
                self.child_status = status

    def kill_tree(self, grace: float) -> None:
        """SIGTERM every descendant, SIGKILL what is left after `grace` seconds, reap them all."""
        me = os.getpid()
        deadline = time.monotonic() + grace
        hard_stop = deadline + 10.0
        termed: set[int] = set()
        while True:
            self.reap()
            pids = live_descendants(me)
            now = time.monotonic()
            if not pids or now > hard_stop:
                break
            sig = signal.SIGKILL if now >= deadline else signal.SIGTERM
            for pid in pids:
                if sig == signal.SIGTERM and pid in termed:
                    continue
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
                termed.add(pid)
            time.sleep(0.02)
        self.reap()

    def run(self, cmd: list[str]) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        try:
            self.child = os.posix_spawnp(cmd[0], cmd, dict(os.environ))
        except OSError as e:
            print(f"sandbox: cannot start {cmd[0]}: {e}", file=sys.stderr, flush=True)
            return 127
        while self.child_status is None:
            self.reap()
            if self.child_status is not None:
                break
            if self.signalled or self.parent_gone():
                self.kill_tree(self.term_grace)
                _die(signal.SIGTERM)
            time.sleep(0.05)
        # The trainer is done: nothing it started may outlive it.
        self.kill_tree(min(self.term_grace, 2.0))
        if os.WIFSIGNALED(self.child_status):
            _die(os.WTERMSIG(self.child_status))
        return os.WEXITSTATUS(self.child_status) if os.WIFEXITED(self.child_status) else 1


def _die(sig: int) -> None:
    """Exit by `sig` so the harness sees the same death as the trainer's (no core dump)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    time.sleep(1.0)
    os._exit(128 + sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox.py", description="pgolf run supervisor")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--term-grace", type=float, default=5.0)
    parser.add_argument("--lo-up", action="store_true")
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("--readonly", action="append", default=[])
    parser.add_argument("--check", action="store_true", help="set up, then exit 0 (isolation probe)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        pass  # not Linux: the getppid poll still catches a dead harness
    if args.parent_pid is not None and os.getppid() != args.parent_pid:
        return SETUP_FAILED  # the harness died before we could watch it
    try:
        if args.lo_up:
            _loopback_up()
        for path in args.hide:
            _hide(path)
        for path in args.readonly:
            _readonly(path)
    except OSError as e:
        print(f"sandbox: isolation setup failed: {e}", file=sys.stderr, flush=True)
        return SETUP_FAILED
    if args.check:
        return 0
    if not cmd:
        parser.error("no command given after --")
    return _Shim(args.parent_pid, args.term_grace).run(cmd)


if __name__ == "__main__":
    sys.exit(main())
