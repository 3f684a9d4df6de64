"""pgolf dash: load_view() over a filled store, render() into a recorded console, the CLI's --once."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.cells import cell_len
from rich.console import Console

from harness import dash, views
from harness.store import Store

NOW = time.time()  # the store stamps rows with the real clock
CAT = "ccat00000002"
OPT = "copt00000001"
LLM = "cllm00000003"
BAD = "cbad00000004"
REJ = "crej00000005"
REF = "cref00000000"


def _cand(s: Store, cid: str, proposer: str, **kw) -> None:
    s.add_candidate({"id": cid, "baseline_hash": "b0", "track": "cpu-smoke", "patch": kw.pop("patch", ""),
                     "patch_hash": cid, "env": kw.pop("env", {}), "proposer": proposer, **kw})


def _ok(s: Store, cid: str, rung: str, ri: int, seed: int, bpb: float, nbytes: int = 300_000, flags=()) -> None:
    rid = f"{cid}-{rung}-s{seed}"
    s.enqueue_run(rid, cid, rung, ri, seed, gpus=0)
    s.mark_running(rid)
    s.finish_run(rid, {"status": "ok", "val_bpb": bpb, "val_loss": bpb * 1.7, "bytes_total": nbytes,
                       "bytes_code": 40_000, "steps": 40, "wall_s": 12.0, "flags": list(flags),
                       "val_history": [{"step": 0, "val_bpb": bpb + 1.0}, {"step": 40, "val_bpb": bpb}]})


def fill_fixture(s: Store, now: float = NOW) -> None:
    """A small search on the cpu-smoke track with known numbers, written through the Store's public methods."""
    s.set_meta("config", {"name": "fixture", "track": "cpu-smoke", "llm": {"max_cost_usd": 5.0},
                          "proposers": {"optuna": 0.4, "catalog": 0.3, "llm": 0.3}})
    s.set_meta("started_at", now - 600)
    _cand(s, REF, "baseline", kind="reference", rationale="the unmodified baseline")
    _cand(s, OPT, "optuna", env={"MATRIX_LR": "0.05"}, trial_number=0)
    _cand(s, CAT, "catalog", patch="--- a/train_gpt.py\n+++ b/train_gpt.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n",
          techniques=["int6_zstd"], rationale="int6 weights with zstd")
    _cand(s, LLM, "llm:explorer", techniques=["mlp3x"], parents=[CAT])
    _cand(s, BAD, "catalog", techniques=["smeargate"])
    _cand(s, REJ, "optuna", env={"MODEL_DIM": "1024"}, state="rejected",
          reason="size: estimated 512,000 B over the 400,000 B cap")
    for cid, bpb in ((REF, 2.50), (OPT, 2.45), (CAT, 2.40)):
        _ok(s, cid, "smoke", 0, 1337, bpb)
    _ok(s, LLM, "smoke", 0, 1337, 2.38, nbytes=410_000)
    s.enqueue_run(f"{BAD}-smoke-s1337", BAD, "smoke", 0, 1337, gpus=0)
    s.mark_running(f"{BAD}-smoke-s1337")
    s.finish_run(f"{BAD}-smoke-s1337", {"status": "crash", "error": "Traceback (most recent call last):\n"
                                        "  File \"train_gpt.py\", line 9\nRuntimeError: shape mismatch in mlp"})
    for cid, bpb in ((REF, 2.00), (CAT, 1.95), (OPT, 1.99)):
        _ok(s, cid, "screen", 1, 1337, bpb)
    for seed, (ref, cat) in zip((1337, 1, 2, 3), ((1.60, 1.55), (1.61, 1.56), (1.59, 1.54), (1.60, 1.55)),
                                strict=True):
        _ok(s, REF, "full", 2, seed, ref)
        _ok(s, CAT, "full", 2, seed, cat, flags=["slow_eval"] if seed == 2 else ())
    s.enqueue_run(f"{OPT}-full-s1337", OPT, "full", 2, 1337, gpus=0)
    s.mark_running(f"{OPT}-full-s1337")
    s.update_progress(f"{OPT}-full-s1337", {"step": 20, "total": 40, "val_bpb": 1.7012, "elapsed_s": 30.0})
    s.enqueue_run(f"{LLM}-screen-s1337", LLM, "screen", 1, 1337, gpus=0)
    for _ in range(3):
        s.add_llm_call({"proposer": "llm:explorer", "role": "propose", "model": "gpt-4.1", "prompt_tokens": 1200,
                        "completion_tokens": 300, "cost_usd": 0.01, "outcome": "ok"})
    s.add_judgement(CAT, {"verdict": "keep", "reason": "beats the baseline by 0.085 nats", "p_value": 0.0021,
                          "delta_nats": -0.085, "n_candidate": 4, "n_reference": 4,
                          "record_path": "records/track_cpu_smoke/2026-01-01_Int6_Zstd"})
    s.set_candidate_state(CAT, "promoted", "p=0.0021")
    s.set_meta("cluster", {"gpus": 0, "gpus_busy": 0, "cpus": 2, "busy_fraction": 0.5, "updated_at": now})


@pytest.fixture()
def filled(tmp_path) -> Store:
    w = Store(tmp_path)
    fill_fixture(w)
    w.close()
    return Store(tmp_path, readonly=True)


def frame(store: Store, width: int = 80, height: int = 24, now: float = NOW) -> str:
    """Render one frame the way rich tests Live: a recording console of fixed size, no colour."""
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None, record=True)
    console.print(dash.render(dash.load_view(store, now=now), width, height))
    return console.export_text()


def assert_panels(text: str, width: int = 80, height: int = 24) -> None:
    """What every frame must show, whatever search filled the store (this fixture or a real smoke search)."""
    lines = text.splitlines()
    assert len(lines) == height, f"frame is {len(lines)} lines, not {height}"
    assert max(cell_len(x) for x in lines) <= width
    assert "pgolf dash" in lines[0]
    assert " runs: " in lines[1] and "candidates" in lines[1]
    for title in ("leaderboard", "running", "recent failures"):
        assert title in text, title
    assert "val_bpb" in text and "Δbpb" in text and "bytes" in text
    assert "baseline" in text, "the reference row (or its delta column) is missing"
    assert ("no runs in flight" in text) or ("/" in text and "━" in text)
    if height >= 24:
        assert "search" in text and "queue" in text and "cluster" in text and "LLM" in text and "best" in text


def test_panels_at_80x24(filled):
    text = frame(filled)
    assert_panels(text)
    assert "fixture" in text and "cpu-smoke" in text and "400,000" in text
    board = text[text.index("─ leaderboard"):text.index("─ running")]
    first = next(x for x in board.splitlines() if x.strip("│ ").startswith("1 "))
    # the promoted candidate at the full rung: mean of four seeds, delta vs the baseline's four seeds
    assert "ccat0000" in first and "4@full" in first and "1.5500 ±.0082" in first
    assert "-0.0500" in first and "-0.0850" in first and "0.0021" in first and "slow_eval" in first
    assert "20/40" in text and "30s/5m00s" in text and "1.7012" in text
    assert "screen 1" in text  # queue by rung
    assert "RuntimeError: shape mismatch in mlp" in text or "size: estimated 512,000 B" in text
    assert "optuna" in text and "catalog" in text and "llm" in text


def test_wide_frame_shows_everything(filled):
    text = frame(filled, 200, 50)
    assert_panels(text, 200, 50)
    assert "copt00000001 MATRIX_LR=0.05" in text and "ccat00000002 int6_zstd" in text
    assert "1.5500 ±0.0082" in text
    assert "headroom" in text and "100,000" in text  # 400,000 cap - 300,000 bytes
    assert "over_cap" in text and "-10,000" in text  # the 410,000-byte LLM candidate
    assert "RuntimeError: shape mismatch in mlp" in text and "size: estimated 512,000 B over the 400,000 B cap" in text
    assert "$0.03 of $5" in text and "4.50k tokens" in text
    assert "proposer" in text and "advanced" in text
    assert re.search(r"│ llm +1 +1 +0 +0 ", text) and re.search(r"│ catalog +2 +2 +1 +1 ", text)
    assert "50% busy" in text and "2 CPUs" in text
    assert "best run" in text and "1.5400 (-0.0600)" in text  # the best single run vs the baseline's mean


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (132, 40), (60, 20), (80, 12), (40, 10), (250, 70)])
def test_every_size_fits(filled, size):
    w, h = size
    text = frame(filled, w, h)
    lines = text.splitlines()
    assert len(lines) == h and max(cell_len(x) for x in lines) <= w
    assert "leaderboard" in text


def test_view_agrees_with_standings(filled):
    v = dash.load_view(filled, now=NOW)
    ref = views.standings(filled, byte_cap=400_000)
    assert [b.candidate_id for b in v.board] == [s.candidate_id for s in ref]
    for b, s in zip(v.board, ref, strict=True):
        assert b.val_bpb == pytest.approx(s.val_bpb) and b.val_bpb_std == pytest.approx(s.val_bpb_std)
        assert b.seeds == s.seeds and b.rung == s.rung and b.bytes_total == s.bytes_total
        assert set(b.flags) == set(s.flags)
    assert v.ranked == 4 and v.counts == {"ok": 15, "crash": 1, "running": 1, "queued": 1}
    assert v.candidates == {"active": 3, "promoted": 1, "rejected": 1}
    assert v.proposers["optuna"] == {"proposed": 2, "trainable": 1, "advanced": 1, "promoted": 0}
    assert v.proposers["catalog"] == {"proposed": 2, "trainable": 2, "advanced": 1, "promoted": 1}
    assert v.queue == (("smoke", 0), ("screen", 1), ("full", 0))
    assert v.failures[0].status in ("crash", "rejected") and len(v.failures) == 2


def test_reuse_when_no_event_and_reload_after_one(tmp_path):
    w = Store(tmp_path)
    fill_fixture(w)
    r = Store(tmp_path, readonly=True)
    first = dash.load_view(r, now=NOW)
    w.update_progress(f"{OPT}-full-s1337", {"step": 30, "total": 40, "val_bpb": 1.65, "elapsed_s": 45.0})
    second = dash.load_view(r, now=NOW + 1, previous=first)
    assert second.board is first.board  # no event: the slow parts were reused
    assert second.jobs[0].step == 30 and second.jobs[0].val_bpb == 1.65  # progress is always re-read
    w.finish_run(f"{OPT}-full-s1337", {"status": "ok", "val_bpb": 1.50, "val_loss": 2.55, "bytes_total": 300_000})
    third = dash.load_view(r, now=NOW + 2, previous=second)
    assert third.board[0].candidate_id == OPT and not third.jobs
    stale = dash.load_view(r, now=NOW + 2 + dash.REUSE_S + 1, previous=third)
    assert stale.board is not third.board


def test_reads_while_the_writer_holds_a_transaction(tmp_path):
    w = Store(tmp_path)
    fill_fixture(w)
    r = Store(tmp_path, readonly=True)
    with w.transaction() as conn:
        conn.execute("UPDATE runs SET val_bpb=0.1 WHERE candidate_id=?", (REF,))
        v = dash.load_view(r, now=NOW)  # WAL: the reader sees the last commit and is not blocked
    assert not v.error and v.board[0].candidate_id == CAT


def test_store_without_config_or_runs(tmp_path):
    s = Store(tmp_path)
    text = dash.frame_text(dash.load_view(s, now=NOW), 80, 24)
    assert_empty = ("no finished runs yet", "no runs in flight", "no failures")
    assert all(x in text for x in assert_empty)
    _cand(s, "cx", "optuna")
    _ok(s, "cx", "smoke", 0, 1337, 3.0)
    v = dash.load_view(s, now=NOW)
    assert v.byte_cap is None and v.track == "" and v.board[0].headroom is None
    assert "3.0000" in dash.frame_text(v, 80, 24)


def test_unreadable_store_is_shown_not_raised(tmp_path):
    s = Store(tmp_path)
    s.conn.execute("DROP TABLE progress")
    v = dash.load_view(s, now=NOW)
    assert v.error.startswith("cannot read the store")
    assert "cannot read the store" in dash.frame_text(v, 80, 24)


def test_cli_once_and_errors(filled, capsys, tmp_path):
    assert dash.main([str(filled.root), "--once", "--width", "120", "--height", "30"]) == 0
    out = capsys.readouterr().out
    assert "leaderboard" in out and "ccat00000002" in out
    assert dash.main([str(tmp_path / "nowhere"), "--once"]) == 2
    assert "no run store" in capsys.readouterr().err


def test_cli_finds_the_newest_store_under_a_folder(tmp_path, capsys):
    for name in ("old", "new"):
        w = Store(tmp_path / name)
        w.set_meta("config", {"name": name, "track": "cpu-smoke"})
        w.close()
        time.sleep(0.01)
    assert dash.main([str(tmp_path), "--once", "--width", "80", "--height", "24"]) == 0
    assert " new " in capsys.readouterr().out.splitlines()[0]


def test_demo_renders(capsys):
    assert dash.main(["--demo", "--once", "--width", "100", "--height", "30"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "main-10min-16mb" in out and "16,000,000" in out


def test_formatting_helpers():
    assert dash.fmt_duration(59) == "59s" and dash.fmt_duration(61) == "1m01s" and dash.fmt_duration(7260) == "2h01m"
    assert dash.fmt_si(15_863_489, 4) == "15.86M" and dash.fmt_si(312_000) == "312k"
    assert dash.fmt_si(-52_008) == "-52.0k"
    assert dash.one_line("Traceback (most recent call last):\n  x\nValueError: bad") == "ValueError: bad"
    assert dash.one_line("FAIL: nan loss\nmore") == "FAIL: nan loss"
    assert dash.spark([None, 3.0, 2.0, 1.0], 4) == " █▄▁"
    assert dash.allocate(17, [(4, 40, 2), (3, 6, 1), (3, 5, 1)]) == [8, 5, 4]
    assert dash.board_columns(76)[1] and not dash.board_columns(200)[1]


def test_live_loop_draws_frames(filled):
    console = Console(file=io.StringIO(), width=100, height=30, color_system=None, force_terminal=True)
    dash.live(filled, console, interval=0.01, max_frames=3)
    out = console.file.getvalue()
    assert "leaderboard" in out and out.count("\x1b[?1049h") == 1  # the alternate screen, entered once
    assert "\x1b[2J" not in out and out.count("\x1b[H") == 3 + 1  # frames overwrite in place: no flicker
