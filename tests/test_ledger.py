"""GPU-hours and money per run, per candidate and in total; GPU SKUs per run and the mixed-SKU caveat."""

from __future__ import annotations

import io
import sqlite3
import time

import pytest
from rich.console import Console

from harness import dash, ledger
from harness.cli import main
from harness.store import Store

REF, CAND = "cref00000000", "ccat00000001"


def _run(s: Store, cid: str, rung: str, seed: int, gpus: int, held_s: float, sku: str, bpb: float = 1.5) -> None:
    rid = f"{cid}-{rung}-s{seed}"
    s.enqueue_run(rid, cid, rung, 0, seed, gpus=gpus)
    s.mark_running(rid)
    placement = {"node": "n1:abcd", "gpu_ids": list(range(gpus)), "started_at": time.time() - held_s,
                 "gpu": {"sku": sku, "count": gpus, "driver": "550.54"}}
    s.finish_run(rid, {"status": "ok", "val_bpb": bpb, "val_loss": bpb * 1.7, "wall_s": held_s * 0.8,
                       "result": {"placement": placement}})


@pytest.fixture()
def store_dir(tmp_path):
    s = Store(tmp_path / "s")
    s.set_meta("config", {"name": "cost", "track": "cpu-smoke", "budget": {"price_per_gpu_hour": 2.5}})
    for cid, kind in ((REF, "reference"), (CAND, "search")):
        s.add_candidate({"id": cid, "baseline_hash": "b", "track": "cpu-smoke", "patch": "", "patch_hash": cid,
                         "env": {}, "proposer": "baseline" if kind == "reference" else "catalog", "kind": kind})
    _run(s, REF, "full", 1, 8, 1800, "NVIDIA H100 80GB HBM3")  # 4 GPU-h
    _run(s, CAND, "full", 1, 8, 900, "NVIDIA H100 80GB HBM3")  # 2 GPU-h
    _run(s, CAND, "full", 2, 8, 450, "NVIDIA A100-SXM4-80GB")  # 1 GPU-h, another SKU
    _run(s, CAND, "smoke", 1, 0, 60, "cpu")  # a CPU run costs no GPU-hours
    s.set_meta("cluster", {"gpus": 16, "gpus_busy": 8, "busy_fraction": 0.5, "updated_at": time.time(),
                           "gpu_models": {"confirm": "NVIDIA H100 80GB HBM3"},
                           "gpu_models_released": {"confirm": "NVIDIA B200"},
                           "node_status": [
                               {"node": "gpu-a:11111111", "gpus": 8, "data": "ready", "reason": "present"},
                               {"node": "gpu-b:22222222", "gpus": 8, "data": "failed",
                                "reason": "data staging under /data failed: needs 20.0 GB, 3.1 GB free"}]})
    s.close()
    return tmp_path / "s"


def test_costs_per_run_candidate_and_total(store_dir):
    s = Store(store_dir, readonly=True)
    assert ledger.price_per_gpu_hour(s) == 2.5
    per = ledger.candidate_costs(s)
    assert per[REF] == pytest.approx(4.0, rel=1e-3) and per[CAND] == pytest.approx(3.0, rel=1e-3)
    assert ledger.gpu_hours(s) == pytest.approx(7.0, rel=1e-3)
    assert ledger.fmt_cost(3.0, 2.5) == "3.00 GPU-h · $7.50"
    row = s.run(f"{CAND}-full-s2")
    assert (row.gpu_sku, row.gpu_driver) == ("NVIDIA A100-SXM4-80GB", "550.54")


def test_gpu_time_of_an_attempt_lost_with_its_node_is_counted(tmp_path):
    s = Store(tmp_path / "lost")
    s.add_candidate({"id": CAND, "baseline_hash": "b", "track": "t", "patch": "", "patch_hash": CAND, "env": {},
                     "proposer": "catalog", "kind": "search"})
    rid = f"{CAND}-full-s1"
    s.enqueue_run(rid, CAND, "full", 0, 1, gpus=8)
    s.mark_running(rid)
    s.conn.execute("UPDATE runs SET started_at=? WHERE id=?", (time.time() - 900, rid))  # it ran 15 min, then
    s.requeue(rid, "ray worker died: the node was preempted")  # its node went away
    assert ledger.gpu_hours(s) == pytest.approx(2.0, rel=1e-3)  # 8 GPUs x 15 min, billed though lost
    again = s.run(rid)
    assert again.status == "queued" and again.attempt == 1 and again.started_at is None
    s.mark_running(rid)
    s.conn.execute("UPDATE runs SET started_at=? WHERE id=?", (time.time() - 450, rid))
    s.finish_run(rid, {"status": "ok", "val_bpb": 1.5, "val_loss": 2.5, "wall_s": 400, "result": {}})
    assert ledger.candidate_costs(s)[CAND] == pytest.approx(3.0, rel=1e-3)  # the lost 2 GPU-h and the 1 it took


def test_mixed_skus_are_called_out(store_dir):
    s = Store(store_dir, readonly=True)
    note = ledger.candidate_sku_note(s, CAND, [REF])
    assert note and "full: NVIDIA A100-SXM4-80GB (1 run), NVIDIA H100 80GB HBM3 (2 runs)" in note
    assert "cpu" not in note  # a CPU smoke run is never compared with a full GPU run
    assert ledger.sku_note(ledger.skus(s, "candidate_id=?", (REF,))) is None  # one SKU: nothing to say


def test_a_record_names_the_hardware_its_runs_measured(store_dir):
    s = Store(store_dir, readonly=True)
    ref, cand = s.runs(candidate_id=REF), s.runs(candidate_id=CAND)
    assert ledger.measured_hardware(ref, "8xH100 80GB SXM") == "8xNVIDIA H100 80GB HBM3"
    assert ledger.measured_hardware(cand, "x") == "8xNVIDIA A100-SXM4-80GB + 8xNVIDIA H100 80GB HBM3"
    cpu_only = [r for r in cand if r.rung == "smoke"]
    assert ledger.measured_hardware(cpu_only, "CPU") == "CPU"  # no GPU model recorded: the track's word


def test_runs_list_and_show_print_money_and_gpus(store_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    assert main(["runs", "list", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert "spent: 7.00 GPU-h · $17.50 at $2.5/GPU-h" in out and "more than one GPU model" in out
    assert "NVIDIA A100" in out and "2.50" in out  # the A100 run: 1 GPU-h, $2.50
    assert main(["runs", "show", CAND, str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert "3.00 GPU-h · $7.50" in out and "more than one GPU model" in out


def test_dashboard_shows_money_and_nodes_without_data(store_dir):
    s = Store(store_dir, readonly=True)
    console = Console(file=io.StringIO(), width=160, height=40, color_system=None, record=True)
    console.print(dash.render(dash.load_view(s, now=time.time()), 160, 40))
    text = console.export_text()
    assert "7.0 GPU-h · $17.50" in text
    board = text.splitlines()[3:6]  # the leaderboard's header and rows: what each candidate spent
    assert " $ " in board[0] and "7.50" in board[1] and "10.00" in board[2], board
    line = next(x for x in text.splitlines() if "gpu-b:22222222" in x)
    assert "2 nodes" in text and "gpu-b:22222222 gets no work: data staging" in line
    assert "gpu-a" not in text  # a node with its data is not worth a line
    assert "confirm runs on NVIDIA H100 80GB HBM3 only" in text
    assert "NVIDIA B200 gone: confirm runs moved" in text  # its pool was preempted: the confirm runs moved on


def test_store_from_an_older_pgolf_gains_the_sku_and_lost_time_columns(tmp_path):
    s = Store(tmp_path)
    s.close()
    with sqlite3.connect(tmp_path / "pgolf.db") as conn:
        for col in ("gpu_sku", "gpu_driver", "lost_s"):
            conn.execute(f"ALTER TABLE runs DROP COLUMN {col}")
    old = Store(tmp_path, readonly=True)  # read-only (the dashboard): no column, no crash
    assert ledger.skus(old) == {} and ledger.gpu_hours(old) == 0.0
    s = Store(tmp_path)
    assert {"gpu_sku", "gpu_driver", "lost_s"} <= {r.name for r in s.query("PRAGMA table_info(runs)")}


def test_a_judgement_across_gpu_models_says_so(tmp_path):
    """Confirm seeds of the candidate and of the baseline on different GPU models: the caveat is in the reason."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_promote import search

    from harness.promote import Promoter

    s = search(tmp_path, attempts=1)
    p = Promoter(s)
    assert p.step() and p.state["winner"] == "a"
    for r in s.store.runs(status="queued"):
        sku = "NVIDIA H100 80GB HBM3" if r.candidate_id == "a" else "NVIDIA A100-SXM4-80GB"
        loss = {"a": 4.20, "ref": 4.35}[r.candidate_id] + r.seed * 1e-3
        s.store.finish_run(r.id, {"status": "ok", "val_loss": loss, "val_bpb": loss / 1.84, "bytes_total": 100_000,
                                  "result": {"placement": {"gpu": {"sku": sku, "count": 8, "driver": "550"}}}})
    p.step()
    j = s.store.one("SELECT * FROM judgements WHERE candidate_id='a'")
    assert "caveat: runs of one rung on more than one GPU model" in j.reason
    assert "NVIDIA A100-SXM4-80GB (3 runs), NVIDIA H100 80GB HBM3 (3 runs)" in j.reason
