"""Applying patches: SEARCH/REPLACE edits (exact, then whitespace-tolerant) and unified diffs (git apply).

`apply_patch` (git apply in a scratch directory) is what the whole harness uses to turn a
candidate's patch into the trainer it runs.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agents.patches._answer import Edit, ParsedAnswer
from agents.patches._base import TARGET, PatchError, PatchRejected
from agents.patches._make import make_diff
from agents.patches._unified import _diff_hunks, _header_path

# SEARCH/REPLACE edits -----------------------------------------------------------------------


def apply_edits(source: str, edits: Sequence[Edit]) -> str:
    """Apply edits in order: exact line match first, then whitespace-tolerant. Raises PatchError."""
    for edit in edits:
        source = _apply_edit(source, edit)
    return source


def _trim_blank(lines: list[str]) -> tuple[int, int]:
    lo, hi = 0, len(lines)
    while lo < hi and not lines[lo].strip():
        lo += 1
    while hi > lo and not lines[hi - 1].strip():
        hi -= 1
    return lo, hi


def _find(src: list[str], pat: list[str]) -> list[int]:
    k = len(pat)
    first = pat[0]
    return [i for i in range(len(src) - k + 1) if src[i] == first and src[i : i + k] == pat]


def _apply_edit(source: str, edit: Edit) -> str:
    if not edit.search.strip():
        raise PatchError(f"block {edit.block}: SEARCH is empty; quote the exact lines of {TARGET} to replace")
    src = source.split("\n")
    pat = edit.search.split("\n")
    rep = edit.replace.split("\n") if edit.replace else []
    hits = _find(src, pat)
    if len(hits) == 1:
        return "\n".join(src[: hits[0]] + rep + src[hits[0] + len(pat) :])
    if not hits:
        lo, hi = _trim_blank(pat)
        core = pat[lo:hi]
        rlo = min(lo, _trim_blank(rep)[0]) if rep else 0
        rhi = len(rep) - min(len(pat) - hi, len(rep) - _trim_blank(rep)[1]) if rep else 0
        rep = rep[rlo:rhi]
        for norm in (str.rstrip, str.strip):
            hits = _find([norm(x) for x in src], [norm(x) for x in core])
            if len(hits) == 1:
                at = hits[0]
                rep = _keep_file_lines(rep, core, src[at : at + len(core)], reindent=norm is str.strip)
                return "\n".join(src[:at] + rep + src[at + len(core) :])
            if hits:
                break
    if hits:
        where = ", ".join(str(h + 1) for h in hits[:6])
        raise PatchError(
            f"block {edit.block}: SEARCH matches {len(hits)} places in {TARGET} (lines {where}); "
            "add surrounding lines so it matches exactly one"
        )
    raise PatchError(
        f"block {edit.block}: SEARCH not found in {TARGET}; first line that did not match: "
        f"{_first_mismatch(src, pat)!r}"
    )


def _keep_file_lines(rep: list[str], pat: list[str], found: list[str], reindent: bool) -> list[str]:
    """After a whitespace-tolerant match: REPLACE lines copied unchanged from SEARCH take the file's
    exact text, and (when indentation differed) the other lines shift by the same indentation."""
    same = {}
    for p, f in zip(pat, found, strict=True):
        same.setdefault(p, f)
    first = next((k for k, x in enumerate(pat) if x.strip()), 0)
    s_ind = pat[first][: len(pat[first]) - len(pat[first].lstrip())]
    t_ind = found[first][: len(found[first]) - len(found[first].lstrip())]
    out = []
    for x in rep:
        if x in same:
            out.append(same[x])
        elif reindent and x.strip() and x.startswith(s_ind):
            out.append(t_ind + x[len(s_ind) :])
        else:
            out.append(x)
    return out


def _first_mismatch(src: list[str], pat: list[str]) -> str:
    """The first SEARCH line at which the longest matching prefix stops matching the file."""
    norm_src = [x.strip() for x in src]
    norm_pat = [x.strip() for x in pat]
    lo, hi = _trim_blank(pat)
    k = lo
    while k < hi and _find(norm_src, norm_pat[lo : k + 1]):
        k += 1
    return pat[min(k, len(pat) - 1)].strip()[:160]


# Unified diffs: git apply ---------------------------------------------------------------------


def _git_env(home: str) -> dict[str, str]:
    # Only what git needs: no API keys, no user config that could change how patches apply.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CEILING_DIRECTORIES": str(Path(home).parent),
    }


def _header_lines(diff: str) -> list[str]:
    """The lines outside hunks, delimited the way `git apply --recount` reads them: after an
    "@@ " header every line starting with ' ', '-', '+' or a backslash (or empty) is hunk content."""
    out, in_hunk = [], False
    for line in diff.split("\n"):
        if line.startswith("@@ "):
            in_hunk = True
        elif not (in_hunk and (line[:1] in (" ", "-", "+", "\\") or not line)):
            in_hunk = False
            out.append(line)
    return out


def _check_headers(diff: str) -> int:
    """Reject anything but a text patch of train_gpt.py; returns the -p strip level."""
    headers = _header_lines(diff)
    for line in headers:
        if line.startswith(("GIT binary patch", "Binary files ")):
            raise PatchRejected("binary patches are not allowed")
        if "120000" in line and line.startswith(("new file mode", "old mode", "new mode", "deleted file mode")):
            raise PatchRejected(f"the patch creates a symlink; only text edits of {TARGET} are allowed")
        if line.startswith(("old mode", "new mode", "new file mode", "deleted file mode")):
            raise PatchRejected(f"file modes, new and deleted files are not allowed; only edit {TARGET}")
        if line.startswith(("rename ", "copy ", "similarity index", "dissimilarity index")):
            raise PatchRejected("renames and copies are not allowed")
    if not any(line.startswith("@@") for line in diff.split("\n")):
        kind = "a context diff (diff -c)" if any(h.startswith("***") for h in headers) else "not a unified diff"
        raise PatchError(f"{kind}: no '@@ -a,b +c,d @@' hunk; send a unified diff of {TARGET} (diff -u, git diff)"
                         " or SEARCH/REPLACE blocks")
    levels: set[int] = set()
    for line in headers:
        paths: list[str] = []
        if line.startswith(("--- ", "+++ ")):
            paths = [_header_path(line)]
        elif line.startswith("diff --git "):
            paths = line.split()[2:]
        for p in paths:
            if p == "/dev/null":
                raise PatchRejected(f"the patch creates or deletes a file; only edit {TARGET}")
            if p.startswith("/") or ".." in p.replace("\\", "/").split("/"):
                raise PatchRejected(f"path {p!r} is absolute or leaves the directory; only {TARGET} may be changed")
            if p in (f"a/{TARGET}", f"b/{TARGET}"):
                levels.add(1)
            elif p == TARGET:
                levels.add(0)
            else:
                raise PatchRejected(f"the patch changes {p!r}; only {TARGET} may be changed")
    if not levels:
        raise PatchError(f"not a unified diff of {TARGET} (no '--- a/{TARGET}' / '+++ b/{TARGET}' header)")
    if len(levels) > 1:
        raise PatchError("mixed path prefixes (some with a/ b/, some without)")
    return levels.pop()


def _git(args: list[str], cwd: str, home: str, patch: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args, str(patch)], cwd=cwd, env=_git_env(home), capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PatchError(f"git apply could not run: {e}") from None


def apply_patch(source: str, diff: str) -> str:
    """Apply a unified diff to the trainer source with `git apply --recount`; raises PatchError.

    The patch may only edit train_gpt.py: other paths, absolute paths, '..', symlinks, mode
    changes, new or deleted files, renames and binary patches are rejected (PatchRejected).
    Hunk line counts need not be right (--recount); context lines must match exactly.
    """
    if not diff.strip():
        return source
    if "\r" not in source:
        diff = diff.replace("\r\n", "\n")
    return _apply_patch(source, diff)


@functools.lru_cache(maxsize=64)  # pure: the loop, the catalog and combine re-apply the same patches
def _apply_patch(source: str, diff: str) -> str:
    level = _check_headers(diff)
    with tempfile.TemporaryDirectory(prefix="pgolf-apply-") as tmp:
        work, home = Path(tmp, "work"), Path(tmp, "home")
        work.mkdir()
        home.mkdir()
        target = work / TARGET
        target.write_bytes(source.encode())
        patch = Path(tmp, "candidate.diff")
        patch.write_bytes(diff.encode() if diff.endswith("\n") else (diff + "\n").encode())
        # one git process: --numstat/--summary report what git parsed, --apply then applies it in
        # the scratch directory; anything the report shows beyond a text edit of the trainer is
        # rejected before the result is read
        args = ["apply", f"-p{level}", "--recount", "--whitespace=nowarn", "--numstat", "--summary", "--apply"]
        done = _git(args, str(work), str(home), patch)
        for row in done.stdout.splitlines():
            fields = row.split("\t")
            if len(fields) == 3 and fields[2] != TARGET:
                raise PatchRejected(f"the patch changes {fields[2]!r}; only {TARGET} may be changed")
            if len(fields) == 3 and fields[0] == "-":
                raise PatchRejected("binary patches are not allowed")
            if row.startswith(" ") and any(w in row for w in ("mode", "rename", "copy")):
                raise PatchRejected(f"not allowed: {row.strip()}")
        if done.returncode != 0:
            raise PatchError(_apply_failure(source, diff, done.stderr))
        if sorted(p.name for p in work.iterdir()) != [TARGET] or target.is_symlink():
            raise PatchRejected(f"the patch created files beside {TARGET}")
        return target.read_bytes().decode()


def _apply_failure(source: str, diff: str, stderr: str) -> str:
    m = re.search(r"patch failed: [^:\n]+:(\d+)", stderr)
    if m:
        hint = int(m.group(1))
        for n, hunk in enumerate(_diff_hunks(diff), 1):
            if hunk.old_start == hint:
                old = [x[1:] for x in hunk.lines if x[:1] in (" ", "-")]
                src = source.split("\n")
                if old and not _find(src, old):
                    line = _first_mismatch(src, old)
                    return f"hunk {n} ({hunk.header}) does not apply: line not found in {TARGET}: {line!r}"
                return f"hunk {n} ({hunk.header}) does not apply here; give 3 unchanged context lines around changes"
    first = next((x for x in stderr.splitlines() if x.strip()), "git apply failed")
    return f"patch does not apply: {first.removeprefix('error: ')}"


# A parsed answer ----------------------------------------------------------------------------


def hunks_to_edits(diff: str) -> list[Edit]:
    """Each hunk as a SEARCH/REPLACE edit, for diffs whose context does not match exactly."""
    edits = []
    for n, hunk in enumerate(_diff_hunks(diff), 1):
        old = [x[1:] for x in hunk.lines if x[:1] in (" ", "-")]
        new = [x[1:] for x in hunk.lines if x[:1] in (" ", "+")]
        if not any(x.strip() for x in old):
            raise PatchError(f"hunk {n} ({hunk.header}) has no context lines to locate it; add context")
        edits.append(Edit("\n".join(old), "\n".join(new), n))
    return edits


def apply_answer(source: str, parsed: ParsedAnswer) -> str:
    """The source with a parsed answer's edits or diff applied; raises PatchError.

    Diffs go through apply_patch first; when their context does not match exactly, each hunk is
    retried as a whitespace-tolerant SEARCH/REPLACE edit. Forbidden patches are never retried.
    """
    if parsed.errors:
        raise PatchError(parsed.errors[0])
    if parsed.edits:
        new = apply_edits(source, parsed.edits)
    else:
        try:
            new = apply_patch(source, parsed.diff)
        except PatchRejected:
            raise
        except PatchError:
            new = apply_edits(source, hunks_to_edits(parsed.diff))
    if new == source:
        raise PatchError(f"the edits leave {TARGET} unchanged")
    return new


def to_diff(source: str, parsed: ParsedAnswer) -> str:
    """The canonical diff (make_diff) of a parsed answer against source; raises PatchError."""
    return make_diff(source, apply_answer(source, parsed))
