"""val_bpb and artifact bytes of every catalog technique against the baseline, at a fixed small CPU budget.

Each technique (with what it requires) and the baseline train --iterations steps of the tiny config (2 layers x 64,
seq 128, 8,192 tokens per step; --model-dim widens it) for --seeds seeds on the local corpus (stdlib docstrings,
built in a temp dir; a second vocabulary is built when a technique sets VOCAB_SIZE). Env = tiny config + the
technique's [env] + [small_env]. Runs go --jobs at a time, one thread each. Per technique it prints the mean val_bpb,
the mean paired difference to the baseline of the same seed with its standard error (seed-to-seed spread of the
difference / sqrt(seeds)), the artifact bytes and their ratio to the baseline's, and CPU seconds per run.

Techniques of category "eval" leave training alone, so unless --full is given they re-score the baseline's
artifacts of the same seeds with their own trainer in EVAL_ONLY mode instead of training again (same numbers as a
full run, a third of the time). At this size no weight matrix exceeds the export's 65,536-element float passthrough
limit (at width 64), so quantization techniques can change only the compressor; try --model-dim 256 for them.
Budget: the default (19 techniques, 60 steps, 3 seeds) is ~2,600 CPU-seconds, ~22 min on 2 idle cores (it took
50 min at a load average of 5-9); --iterations 30 or --seeds 2 roughly halve it, --only a,b picks techniques.

    python bench/techniques.py [--iterations 60] [--seeds 3] [--only a,b] [--jobs 2] [--model-dim 64]
                               [--val-tokens 16384] [--full]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agents.patches import apply_patch  # noqa: E402
from search_space.techniques import closure, combined_patch, load_catalog, merged_env  # noqa: E402
from trainer import BASELINE_PATH  # noqa: E402

TINY = dict(VOCAB_SIZE="1024", NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2",
            TRAIN_SEQ_LEN="128", TRAIN_BATCH_TOKENS="8192", VAL_BATCH_SIZE="16384", VAL_TOKENS="32768",
            WARMUP_STEPS="2", WARMDOWN_ITERS="10", VAL_LOSS_EVERY="0", TRAIN_LOG_EVERY="10",
            MAX_WALLCLOCK_SECONDS="0", DEVICE="cpu", COMPILE="0")  # = tests/conftest.py TINY_TRAINER_ENV
SEED0 = 1337


@dataclass
class Config:
    name: str
    category: str
    scale: str
    techniques: list
    env: dict[str, str]
    rescore_only: bool = False
    results: dict[int, dict] = field(default_factory=dict)  # seed -> result.json
    cpu_s: list[float] = field(default_factory=list)
    error: str = ""


def run(cmd_cwd: Path, source: str, env: dict[str, str]) -> tuple[dict | None, float, str]:
    """Run a trainer source in cmd_cwd; (result.json or None, CPU seconds of the child, error tail)."""
    cmd_cwd.mkdir(parents=True, exist_ok=True)
    (cmd_cwd / "train_gpt.py").write_text(source, encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=cmd_cwd, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # approximate when two children end together
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0 or not (cmd_cwd / "result.json").is_file():
        return None, cpu, (proc.stdout[-800:] + proc.stderr[-1500:]).strip()
    return json.loads((cmd_cwd / "result.json").read_text()), cpu, ""


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=60, help="training steps per run (default 60)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    ap.add_argument("--only", default="", help="comma-separated technique names (default: the whole catalog)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, one CPU thread each (default 2)")
    ap.add_argument("--model-dim", type=int, default=64, help="MODEL_DIM of every run (default 64, the tiny config)")
    ap.add_argument("--val-tokens", type=int, default=16384, help="val tokens scored (default 16384, half the tiny "
                    "config's: every run scores the same ones, so the paired differences stay exact)")
    ap.add_argument("--full", action="store_true", help="train eval-category techniques too instead of re-scoring")
    args = ap.parse_args()
    catalog = load_catalog()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or [t.name for t in catalog]
    base_src = BASELINE_PATH.read_text(encoding="utf-8")
    tiny = dict(TINY, ITERATIONS=str(args.iterations), MODEL_DIM=str(args.model_dim), VAL_TOKENS=str(args.val_tokens),
                WARMUP_STEPS="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # no compile, so nothing to prime
    baseline = Config("baseline", "-", "-", [], tiny)
    configs = [baseline]
    for name in names:
        chosen = closure([name], catalog)
        t = next(c for c in chosen if c.name == name)
        configs.append(Config(name, t.category, t.scale, chosen, {**tiny, **merged_env(chosen, small=True)},
                              rescore_only=t.category == "eval" and not args.full))
    seeds = [SEED0 + i for i in range(args.seeds)]
    started = time.perf_counter()
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="pgolf-bench-techniques-") as tmp:
        tmp = Path(tmp)
        from data.build import build_dataset, stdlib_documents

        data = {}
        for vocab in sorted({int(c.env["VOCAB_SIZE"]) for c in configs}):
            built = build_dataset(stdlib_documents(), dest=tmp / f"data{vocab}", vocab_size=vocab)
            val_only = tmp / f"val_only{vocab}"
            val_only.mkdir()
            for f in built.val_files:
                shutil.copy(f, val_only / f.name)
            data[vocab] = (built.dataset_dir, built.tokenizer_path, val_only)

        def job(config: Config, seed: int, stage: str) -> None:
            dataset, tokenizer, val_only = data[int(config.env["VOCAB_SIZE"])]
            cwd = tmp / "runs" / f"{config.name}_{seed}"
            env = {**os.environ, **config.env, "SEED": str(seed), "RUN_ID": f"{config.name}_{seed}",
                   "DATA_PATH": str(dataset), "TOKENIZER_PATH": str(tokenizer), "RESULT_JSON": "result.json",
                   "ARTIFACT_PATH": str(cwd / "final_model.ptz")}
            if stage == "rescore":  # the baseline artifact of this seed, this technique's evaluation
                env.update(EVAL_ONLY="1", DATA_PATH=str(val_only),
                           ARTIFACT_PATH=str(tmp / "runs" / f"baseline_{seed}" / "final_model.ptz"))
            source = apply_patch(base_src, combined_patch(config.techniques, base_src))
            result, cpu, err = run(cwd, source, env)
            with lock:
                if result is None:
                    config.error = config.error or (err.splitlines()[-1] if err else "failed")
                else:
                    config.results[seed] = result
                    config.cpu_s.append(cpu)
                print(f"[{time.perf_counter() - started:6.0f}s] {config.name} seed {seed}: "
                      + (f"val_bpb {result['val_bpb']:.4f} bytes {result['bytes_model']}" if result else "FAILED"),
                      file=sys.stderr, flush=True)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            first = [pool.submit(job, c, s, "train") for c in configs if not c.rescore_only for s in seeds]
            for f in first:
                f.result()
            rest = [pool.submit(job, c, s, "rescore") for c in configs if c.rescore_only for s in seeds]
            for f in rest:
                f.result()
    elapsed = time.perf_counter() - started
    print(f"\ntechniques vs baseline: {args.iterations} steps of the tiny config (MODEL_DIM={args.model_dim}), "
          f"seeds {seeds[0]}..{seeds[-1]}, {args.jobs} jobs, {elapsed / 60:.1f} min")
    print("delta = technique - baseline of the same seed (negative val_bpb is better); +- one standard error\n")
    head = f"{'technique':22} {'category':12} {'scale':5} {'val_bpb':>8} {'d val_bpb':>17} {'bytes':>9} " \
           f"{'x bytes':>7} {'cpu s':>6}  note"
    print(head)
    print("-" * len(head))
    ref = baseline.results
    for c in configs:
        common = [s for s in seeds if s in c.results and s in ref]
        if not common:
            print(f"{c.name:22} {c.category:12} {c.scale:5} {'failed':>8}  {c.error[:100]}")
            continue
        bpb = mean_se([c.results[s]["val_bpb"] for s in common])[0]
        size = sum(c.results[s]["bytes_model"] for s in common) / len(common)
        cpu = sum(c.cpu_s) / max(len(c.cpu_s), 1)
        notes = []
        if c.rescore_only:
            notes.append("eval-only re-score of the baseline artifacts")
        if len(c.techniques) > 1:
            notes.append("with " + ", ".join(t.name for t in c.techniques if t.name != c.name))
        if c.name == "baseline":
            spread = mean_se([ref[s]["val_bpb"] for s in common])[1]
            print(f"{c.name:22} {'-':12} {'-':5} {bpb:8.4f} {'(se ' + format(spread, '.4f') + ')':>17} "
                  f"{size:9.0f} {1:7.3f} {cpu:6.0f}")
            continue
        d, se = mean_se([c.results[s]["val_bpb"] - ref[s]["val_bpb"] for s in common])
        base_size = sum(ref[s]["bytes_model"] for s in common) / len(common)
        print(f"{c.name:22} {c.category:12} {c.scale:5} {bpb:8.4f} {d:+9.4f} +- {se:.4f} {size:9.0f} "
              f"{size / base_size:7.3f} {cpu:6.0f}  {'; '.join(notes)}")


if __name__ == "__main__":
    main()
