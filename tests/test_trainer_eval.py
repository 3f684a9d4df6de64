"""trainer/train_gpt.py pieces that decide the score, tested in-process: byte LUTs, shards, windows, int8 export.

The trainer is a script, not a package module: it is loaded from its path (its main() does not run on import).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import sentencepiece as spm
import torch

from trainer import BASELINE_PATH


@pytest.fixture(scope="module")
def tg():
    spec = importlib.util.spec_from_file_location("train_gpt_under_test", BASELINE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lut_bytes(luts, ids: list[int], prev: list[int]) -> int:
    base, lead, boundary = luts
    ids_t, prev_t = torch.tensor(ids), torch.tensor(prev)
    return int((base[ids_t] + (lead[ids_t] & ~boundary[prev_t])).sum())


def test_byte_luts_count_the_utf8_bytes_of_decoded_val_docs(tg, local_data):
    sp = spm.SentencePieceProcessor(model_file=str(local_data.tokenizer_path))
    luts = tg.build_luts(sp, torch.device("cpu"))
    tokens = np.concatenate([tg.load_shard(str(f)) for f in sorted(local_data.dataset_dir.glob("fineweb_val_*.bin"))])
    docs = [d.tolist() for d in np.split(tokens, np.flatnonzero(tokens == 1)) if len(d) > 1]  # each starts with BOS
    assert len(docs) > 50
    for doc in docs:
        ids = doc[1:]
        assert lut_bytes(luts, ids, doc[:-1]) == len(sp.decode(ids).encode("utf-8")), sp.decode(ids)[:80]


def test_byte_fallback_and_non_ascii_text(tg, local_data):
    sp = spm.SentencePieceProcessor(model_file=str(local_data.tokenizer_path))
    base, lead, boundary = tg.build_luts(sp, torch.device("cpu"))
    byte_ids = [i for i in range(sp.vocab_size()) if sp.is_byte(i)]
    assert len(byte_ids) == 256 and bool((base[byte_ids] == 1).all()) and not bool(lead[byte_ids].any())
    assert all(bool(boundary[i]) for i in (0, 1, 2, 3))  # pad, bos, eos, unk
    for text in ("naïve café: 東京 🦜 π≈3.14159", "x = {'ключ': \"значение\"}  # 😀"):
        ids = sp.encode(text)
        assert any(sp.is_byte(i) for i in ids)  # rare characters fall back to bytes
        assert lut_bytes((base, lead, boundary), ids, [1] + ids[:-1]) == len(sp.decode(ids).encode("utf-8"))


def test_shard_write_read_roundtrip(tg, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 65536, size=12_345, dtype=np.uint16)
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    path = tmp_path / "fineweb_train_000000.bin"
    path.write_bytes(header.tobytes() + tokens.astype("<u2").tobytes())
    assert tg.shard_tokens(str(path)) == len(tokens)
    assert np.array_equal(tg.load_shard(str(path)), tokens)
    path.write_bytes(path.read_bytes()[:-2])  # one token short of the header's count
    with pytest.raises(SystemExit) as exc:
        tg.load_shard(str(path))
    assert exc.value.code == 2


@pytest.mark.parametrize("n_windows,seq_len,stride", [(7, 16, 16), (7, 16, 4), (5, 16, 3), (3, 32, 1), (9, 8, 5)])
def test_sliding_windows_score_every_target_exactly_once(tg, n_windows, seq_len, stride):
    """A stub model whose per-token 'loss' is f(target); targets are distinct (val = 0..N), so the mean of f over
    the scored targets equals the mean over all targets only if each is scored once (checked for f = y and y^2)."""
    n = n_windows * seq_len
    val = torch.arange(n + 1, dtype=torch.int32)
    no = torch.zeros(n + 1, dtype=torch.bool)
    luts = (torch.ones(n + 1, dtype=torch.int16), no, no)
    targets = torch.arange(1, n + 1, dtype=torch.float64)
    for power in (1, 2):
        model = lambda x, y, p=power: y.double() ** p  # noqa: E731
        loss, bpb = tg.eval_val(model, val, luts, seq_len, stride, 2, 0, 1, torch.device("cpu"))
        assert loss == pytest.approx(float((targets**power).mean()), rel=1e-12)
        assert bpb == pytest.approx(loss / math.log(2))  # one byte per target


def test_int8_export_roundtrip_bounds(tg):
    gen = torch.Generator().manual_seed(0)
    state = {
        "blocks.0.mlp.fc.weight": torch.randn(512, 256, generator=gen) * 0.3,  # 131,072 elements: int8 per row
        "tok_emb.weight": (torch.randn(1024, 128, generator=gen) * 2).bfloat16(),  # int8, dtype restored
        "blocks.0.attn.c_q.weight": torch.randn(64, 64, generator=gen),  # small: fp16 passthrough
        "blocks.0.resid_mix": torch.randn(2, 64, generator=gen),  # control: fp32 passthrough
        "step_count": torch.tensor(7),  # non-float: as is
    }
    obj = tg.quantize_int8(state, ("resid_mix",))
    assert set(obj["quantized"]) == {"blocks.0.mlp.fc.weight", "tok_emb.weight"}
    assert obj["quantized"]["tok_emb.weight"].dtype == torch.int8
    assert obj["scales"]["tok_emb.weight"].dtype == torch.float16
    out = tg.dequantize_int8(obj)
    assert {k: v.dtype for k, v in out.items()} == {k: v.dtype for k, v in state.items()}
    for name in obj["quantized"]:
        w, scale = state[name].float(), obj["scales"][name].float()[:, None]
        clip = torch.quantile(w.abs(), 0.9999984, dim=1, keepdim=True)
        err = (out[name].float() - w.clamp(-clip, clip)).abs()
        slack = 1e-2 if out[name].dtype == torch.bfloat16 else 1e-6  # bf16 rounding of the restored tensor
        assert bool((err <= scale / 2 + slack * w.abs().clamp(min=1)).all()), name
    assert torch.equal(out["blocks.0.resid_mix"], state["blocks.0.resid_mix"])
    assert torch.equal(out["blocks.0.attn.c_q.weight"], state["blocks.0.attn.c_q.weight"].half().float())
    assert torch.equal(out["step_count"], state["step_count"])
