"""trainer/train_gpt.py end to end: tiny CPU runs on the locally built corpus, checked against the trainer contract
(docs/architecture.md). Runs that several tests read are made once per module (see shared_run)."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from trainer import BASELINE_PATH

RESULT_KEYS = {
    "val_loss", "val_bpb", "pre_quant_val_loss", "pre_quant_val_bpb", "bytes_total", "bytes_code", "bytes_model",
    "steps", "train_time_ms", "eval_time_ms", "stopped_early", "val_history", "peak_memory_mib", "torch_version",
    "device", "world_size", "seed", "eval_only", "eval_stride",
}
# The baseline tiny config, 128 wide so the 1024 x 128 tied embedding (> 65,536 elements) really goes through int8.
BASELINE = dict(MODEL_DIM=128, VAL_LOSS_EVERY=15)
SHORT = dict(ITERATIONS=6)  # for the runs compared with each other (seed, DDP)
QUANT_GAP_TOLERANCE = 0.01  # bpb; the official 9x512 baseline loses ~0.007 to int8+zlib
DDP_TOLERANCE = 1e-4  # bpb; 2 ranks x 4 micro-steps vs 1 x 8 differ only in float summation order


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    cwd: Path

    @property
    def result(self) -> dict:
        return json.loads((self.cwd / "result.json").read_text())

    @property
    def out(self) -> str:
        return self.proc.stdout


def run_trainer(python: str, env: dict[str, str], cwd: Path, nproc: int = 1, **overrides) -> Run:
    env = {**env, "RUN_ID": "test", "RESULT_JSON": str(cwd / "result.json")}
    env.update((k, str(v)) for k, v in overrides.items())
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    proc = subprocess.run([python, *launcher, str(BASELINE_PATH)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    return Run(proc, cwd)


_RUNS: dict[str, Run] = {}


def shared_run(name: str, python, env, tmp_path_factory, **overrides) -> Run:
    """One run per name per module, made by whichever test asks first."""
    if name not in _RUNS:
        _RUNS[name] = run_trainer(python, env, tmp_path_factory.mktemp(name), **overrides)
        assert _RUNS[name].proc.returncode == 0, _RUNS[name].proc.stderr[-3000:]
    return _RUNS[name]


@pytest.fixture()
def baseline(python, trainer_env, tmp_path_factory) -> Run:
    return shared_run("baseline", python, trainer_env, tmp_path_factory, **BASELINE)


@pytest.fixture()
def short(python, trainer_env, tmp_path_factory) -> Run:
    return shared_run("short", python, trainer_env, tmp_path_factory, **SHORT)


@pytest.fixture()
def val_only_dir(local_data, tmp_path) -> Path:
    """A DATA_PATH with the validation shards and nothing else: eval-only must not need train shards."""
    d = tmp_path / "val_only"
    d.mkdir()
    for f in local_data.dataset_dir.glob("fineweb_val_*.bin"):
        shutil.copy(f, d)
    return d


def test_tiny_run_learns_and_reports_in_the_contract_shapes(baseline):
    r, out = baseline.result, baseline.out
    assert set(r) == RESULT_KEYS
    hist = r["val_history"]
    assert [h["step"] for h in hist] == [0, 15, 30] and r["steps"] == 30 and not r["stopped_early"]
    assert hist[0]["val_loss"] == pytest.approx(math.log(1024), abs=0.05)  # near-uniform logits at init
    assert r["pre_quant_val_bpb"] == hist[-1]["val_bpb"] and r["pre_quant_val_bpb"] < 0.85 * hist[0]["val_bpb"]
    assert (r["device"], r["world_size"], r["eval_only"], r["eval_stride"], r["seed"]) == ("cpu", 1, False, 0, 1337)
    assert r["bytes_code"] == len(BASELINE_PATH.read_text(encoding="utf-8").encode("utf-8"))
    assert r["bytes_model"] == (baseline.cwd / "final_model.int8.ptz").stat().st_size
    assert r["bytes_total"] == r["bytes_code"] + r["bytes_model"]
    lines = out.splitlines()
    assert lines[0] == "logs/test.txt"
    timing = r" train_time:\d+ms step_avg:\d+\.\d\dms"
    for h in hist:
        pattern = rf"step:{h['step']}/30 val_loss:{h['val_loss']:.4f} val_bpb:{h['val_bpb']:.4f}" + timing
        assert any(re.fullmatch(pattern, line) for line in lines), pattern
    assert any(re.fullmatch(r"step:10/30 train_loss:\d+\.\d{4}" + timing, line) for line in lines)
    assert f"Total submission size int8+zlib: {r['bytes_total']} bytes" in lines
    assert f"final_int8_zlib_roundtrip_exact val_loss:{r['val_loss']:.8f} val_bpb:{r['val_bpb']:.8f}" in lines
    summary = lines[lines.index("---") + 1 :]
    assert [line.split(":")[0] for line in summary] == [
        "val_bpb", "val_loss", "bytes_total", "bytes_code", "bytes_model", "steps", "train_time_ms", "peak_memory_mib"]
    assert summary[0] == f"val_bpb: {r['val_bpb']:.8f}"
    log = (baseline.cwd / "logs" / "test.txt").read_text(encoding="utf-8")
    source = BASELINE_PATH.read_text(encoding="utf-8")
    assert log.startswith(source) and log.endswith("\n".join(lines[1:]) + "\n")  # source, versions, then the console
    preamble = log[len(source) : log.index(lines[1])].strip("\n").splitlines()
    assert preamble[1].startswith("Running Python ") and preamble[2] == f"Running PyTorch {torch.__version__}"
    assert preamble[0] == preamble[3] == "=" * 100 and len(preamble) == 4  # no nvidia-smi on CPU
    assert (baseline.cwd / "final_model.pt").is_file()


def test_int8_zlib_roundtrip_is_close_to_the_prequant_score(baseline):
    r = baseline.result
    obj = torch.load(io.BytesIO(zlib.decompress((baseline.cwd / "final_model.int8.ptz").read_bytes())))
    assert "tok_emb.weight" in obj["quantized"]  # the gap below includes real int8 rounding
    assert r["val_bpb"] != r["pre_quant_val_bpb"]
    assert abs(r["val_bpb"] - r["pre_quant_val_bpb"]) < QUANT_GAP_TOLERANCE


def test_eval_only_rescore_equals_the_roundtrip_score(baseline, python, trainer_env, val_only_dir, tmp_path):
    ev = run_trainer(python, trainer_env, tmp_path, **BASELINE, EVAL_ONLY=1, DATA_PATH=val_only_dir,
                     ARTIFACT_PATH=baseline.cwd / "final_model.int8.ptz")
    assert ev.proc.returncode == 0, ev.proc.stderr[-3000:]
    r, ref = ev.result, baseline.result
    assert set(r) == RESULT_KEYS and r["eval_only"] and r["steps"] == 0
    assert r["pre_quant_val_bpb"] is None and r["pre_quant_val_loss"] is None
    assert r["val_bpb"] == pytest.approx(ref["val_bpb"], abs=1e-6)
    assert r["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-6)
    assert r["bytes_total"] == ref["bytes_total"]
    assert f"final_int8_zlib_roundtrip_exact val_loss:{ref['val_loss']:.8f} val_bpb:{ref['val_bpb']:.8f}" in ev.out
    assert f"Total submission size int8+zlib: {ref['bytes_total']} bytes" in ev.out.splitlines()


def test_sliding_window_eval_is_no_worse_than_disjoint_windows(baseline, python, trainer_env, val_only_dir, tmp_path):
    ev = run_trainer(python, trainer_env, tmp_path, **BASELINE, EVAL_ONLY=1, EVAL_STRIDE=32, DATA_PATH=val_only_dir,
                     ARTIFACT_PATH=baseline.cwd / "final_model.int8.ptz")
    assert ev.proc.returncode == 0, ev.proc.stderr[-3000:]
    assert ev.result["eval_stride"] == 32
    assert ev.result["val_bpb"] <= baseline.result["val_bpb"] + 1e-3  # every target keeps >= 96 tokens of context


def test_eval_only_with_a_different_shape_is_a_one_line_error(baseline, python, trainer_env, tmp_path):
    ev = run_trainer(python, trainer_env, tmp_path, EVAL_ONLY=1, ARTIFACT_PATH=baseline.cwd / "final_model.int8.ptz")
    err = ev.proc.stderr.strip().splitlines()
    assert ev.proc.returncode == 2 and len(err) == 1 and "cannot load artifact" in err[0] and "size mismatch" in err[0]


def test_wallclock_cap_stops_training(python, trainer_env, tmp_path):
    run = run_trainer(python, trainer_env, tmp_path, ITERATIONS=100_000, MAX_WALLCLOCK_SECONDS=1, WARMUP_STEPS=0)
    assert run.proc.returncode == 0, run.proc.stderr[-3000:]
    r = run.result
    assert r["stopped_early"] and 0 < r["steps"] < 100_000
    assert re.search(rf"^stopping_early: wallclock_cap train_time:\d+ms step:{r['steps']}/100000$", run.out, re.M)
    assert r["val_history"][-1]["step"] == r["steps"]


def test_same_seed_is_deterministic_and_seed_matters(short, python, trainer_env, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    again = run_trainer(python, trainer_env, tmp_path / "a", **SHORT)
    other = run_trainer(python, trainer_env, tmp_path / "b", **SHORT, SEED=7)
    assert again.proc.returncode == 0 and other.proc.returncode == 0
    assert again.result["val_loss"] == short.result["val_loss"]
    assert again.result["pre_quant_val_loss"] == short.result["pre_quant_val_loss"]
    assert other.result["val_loss"] != short.result["val_loss"]


GLOO_TEARDOWN_ABORT = "terminate called without an active exception"  # torch's CPU gloo, rarely, on a loaded box


def test_two_process_gloo_ddp_matches_one_process(short, python, trainer_env, tmp_path):
    ddp = run_trainer(python, trainer_env, tmp_path, nproc=2, **SHORT)
    if ddp.proc.returncode != 0 and GLOO_TEARDOWN_ABORT in ddp.proc.stderr:
        # Seen once in ~20 CI runs, never in 66 runs alone (idle or loaded): a C++ abort inside gloo, not a trainer
        # error (which prints a traceback). One more try; a second abort, or any other failure, still fails the test.
        warnings.warn(f"gloo aborted a rank ({GLOO_TEARDOWN_ABORT}); stdout tail: {ddp.out[-300:]!r}", stacklevel=1)
        ddp = run_trainer(python, trainer_env, tmp_path, nproc=2, **SHORT)
    assert ddp.proc.returncode == 0, ddp.proc.stderr[-3000:] + "\n--- stdout ---\n" + ddp.out[-1500:]
    r = ddp.result
    assert r["world_size"] == 2 and r["steps"] == short.result["steps"]
    assert "world_size:2 grad_accum_steps:4" in ddp.out
    assert abs(r["val_bpb"] - short.result["val_bpb"]) < DDP_TOLERANCE


def test_non_finite_loss_fails_with_exit_1(python, trainer_env, tmp_path):
    run = run_trainer(python, trainer_env, tmp_path, ITERATIONS=5, WARMUP_STEPS=0, TIED_EMBED_LR=1e30, MATRIX_LR=1e30)
    assert run.proc.returncode == 1
    assert re.search(r"^FAIL: non-finite loss at step \d+$", run.out, re.M)
    assert not (tmp_path / "result.json").exists()


def remove_shards(d: Path) -> str:
    for f in d.glob("*.bin"):
        f.unlink()
    return ""


def corrupt_header(d: Path) -> str:
    shard = next(d.glob("fineweb_train_*.bin"))
    shard.write_bytes(b"\0\0\0\0" + shard.read_bytes()[4:])
    return shard.name


def truncate_val(d: Path) -> str:
    shard = next(d.glob("fineweb_val_*.bin"))
    shard.write_bytes(shard.read_bytes()[:-1])
    return shard.name


@pytest.mark.parametrize(
    "case,overrides,damage,expect",
    [
        ("missing shards", {}, remove_shards, "no validation shards"),
        ("wrong vocab", {"VOCAB_SIZE": "512"}, None, "set VOCAB_SIZE=1024"),
        ("corrupt header", {}, corrupt_header, "corrupt shard"),
        ("truncated shard", {}, truncate_val, "corrupt shard"),
        ("missing artifact", {"EVAL_ONLY": "1", "ARTIFACT_PATH": "nope.ptz"}, None, "artifact nope.ptz not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, overrides, damage, expect, python, trainer_env, local_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(local_data.dataset_dir, data)
    named = damage(data) if damage else ""
    run = run_trainer(python, trainer_env, tmp_path, DATA_PATH=data, **overrides)
    assert run.proc.returncode == 2, run.proc.stderr[-3000:]
    err = run.proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "; " in err[0] and expect in err[0], err
    assert named in err[0] and run.out == ""


def test_a_parameter_in_no_optimizer_is_a_one_line_error(python, trainer_env, tmp_path):
    """A patch that adds a module outside the optimizer groups would otherwise train with it frozen at init."""
    source = BASELINE_PATH.read_text()
    anchor = "        self.blocks = nn.ModuleList("
    assert source.count(anchor) == 1
    patched = tmp_path / "train_gpt.py"
    patched.write_text(source.replace(anchor, "        self.orphan = nn.Parameter(torch.zeros(4))\n" + anchor))
    env = {**trainer_env, "RUN_ID": "test", "ITERATIONS": "2", "RESULT_JSON": str(tmp_path / "result.json")}
    proc = subprocess.run([python, str(patched)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == ("error: every trainable parameter must be in exactly one optimizer; add the new "
                                   "parameters to one")
