"""`pgolf export RUN_OR_RECORD --repo PATH`: put a record folder on a branch of a parameter-golf clone.

Refuses, with a message that says what to do, a dirty work tree, a track folder the clone does not
have, a record that fails the audit, and an artifact over the track's byte cap. Then: a new branch
`pgolf/<name>`, the folder copied to `records/<track_folder>/<name>/`, one commit. `--push REMOTE`
pushes the branch; `--open-pr` opens the pull request through the GitHub REST API with a token from
GITHUB_TOKEN or GH_TOKEN, or, without a token, prints the exact command that opens it. The token only
ever goes into the Authorization header; it is never printed, logged or put in a URL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import PgolfError

GITHUB_API = "https://api.github.com"
TOKEN_ENV = ("GITHUB_TOKEN", "GH_TOKEN")
KNOWN_TRACK_FOLDERS = ("track_10min_16mb", "track_non_record_16mb", "track_30min_2mb_local")
_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", ".DS_Store")


class ExportError(PgolfError):
    """A record cannot be exported as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Record:
    """A record folder as export sees it."""

    path: Path
    name: str  # folder name, YYYY-MM-DD_Slug
    track_folder: str
    byte_cap: int
    val_bpb: float | None
    seeds: int
    bytes_max: int | None
    readme: str

    @property
    def branch(self) -> str:
        return f"pgolf/{self.name}"

    @property
    def commit_message(self) -> str:
        bpb = "n/a" if self.val_bpb is None else f"{self.val_bpb:.4f}"
        return f"Record: {self.name} (val_bpb {bpb}, {self.seeds} seed{'s' * (self.seeds != 1)})"

    @property
    def title(self) -> str:
        """The pull request title: the README's first heading, else the commit message."""
        for line in self.readme.splitlines():
            if line.startswith("# ") and line[2:].strip():
                return line[2:].strip()
        return self.commit_message


@dataclass(frozen=True)
class Exported:
    repo: Path
    branch: str
    commit: str
    dest: Path  # the record folder inside the clone
    previous: str  # the branch (or commit) the clone was on before


# --- finding and reading the record ---------------------------------------------------------------
def resolve(target: str, store: str | None = None) -> Path:
    """A record folder path, or a candidate/run id whose judgement in the store names a record folder."""
    p = Path(target)
    if p.is_dir():
        return p
    if "/" in target or target.startswith("."):
        raise ExportError(f"no record folder at {target}; pass records/<track>/<date>_<name>/ or a candidate id")
    from harness.store import Store, find_store

    s = Store(find_store(store or "runs"), readonly=True)
    try:
        run = s.run(target)
        cid = run.candidate_id if run else target
        rows = s.query("SELECT candidate_id, record_path FROM judgements WHERE candidate_id LIKE ?", (f"{cid}%",))
    finally:
        s.close()
    if not rows:
        raise ExportError(f"'{target}' is neither a record folder nor a judged candidate in {s.root}; "
                          "pass a records/<track>/<date>_<name>/ folder or a promoted candidate id")
    if len(rows) > 1:
        raise ExportError(f"'{target}' matches {len(rows)} candidates ({', '.join(r.candidate_id for r in rows)});"
                          " give more of the id")
    if not rows[0].record_path:
        raise ExportError(f"candidate {rows[0].candidate_id} was judged but not promoted, so it has no record folder;"
                          " see pgolf runs show " + rows[0].candidate_id)
    path = Path(rows[0].record_path)
    if not path.is_absolute() and not path.is_dir():
        path = s.root.parent.parent / path  # record paths are relative to where the search ran
    if not path.is_dir():
        raise ExportError(f"candidate {rows[0].candidate_id}'s record folder {rows[0].record_path} is missing")
    return path


def _track_cap(track_folder: str) -> int | None:
    from harness.audit import cap_for_track

    return cap_for_track(track_folder) if track_folder.startswith("track_") else None


def load_record(path: Path, track_folder: str | None = None) -> Record:
    path = Path(path).resolve()
    missing = [f for f in ("README.md", "submission.json", "train_gpt.py") if not (path / f).is_file()]
    logs = sorted(path.glob("train_seed*.log")) or sorted(path.glob("train*.log"))
    if not logs:
        missing.append("train_seed<N>.log")
    if missing:
        raise ExportError(f"{path} is not a record folder: missing {', '.join(missing)} (the official layout is "
                          "README.md, submission.json, train_gpt.py and the train logs)")
    folder = track_folder or path.parent.name
    cap = _track_cap(folder)
    if cap is None:
        raise ExportError(f"cannot tell the track of {path}: '{folder}' is not a records/track_* folder; pass "
                          f"--track-folder ({', '.join(KNOWN_TRACK_FOLDERS)})")
    try:
        sub = json.loads((path / "submission.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{path / 'submission.json'} is not valid JSON ({e}); fix or rewrite the record") from None
    if not isinstance(sub, dict):
        raise ExportError(f"{path / 'submission.json'} must hold a JSON object")
    sizes = [sub.get("bytes_total"), sub.get("artifact_bytes_max")]
    sizes += [r.get("artifact_bytes") for r in (sub.get("seed_results") or {}).values() if isinstance(r, dict)]
    sizes = [int(x) for x in sizes if isinstance(x, int | float) and not isinstance(x, bool)]
    seeds = sub.get("seeds")
    val_bpb = sub.get("val_bpb")
    return Record(path=path, name=path.name, track_folder=folder, byte_cap=cap,
                  val_bpb=float(val_bpb) if isinstance(val_bpb, int | float) else None,
                  seeds=len(seeds) if isinstance(seeds, list) and seeds else len(logs),
                  bytes_max=max(sizes) if sizes else None,
                  readme=(path / "README.md").read_text(encoding="utf-8", errors="replace"))


def check_record(rec: Record, audit: Callable | None = None) -> None:
    """Refuse a record over its track's byte cap, or one the integrity audit fails."""
    if rec.bytes_max is not None and rec.bytes_max > rec.byte_cap:
        raise ExportError(f"artifact of {rec.name} is {rec.bytes_max:,} bytes, over the {rec.byte_cap:,}-byte cap of "
                          f"{rec.track_folder} by {rec.bytes_max - rec.byte_cap:,}; shrink the model or code and rerun")
    if audit is None:
        from harness.audit import audit_record_folder as audit
    report = audit(rec.path, byte_cap=rec.byte_cap, track=rec.track_folder)
    if not report.ok:
        errors = [f for f in report.findings if f.severity == "error"]
        listed = "; ".join(f"{f.code}: {f.message}" for f in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ExportError(f"{rec.name} fails the audit: {listed}{more}; see pgolf audit {rec.path}")


# --- the clone --------------------------------------------------------------------------------------
def open_repo(path: Path):
    import git

    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ExportError(f"{path} is not a git repository; clone the challenge first: git clone "
                          "https://github.com/openai/parameter-golf") from None
    if repo.bare:
        raise ExportError(f"{path} is a bare repository; export needs a clone with a work tree")
    if not repo.head.is_valid():
        raise ExportError(f"{path} has no commits yet; export needs a clone of openai/parameter-golf")
    return repo


def check_repo(repo, rec: Record) -> None:
    root = Path(repo.working_tree_dir)
    records = root / "records"
    if not records.is_dir():
        raise ExportError(f"{root} has no records/ folder: it is not a clone of openai/parameter-golf")
    if not (records / rec.track_folder).is_dir():
        have = sorted(p.name for p in records.iterdir() if p.is_dir() and p.name.startswith("track_"))
        raise ExportError(f"{root} has no records/{rec.track_folder}/ (it has: {', '.join(have) or 'none'}); "
                          f"wrong track folder for this clone, pass --track-folder or use the right clone")
    if repo.is_dirty(untracked_files=True):
        changed = [f"M {d.a_path}" for d in repo.index.diff(None)] + [f"A {d.a_path}" for d in repo.index.diff("HEAD")]
        changed += [f"?? {u}" for u in repo.untracked_files]
        shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
        raise ExportError(f"the work tree of {root} is not clean ({shown}); commit or stash first (git stash -u)")
    if (records / rec.track_folder / rec.name).exists():
        raise ExportError(f"records/{rec.track_folder}/{rec.name} already exists in {root}; pick another record name")
    if rec.branch in [h.name for h in repo.heads]:
        raise ExportError(f"branch {rec.branch} already exists in {root}; delete it (git branch -D {rec.branch}) "
                          "or export under another name")


def commit_record(repo, rec: Record) -> Exported:
    """Branch off the current HEAD, copy the folder in, commit once; put everything back on failure."""
    import git

    root = Path(repo.working_tree_dir)
    previous = repo.head.commit.hexsha if repo.head.is_detached else repo.active_branch.name
    dest = root / "records" / rec.track_folder / rec.name
    head = repo.create_head(rec.branch, repo.head.commit)
    try:
        head.checkout()
        shutil.copytree(rec.path, dest, ignore=_JUNK)
        files = sorted(str(p.relative_to(root)) for p in dest.rglob("*") if p.is_file())
        repo.index.add(files)
        repo.git.commit("-m", rec.commit_message)
    except (git.GitCommandError, OSError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        repo.git.checkout("-f", previous)
        repo.delete_head(head, force=True)
        why = redact(getattr(e, "stderr", "") or str(e)).strip()
        raise ExportError(f"could not commit the record: {why}; the clone was put back on {previous}") from None
    return Exported(root, rec.branch, repo.head.commit.hexsha, dest, previous)


def push(repo, remote_name: str, branch: str) -> str:
    """Push the branch; returns the remote's URL with any credentials masked."""
    import git

    try:
        remote = repo.remote(remote_name)
    except ValueError:
        names = ", ".join(r.name for r in repo.remotes) or "none"
        raise ExportError(f"no remote '{remote_name}' in {repo.working_tree_dir} (remotes: {names}); add one with "
                          f"git remote add {remote_name} URL") from None
    try:
        infos = remote.push(refspec=f"refs/heads/{branch}:refs/heads/{branch}")
        infos.raise_if_error()
    except git.GitCommandError as e:
        raise ExportError(f"push of {branch} to {remote_name} failed: {redact(e.stderr or str(e)).strip()}") from None
    bad = [i for i in infos if i.flags & (i.ERROR | i.REJECTED | i.REMOTE_REJECTED | i.REMOTE_FAILURE)]
    if bad or not infos:
        summary = redact(bad[0].summary.strip()) if bad else "nothing was pushed"
        raise ExportError(f"push of {branch} to {remote_name} was refused: {summary}")
    return redact(remote.url)


# --- GitHub -----------------------------------------------------------------------------------------
def redact(text: str) -> str:
    """Mask credentials in URLs and any token from the environment."""
    text = re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)
    for name in TOKEN_ENV:
        tok = os.environ.get(name)
        if tok and len(tok) >= 4:
            text = text.replace(tok, "***")
    return text


def github_repo(url: str) -> tuple[str, str] | None:
    """(owner, repo) from a GitHub remote URL (https, ssh or scp-like), else None."""
    m = re.match(r"^(?:https?://(?:[^@/]+@)?github\.com/|ssh://git@github\.com/|git@github\.com:)"
                 r"([^/\s]+)/([^/\s]+?)(?:\.git)?/?$", url.strip())
    return (m.group(1), m.group(2)) if m else None


def token_from_env() -> str | None:
    for name in TOKEN_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return None


def open_pull_request(api: str, owner: str, repo: str, head: str, base: str, title: str, body: str, token: str,
                      attempts: int = 3, timeout: float = 30.0) -> dict:
    """POST /repos/{owner}/{repo}/pulls; retries network errors and 5xx with backoff. Returns GitHub's JSON."""
    url = f"{api.rstrip('/')}/repos/{owner}/{repo}/pulls"
    data = json.dumps({"title": title, "head": head, "base": base, "body": body,
                       "maintainer_can_modify": True}).encode("utf-8")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
               "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "pgolf-export",
               "Content-Type": "application/json"}
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read().decode("utf-8") or "{}")
        except urllib.error.HTTPError as e:
            detail = _github_message(e)
            if e.code >= 500 and attempt + 1 < attempts:
                time.sleep(2**attempt)
                continue
            hint = {401: "the token was rejected; check GITHUB_TOKEN", 403: "the token lacks permission (needs "
                    "pull-request write access to the repository)", 404: f"{owner}/{repo} not found, or the token "
                    "cannot see it", 422: "did you --push the branch, and is there no open PR for it already?"}
            raise ExportError(f"GitHub refused the pull request ({e.code}): {detail}; "
                              f"{hint.get(e.code, 'see the message above')}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            if attempt + 1 < attempts:
                time.sleep(2**attempt)
                continue
            reason = getattr(e, "reason", e)
            raise ExportError(f"cannot reach {api} ({reason}); check the network or --github-api") from None
    raise AssertionError("unreachable")


def _github_message(e: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(e.read().decode("utf-8"))
    except (ValueError, OSError):
        return e.reason or "no details"
    msg = payload.get("message", "") if isinstance(payload, dict) else ""
    errs = payload.get("errors") if isinstance(payload, dict) else None
    extra = "; ".join(str(x.get("message") or x) if isinstance(x, dict) else str(x) for x in errs or [])
    return redact(f"{msg} ({extra})" if extra else msg or "no details")


def pr_command(slug: str | None, head: str, base: str, title: str, body_file: Path, repo_dir: Path) -> str:
    """The exact `gh` command that opens the same pull request."""
    args = ["gh", "pr", "create"] + (["--repo", slug] if slug else []) + [
        "--base", base, "--head", head, "--title", title, "--body-file", str(body_file)]
    cmd = " ".join(shlex.quote(a) for a in args)
    return cmd if slug else f"cd {shlex.quote(str(repo_dir))} && {cmd}"


# --- the command ------------------------------------------------------------------------------------
def run_export(args: argparse.Namespace, say: Callable[[str], None] = print, audit: Callable | None = None) -> int:
    rec = load_record(resolve(args.target, args.store), args.track_folder)
    repo = open_repo(Path(args.repo))
    check_repo(repo, rec)
    check_record(rec, audit)
    done = commit_record(repo, rec)
    say(f"committed {rec.commit_message!r} on branch {done.branch} ({done.commit[:12]}) in {done.repo}")
    say(f"  {done.dest.relative_to(done.repo)}/ ; back to your branch with: git -C {done.repo} checkout "
        f"{done.previous}")
    remote_url = None
    if args.push:
        remote_url = push(repo, args.push, done.branch)
        say(f"pushed {done.branch} to {args.push} ({remote_url})")
    if not args.open_pr:
        return 0
    if remote_url is None:
        remote_url = next((redact(r.url) for r in repo.remotes if r.name == "origin"), "")
    fork = github_repo(remote_url) if remote_url else None
    upstream = tuple(args.upstream.split("/", 1)) if args.upstream else fork
    if args.upstream and (len(upstream) != 2 or not all(upstream)):
        raise ExportError(f"--upstream must be owner/repo, got {args.upstream!r}")
    head = f"{fork[0]}:{done.branch}" if fork and upstream and fork[0] != upstream[0] else done.branch
    slug = "/".join(upstream) if upstream else None
    token = token_from_env()
    if token and slug:
        pr = open_pull_request(args.github_api, upstream[0], upstream[1], head, args.base, rec.title, rec.readme,
                               token)
        say(f"opened pull request #{pr.get('number', '?')}: {pr.get('html_url', '(no url in the reply)')}")
        return 0
    why = "no GITHUB_TOKEN or GH_TOKEN in the environment" if not token else \
        "the upstream repository is unknown (pass --upstream owner/repo)"
    say(f"not opening the pull request: {why}. Open it with:")
    say("  " + pr_command(slug, head, args.base, rec.title, done.dest / "README.md", done.repo))
    if slug:
        say(f"  or in a browser: https://github.com/{slug}/compare/{args.base}...{head}?expand=1")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    return run_export(args, say=lambda m: console.print(m, markup=False, soft_wrap=True))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="commit a record folder to a branch of a parameter-golf clone, push, open a PR")
    p.add_argument("target", help="a record folder, or a promoted candidate (or run) id in the store")
    p.add_argument("--repo", required=True, help="a clone of openai/parameter-golf (clean work tree)")
    p.add_argument("--store", help="search folder for a candidate id (default: the newest under runs/)")
    p.add_argument("--track-folder", help="records/ subfolder when the record is not inside one "
                                          f"({', '.join(KNOWN_TRACK_FOLDERS)})")
    p.add_argument("--push", metavar="REMOTE", help="push the branch to this remote (e.g. origin, your fork)")
    p.add_argument("--open-pr", action="store_true", help="open the pull request (token from GITHUB_TOKEN or "
                                                          "GH_TOKEN; without one, print the command)")
    p.add_argument("--upstream", help="owner/repo the PR goes to (default: the push remote's)")
    p.add_argument("--base", default="main", help="the upstream branch the PR targets (default main)")
    p.add_argument("--github-api", default=GITHUB_API, help=f"GitHub API base URL (default {GITHUB_API})")
    p.set_defaults(func=cmd_export)
