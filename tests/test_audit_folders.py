"""Record-folder and run-folder audits, log parsing, and the `audit` CLI subcommand."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import pytest

from harness.audit import (
    AuditReport,
    Finding,
    add_parser,
    audit_path,
    audit_record_folder,
    audit_run_dir,
    cap_for_track,
    format_report,
    parse_train_log,
)

SOURCE = textwrap.dedent(
    '''
    """Tiny trainer used as a record fixture."""
    import os
    import subprocess

    import torch

    DATA_PATH = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")


    def main():
        print(subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False).stdout)
        model = torch.nn.Linear(4, 4)
        torch.save(model.state_dict(), "final_model.pt")


    if __name__ == "__main__":
        main()
    '''
).lstrip()

SEEDS = {1337: (2.06000000, 1.22000000), 42: (2.06100000, 1.22060000), 2025: (2.05900000, 1.21940000)}


def make_log(seed: int, val_loss: float, val_bpb: float, total: int = 15_863_489, steps: int = 13780,
             source: str = SOURCE) -> str:  # fmt: skip
    return (
        f"{source}\n{'=' * 100}\nRunning Python 3.12.0\nRunning PyTorch 2.9.1+cu128\n{'=' * 100}\n"
        f"seed:{seed}\n"
        "step:0/20000 val_loss:6.9370 val_bpb:4.0978 train_time:0ms step_avg:0.01ms\n"
        f"step:{steps}/20000 val_loss:2.0600 val_bpb:1.2200 train_time:600038ms step_avg:43.54ms\n"
        f"stopping_early: wallclock_cap train_time:600038ms step:{steps}/20000\n"
        "Serialized model: 67224983 bytes\nCode size: 47642 bytes\n"
        "Total submission size: 67272625 bytes\n"  # raw fp state dict: bigger than the cap, not the artifact
        f"Serialized model int8+zlib: {total - len(source.encode())} bytes (payload:17178912 raw_torch:17224025)\n"
        f"Total submission size int8+zlib: {total} bytes\n"
        f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:1401ms\n"
        f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}\n"
    )


def make_record(root: Path, track: str = "track_10min_16mb", name: str = "2026-05-01_TestRecord",
                seeds: dict[int, tuple[float, float]] = SEEDS) -> Path:  # fmt: skip
    folder = root / "records" / track / name
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_text(SOURCE, encoding="utf-8")
    (folder / "README.md").write_text("# Test record\n\nA fixture record with three seeds and nothing else.\n")
    for seed, (loss, bpb) in seeds.items():
        (folder / f"train_seed{seed}.log").write_text(make_log(seed, loss, bpb))
    sub = {
        "author": "Test Author",
        "github_id": "tester",
        "name": "Test Record",
        "blurb": "Fixture.",
        "date": "2026-05-01T12:00:00Z",
        "val_loss": sum(v[0] for v in seeds.values()) / len(seeds),
        "val_bpb": sum(v[1] for v in seeds.values()) / len(seeds),
        "bytes_total": 15_863_489,
        "bytes_code": len(SOURCE.encode("utf-8")),
        "seeds": list(seeds),
        "seed_results": {str(s): {"val_loss": v[0], "val_bpb": v[1], "steps": 13780} for s, v in seeds.items()},
    }
    (folder / "submission.json").write_text(json.dumps(sub, indent=2))
    return folder


def edit_submission(folder: Path, **changes) -> None:
    sub = json.loads((folder / "submission.json").read_text())
    for k, v in changes.items():
        if v is None:
            sub.pop(k, None)
        else:
            sub[k] = v
    (folder / "submission.json").write_text(json.dumps(sub))


def codes(report: AuditReport, severity: str | None = None) -> set[str]:
    return report.codes(severity)


# ---- logs --------------------------------------------------------------------------------------------


def test_parse_train_log_prefers_the_labelled_artifact_size():
    s = parse_train_log(make_log(42, 2.07269931, 1.2243657), "train_seed42.log")
    assert s.size_bytes == 15_863_489 and s.size_label == "int8+zlib"
    assert s.exact_label == "final_int8_zlib_roundtrip"
    assert s.val_loss == pytest.approx(2.07269931) and s.val_bpb == pytest.approx(1.2243657)
    assert s.seed == 42 and s.steps == 13780
    assert s.source_preamble is not None and s.source_preamble.strip() == SOURCE.strip()
    bare = parse_train_log("Total submission size: 123 bytes\n", "logs/seed7.txt")
    assert bare.size_bytes == 123 and bare.seed == 7 and bare.val_bpb is None


def test_cap_for_track():
    assert cap_for_track("track_10min_16mb") == 16_000_000
    assert cap_for_track("track_non_record_16mb") == 16_000_000
    assert cap_for_track("track_30min_2mb_local") == 2_000_000
    assert cap_for_track("local-30min-2mb") == 2_000_000
    assert cap_for_track("records/track_custom_8mb") == 8_000_000
    assert cap_for_track("cpu-smoke") is None and cap_for_track(None) is None


# ---- record folders --------------------------------------------------------------------------------


def test_good_record_folder_passes(tmp_path):
    report = audit_record_folder(make_record(tmp_path))
    assert report.ok and report.kind == "record"
    assert report.findings == [], format_report(report)


def test_missing_files_are_findings_not_exceptions(tmp_path):
    folder = make_record(tmp_path)
    (folder / "submission.json").unlink()
    (folder / "README.md").unlink()
    report = audit_record_folder(folder)
    assert {"missing_submission_json", "missing_readme"} <= codes(report, "error")
    for f in (folder / "train_gpt.py", *folder.glob("*.log")):
        f.unlink()
    report = audit_record_folder(folder)
    assert {"missing_train_gpt", "missing_train_log"} <= codes(report, "error")
    assert all("\n" not in f.message for f in report.findings)
    assert codes(audit_record_folder(tmp_path / "nope")) == {"folder_missing"}


def test_over_cap_seed_log_is_caught_even_when_the_json_fits(tmp_path):
    folder = make_record(tmp_path)
    (folder / "train_seed42.log").write_text(make_log(42, *SEEDS[42], total=16_071_321))
    report = audit_record_folder(folder)
    over = [f for f in report.findings if f.code == "log_over_byte_cap"]
    assert len(over) == 1 and over[0].file == "train_seed42.log" and "16,071,321" in over[0].message
    assert not report.ok


def test_bytes_code_mismatch(tmp_path):
    folder = make_record(tmp_path)
    edit_submission(folder, bytes_code=len(SOURCE.encode()) - 100)
    report = audit_record_folder(folder)
    assert "bytes_code_mismatch" in codes(report, "error")
    edit_submission(folder, bytes_code=len(SOURCE.encode()) + 100)
    assert "bytes_code_mismatch" in codes(audit_record_folder(folder), "warning")


@pytest.mark.parametrize("name", ["TestRecord", "2026-5-1_Test", "2026-13-01_Test", "2026-05-01_", "2026-05-01_a b"])
def test_bad_folder_names(tmp_path, name):
    folder = make_record(tmp_path, name=name)
    assert "bad_folder_name" in codes(audit_record_folder(folder), "error")


def test_submission_fields_and_types(tmp_path):
    folder = make_record(tmp_path)
    edit_submission(folder, github_id=None, val_bpb="1.22", bytes_total=15.5, date="yesterday")
    report = audit_record_folder(folder)
    assert {"submission_missing_field", "submission_bad_type"} <= codes(report, "error")
    assert "submission_bad_date" in codes(report, "warning")
    (folder / "submission.json").write_text("{not json")
    assert "submission_json_invalid" in codes(audit_record_folder(folder), "error")


def test_bytes_total_over_cap_from_the_parent_track(tmp_path):
    folder = make_record(tmp_path, track="track_30min_2mb_local")
    report = audit_record_folder(folder)
    assert {"over_byte_cap", "log_over_byte_cap"} <= codes(report, "error")
    assert audit_record_folder(folder, byte_cap=16_000_000).ok  # an explicit cap wins
    assert audit_record_folder(folder, track="track_10min_16mb").ok


def test_unknown_track_assumes_the_main_cap(tmp_path):
    folder = make_record(tmp_path, track="somewhere")
    report = audit_record_folder(folder)
    assert report.ok and codes(report) == {"cap_assumed"}


def test_claimed_score_must_match_the_logs(tmp_path):
    folder = make_record(tmp_path)
    edit_submission(folder, val_bpb=1.2100)
    assert "val_bpb_mismatch" in codes(audit_record_folder(folder), "error")
    edit_submission(folder, val_bpb=SEEDS[2025][1])  # the best seed, not the mean
    assert "val_bpb_not_mean" in codes(audit_record_folder(folder), "warning")


def test_per_seed_claims_must_match_their_logs(tmp_path):
    folder = make_record(tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    sub["seed_results"]["42"]["steps"] = 10000
    sub["seed_results"]["1337"]["val_bpb"] = 1.10
    sub["seed_results"]["7"] = {"val_bpb": 1.2}
    (folder / "submission.json").write_text(json.dumps(sub))
    report = audit_record_folder(folder)
    mism = [f.message for f in report.findings if f.code == "seed_result_mismatch"]
    assert len(mism) == 2 and any("steps 10000" in m for m in mism)
    assert "seed_log_missing" in codes(report, "warning")


def test_record_track_wants_three_seeds(tmp_path):
    two = {k: SEEDS[k] for k in (1337, 42)}
    folder = make_record(tmp_path, seeds=two)
    edit_submission(folder, seed_results=None)
    report = audit_record_folder(folder)
    assert report.ok and codes(report) == {"few_seeds"}
    nonrec = make_record(tmp_path, track="track_non_record_16mb", seeds=two)
    assert audit_record_folder(nonrec).findings == []


def test_stale_log_from_other_code_is_flagged(tmp_path):
    folder = make_record(tmp_path)
    (folder / "train_seed42.log").write_text(make_log(42, *SEEDS[42], source=SOURCE.replace("(4, 4)", "(8, 8)")))
    found = [f for f in audit_record_folder(folder).findings if f.code == "log_source_mismatch"]
    assert len(found) == 1 and found[0].file == "train_seed42.log"


def test_static_findings_of_the_script_are_included(tmp_path):
    folder = make_record(tmp_path)
    bad = SOURCE.replace("import os\n", "import os\nimport socket\n")
    (folder / "train_gpt.py").write_text(bad)
    edit_submission(folder, bytes_code=len(bad.encode()))
    report = audit_record_folder(folder)
    net = [f for f in report.findings if f.code == "network_import"]
    assert net and net[0].file == "train_gpt.py" and net[0].line == 3
    assert "log_source_mismatch" in codes(report)


# ---- run folders -------------------------------------------------------------------------------------


def make_run(root: Path, artifact_bytes: int = 5000) -> Path:
    run = root / "run1"
    run.mkdir()
    (run / "train_gpt.py").write_text(SOURCE)
    (run / "final_model.int8.ptz").write_bytes(b"\0" * artifact_bytes)
    total = artifact_bytes + len(SOURCE.encode())
    (run / "train.log").write_text(make_log(1337, 2.5, 1.5, total=total, source=""))
    (run / "result.json").write_text(json.dumps({
        "val_loss": 2.5, "val_bpb": 1.5, "bytes_total": total, "bytes_code": len(SOURCE.encode()),
        "bytes_model": artifact_bytes, "steps": 13780,
    }))  # fmt: skip
    (run / "env.json").write_text(json.dumps({"NUM_LAYERS": "10"}))
    (run / "outcome.json").write_text(json.dumps({"status": "ok", "flags": [], "notes": []}))
    return run


def test_good_run_dir_passes(tmp_path):
    report = audit_run_dir(make_run(tmp_path), 16_000_000)
    assert report.findings == [], format_report(report)


def test_run_dir_recounts_bytes_and_applies_the_cap(tmp_path):
    run = make_run(tmp_path)
    (run / "final_model.int8.ptz").write_bytes(b"\0" * 6000)
    report = audit_run_dir(run, 16_000_000)
    assert {"bytes_model_mismatch", "bytes_total_mismatch"} <= codes(report, "error")
    assert "over_byte_cap" in codes(audit_run_dir(run, 4000), "error")
    (run / "final_model.int8.ptz").unlink()
    assert "missing_artifact" in codes(audit_run_dir(run, 16_000_000), "error")


def test_run_dir_flags_secrets_and_runner_flags(tmp_path):
    run = make_run(tmp_path)
    (run / "env.json").write_text(json.dumps({"OPENAI_API_KEY": "sk-x", "NUM_LAYERS": "10"}))
    (run / "outcome.json").write_text(json.dumps({
        "status": "ok", "flags": ["rescore_mismatch", "rescore_network_not_isolated"],
        "notes": ["rescore_mismatch: re-score 1.52 vs claimed 1.50"],
    }))  # fmt: skip
    (run / "flags.json").write_text(json.dumps([{"code": "over_time", "severity": "error", "message": "601 s"}]))
    report = audit_run_dir(run, 16_000_000)
    msgs = {f.message: f.severity for f in report.findings if f.code == "runner_flag"}
    assert msgs == {
        "rescore_mismatch: re-score 1.52 vs claimed 1.50": "error",
        "rescore_network_not_isolated: flagged by the runner": "warning",
        "over_time: 601 s": "error",
    }
    assert "secret_in_env" in codes(report, "error")


def test_run_dir_log_and_result_must_agree(tmp_path):
    run = make_run(tmp_path)
    res = json.loads((run / "result.json").read_text())
    res["val_bpb"] = 1.4
    (run / "result.json").write_text(json.dumps(res))
    (run / "outcome.json").write_text(json.dumps({"status": "crash", "error": "NaN loss"}))
    report = audit_run_dir(run, 16_000_000)
    assert {"log_result_mismatch", "run_not_ok"} <= codes(report, "error")
    (run / "result.json").unlink()
    assert "missing_result_json" in codes(audit_run_dir(run, 16_000_000), "error")


# ---- dispatch + CLI ----------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pgolf")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exit_codes_and_json(tmp_path, capsys):
    folder = make_record(tmp_path)
    assert run_cli(["audit", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out
    edit_submission(folder, bytes_total=16_500_000)
    assert run_cli(["audit", str(folder), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and any(f["code"] == "over_byte_cap" for f in data["findings"])
    assert run_cli(["audit", str(folder), "--cap", "17000000"]) == 0
    capsys.readouterr()
    assert run_cli(["audit", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_audit_path_dispatch(tmp_path):
    folder = make_record(tmp_path)
    make_record(tmp_path, name="2026-05-02_Other")
    agg = audit_path(folder.parent)
    assert agg.kind == "records" and agg.ok
    assert audit_path(folder / "train_gpt.py").kind == "source"
    assert audit_path(make_run(tmp_path)).kind == "run"
    (tmp_path / "evil.py").write_text("import socket\n")
    rep = audit_path(tmp_path / "evil.py")
    assert not rep.ok and rep.findings[0].file == "evil.py"


def test_format_report_lists_errors_first():
    rep = AuditReport(
        [Finding("b_warn", "warning", "w", 3, "x.py"), Finding("a_err", "error", "e", 9, "x.py")], "t", "source"
    )
    text = format_report(rep)
    assert (
        text.index("a_err") < text.index("b_warn")
        and "x.py:9" in text
        and text.endswith("FAIL: 1 error(s), 1 warning(s), 0 info")
    )
    with pytest.raises(ValueError):
        Finding("x", "fatal", "m")


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "null",
        '{"seed_results": [1, 2], "val_bpb": "x"}',
        '{"seed_results": {"x": 5, "7": {"val_bpb": "bad", "steps": "many"}}, "bytes_total": true}',
        '{"track": 5, "date": 20260501, "bytes_code": -1, "bytes_total": 1e30}',
    ],
)
def test_garbled_metadata_never_raises(tmp_path, content):
    folder = make_record(tmp_path)
    (folder / "submission.json").write_text(content)
    (folder / "train_seed42.log").write_bytes(b"\xff\xfe\x00garbage\nTotal submission size x: 99999999999 bytes\n")
    report = audit_record_folder(folder)
    assert not report.ok and all(isinstance(f, Finding) for f in report.findings)
    run = make_run(tmp_path)
    (run / "result.json").write_text(content)
    (run / "outcome.json").write_text(content)
    (run / "env.json").write_text(content)
    assert isinstance(audit_run_dir(run, 16_000_000), AuditReport)
