"""Bad input, end to end through the CLI: one clear line, exit status 2, nothing half-written.

Each case runs `python -m harness.cli ...` as a user would. It must exit 2 with exactly one line on
stderr, starting with `error:` and naming the cause, no traceback, and leave no store folder, run
folder or record folder behind. Everything here fails before Ray or a trainer starts, so it is quick.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.patches import PatchError, apply_patch, parse_edits

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def pgolf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PGOLF_FAULT_KILL_AT")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def one_error(p: subprocess.CompletedProcess, *words: str) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, f"rc={p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def config(tmp_path):
    """Write a search config whose store and records live in tmp_path; returns (path, store, records)."""
    def write(body: str = "", **top: str) -> Path:
        head = {"name": '"bad"', "store": f'"{tmp_path / "runs"}"', "records": f'"{tmp_path / "records"}"', **top}
        path = tmp_path / "search.toml"
        path.write_text("\n".join(f"{k} = {v}" for k, v in head.items()) + "\n" + body)
        return path
    return write


def nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").rglob("*"))
    assert not (tmp_path / "records").exists()


@pytest.mark.parametrize(("text", "words"), [
    ('name = "unterminated\n', ("malformed TOML", "line 1")),
    ("[budget]\nmax_candidatez = 3\n", ("unknown key 'budget.max_candidatez'", "did you mean 'max_candidates'")),
    ("grace_s = 'soon'\n", ("grace_s: expected float",)),
    ("[budget]\nmax_candidates = -1\n", ("budget.max_candidates: -1 is out of range",)),
    ("[proposers]\noptuna = -1\nllm = 2\n", ("proposers.optuna: -1 is out of range",)),
    ("[llm]\nbase_uri = 'http://x'\n", ("unknown key 'llm.base_uri'", "did you mean 'base_url'")),
    ("track = 'no-such-track'\n", ("unknown track 'no-such-track'",)),
])
def test_a_malformed_config_is_one_line(tmp_path, text, words):
    path = tmp_path / "c.toml"
    path.write_text(text)
    one_error(pgolf("search", str(path), "--store", str(tmp_path / "runs")), *words)
    nothing_written(tmp_path)


def test_a_config_that_is_not_text_or_not_a_file(tmp_path):
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00binary")
    one_error(pgolf("search", str(tmp_path / "bin.toml")), "not a UTF-8 text file")
    one_error(pgolf("search", str(tmp_path)), "cannot read config", "Is a directory")
    one_error(pgolf("search", str(tmp_path / "missing.toml")), "config file not found")


def test_an_unknown_knob_fails_before_the_store_exists(tmp_path, config):
    p = config('[knobs]\ninclude = ["MATRIX_LR", "NOT_A_KNOB"]\n')
    one_error(pgolf("search", str(p)), "knobs:", "NOT_A_KNOB")
    nothing_written(tmp_path)


@pytest.mark.parametrize(("source", "words"), [
    ("def main(:\n    pass\n", ("does not compile", "line 1")),
    ("print('hello')\n", ("is not a Parameter Golf trainer",)),
    (None, ("cannot read baseline",)),
])
def test_a_baseline_that_is_not_a_valid_trainer(tmp_path, config, source, words):
    baseline = tmp_path / "train_gpt.py"
    if source is not None:
        baseline.write_text(source)
    one_error(pgolf("search", str(config(baseline=f'"{baseline}"'))), *words)
    nothing_written(tmp_path)


@pytest.fixture()
def corrupt_data(tmp_path) -> Path:
    """A copy of the local corpus whose val shard lost its tail."""
    src = DATA / "datasets" / "local_sp1024"
    if not src.is_dir():
        pytest.skip("the local corpus is not built (pgolf data build)")
    root = tmp_path / "data"
    shutil.copytree(src, root / "datasets" / "local_sp1024")
    shutil.copytree(DATA / "tokenizers", root / "tokenizers")
    shard = root / "datasets" / "local_sp1024" / "fineweb_val_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-1000])
    return root


def test_corrupted_shards_fail_before_anything_runs(tmp_path, config, corrupt_data):
    track = (ROOT / "harness" / "tracks" / "cpu-smoke.toml").read_text()
    track = track.replace('source = "build"', f'source = "build"\nroot = "{corrupt_data}"')
    (tmp_path / "track.toml").write_text(track)
    line = one_error(pgolf("search", str(config(track=f'"{tmp_path / "track.toml"}"'))), "corrupted data:",
                     "fineweb_val_000000.bin", "truncated")
    assert "pgolf data" in line  # and what to do about it
    nothing_written(tmp_path)


def test_a_store_that_cannot_be_created(tmp_path, config):
    (tmp_path / "afile").write_text("")
    one_error(pgolf("search", str(config(store=f'"{tmp_path / "afile"}"'))), "cannot create run store",
              "Not a directory")


def test_a_records_folder_with_missing_files(tmp_path):
    record = tmp_path / "records" / "track_10min_16mb" / "2026-01-01_Foo"
    record.mkdir(parents=True)
    (record / "train_gpt.py").write_text("print(1)\n")
    clone = tmp_path / "clone"
    (clone / "records" / "track_10min_16mb").mkdir(parents=True)
    (clone / "records" / "track_10min_16mb" / ".keep").write_text("")
    git = ["git", "-C", str(clone), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    one_error(pgolf("export", str(record), "--repo", str(clone)), "is not a record folder",
              "missing README.md, submission.json")
    assert subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout == head
    assert subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout == ""
    assert len(subprocess.run([*git, "branch", "--list"], capture_output=True, text=True).stdout.splitlines()) == 1
    audit = pgolf("audit", str(record))  # the audit lists every missing file instead of stopping at the first
    assert audit.returncode == 1 and "Traceback" not in audit.stderr
    for code in ("missing_submission_json", "missing_readme", "missing_train_log"):
        assert code in audit.stdout


def test_a_store_that_does_not_exist(tmp_path):
    one_error(pgolf("runs", "list", str(tmp_path / "nope")), "no run store under")
    one_error(pgolf("dash", str(tmp_path / "nope"), "--once"), "no run store under")


# --- a patch in a format nobody knows -------------------------------------------------------

TRAINER = (ROOT / "trainer" / "train_gpt.py").read_text()


@pytest.mark.parametrize(("patch", "words"), [
    ("*** train_gpt.py\n--- train_gpt.py\n***************\n*** 1 ****\n! import os\n--- 1 ----\n! import sys\n",
     "a context diff (diff -c)"),
    ("1c1\n< import os\n---\n> import sys\n", "not a unified diff"),  # normal diff
    ("1c\nimport sys\n.\nw\n", "not a unified diff"),  # ed script
    ('{"op": "replace", "path": "/1", "value": "import sys"}', "not a unified diff"),  # JSON patch
])
def test_a_patch_in_a_format_nobody_knows_is_one_clear_line(patch, words):
    with pytest.raises(PatchError) as info:
        apply_patch(TRAINER, patch)
    assert words in str(info.value) and "\n" not in str(info.value)
    parsed = parse_edits(patch)  # an agent's answer in that format: a repair message, not a crash
    assert not parsed.ok and all("\n" not in e for e in parsed.errors)


def test_an_unreadable_patch_is_not_mistaken_for_the_baseline():
    from harness.candidate import Candidate

    context_diff = "*** train_gpt.py\n--- train_gpt.py\n***************\n! import os\n"
    assert Candidate("b", "t", context_diff).id != Candidate("b", "t", "").id
