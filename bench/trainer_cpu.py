"""CPU training throughput of train_gpt.py at the tiny test config (2 layers x 64, 8,192 tokens per step, seq 128).

Runs the trainer twice on the CPU (COMPILE=0, fp32): one thread, then all cores (OMP_NUM_THREADS). Prints the
steady ms/step (after step 10; priming and validation excluded), training tokens/s, and the all-cores / one-thread
speedup. The reference is the one-thread run of the same script on the same machine, nothing else.
Without --data-path it builds the local corpus (stdlib docstrings, sp1024; data.build) in a temp dir.

    python bench/trainer_cpu.py [--data-path DIR --tokenizer-path FILE] [--iterations 40] [--trainer PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from trainer_step import BASELINE_PATH, local_corpus, run_trainer, step_times

TINY = dict(VOCAB_SIZE="1024", NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2",
            TRAIN_SEQ_LEN="128", TRAIN_BATCH_TOKENS="8192", VAL_BATCH_SIZE="16384", VAL_TOKENS="32768",
            WARMUP_STEPS="2", WARMDOWN_ITERS="10", VAL_LOSS_EVERY="0", TRAIN_LOG_EVERY="10",
            MAX_WALLCLOCK_SECONDS="0", DEVICE="cpu", COMPILE="0")  # = tests/conftest.py TINY_TRAINER_ENV


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-path", help="folder with fineweb_{train,val}_*.bin (default: build the local corpus)")
    ap.add_argument("--tokenizer-path", help="SentencePiece .model matching --data-path")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--trainer", type=Path, default=BASELINE_PATH, help="train_gpt.py to measure")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    tokens_per_step = int(TINY["TRAIN_BATCH_TOKENS"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, tok = (args.data_path, args.tokenizer_path) if args.data_path else local_corpus(tmp / "data")
        ms = {}
        for threads in sorted({1, cores}):
            env = dict(TINY, DATA_PATH=str(data), TOKENIZER_PATH=str(tok), RUN_ID=f"cpu{threads}",
                       ITERATIONS=str(args.iterations), OMP_NUM_THREADS=str(threads))
            ms[threads] = step_times(run_trainer(args.trainer, tmp, env))[1]
            tokens_per_s = tokens_per_step / ms[threads] * 1000
            print(f"threads {threads:3d}: {ms[threads]:8.1f} ms/step  {tokens_per_s:10.0f} tokens/s")
    print(f"speedup {cores} threads vs 1: {ms[1] / ms[cores]:.2f}x")


if __name__ == "__main__":
    main()
