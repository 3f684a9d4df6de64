"""pgolf runs list (state, rung, flagged, top N) and pgolf runs show (diff, env, seeds, curve, flags, log, lineage)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from test_dash import CAT, LLM, OPT, fill_fixture  # noqa: E402


@pytest.fixture()
def store_dir(tmp_path) -> Path:
    w = Store(tmp_path / "runs" / "fixture")
    fill_fixture(w)
    log = Path(w.run(f"{CAT}-full-s1").run_dir) / "train.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"step:{i}/40 train_loss:3.{i:02d}\n" for i in range(30)) + "final val_bpb:1.5600\n")
    w.close()
    return tmp_path / "runs" / "fixture"


def out_of(capsys, *argv: str, width: int = 160, monkeypatch=None) -> str:
    if monkeypatch is not None:
        monkeypatch.setenv("COLUMNS", str(width))
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def run_ids(text: str) -> list[str]:
    return [w for line in text.splitlines() for w in line.split()[:1] if w.startswith("c") and "-s" in w]


def test_list_all_and_by_state(store_dir, capsys, monkeypatch):
    out = out_of(capsys, "runs", "list", str(store_dir), monkeypatch=monkeypatch)
    assert len(run_ids(out)) == 18 and "best: ccat00000002 at full val_bpb 1.5500 over 4 seeds" in out
    assert "llm:explorer" in out and "baseline" in out
    out = out_of(capsys, "runs", "list", str(store_dir), "--state", "failed", monkeypatch=monkeypatch)
    assert run_ids(out) == ["cbad00000004-smoke-s1337"] and "RuntimeError: shape mismatch in mlp" in out
    out = out_of(capsys, "runs", "list", str(store_dir), "--state", "running")
    assert run_ids(out) == [f"{OPT}-full-s1337"]
    out = out_of(capsys, "runs", "list", str(store_dir), "--status", "queued")  # the old flag name still works
    assert run_ids(out) == [f"{LLM}-screen-s1337"]


def test_candidate_state_and_rung(store_dir, capsys):
    out = out_of(capsys, "runs", "list", str(store_dir), "--state", "promoted", "--rung", "full")
    assert sorted(run_ids(out)) == sorted(f"{CAT}-full-s{s}" for s in (1, 2, 3, 1337))
    out = out_of(capsys, "runs", "list", str(store_dir), "--state", "rejected")
    assert "crej00000005" in out and "never run" in out and "512,000 B" in out


def test_top_and_flagged(store_dir, capsys, monkeypatch):
    out = out_of(capsys, "runs", "list", str(store_dir), "--top", "2", monkeypatch=monkeypatch)
    assert run_ids(out) == [f"{CAT}-full-s2", f"{CAT}-full-s1337"]  # highest rung first, then lowest val_bpb
    out = out_of(capsys, "runs", "list", str(store_dir), "--flagged", monkeypatch=monkeypatch)
    assert run_ids(out) == [f"{LLM}-smoke-s1337", f"{CAT}-full-s2"]
    assert "over_cap" in out and "slow_eval" in out
    out = out_of(capsys, "runs", "list", str(store_dir), "--flagged", "--rung", "screen")
    assert "no runs match" in out


def test_list_rejects_unknown_filters(store_dir, capsys):
    assert main(["runs", "list", str(store_dir), "--state", "exploded"]) == 2
    assert "unknown state 'exploded'; allowed: queued, running, ok" in capsys.readouterr().err
    assert main(["runs", "list", str(store_dir), "--rung", "huge"]) == 2
    assert "rungs here: " in capsys.readouterr().err


def test_show_a_run_in_full(store_dir, capsys, monkeypatch):
    out = out_of(capsys, "runs", "show", f"{CAT}-full-s1", str(store_dir), monkeypatch=monkeypatch)
    assert f"candidate {CAT} · run {CAT}-full-s1" in out
    assert "+a = 2" in out and "-a = 1" in out  # the diff against the baseline
    assert "full: 4 seeds, val_bpb 1.5500 ± 0.0082, Δ -0.0500 bpb / -0.0850 nats vs the baseline (4 seeds)" in out
    assert len([x for x in run_ids(out) if x.startswith(CAT)]) >= 6  # every seed at every rung
    assert "judgement: keep (p 0.0021" in out and "records/track_cpu_smoke/2026-01-01_Int6_Zstd" in out
    assert f"{CAT}-full-s2: slow_eval" in out
    assert re.search(rf"derived +{LLM} +llm:explorer", out)  # lineage: the LLM candidate came from this one
    assert "val curve" in out and "2.5600" in out  # the seed's validation points
    assert "final val_bpb:1.5600" in out and "step:29/40" in out and "step:10/40" not in out  # the log's tail


def test_show_by_prefix_with_parents_env_and_flags(store_dir, capsys, monkeypatch):
    out = out_of(capsys, "runs", "show", "cllm", str(store_dir), monkeypatch=monkeypatch)
    assert re.search(rf"parent +{CAT} +catalog +int6_zstd +full +1\.5500 +promoted", out)
    assert "over_cap, 410,000 B > 400,000 B (blocks promotion)" in out
    assert "no code change" in out and "no log in" in out
    out = out_of(capsys, "runs", "show", OPT, str(store_dir), monkeypatch=monkeypatch)
    assert "MATRIX_LR" in out and "0.05" in out
    assert "20/40" in out and "live" in out  # a running run's latest progress in its curve


def test_show_errors(store_dir, capsys):
    assert main(["runs", "show", "c", str(store_dir)]) == 2
    assert "matches several" in capsys.readouterr().err
    assert main(["runs", "show", "nothing", str(store_dir)]) == 2
    assert "no run or candidate 'nothing'" in capsys.readouterr().err


def test_narrow_terminal_keeps_rows_on_one_line(store_dir, capsys, monkeypatch):
    from rich.cells import cell_len

    out = out_of(capsys, "runs", "list", str(store_dir), width=80, monkeypatch=monkeypatch)
    assert max(cell_len(x) for x in out.splitlines()) <= 80 and len(run_ids(out)) == 18
