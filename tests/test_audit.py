"""Static legality audit of train_gpt.py sources: clean baselines pass, planted violations are caught."""

from __future__ import annotations

import base64
import lzma
import textwrap
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.audit import ERROR, Finding, audit_source

ROOT = Path(__file__).resolve().parents[1]

# A condensed, baseline-shaped trainer: env-var hyperparameters, val glob, nvidia-smi in the log
# preamble, compile warm-up on train data, a wall-clock loop with periodic validation, export and
# the final roundtrip eval. It is never run, only audited.
CLEAN_SOURCE = textwrap.dedent(
    '''
    """Baseline-like trainer used as an audit fixture."""
    from __future__ import annotations

    import glob
    import io
    import math
    import os
    import subprocess
    import sys
    import time
    import uuid
    import zlib
    from pathlib import Path

    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn


    class Hyperparameters:
        data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
        train_files = os.path.join(data_path, "fineweb_train_*.bin")
        val_files = os.path.join(data_path, "fineweb_val_*.bin")
        run_id = os.environ.get("RUN_ID", str(uuid.uuid4()))
        seed = int(os.environ.get("SEED", 1337))
        val_batch_size = int(os.environ.get("VAL_BATCH_SIZE", 524_288))
        val_loss_every = int(os.environ.get("VAL_LOSS_EVERY", 1000))
        iterations = int(os.environ.get("ITERATIONS", 20000))
        warmup_steps = int(os.environ.get("WARMUP_STEPS", 20))
        train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
        max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))


    def load_data_shard(file: Path) -> torch.Tensor:
        header = np.fromfile(file, dtype="<i4", count=256)
        if header.size != 256 or int(header[0]) != 20240520:
            raise ValueError(f"Unexpected shard header for {file}")
        tokens = np.fromfile(file, dtype="<u2", count=int(header[2]), offset=256 * 4)
        return torch.from_numpy(tokens.astype(np.uint16))


    def load_validation_tokens(pattern: str, seq_len: int) -> torch.Tensor:
        files = [Path(p) for p in sorted(glob.glob(pattern))]
        tokens = torch.cat([load_data_shard(f) for f in files])
        usable = ((tokens.numel() - 1) // seq_len) * seq_len
        return tokens[: usable + 1]


    class TokenStream:
        def __init__(self, pattern: str):
            self.files = [Path(p) for p in sorted(glob.glob(pattern))]
            self.tokens = load_data_shard(self.files[0])
            self.pos = 0

        def take(self, n: int) -> torch.Tensor:
            chunk = self.tokens[self.pos : self.pos + n]
            self.pos += n
            return chunk


    class DistributedTokenLoader:
        def __init__(self, pattern, rank, world_size, device):
            self.stream = TokenStream(pattern)
            self.device = device

        def next_batch(self, global_tokens, seq_len):
            local = self.stream.take(global_tokens + 1).to(dtype=torch.int64)
            x = local[:-1].reshape(-1, seq_len)
            y = local[1:].reshape(-1, seq_len)
            return x.to(self.device), y.to(self.device)


    def eval_val(args, model, device, val_tokens):
        seq_len = args.train_seq_len
        total_seqs = (val_tokens.numel() - 1) // seq_len
        val_loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        val_token_count = torch.zeros((), device=device, dtype=torch.float64)
        model.eval()
        with torch.inference_mode():
            for start in range(0, total_seqs, 64):
                end = min(start + 64, total_seqs)
                local = val_tokens[start * seq_len : end * seq_len + 1].to(device=device, dtype=torch.int64)
                x = local[:-1].reshape(-1, seq_len)
                y = local[1:].reshape(-1, seq_len)
                batch_loss = model(x, y).detach()
                val_loss_sum += batch_loss.to(torch.float64) * float(y.numel())
                val_token_count += float(y.numel())
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(val_loss_sum, op=dist.ReduceOp.SUM)
        model.train()
        val_loss = val_loss_sum / val_token_count
        return float(val_loss.item()), float(val_loss.item() / math.log(2.0))


    class GPT(nn.Module):
        def __init__(self, vocab_size: int, dim: int):
            super().__init__()
            self.tok_emb = nn.Embedding(vocab_size, dim)
            self.head = nn.Linear(dim, vocab_size, bias=False)

        def forward(self, input_ids, target_ids):
            logits = self.head(F.rms_norm(self.tok_emb(input_ids), (self.tok_emb.embedding_dim,)))
            return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target_ids.reshape(-1))


    def main() -> None:
        code = Path(__file__).read_text(encoding="utf-8")
        args = Hyperparameters()
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        os.makedirs("logs", exist_ok=True)
        logfile = f"logs/{args.run_id}.txt"

        def log0(msg: str, console: bool = True) -> None:
            if console:
                print(msg)
            with open(logfile, "a", encoding="utf-8") as f:
                print(msg, file=f)

        log0(code, console=False)
        log0("=" * 100, console=False)
        log0(f"Running Python {sys.version}", console=False)
        log0(
            subprocess.run(["nvidia-smi"], stdout=subprocess.PIPE, text=True, check=False).stdout,
            console=False,
        )
        val_tokens = load_validation_tokens(args.val_files, args.train_seq_len)
        log0(f"val_loader:shards pattern={args.val_files} tokens:{val_tokens.numel() - 1}")
        model = GPT(1024, 512).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        train_loader = DistributedTokenLoader(args.train_files, rank, world_size, device)
        log0(f"seed:{args.seed}")

        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for warmup_step in range(args.warmup_steps):
            x, y = train_loader.next_batch(524288, args.train_seq_len)
            warmup_loss = model(x, y)
            warmup_loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(initial)
        train_loader = DistributedTokenLoader(args.train_files, rank, world_size, device)

        max_wallclock_ms = 1000.0 * args.max_wallclock_seconds
        training_time_ms = 0.0
        t0 = time.perf_counter()
        step = 0
        stop_after_step = None
        while True:
            last_step = step == args.iterations or (stop_after_step is not None and step >= stop_after_step)
            if last_step or (args.val_loss_every > 0 and step % args.val_loss_every == 0):
                training_time_ms += 1000.0 * (time.perf_counter() - t0)
                val_loss, val_bpb = eval_val(args, model, device, val_tokens)
                log0(f"step:{step}/{args.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f}")
                t0 = time.perf_counter()
            if last_step:
                break
            train_loss = torch.zeros((), device=device)
            x, y = train_loader.next_batch(524288, args.train_seq_len)
            loss = model(x, y)
            train_loss += loss.detach()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            approx_ms = training_time_ms + 1000.0 * (time.perf_counter() - t0)
            if stop_after_step is None and approx_ms >= max_wallclock_ms:
                stop_after_step = step

        torch.save(model.state_dict(), "final_model.pt")
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        blob = zlib.compress(buf.getvalue(), level=9)
        with open("final_model.int8.ptz", "wb") as f:
            f.write(blob)
        log0(f"Total submission size int8+zlib: {len(blob) + len(code.encode('utf-8'))} bytes")
        with open("final_model.int8.ptz", "rb") as f:
            model.load_state_dict(torch.load(io.BytesIO(zlib.decompress(f.read()))))
        q_val_loss, q_val_bpb = eval_val(args, model, device, val_tokens)
        log0(f"final_int8_zlib_roundtrip_exact val_loss:{q_val_loss:.8f} val_bpb:{q_val_bpb:.8f}")


    if __name__ == "__main__":
        main()
    '''
)


def codes(findings: list[Finding], severity: str | None = None) -> set[str]:
    return {f.code for f in findings if severity is None or f.severity == severity}


def planted(old: str, new: str) -> str:
    assert CLEAN_SOURCE.count(old) == 1, old
    return CLEAN_SOURCE.replace(old, new)


def in_main(snippet: str) -> str:
    """The clean source with `snippet` inserted into main() before the model is built."""
    anchor = "    model = GPT(1024, 512)"
    return planted(anchor, textwrap.indent(snippet, "    ") + "\n" + anchor)


def test_clean_baseline_like_source_has_no_findings():
    findings = audit_source(CLEAN_SOURCE)
    assert findings == [], "\n".join(map(str, findings))


def test_repository_trainer_audits_clean():
    path = ROOT / "trainer" / "train_gpt.py"
    if not path.is_file():
        pytest.skip("trainer/train_gpt.py not written yet")
    findings = audit_source(path.read_text(encoding="utf-8"))
    assert not codes(findings, ERROR), "\n".join(map(str, findings))
    assert not codes(findings, "warning"), "\n".join(map(str, findings))


# ---- (a) validation data in training --------------------------------------------------------------


def test_val_glob_as_training_files():
    src = planted(
        'train_files = os.path.join(data_path, "fineweb_train_*.bin")',
        'train_files = os.path.join(data_path, "fineweb_val_*.bin")',
    )
    found = audit_source(src)
    assert "val_in_train_path" in codes(found, ERROR)
    assert any(f.line and "train_files" in f.message for f in found)


def test_val_files_fed_to_the_train_loader():
    src = planted(
        "    train_loader = DistributedTokenLoader(args.train_files, rank, world_size, device)\n\n    max_",
        "    train_loader = DistributedTokenLoader(args.val_files, rank, world_size, device)\n\n    max_",
    )
    assert "val_in_train_path" in codes(audit_source(src), ERROR)


def test_glob_matching_both_splits_used_for_training():
    src = planted(
        'train_files = os.path.join(data_path, "fineweb_train_*.bin")',
        'train_files = os.path.join(data_path, "fineweb_*.bin")',
    )
    found = audit_source(src)
    assert "val_in_train_path" in codes(found, ERROR)
    assert "shard_glob_includes_val" in codes(found)


def test_val_tokens_fed_to_the_optimizer_in_the_training_loop():
    src = planted(
        "        x, y = train_loader.next_batch(524288, args.train_seq_len)\n        loss = model(x, y)",
        "        chunk = val_tokens[step * 1024 : (step + 1) * 1024 + 1]\n"
        "        x, y = chunk[:-1].reshape(1, -1), chunk[1:].reshape(1, -1)\n"
        "        loss = model(x, y)",
    )
    found = audit_source(src)
    assert "val_used_for_training" in codes(found, ERROR), "\n".join(map(str, found))


def test_compile_warmup_on_val_tokens_is_training_on_val():
    src = planted(
        "        x, y = train_loader.next_batch(524288, args.train_seq_len)\n        warmup_loss",
        "        x, y = val_tokens[:1024].reshape(1, -1), val_tokens[1:1025].reshape(1, -1)\n        warmup_loss",
    )
    assert "val_used_for_training" in codes(audit_source(src), ERROR)


def test_prequant_ttt_helper_called_on_val_is_caught_at_the_call_site():
    src = CLEAN_SOURCE.replace(
        "def main() -> None:",
        textwrap.dedent(
            """
            def finetune(model, tokens, epochs):
                opt = torch.optim.SGD(model.parameters(), lr=1e-3)
                for epoch in range(epochs):
                    for i in range(0, tokens.numel() - 1025, 1024):
                        seg = tokens[i : i + 1025]
                        loss = model(seg[:-1].reshape(1, -1), seg[1:].reshape(1, -1))
                        loss.backward()
                        opt.step()
                        opt.zero_grad()


            def main() -> None:"""
        ).lstrip("\n"),
    ).replace(
        '    torch.save(model.state_dict(), "final_model.pt")',
        '    finetune(model, val_tokens, 3)\n    torch.save(model.state_dict(), "final_model.pt")',
    )
    found = [f for f in audit_source(src) if f.code == "val_used_for_training"]
    assert found and "finetune" in found[0].message
    assert all("loss.backward" not in f.message for f in found)  # reported where val data enters


def test_calibration_on_val_tokens():
    src = planted(
        '    torch.save(model.state_dict(), "final_model.pt")',
        "    hessians = collect_hessians(model, val_tokens[: 65536])\n"
        '    torch.save(model.state_dict(), "final_model.pt")',
    )
    assert "val_used_for_calibration" in codes(audit_source(src), ERROR)


# ---- (b) network, (c) processes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "snippet, code",
    [
        ("import socket", "network_import"),
        ("import socket as s2", "network_import"),
        ("from socket import create_connection", "network_import"),
        ("import urllib.request", "network_import"),
        ("from urllib import request", "network_import"),
        ("import requests", "network_import"),
        ("import http.client", "network_import"),
        ("from huggingface_hub import hf_hub_download", "network_import"),
        ("import httpx, aiohttp", "network_import"),
        ("import ftplib", "network_import"),
        ("import smtplib", "network_import"),
        ("import websocket", "network_import"),
        ("sock = __import__('socket')", "network_import"),
        ("import importlib\nm = importlib.import_module('requests')", "network_import"),
    ],
)
def test_network_imports(snippet, code):
    found = audit_source(planted("import uuid\n", f"import uuid\n{snippet}\n"))
    assert code in codes(found, ERROR)


def test_network_capable_libraries_warn_and_urllib_parse_is_fine():
    found = audit_source(planted("import uuid\n", "import uuid\nimport datasets\nfrom urllib.parse import urljoin\n"))
    assert codes(found) == {"network_capable_import"}
    assert all(f.severity == "warning" for f in found)


@pytest.mark.parametrize(
    "snippet, code",
    [
        ("os.system('curl http://example.com')", "shell_exec"),
        ("os.popen('ls')", "shell_exec"),
        ("os.execv('/bin/sh', ['sh'])", "shell_exec"),
        ("import pty\npty.spawn('/bin/sh')", "shell_exec"),
        ("from os import system as run_it\nrun_it('ls')", "shell_exec"),
        ("getattr(os, 'system')('ls')", "shell_exec"),
        ("subprocess.run('nvidia-smi', shell=True)", "subprocess_call"),
        ("subprocess.run(['bash', '-c', 'ls'])", "subprocess_call"),
        ("subprocess.check_output(['curl', 'x'])", "subprocess_call"),
        ("subprocess.Popen(['python', 'other.py'])", "subprocess_call"),
    ],
)
def test_process_spawning(snippet, code):
    src = in_main(snippet)
    assert code in codes(audit_source(src), ERROR)


def test_nvidia_smi_variants_and_process_pools_warn():
    src = in_main(
        "subprocess.check_output(['nvidia-smi', '-L'])\nimport multiprocessing\n"
        "multiprocessing.Process(target=print).start()"
    )
    found = audit_source(src)
    assert codes(found) == {"subprocess_nvidia_smi_variant", "process_spawn"}
    assert not codes(found, ERROR)


# ---- (d) clock, (e) environment ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "snippet",
    [
        "time.time = lambda: 0.0",
        "time.perf_counter = lambda: 0.0",
        "import time as tm\ntm.monotonic = lambda: 0.0",
        "setattr(time, 'perf_counter', lambda: 0.0)",
        "from unittest import mock\nmock.patch('time.perf_counter', return_value=0.0).start()",
    ],
)
def test_clock_monkeypatching(snippet):
    found = audit_source(planted("import uuid\n", f"import uuid\n{snippet}\n"))
    assert "clock_monkeypatch" in codes(found, ERROR)


def test_rebinding_an_imported_clock_function():
    src = "from time import perf_counter\nperf_counter = lambda: 0.0\nt0 = perf_counter()\n"
    assert "clock_monkeypatch" in codes(audit_source(src), ERROR)


@pytest.mark.parametrize(
    "snippet, code, severity",
    [
        ("os.environ['MAX_WALLCLOCK_SECONDS'] = '100000'", "clock_env_write", ERROR),
        ("os.environ.update(MAX_WALLCLOCK_SECONDS='9999')", "clock_env_write", ERROR),
        ("os.putenv('GPTQ_RESERVE_SECONDS', '0')", "clock_env_write", ERROR),
        ("import signal\nsignal.alarm(10)", "signal_timer", ERROR),
        ("import signal\nsignal.setitimer(signal.ITIMER_REAL, 5.0)", "signal_timer", ERROR),
        ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)", "signal_ignore", ERROR),
        ("import signal\nsignal.signal(signal.SIGTERM, lambda *a: None)", "signal_handler", "warning"),
        ("args.max_wallclock_seconds = 100000", "wallclock_override", "warning"),
        ("key = os.environ.get('OPENAI_API_KEY')", "secret_env_read", ERROR),
        ("key = os.getenv('HF_TOKEN')", "secret_env_read", ERROR),
        ("key = os.environ['AWS_SECRET_ACCESS_KEY']", "secret_env_read", ERROR),
        ("has = 'GITHUB_TOKEN' in os.environ", "secret_env_read", ERROR),
        ("env = dict(os.environ)", "env_enumeration", "warning"),
        ("print(os.environ.items())", "env_enumeration", "warning"),
        ("open('/etc/passwd', 'w').write('x')", "write_outside_workdir", ERROR),
        ("open('../outside.txt', 'a')", "write_outside_workdir", ERROR),
        ("open('~/.bashrc', mode='w')", "write_outside_workdir", ERROR),
        ("Path('/root/stash.bin').write_bytes(b'x')", "write_outside_workdir", ERROR),
        ("torch.save(model.state_dict(), '/mnt/shared/model.pt')", "write_outside_workdir", ERROR),
        ("torch.save(model.state_dict(), f'/mnt/{args.run_id}.pt')", "write_outside_workdir", ERROR),
        ("os.makedirs(os.path.join('..', 'x'))", "write_outside_workdir", ERROR),
        ("open('/tmp/scratch.txt', 'w')", "write_to_tmp", "warning"),
    ],
)
def test_clock_env_and_filesystem_tampering(snippet, code, severity):
    src = in_main(snippet)
    found = [f for f in audit_source(src) if f.code == code]
    assert found and found[0].severity == severity, "\n".join(map(str, audit_source(src)))


def test_benign_env_and_file_use_is_not_flagged():
    src = in_main(
        "os.environ['NCCL_DEBUG'] = 'WARN'\n"
        "tok = os.environ.get('TOKENIZER_PATH', './data/tokenizers/fineweb_1024_bpe.model')\n"
        "n = int(os.environ.get('TRAIN_BATCH_TOKENS', 524288))\n"
        "open('/dev/null', 'w').close()\n"
        "data = open('/etc/hostname').read()"
    )
    assert audit_source(src) == []


# ---- (f) test-time training -----------------------------------------------------------------------

TTT_TEMPLATE = textwrap.dedent(
    """
    import torch


    def eval_val_ttt(model, val_tokens, chunk_len, epochs, lr):
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        loss_sum = 0.0
        token_count = 0
        num_chunks = (val_tokens.numel() - 1) // chunk_len
        for ci in range(num_chunks):
            chunk = val_tokens[ci * chunk_len : (ci + 1) * chunk_len + 1]
            x, y = chunk[:-1].reshape(1, -1), chunk[1:].reshape(1, -1)
    {body}
        return loss_sum / max(token_count, 1)
    """
)
SCORE = textwrap.indent(
    "with torch.no_grad():\n    loss_sum += model(x, y).item() * y.numel()\n    token_count += y.numel()\n", " " * 8
)
ADAPT = textwrap.indent(
    "for _epoch in range(epochs):\n    loss = model(x, y)\n    loss.backward()\n    optimizer.step()\n"
    "    optimizer.zero_grad()\n",
    " " * 8,
)


def ttt(body: str) -> list[Finding]:
    return audit_source(TTT_TEMPLATE.format(body=body))


def test_score_first_ttt_is_legal():
    assert ttt(SCORE + ADAPT) == []


def test_ttt_that_adapts_before_scoring():
    found = ttt(ADAPT + SCORE)
    assert codes(found) == {"ttt_adapt_before_score"}
    assert "loss.backward()" in found[0].message


def test_ttt_that_rescores_after_adapting():
    assert "ttt_rescore" in codes(ttt(SCORE + ADAPT + SCORE), ERROR)


def test_multi_epoch_ttt_scoring_every_pass():
    src = textwrap.dedent(
        """
        import torch

        def eval_ttt(model, val_tokens, chunk_len, epochs):
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            nll_sum = 0.0
            for epoch in range(epochs):
                for ci in range((val_tokens.numel() - 1) // chunk_len):
                    chunk = val_tokens[ci * chunk_len : (ci + 1) * chunk_len + 1]
                    with torch.no_grad():
                        nll_sum += model(chunk[:-1], chunk[1:]).item()
                    loss = model(chunk[:-1], chunk[1:])
                    loss.backward()
                    opt.step()
            return nll_sum
        """
    )
    assert "ttt_rescore" in codes(audit_source(src), ERROR)


def test_ttt_adapting_through_a_helper_before_scoring():
    src = textwrap.dedent(
        """
        import torch

        def ttt_step(model, opt, inputs, targets):
            loss = model(inputs, targets)
            loss.backward()
            opt.step()
            opt.zero_grad()

        def eval_ttt(model, val_tokens, n):
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            bpb_total = 0.0
            for x, y in iterate_chunks(val_tokens, n):
                ttt_step(model, opt, x, y)
                with torch.no_grad():
                    bpb_total += model(x, y).item()
            return bpb_total
        """
    )
    found = audit_source(src)
    assert codes(found) == {"ttt_adapt_before_score"}, "\n".join(map(str, found))
    legal = src.replace(
        "        ttt_step(model, opt, x, y)\n        with torch.no_grad():\n"
        "            bpb_total += model(x, y).item()",
        "        with torch.no_grad():\n            bpb_total += model(x, y).item()\n"
        "        ttt_step(model, opt, x, y)",
    )
    assert legal != src and audit_source(legal) == []


def test_while_loop_ttt_reading_chunks_by_position():
    src = textwrap.dedent(
        """
        def eval_ttt(model, opt, val_tokens, n):
            pos = 0
            loss_total = 0.0
            while pos + n < val_tokens.numel():
                seg = val_tokens[pos : pos + n + 1]
                model(seg[:-1], seg[1:]).backward()
                opt.step()
                loss_total += float(model(seg[:-1], seg[1:]))
                pos += n
            return loss_total
        """
    )
    assert codes(audit_source(src)) == {"ttt_adapt_before_score"}


def test_adapting_on_the_previous_chunk_carried_over_is_legal():
    src = textwrap.dedent(
        """
        import torch

        def eval_ttt(model, opt, val_tokens, n):
            prev = None
            loss_sum = 0.0
            for ci in range((val_tokens.numel() - 1) // n):
                chunk = val_tokens[ci * n : (ci + 1) * n + 1]
                if prev is not None:
                    model(prev[:-1], prev[1:]).backward()
                    opt.step()
                with torch.no_grad():
                    loss_sum += model(chunk[:-1], chunk[1:]).item()
                prev = chunk
            return loss_sum
        """
    )
    assert audit_source(src) == []


def test_ttt_main_calls_legal_ttt_eval_function_without_false_positive():
    ttt_fn = TTT_TEMPLATE.format(body=SCORE + ADAPT).replace("import torch\n", "")
    src = CLEAN_SOURCE.replace("def main() -> None:", ttt_fn + "\n\ndef main() -> None:").replace(
        "    q_val_loss, q_val_bpb = eval_val(args, model, device, val_tokens)",
        "    q_val_loss, q_val_bpb = eval_val(args, model, device, val_tokens)\n"
        "    ttt_loss = eval_val_ttt(model, val_tokens, 32768, 3, 0.002)",
    )
    assert "eval_val_ttt(model, val_tokens" in src
    assert audit_source(src) == []


# Closures: a nested function sees the validation data of the function around it without being passed it.
# The repository trainer with the catalog's score-first TTT technique applied, then a closure planted in its
# chunk loop that adapts on the chunk it captures (`ahead`, not a val-looking name).
TTT_SCORE_LINE = "        with torch.no_grad():  # 1) score the chunk\n"
TTT_ADAPT_LINE = "        lo = c * TTT_CHUNK_TOKENS\n"
PEEK_CLOSURE = (
    "        ahead = val_tokens[c * TTT_CHUNK_TOKENS : (c + 1) * TTT_CHUNK_TOKENS + 1].to(device).long()\n"
    "\n"
    "        def peek():\n"
    "            base_model(ahead[None, :-1], ahead[None, 1:]).backward()\n"
    "            opt.step()\n"
    "            opt.zero_grad(set_to_none=True)\n"
    "\n"
)


def trainer_with_score_first_ttt() -> str:
    from agents.patches import apply_patch
    from search_space.techniques import combined_patch, load_catalog
    from trainer import BASELINE_PATH

    base = BASELINE_PATH.read_text(encoding="utf-8")
    technique = next(t for t in load_catalog() if t.name == "score_first_ttt")
    src = apply_patch(base, combined_patch([technique], base))
    assert src.count(TTT_SCORE_LINE) == 1 and src.count(TTT_ADAPT_LINE) == 1
    return src


def test_catalog_score_first_ttt_on_the_real_trainer_passes():
    found = audit_source(trainer_with_score_first_ttt())
    assert found == [], "\n".join(map(str, found))


def test_closure_adapting_on_a_captured_val_chunk_before_scoring_is_caught():
    src = trainer_with_score_first_ttt()
    early = src.replace(TTT_SCORE_LINE, PEEK_CLOSURE + "        peek()\n" + TTT_SCORE_LINE)
    found = audit_source(early)
    assert codes(found) == {"ttt_adapt_before_score"}, "\n".join(map(str, found))
    assert "peek(" in found[0].message
    assert early.splitlines()[found[0].line - 1].strip() == "peek()"
    # the same closure run after the chunk is scored is score-first TTT, and passes
    late = src.replace(TTT_SCORE_LINE, PEEK_CLOSURE + TTT_SCORE_LINE).replace(
        TTT_ADAPT_LINE, "        peek()\n" + TTT_ADAPT_LINE
    )
    assert audit_source(late) == []
    # handed to the optimizer as a closure instead of called: the same verdict
    handed = early.replace("        peek()\n", "        opt.step(peek)\n")
    assert codes(audit_source(handed)) == {"ttt_adapt_before_score"}


def test_nested_function_training_on_the_val_tensor_it_captures_is_caught():
    # main() loads `val` (built from val_files); its nested score_artifact() reads it without a parameter
    base = (ROOT / "trainer" / "train_gpt.py").read_text(encoding="utf-8")
    anchor = "        sync()\n        t = time.perf_counter()\n        vl, vb = eval_val(compiled, val,"
    assert base.count(anchor) == 1
    planted_src = base.replace(
        anchor,
        "        for i in range(0, 4 * L, L):\n"
        "            chunk = val[i : i + L + 1].to(device).long()\n"
        "            base_model(chunk[None, :-1], chunk[None, 1:]).backward()\n" + anchor,
    )
    found = audit_source(planted_src)
    assert codes(found) == {"val_used_for_training"}, "\n".join(map(str, found))
    assert "score_artifact(" in found[0].message


# ---- (g) exec / self-extracting wrappers ------------------------------------------------------------


def lzma_b85_wrapper(inner: str) -> str:
    payload = lzma.compress(inner.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    encoded = base64.b85encode(payload).decode()
    return (
        "import lzma as L,base64 as B\n"
        f'exec(L.decompress(B.b85decode("{encoded}"),format=L.FORMAT_RAW,filters=[{{"id":L.FILTER_LZMA2}}]))\n'
    )


def test_lzma_base85_wrapper_of_a_clean_source_passes_with_info():
    found = audit_source(lzma_b85_wrapper(CLEAN_SOURCE))
    assert codes(found) == {"wrapped_source"} and found[0].severity == "info"


def test_lzma_base85_wrapper_hiding_a_socket_is_caught():
    evil = planted("import uuid\n", "import uuid\nimport socket\n")
    found = audit_source(lzma_b85_wrapper(evil))
    net = [f for f in found if f.code == "network_import"]
    assert net and net[0].severity == ERROR and "[payload line" in net[0].message


def test_other_wrapper_codecs_and_nesting():
    inner = "import socket\n"
    zb64 = base64.b64encode(zlib.compress(inner.encode())).decode()
    src = f"import zlib, base64\nexec(zlib.decompress(base64.b64decode('{zb64}')).decode())\n"
    assert "network_import" in codes(audit_source(src), ERROR)
    payload_var = f"import zlib as Z, base64\nP = '{zb64}'\nexec(Z.decompress(base64.b64decode(P)))\n"
    assert "network_import" in codes(audit_source(payload_var), ERROR)
    nested = lzma_b85_wrapper(lzma_b85_wrapper("import os\nos.system('id')\n"))
    assert "shell_exec" in codes(audit_source(nested), ERROR)
    assert "network_import" in codes(audit_source("exec('import socket')"), ERROR)


def test_unauditable_exec_warns():
    found = audit_source("import base64\ncode = fetch_code()\nexec(base64.b64decode(code))\n")
    assert codes(found) == {"unauditable_exec"}
    garbage = "import lzma, base64\nexec(lzma.decompress(base64.b85decode('abcdefgh')))\n"
    assert "unauditable_exec" in codes(audit_source(garbage))


def test_decompression_bomb_is_not_expanded():
    bomb = base64.b85encode(lzma.compress(b"#" * 20_000_000)).decode()
    found = audit_source(f"import lzma, base64\nexec(lzma.decompress(base64.b85decode('{bomb}')))\n")
    assert codes(found) == {"unauditable_exec"} and "expands beyond" in found[0].message


# ---- robustness ------------------------------------------------------------------------------------


def test_unparseable_source_is_a_finding():
    found = audit_source("def broken(:\n    pass\n")
    assert codes(found) == {"unparseable_source"} and found[0].line == 1
    assert codes(audit_source("x = 1\0")) == {"unparseable_source"}
    assert codes(audit_source("(" * 10_000)) == {"unparseable_source"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_audit_source_never_raises_on_arbitrary_text(text):
    findings = audit_source(text)
    assert isinstance(findings, list) and all(isinstance(f, Finding) for f in findings)


_python_lines = st.lists(
    st.sampled_from(
        [
            "import os", "import socket", "x = val_tokens[0:10]", "for i in range(3):", "    loss = model(x)",
            "    loss.backward()", "    loss_sum += loss.item()", "while True:", "    break", "def f(a, b):",
            "    return a", "exec(compile('1', 'x', 'eval'))", "with torch.no_grad():", "    pass",
            "train_files = val_files", "os.environ['A'] = 'B'", "if x:", "else:", "time.time = f",
            "class C:", "    y = 1", "    def m(self, val_x):", "        self.val_x.backward()",
        ]
    ),
    max_size=25,
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_python_lines)
def test_audit_source_never_raises_on_python_like_text(lines):
    findings = audit_source("\n".join(lines) + "\n")
    assert all(isinstance(f, Finding) and f.severity in ("error", "warning", "info") for f in findings)
    assert "audit_check_failed" not in {f.code for f in findings}


def test_library_timeouts_in_env_are_not_clock_knobs():
    assert (
        audit_source(in_main("os.environ['NCCL_TIMEOUT'] = '1800'\nos.environ['TORCH_NCCL_BLOCKING_WAIT'] = '1'")) == []
    )


def test_val_batches_loop_training_is_caught():
    src = textwrap.dedent(
        """
        def train(model, opt, val_batches):
            for x, y in val_batches:
                loss = model(x, y)
                loss.backward()
                opt.step()
        train(model, opt, val_batches)
        """
    )
    assert "val_used_for_training" in codes(audit_source(src), ERROR)
