"""Step time and peak GPU memory of train_gpt.py at the official baseline config, against the official trainer.

Runs the trainer as a subprocess on one GPU: 9 layers x 512, 524,288 tokens per step (seq 1024, grad-accum 8),
20 compile-priming steps (not timed), then --iterations timed steps. Prints the trainer's step_avg, the steady
step time after step 10, and peak memory allocated, each with its ratio to the official train_gpt.py measured on
one H100 (torch 2.11): 358 ms/step and 10.3 GB. Ratios > 1 mean slower / more memory. Without a GPU it says so and
exits 0. Without --data-path it builds the local corpus (stdlib docstrings, sp1024; data.build) in a temp dir;
step time and memory depend only on shapes, not on the text.

    python bench/trainer_step.py [--data-path DIR --tokenizer-path FILE] [--iterations 60] [--trainer PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from trainer import BASELINE_PATH  # noqa: E402

REF_STEP_MS = 358.0  # official train_gpt.py, 1x H100, torch 2.11, grad-accum 8
REF_PEAK_MIB = 10.3 * 1024  # 10.3 GB read as GiB, the unit of the trainer's "peak memory allocated: N MiB" line
TRAIN_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:\S+ train_time:(\d+)ms step_avg:([\d.]+)ms$", re.M)
PEAK_LINE = re.compile(r"^peak memory allocated: (\d+) MiB", re.M)


def local_corpus(dest: Path) -> tuple[Path, Path]:
    """Tokenizer and shards built from the standard library's docstrings (a few seconds, offline)."""
    from data.build import build_dataset, stdlib_documents

    built = build_dataset(stdlib_documents(), dest=dest, vocab_size=1024)
    return built.dataset_dir, built.tokenizer_path


def run_trainer(trainer: Path, cwd: Path, env: dict[str, str]) -> str:
    """Run the trainer with `env` over the current environment; return its stdout (exit with its stderr on failure)."""
    proc = subprocess.run([sys.executable, str(trainer)], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"trainer failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def step_times(log: str, skip: int = 10) -> tuple[float, float]:
    """(step_avg of the last train line, steady ms/step between step `skip` and the last logged step)."""
    points = [(int(s), float(t), float(avg)) for s, t, avg in TRAIN_LINE.findall(log)]
    (s0, t0, _), (s1, t1, avg) = next(p for p in points if p[0] >= skip), points[-1]
    return avg, (t1 - t0) / max(s1 - s0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-path", help="folder with fineweb_{train,val}_*.bin (default: build the local corpus)")
    ap.add_argument("--tokenizer-path", help="SentencePiece .model matching --data-path")
    ap.add_argument("--iterations", type=int, default=60, help="timed steps after the 20 priming steps")
    ap.add_argument("--trainer", type=Path, default=BASELINE_PATH, help="train_gpt.py to measure")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("trainer_step: no GPU visible; this benchmark needs CUDA (nothing measured)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, tok = (args.data_path, args.tokenizer_path) if args.data_path else local_corpus(tmp / "data")
        env = dict(DATA_PATH=str(data), TOKENIZER_PATH=str(tok), RUN_ID="bench", ITERATIONS=str(args.iterations),
                   WARMUP_STEPS="20", VAL_LOSS_EVERY="0", TRAIN_LOG_EVERY="10", MAX_WALLCLOCK_SECONDS="0",
                   VAL_TOKENS=str(2**20), DEVICE="cuda", COMPILE="1")
        for knob in ("NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS", "MLP_MULT", "VOCAB_SIZE",
                     "TRAIN_BATCH_TOKENS", "TRAIN_SEQ_LEN"):
            os.environ.pop(knob, None)  # the trainer's defaults are the official baseline shape
        log = run_trainer(args.trainer, tmp, env)
    step_avg, steady = step_times(log)
    peak = int(PEAK_LINE.search(log).group(1))
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  trainer {args.trainer}")
    print(f"step_avg:     {step_avg:8.1f} ms   ref {REF_STEP_MS:.0f} ms   ratio {step_avg / REF_STEP_MS:.3f}")
    print(f"steady step:  {steady:8.1f} ms   ref {REF_STEP_MS:.0f} ms   ratio {steady / REF_STEP_MS:.3f}")
    print(f"peak memory:  {peak:8d} MiB  ref {REF_PEAK_MIB:.0f} MiB   ratio {peak / REF_PEAK_MIB:.3f}")


if __name__ == "__main__":
    main()
