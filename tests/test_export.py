"""pgolf export against a real bare repository and a local HTTP server standing in for GitHub."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import git
import pytest

from harness import export
from harness.export import ExportError, run_export
from harness.judge import judge
from harness.records import RecordMeta, SeedRun, write_record
from harness.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from github_server import GitHubServer  # noqa: E402

TOKEN = "ghp_TESTtoken0123456789abcdef"
SOURCE = textwrap.dedent('''
    """A tiny contract-following trainer: one extra layer over the baseline."""
    import os

    NUM_LAYERS = int(os.environ.get("NUM_LAYERS", 10))
    print("val_bpb", NUM_LAYERS)
''').lstrip()


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _runs(tmp: Path, tag: str, loss0: float, total: int = 15_700_000) -> list[SeedRun]:
    out = []
    for i, seed in enumerate((1, 2, 3)):
        loss = loss0 + 0.0006 * (i - 1)
        bpb = loss * 0.5907
        log = tmp / "logs" / f"{tag}{seed}.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{SOURCE}\n{'=' * 100}\nseed:{seed}\n"
                       f"step:13000/20000 val_loss:{loss:.4f} val_bpb:{bpb:.4f} train_time:599000ms step_avg:46.08ms\n"
                       f"Total submission size int8+zlib: {total + i} bytes\n"
                       f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}\n")
        out.append(SeedRun(seed, loss, bpb, total + i, len(SOURCE.encode()), 13000, 46.08, 599_000.0, 1500.0, log))
    return out


def make_record(tmp: Path, track_folder: str = "track_10min_16mb", slug: str = "Ten Layers",
                total: int = 15_700_000) -> Path:
    cand, ref = _runs(tmp, "c", 2.0600, total), _runs(tmp, "r", 2.0727, total)
    j = judge([r.val_loss for r in cand], [r.val_loss for r in ref], candidate_bpb=[r.val_bpb for r in cand],
              reference_bpb=[r.val_bpb for r in ref])
    meta = RecordMeta(author="Jane Golfer", github_id="janeg", name="Ten Layers", blurb="One more block.",
                      env={"NUM_LAYERS": "10"}, techniques=("depth",))
    return write_record(tmp / "records", track_folder, "2026-05-03", slug, SOURCE, "", cand, ref, j, meta)


@pytest.fixture()
def clone(tmp_path) -> Path:
    """A bare 'upstream' with the challenge's records/ layout, and a clean clone of it."""
    bare = tmp_path / "upstream.git"
    _git("init", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    _git("clone", str(bare), str(seed), cwd=tmp_path)
    for folder in ("track_10min_16mb", "track_non_record_16mb"):
        (seed / "records" / folder).mkdir(parents=True)
        (seed / "records" / folder / ".gitkeep").write_text("")
    (seed / "README.md").write_text("# Parameter Golf\n")
    for cmd in (("config", "user.name", "Seed"), ("config", "user.email", "seed@example.com"),
                ("checkout", "-b", "main"), ("add", "-A"), ("commit", "-m", "init"), ("push", "origin", "main")):
        _git(*cmd, cwd=seed)
    work = tmp_path / "parameter-golf"
    _git("clone", str(bare), str(work), cwd=tmp_path)
    _git("config", "user.name", "Jane Golfer", cwd=work)
    _git("config", "user.email", "jane@example.com", cwd=work)
    return work


@pytest.fixture()
def record(tmp_path) -> Path:
    return make_record(tmp_path / "search")


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    for name in export.TOKEN_ENV:
        monkeypatch.delenv(name, raising=False)


def args(target, repo, **kw) -> argparse.Namespace:
    base = {"target": str(target), "repo": str(repo), "store": None, "track_folder": None, "push": None,
            "open_pr": False, "upstream": None, "base": "main", "github_api": export.GITHUB_API}
    return argparse.Namespace(**{**base, **kw})


def run(a: argparse.Namespace, audit=None) -> list[str]:
    lines: list[str] = []
    assert run_export(a, say=lines.append, audit=audit) == 0
    return lines


def test_commit_on_a_new_branch(clone, record):
    main_before = git.Repo(clone).head.commit.hexsha
    out = run(args(record, clone))
    repo = git.Repo(clone)
    name = record.name
    assert name == "2026-05-03_Ten_Layers" and repo.active_branch.name == f"pgolf/{name}"
    head = repo.head.commit
    sub = json.loads((record / "submission.json").read_text())
    assert head.message.strip() == f"Record: {name} (val_bpb {sub['val_bpb']:.4f}, 3 seeds)"
    assert [p.hexsha for p in head.parents] == [main_before]
    added = sorted(head.stats.files)
    assert added == sorted(f"records/track_10min_16mb/{name}/{f}" for f in
                           ("README.md", "submission.json", "train_gpt.py", "statistics.md", "train_seed1.log",
                            "train_seed2.log", "train_seed3.log"))
    for f in record.iterdir():
        assert (clone / "records/track_10min_16mb" / name / f.name).read_bytes() == f.read_bytes()
    assert not repo.is_dirty(untracked_files=True)
    assert any(f"pgolf/{name}" in x for x in out) and any("checkout main" in x for x in out)


def test_push_and_open_pr_sends_the_token_only_in_the_header(clone, record, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    with GitHubServer(token=TOKEN) as gh:
        out = run(args(record, clone, push="origin", open_pr=True, upstream="openai/parameter-golf",
                       github_api=gh.url))
    branch = f"pgolf/{record.name}"
    bare = git.Repo(clone.parent / "upstream.git")
    assert bare.heads[branch].commit.hexsha == git.Repo(clone).head.commit.hexsha
    assert len(gh.requests) == 1
    req = gh.requests[0]
    assert req["method"] == "POST" and req["path"] == "/repos/openai/parameter-golf/pulls"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(req["body"])
    readme = (record / "README.md").read_text()
    assert body["title"] == "Ten Layers" and body["head"] == branch and body["base"] == "main"
    assert body["body"] == readme
    # the token is in the Authorization header and nowhere else: not the path, body, other headers or output
    others = {k: v for k, v in req["headers"].items() if k != "Authorization"}
    assert TOKEN not in req["path"] + req["body"] + json.dumps(others)
    printed = "\n".join(out) + capsys.readouterr().out
    assert TOKEN not in printed
    assert "https://github.com/openai/parameter-golf/pull/1" in printed


def test_without_a_token_prints_the_exact_command(clone, record):
    out = run(args(record, clone, push="origin", open_pr=True, upstream="openai/parameter-golf"))
    text = "\n".join(out)
    assert "no GITHUB_TOKEN or GH_TOKEN" in text
    cmd = next(x.strip() for x in out if x.strip().startswith("gh pr create"))
    branch = f"pgolf/{record.name}"
    body_file = clone.resolve() / "records/track_10min_16mb" / record.name / "README.md"
    assert shlex.split(cmd) == ["gh", "pr", "create", "--repo", "openai/parameter-golf", "--base", "main",
                                "--head", branch, "--title", "Ten Layers", "--body-file", str(body_file)]
    assert f"https://github.com/openai/parameter-golf/compare/main...{branch}?expand=1" in text


def test_fork_remote_gives_owner_head_and_masks_credentials(clone, record, monkeypatch):
    secret_url = f"https://x-access-token:{TOKEN}@github.com/janeg/parameter-golf.git"
    _git("remote", "set-url", "origin", secret_url, cwd=clone)
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    with GitHubServer(token=TOKEN) as gh:
        out = run(args(record, clone, open_pr=True, upstream="openai/parameter-golf", github_api=gh.url))
    assert json.loads(gh.requests[0]["body"])["head"] == f"janeg:pgolf/{record.name}"
    assert TOKEN not in "\n".join(out)


def test_refuses_a_dirty_work_tree(clone, record):
    (clone / "README.md").write_text("edited\n")
    (clone / "notes.txt").write_text("scratch\n")
    with pytest.raises(ExportError, match=r"not clean \(M README.md, \?\? notes.txt\); commit or stash"):
        run(args(record, clone))
    assert git.Repo(clone).active_branch.name == "main"


def test_refuses_a_wrong_track_folder(clone, tmp_path):
    local = make_record(tmp_path / "local", track_folder="track_30min_2mb_local", total=1_900_000)
    with pytest.raises(ExportError, match=r"no records/track_30min_2mb_local/ \(it has: track_10min_16mb, "
                                          r"track_non_record_16mb\)"):
        run(args(local, clone))
    loose = tmp_path / "loose" / "2026-05-03_Ten_Layers"
    loose.parent.mkdir()
    (tmp_path / "search_copy").mkdir()
    import shutil

    shutil.copytree(make_record(tmp_path / "search_copy"), loose)
    with pytest.raises(ExportError, match="cannot tell the track .* pass --track-folder"):
        run(args(loose, clone))
    out = run(args(loose, clone, track_folder="track_non_record_16mb"))
    assert (clone / "records/track_non_record_16mb/2026-05-03_Ten_Layers/README.md").is_file() and out


def test_refuses_a_failed_audit(clone, record):
    (record / "train_gpt.py").write_text(SOURCE + "import urllib.request\nurllib.request.urlopen('http://x.y')\n")
    with pytest.raises(ExportError, match="fails the audit: .*see pgolf audit"):
        run(args(record, clone))
    repo = git.Repo(clone)
    assert repo.active_branch.name == "main" and f"pgolf/{record.name}" not in [h.name for h in repo.heads]


def test_refuses_an_artifact_over_the_cap(clone, record):
    sub = json.loads((record / "submission.json").read_text())
    sub["bytes_total"] = sub["artifact_bytes_max"] = 16_000_123
    (record / "submission.json").write_text(json.dumps(sub))
    with pytest.raises(ExportError, match=r"16,000,123 bytes, over the 16,000,000-byte cap of track_10min_16mb by 123"):
        run(args(record, clone))


def test_refuses_an_existing_branch_or_folder(clone, record):
    run(args(record, clone))
    _git("checkout", "main", cwd=clone)
    with pytest.raises(ExportError, match="already exists"):
        run(args(record, clone))


def test_a_failing_commit_hook_leaves_the_clone_as_it_was(clone, record):
    hook = clone / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(ExportError, match="hook says no.*put back on main"):
        run(args(record, clone))
    repo = git.Repo(clone)
    assert repo.active_branch.name == "main" and not repo.is_dirty(untracked_files=True)
    assert f"pgolf/{record.name}" not in [h.name for h in repo.heads]


def test_export_by_candidate_id_from_the_store(clone, record, tmp_path):
    s = Store(tmp_path / "runs" / "smoke")
    s.add_candidate({"id": "cabcdef012345", "baseline_hash": "b", "track": "main-10min-16mb", "patch": "",
                     "patch_hash": "p", "env": {}, "proposer": "catalog"})
    s.add_judgement("cabcdef012345", {"verdict": "keep", "reason": "ok", "record_path": str(record)})
    s.add_candidate({"id": "cnotpromoted1", "baseline_hash": "b", "track": "main-10min-16mb", "patch": "x",
                     "patch_hash": "q", "env": {}, "proposer": "catalog"})
    s.add_judgement("cnotpromoted1", {"verdict": "discard", "reason": "p too high"})
    out = run(args("cabcdef", clone, store=str(tmp_path / "runs")))
    assert any(record.name in x for x in out)
    with pytest.raises(ExportError, match="not promoted"):
        run(args("cnotpromoted1", clone, store=str(tmp_path / "runs")))
    with pytest.raises(ExportError, match="neither a record folder nor a judged candidate"):
        run(args("czzz", clone, store=str(tmp_path / "runs")))


def test_github_errors_and_retries(clone, record, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setattr(export.time, "sleep", lambda s: None)
    with GitHubServer(token=TOKEN, fail_first=1) as gh:
        out = run(args(record, clone, push="origin", open_pr=True, upstream="o/r", github_api=gh.url))
        assert len(gh.requests) == 2 and any("/o/r/pull/1" in x for x in out)  # a 502, then the retry
        with pytest.raises(ExportError, match="422.*A pull request already exists"):
            export.open_pull_request(gh.url, "o", "r", f"pgolf/{record.name}", "main", "t", "b", TOKEN)
        with pytest.raises(ExportError, match="401.*Bad credentials.*check GITHUB_TOKEN") as e:
            export.open_pull_request(gh.url, "o", "r", "other", "main", "t", "b", "wrong-token")
        assert TOKEN not in str(e.value)


def test_push_to_a_missing_remote(clone, record):
    with pytest.raises(ExportError, match="no remote 'fork'.*remotes: origin"):
        run(args(record, clone, push="fork"))


def test_not_a_clone(tmp_path, record):
    with pytest.raises(ExportError, match="not a git repository"):
        run(args(record, tmp_path / "nope"))
    plain = tmp_path / "plain"
    plain.mkdir()
    _git("init", "-b", "main", str(plain), cwd=tmp_path)
    (plain / "a").write_text("a")
    _git("add", "a", cwd=plain)
    _git("-c", "user.name=x", "-c", "user.email=x@y", "commit", "-m", "a", cwd=plain)
    with pytest.raises(ExportError, match="has no records/ folder"):
        run(args(record, plain))


def test_helpers():
    assert export.github_repo("git@github.com:openai/parameter-golf.git") == ("openai", "parameter-golf")
    assert export.github_repo("https://github.com/janeg/pg") == ("janeg", "pg")
    assert export.github_repo(f"https://x:{TOKEN}@github.com/a/b.git") == ("a", "b")
    assert export.github_repo("/tmp/upstream.git") is None
    assert export.redact(f"https://x:{TOKEN}@github.com/a/b.git") == "https://***@github.com/a/b.git"


def test_cli_registration():
    from harness.cli import build_parser

    a = build_parser().parse_args(["export", "rec", "--repo", "r", "--push", "origin", "--open-pr"])
    assert a.func is export.cmd_export and a.push == "origin" and a.open_pr and a.github_api == export.GITHUB_API
