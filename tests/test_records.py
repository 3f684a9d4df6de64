"""Writing record folders: official layout, verbatim logs, statistics, atomicity, and a clean audit."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from harness.audit import audit_record_folder
from harness.judge import Verdict, judge
from harness.records import RecordAuditError, RecordMeta, SeedRun, record_folder_name, write_record

SOURCE = textwrap.dedent(
    '''
    """Candidate trainer: baseline plus one more layer."""
    import os
    import subprocess

    import torch

    NUM_LAYERS = int(os.environ.get("NUM_LAYERS", 10))


    def main():
        print(subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False).stdout)
        model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(NUM_LAYERS)])
        torch.save(model.state_dict(), "final_model.pt")


    if __name__ == "__main__":
        main()
    '''
).lstrip()
CODE_BYTES = len(SOURCE.encode("utf-8"))
PATCH = """--- a/train_gpt.py
+++ b/train_gpt.py
@@ -7 +7 @@
-NUM_LAYERS = int(os.environ.get("NUM_LAYERS", 9))
+NUM_LAYERS = int(os.environ.get("NUM_LAYERS", 10))
"""


def log_text(seed: int, loss: float, bpb: float, total: int, steps: int, source: str = SOURCE) -> str:
    return (
        f"{source}\n{'=' * 100}\nseed:{seed}\n"
        f"stopping_early: wallclock_cap train_time:599800ms step:{steps}/20000\n"
        f"Total submission size int8+zlib: {total} bytes\n"
        f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}\n"
    )


def make_runs(tmp: Path, tag: str, base_loss: float, seeds=(1337, 42, 2025), source: str = SOURCE) -> list[SeedRun]:
    runs = []
    code = len(source.encode("utf-8"))
    for i, seed in enumerate(seeds):
        loss = base_loss + 0.0007 * (i - 1)
        bpb = loss * 0.5907
        total = 15_600_000 + 1000 * i
        steps = 13000 + i
        log = tmp / "runs" / f"{tag}-{seed}" / "logs" / f"{tag}-{seed}.txt"
        log.parent.mkdir(parents=True)
        log.write_text(log_text(seed, loss, bpb, total, steps, source))
        runs.append(SeedRun(seed, loss, bpb, total, code, steps, 46.1 + i, 599_800.0, 1500.0 + i, log,
                            pre_quant_val_bpb=bpb - 0.007, bytes_model=total - code))  # fmt: skip
    return runs


def records_root(tmp: Path) -> Path:
    return tmp / "records"


META = RecordMeta(
    author="Jane Golfer",
    github_id="janeg",
    name="Ten Layers",
    blurb="One more transformer block, paid for by int8 headroom.",
    rationale="The baseline leaves ~140 KB of headroom; a 10th layer fits and lowers loss.",
    pytorch_version="2.9.1+cu128",
    env={"NUM_LAYERS": "10", "WARMDOWN_ITERS": "1200"},
    techniques=("depth",),
    credits="Baseline by OpenAI.",
)


@pytest.fixture()
def record(tmp_path):
    cand = make_runs(tmp_path, "cand", 2.0600)
    ref = make_runs(tmp_path, "ref", 2.0727)
    j = judge([r.val_loss for r in cand], [r.val_loss for r in ref],
              candidate_bpb=[r.val_bpb for r in cand], reference_bpb=[r.val_bpb for r in ref])  # fmt: skip
    assert j.verdict is Verdict.KEEP
    root = records_root(tmp_path)
    path = write_record(root, "track_10min_16mb", "2026-05-03", "Ten Layers!", SOURCE, PATCH, cand, ref, j, META)
    return path, cand, ref, j


def test_layout_and_verbatim_copies(record, tmp_path):
    path, cand, _, _ = record
    assert path == tmp_path / "records" / "track_10min_16mb" / "2026-05-03_Ten_Layers"
    assert sorted(p.name for p in path.iterdir()) == [
        "README.md", "statistics.md", "submission.json", "train_gpt.py",
        "train_seed1337.log", "train_seed2025.log", "train_seed42.log",
    ]  # fmt: skip
    assert (path / "train_gpt.py").read_bytes() == SOURCE.encode("utf-8")
    for r in cand:
        assert (path / f"train_seed{r.seed}.log").read_bytes() == Path(r.log_path).read_bytes()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_written_record_passes_the_audit(record):
    path = record[0]
    report = audit_record_folder(path)
    assert report.ok and report.findings == [], [str(f) for f in report.findings]


def test_submission_json(record):
    path, cand, ref, j = record
    sub = json.loads((path / "submission.json").read_text())
    for key in ("author", "github_id", "name", "blurb", "date", "val_loss", "val_bpb", "bytes_total", "bytes_code"):
        assert key in sub
    assert sub["date"] == "2026-05-03" and sub["track"] == "10min_16mb"
    assert sub["bytes_code"] == CODE_BYTES
    assert sub["bytes_total"] == sub["artifact_bytes_max"] == max(r.bytes_total for r in cand)
    assert sub["val_loss"] == pytest.approx(sum(r.val_loss for r in cand) / 3)
    assert sub["val_bpb_std"] > 0 and sub["seeds"] == [42, 1337, 2025]
    assert sub["seed_results"]["42"]["steps"] == cand[1].steps and sub["seed_results"]["42"]["artifact_bytes"]
    assert sub["p_value"] == pytest.approx(j.welch.p) and sub["t_statistic"] == pytest.approx(j.welch.t)
    assert sub["welch_df"] == pytest.approx(j.welch.df)
    assert sub["delta_vs_reference_nats"] == pytest.approx(j.delta_nats) and j.delta_nats < 0
    assert sub["reference_seeds"] == [42, 1337, 2025] and sub["verdict"] == "keep"
    assert sub["hardware"] == "8xH100 80GB SXM" and sub["pytorch_version"] == "2.9.1+cu128"
    c = sub["compliance"]
    assert c == {
        "train_under_600s": True, "eval_under_600s": True, "artifact_under_16mb": True, "three_seeds": True,
        "static_audit_clean": True, "no_val_data_in_training": True, "score_first_ttt": True, "no_network": True,
        "significant_vs_reference": True,
    }  # fmt: skip


def test_readme_and_statistics(record):
    path, cand, ref, j = record
    readme = (path / "README.md").read_text()
    assert readme.startswith("# Ten Layers\n")
    assert "± " in readme and "over 3 seeds" in readme
    assert "```diff\n--- a/train_gpt.py" in readme and "+NUM_LAYERS" in readme
    assert META.rationale in readme
    for r in cand:
        assert f"| {r.seed} | {r.steps} |" in readme
    assert "headroom" in readme and f"{16_000_000 - max(r.bytes_total for r in cand):,}" in readme
    assert "NUM_LAYERS=10 WARMDOWN_ITERS=1200 torchrun --standalone --nproc_per_node=8 train_gpt.py" in readme
    assert "for SEED in 42 1337 2025" in readme
    assert "- [x] train under 600s" in readme and "p = " in readme and "**keep**" in readme
    stats = (path / "statistics.md").read_text()
    assert stats.count("| candidate |") == 4 and stats.count("| baseline |") == 4  # 3 runs + summary row each
    assert "one-sided Welch" in stats and f"{j.welch.p:.3g}" in stats


def test_refuses_to_overwrite(record, tmp_path):
    path, cand, ref, j = record
    before = (path / "README.md").read_text()
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_record(
            records_root(tmp_path), "track_10min_16mb", "2026-05-03", "Ten_Layers", SOURCE, PATCH, cand, ref, j, META
        )
    assert (path / "README.md").read_text() == before


def test_records_root_can_be_given_directly(tmp_path):
    cand = make_runs(tmp_path, "c", 2.06)
    out = write_record(tmp_path / "records", "track_non_record_16mb", "2026-05-04", "x", SOURCE, "", cand, [], None,
                       META)  # fmt: skip
    assert out.parent == tmp_path / "records" / "track_non_record_16mb"
    sub = json.loads((out / "submission.json").read_text())
    assert sub["p_value"] is None and sub["track"] == "non-record-16mb"
    assert sub["compliance"]["significant_vs_reference"] is None
    assert "No code change" in (out / "README.md").read_text()
    assert audit_record_folder(out).ok


def test_bad_inputs_leave_nothing_behind(tmp_path):
    cand = make_runs(tmp_path, "c", 2.06)
    args = (tmp_path, "track_10min_16mb", "2026-05-03", "Bad", SOURCE + "\n# edited after the run\n", "", cand, [],
            None, META)  # fmt: skip
    with pytest.raises(ValueError, match="exact train_gpt.py"):
        write_record(*args)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        write_record(records_root(tmp_path), "track_10min_16mb", "2026-5-3", "Bad", SOURCE, "", cand, [], None, META)
    with pytest.raises(ValueError, match="track_folder"):
        write_record(records_root(tmp_path), "../escape", "2026-05-03", "Bad", SOURCE, "", cand, [], None, META)
    with pytest.raises(ValueError, match="cap"):
        write_record(
            records_root(tmp_path), "track_30min_2mb_local", "2026-05-03", "Bad", SOURCE, "", cand, [], None, META
        )
    os.remove(cand[0].log_path)
    with pytest.raises(ValueError, match="does not exist"):
        write_record(records_root(tmp_path), "track_10min_16mb", "2026-05-03", "Bad", SOURCE, "", cand, [], None, META)
    records = tmp_path / "records"
    assert not records.exists() or not any(records.rglob("2026-05-03_Bad*"))


def test_audit_errors_abort_atomically(tmp_path):
    bad_source = SOURCE.replace("import os\n", "import os\nimport socket\n")
    cand = make_runs(tmp_path, "c", 2.06, source=bad_source)
    with pytest.raises(RecordAuditError, match="network_import") as info:
        write_record(
            records_root(tmp_path), "track_10min_16mb", "2026-05-03", "Net", bad_source, "", cand, [], None, META
        )
    assert not info.value.report.ok
    parent = tmp_path / "records" / "track_10min_16mb"
    assert list(parent.iterdir()) == []  # neither the record nor its staging folder


def test_patch_with_backticks_keeps_the_fence_intact(tmp_path):
    cand = make_runs(tmp_path, "c", 2.06)
    patch = "+# a ```code``` comment\n"
    out = write_record(
        records_root(tmp_path), "track_10min_16mb", "2026-05-03", "Ticks", SOURCE, patch, cand, [], None, META
    )
    assert "````diff\n+# a ```code``` comment\n````" in (out / "README.md").read_text()


def test_record_folder_name():
    assert (
        record_folder_name("2026-04-27", "SP8192 LQER/SparseGate 1.0611") == "2026-04-27_SP8192_LQERSparseGate_1.0611"
    )
    with pytest.raises(ValueError):
        record_folder_name("2026-04-27", "///")
    with pytest.raises(ValueError):
        record_folder_name("27/04/2026", "x")


def test_unmeasured_times_are_unknown_not_a_crash(tmp_path):
    cand = [
        SeedRun(r.seed, r.val_loss, r.val_bpb, r.bytes_total, r.bytes_code, r.steps, None, r.train_time_ms, None,
                r.log_path)
        for r in make_runs(tmp_path, "c", 2.06)
    ]  # fmt: skip
    out = write_record(records_root(tmp_path), "track_10min_16mb", "2026-05-03", "NoEval", SOURCE, "", cand, [], None,
                       META)  # fmt: skip
    sub = json.loads((out / "submission.json").read_text())
    assert sub["compliance"]["eval_under_600s"] is None and sub["compliance"]["train_under_600s"] is True
    assert sub["seed_results"]["42"]["eval_time_s"] is None
    readme = (out / "README.md").read_text()
    assert "- [ ] eval under 600s (not judged)" in readme and "evaluation: max n/a s" in readme
