"""harness.logparse: the official log shapes, later records' variants, and garbage."""

from __future__ import annotations

import math
import random

import pytest

from harness.logparse import LogSummary, error_line, parse_line, parse_log

BASELINE_TAIL = """\
logs/abc.txt
val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model
train_loader:dataset:fineweb10B_sp1024 train_shards:25
model_params:17059912
warmup_step:1/20
warmup_step:20/20
step:0/20000 val_loss:6.9370 val_bpb:4.0978 train_time:0ms step_avg:0.01ms
step:1/20000 train_loss:6.9357 train_time:34ms step_avg:33.85ms
step:200/20000 train_loss:2.8041 train_time:8677ms step_avg:43.38ms
step:1000/20000 val_loss:2.3000 val_bpb:1.3600 train_time:43400ms step_avg:43.40ms
step:13780/20000 val_loss:2.0600 val_bpb:1.2200 train_time:600038ms step_avg:43.54ms
stopping_early: wallclock_cap train_time:600038ms step:13780/20000
peak memory allocated: 10184 MiB reserved: 10200 MiB
Serialized model: 67224983 bytes
Code size: 47642 bytes
Total submission size: 67272625 bytes
Serialized model int8+zlib: 15815847 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)
Total submission size int8+zlib: 15863489 bytes
final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms
final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570
"""


def test_the_official_baseline_log():
    s = parse_log(BASELINE_TAIL)
    assert [h["step"] for h in s.val_history] == [0, 1000, 13780]
    assert s.val_history[1] == {"step": 1000, "val_loss": 2.3, "val_bpb": 1.36, "train_time_ms": 43400.0}
    assert (s.last_step, s.total_steps, s.train_time_ms, s.step_avg_ms) == (13780, 20000, 600038.0, 43.54)
    assert s.last_train_loss == 2.8041
    assert s.stopped_early and s.stop_text.startswith("wallclock_cap")
    assert (s.final_name, s.final_val_loss, s.final_val_bpb) == ("final_int8_zlib_roundtrip_exact", 2.07269931,
                                                                  1.2243657)
    assert (s.submission_bytes, s.submission_format, s.raw_submission_bytes) == (15863489, "int8+zlib", 67272625)
    assert (s.code_bytes, s.model_bytes, s.peak_memory_mib) == (47642, 15815847, 10184)
    assert s.fail_reasons == [] and s.final_is_finite


def test_parse_line_kinds():
    assert parse_line("step:5/10 val_loss:2.5000 val_bpb:1.5000 train_time:100ms step_avg:20.00ms") == {
        "kind": "val", "step": 5, "total": 10, "val_loss": 2.5, "val_bpb": 1.5, "train_time_ms": 100.0,
        "step_avg_ms": 20.0}
    assert parse_line("step:5/10 train_loss:2.5000 train_time:100ms step_avg:20.00ms")["kind"] == "train"
    assert parse_line("FAIL: non-finite loss at step 7") == {"kind": "fail", "reason": "non-finite loss at step 7"}
    assert parse_line("Total submission size quantized+brotli: 15990123 bytes") == {
        "kind": "size", "format": "quantized+brotli", "bytes": 15990123}
    for ignored in ("warmup_step:3/20", "", "   ", "model_params:17059912", "garbage \x00\x01 step:",
                    'log0(f"step:{step}/{args.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f}")',
                    "step:5/10 val_loss:2.1"):
        assert parse_line(ignored) is None, ignored
    assert parse_line("stopping_early: wallclock_cap train_time:600038ms step:13780/20000")["kind"] == "stop"


def test_later_record_variants():
    text = "\n".join([
        "4500/20000 train_loss: 2.2771 train_time: 9.0m tok/s: 6589668",
        "[rank0]: step:4600/20000 val_loss:1.9000 val_bpb:1.1200 train_time:540000ms step_avg:117.39ms",
        "final_int8_zlib_roundtrip_exact val_loss:1.90000000 val_bpb:1.12000000",
        "Total submission size quantized+zstd: 15900000 bytes",
        "final_int6_sliding_window val_loss:1.8900 val_bpb:1.1100 stride:64 eval_time:70000ms",
        "final_int6_sliding_window_exact val_loss:1.89000000 val_bpb:1.11000000 stride:64 eval_time:70000ms",
        "Total submission size: 70000000 bytes",  # a raw size after the quantized one does not win
    ])
    s = parse_log(text)
    first = parse_line("4500/20000 train_loss: 2.2771 train_time: 9.0m tok/s: 6589668")
    assert first["train_time_ms"] == pytest.approx(540000.0) and first["train_loss"] == 2.2771
    assert s.val_history == [{"step": 4600, "val_loss": 1.9, "val_bpb": 1.12, "train_time_ms": 540000.0}]
    assert s.final_name == "final_int6_sliding_window_exact" and s.final_val_bpb == 1.11  # the LAST *_exact
    assert set(s.finals) == {"final_int8_zlib_roundtrip_exact", "final_int6_sliding_window_exact"}
    assert (s.submission_bytes, s.submission_format) == (15900000, "quantized+zstd")


def test_crlf_carriage_returns_nan_and_partial_lines():
    text = ("step:1/4 train_loss:nan train_time:5ms step_avg:5.00ms\r\n"
            "progress 10%\rprogress 50%\rstep:2/4 val_loss:2.0000 val_bpb:1.2000 train_time:9ms step_avg:4.50ms\r\n"
            "final_int8_zlib_roundtrip_exact val_loss:2.0")  # cut mid-write
    s = parse_log(text)
    assert math.isnan(s.last_train_loss) and s.last_step == 2
    assert s.val_history == [{"step": 2, "val_loss": 2.0, "val_bpb": 1.2, "train_time_ms": 9.0}]
    assert s.final_val_bpb is None and not s.final_is_finite
    p = parse_line("step:1/4 train_loss:nan train_time:5ms step_avg:5.00ms")
    assert math.isnan(p["train_loss"])
    s2 = parse_log("final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan\n")
    assert s2.final_name is not None and not s2.final_is_finite


def test_garbage_never_raises():
    rng = random.Random(0)
    alphabet = "step:/0123456789 val_losbpFAIL:_exact\r\n\t\x00é" + "".join(chr(i) for i in range(32, 127))
    summary = LogSummary()
    for _ in range(2000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        summary.feed(line)
        parse_line(line)
    parse_log(bytes(rng.randrange(256) for _ in range(5000)).decode("utf-8", "replace"))
    assert summary.lines == 2000


def test_error_line_prefers_fail_then_the_real_exception():
    assert error_line(["step:1/2 train_loss:1.0", "FAIL: non-finite loss", "Traceback (most recent call last):",
                       "  File x", "SystemExit: 1"]) == "FAIL: non-finite loss"
    torchrun = [
        "[rank0]: Traceback (most recent call last):",
        '[rank0]:   File "train_gpt.py", line 10, in <module>',
        "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "E1123 12:00:00 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1)",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
        "============================================================",
    ]
    assert error_line(torchrun) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert error_line(["loading", "Segmentation fault (core dumped)", ""]) == "Segmentation fault (core dumped)"
    assert error_line(["just some output", "last words"]) == "last words"
    assert error_line([]) is None and error_line(["", "  \r"]) is None
    long = error_line(["ValueError: " + "x" * 1000])
    assert len(long) == 240 and long.endswith("...")
