"""The architecture techniques (search_space/techniques/<name>/patch.diff), checked inside the patched trainer.

What the generic technique suite cannot see from the outside: no feature crosses a BOS (bigram_hash, smear_gate),
XSA removes exactly the self-value component per KV group, partial RoPE leaves the other channels alone and stays
relative, LN scale and depth recurrence build the layer plan the records used, the loop state travels in the
artifact, every patched GPT traces with torch.compile(fullgraph=True) as the CUDA runs compile it, and all of them
together train (their new parameters really are in an optimizer) and re-score identically from the artifact.
Patched sources are imported with importlib; nothing here needs data except the last test.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from agents.patches import apply_patch, combine
from trainer import BASELINE_PATH

TECHNIQUES = Path(__file__).resolve().parents[1] / "search_space" / "techniques"
ARCH = ("vocab_sp4096", "bigram_hash", "smear_gate", "partial_rope", "ln_scale", "xsa", "mlp3x", "leaky_relu_sq",
        "depth_recurrence")
BOS = 1
_counter = itertools.count()


def patched_source(*names: str) -> str:
    base = BASELINE_PATH.read_text(encoding="utf-8")
    diff = ""
    for name in names:
        diff = combine(base, diff, (TECHNIQUES / name / "patch.diff").read_text(encoding="utf-8"))
    return apply_patch(base, diff)


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """load(*names) -> the trainer module with those techniques' patches applied (imported once per set)."""
    cache: dict[tuple[str, ...], object] = {}
    folder = tmp_path_factory.mktemp("patched")

    def _load(*names: str):
        if names not in cache:
            path = folder / f"train_gpt_{'_'.join(names) or 'baseline'}.py"
            path.write_text(patched_source(*names), encoding="utf-8")
            spec = importlib.util.spec_from_file_location(f"pgolf_arch_{next(_counter)}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            cache[names] = module
        return cache[names]

    return _load


def tiny(module, **overrides) -> SimpleNamespace:
    """The module's Hyperparameters (its defaults, technique knobs included) at a few-thousand-parameter shape."""
    h = {k: v for k, v in vars(module.Hyperparameters).items() if not k.startswith("_")}
    h.update(vocab_size=64, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)
    h.update(overrides)
    return SimpleNamespace(**h)


def tokens(batch: int = 2, length: int = 24, bos_at: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(2, 64, (batch, length), generator=g)
    idx[:, 0] = BOS
    idx[:, bos_at] = BOS
    return idx


def rewrite_before(idx: torch.Tensor, bos_at: int, seed: int = 1) -> torch.Tensor:
    """Same tokens from the BOS at `bos_at` on; different (non-BOS) tokens before it."""
    other = idx.clone()
    other[:, 1:bos_at] = torch.randint(2, 64, (idx.size(0), bos_at - 1), generator=torch.Generator().manual_seed(seed))
    assert not torch.equal(other, idx)
    return other


# ------------------------------------------------------------------------------------------------ the patches


def test_every_architecture_patch_applies_alone_and_all_combine(load):
    for name in ARCH:
        assert (TECHNIQUES / name / "technique.toml").is_file()
        compile(patched_source(name), name, "exec")
    compile(patched_source(*ARCH), "all", "exec")


# ------------------------------------------------------------------------------------------------ BOS boundaries


def test_bigram_hash_uses_the_records_xor_hash_and_never_pairs_across_a_bos(load):
    m = load("bigram_hash")
    torch.manual_seed(0)
    bh = m.BigramHash(tiny(m, bigram_vocab_size=97, bigram_dim=8))
    torch.nn.init.normal_(bh.embed.weight)  # the table starts at zero; make every bucket distinct
    seen = []
    bh.embed.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    idx = tokens()
    out = bh(idx)
    buckets, mod = seen[0], 96
    assert (buckets[:, 0] == mod).all() and (buckets[:, 10] == mod).all()  # first position, BOS position
    expect = torch.bitwise_xor(36313 * idx[:, 1:], 27191 * idx[:, :-1]) % mod
    keep = idx[:, 1:] != BOS
    assert torch.equal(buckets[:, 1:][keep], expect[keep])
    assert torch.equal(buckets[:, 11], expect[:, 10])  # (BOS, first token) is a pair inside the document

    other = rewrite_before(idx, 10)
    out2 = bh(other)
    assert torch.equal(out[:, 10:], out2[:, 10:])  # nothing before the last BOS reaches its document
    assert not torch.equal(out[:, :10], out2[:, :10])


def test_smear_gate_never_smears_across_a_bos(load):
    m = load("smear_gate")
    torch.manual_seed(0)
    sg = m.SmearGate(tiny(m, gate_window=12))
    with torch.no_grad():
        sg.lam.fill_(1.0)
        torch.nn.init.normal_(sg.gate.weight)
    idx = tokens()
    x = torch.randn(2, 24, 32)
    out = sg(x, idx)
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[:, 10], x[:, 10])  # BOS rows take nothing
    gate = torch.sigmoid(x[:, 11, :12] @ sg.gate.weight.T)
    torch.testing.assert_close(out[:, 11], x[:, 11] + gate * x[:, 10])  # the record's formula inside a document

    x2 = x.clone()
    x2[:, :10] = torch.randn(2, 10, 32)  # previous document: other embeddings and other tokens
    out2 = sg(x2, rewrite_before(idx, 10))
    assert torch.equal(out[:, 10:], out2[:, 10:])
    assert not torch.equal(out[:, :10], out2[:, :10])


def test_smear_and_bigram_start_as_the_identity(load):
    base, m = load(), load("bigram_hash", "smear_gate")
    torch.manual_seed(0)
    ref = base.GPT(tiny(base))
    torch.manual_seed(0)
    model = m.GPT(tiny(m))
    model.load_state_dict(ref.state_dict(), strict=False)
    idx = tokens()
    y = torch.roll(idx, -1, dims=1)
    torch.testing.assert_close(model(idx, y), ref(idx, y))


# ------------------------------------------------------------------------------------------------ attention


def test_xsa_removes_each_heads_own_value_direction_per_kv_group(load):
    m = load("xsa")
    torch.manual_seed(0)
    y, v = torch.randn(2, 8, 5, 16), torch.randn(2, 2, 5, 16)
    out = m.xsa(y, v)
    vr = F.normalize(v.repeat_interleave(4, dim=1), dim=-1)  # head h reads KV head h // 4, as SDPA's enable_gqa
    torch.testing.assert_close(out, y - (y * vr).sum(-1, keepdim=True) * vr)
    assert (out * vr).sum(-1).abs().max() < 1e-5

    h = tiny(m, num_layers=5, xsa_last_n=2)
    assert [b.attn.use_xsa for b in m.GPT(h).blocks] == [False, False, False, True, True]
    assert not any(b.attn.use_xsa for b in m.GPT(tiny(m, xsa_last_n=0)).blocks)
    assert all(b.attn.use_xsa for b in m.GPT(tiny(m, xsa_last_n=99)).blocks)


def test_partial_rope_rotates_only_the_first_dims_and_stays_relative(load, monkeypatch):
    base, m = load(), load("partial_rope")
    torch.manual_seed(0)
    x = torch.randn(1, 2, 12, 16)
    monkeypatch.setattr(m.Hyperparameters, "rope_dims", 0)
    torch.testing.assert_close(m.rope(x, 10000.0), base.rope(x, 10000.0))  # 0 = full RoPE, the baseline
    monkeypatch.setattr(m.Hyperparameters, "rope_dims", 6)
    out = m.rope(x, 10000.0)
    assert torch.equal(out[..., 6:], x[..., 6:])
    assert not torch.equal(out[..., :6], x[..., :6])
    q, k = torch.randn(6).expand(1, 1, 12, 6), torch.randn(6).expand(1, 1, 12, 6)
    rq, rk = m.rope(q.contiguous(), 10000.0)[0, 0], m.rope(k.contiguous(), 10000.0)[0, 0]
    dots = rq @ rk.T  # depends on the offset i - j only
    torch.testing.assert_close(torch.diagonal(dots, 3), torch.full((9,), float(dots[0, 3])))


# ------------------------------------------------------------------------------------------------ depth


def test_ln_scale_factors(load):
    m = load("ln_scale")
    assert [b.ln_s for b in m.GPT(tiny(m)).blocks] == [1 / math.sqrt(i + 1) for i in range(4)]
    assert [b.ln_s for b in m.GPT(tiny(m, ln_scale=False)).blocks] == [1.0] * 4


def test_depth_recurrence_plan_skips_and_loop_state_in_the_artifact(load):
    m = load("depth_recurrence")
    torch.manual_seed(0)
    model = m.GPT(tiny(m, num_layers=9, loop_start=3, loop_end=5, num_loops=2))
    assert model.loop_order == ([0, 1, 2, 3, 4, 5, 3], [4, 5, 3, 4, 5, 6, 7, 8])  # 15 virtual from 9 physical
    assert model.skip_weights.shape[0] == 7
    plain = m.GPT(tiny(m, num_layers=9, num_loops=0))
    assert plain.loop_order == ([0, 1, 2, 3], [4, 5, 6, 7, 8]) and plain.skip_weights.shape[0] == 4
    assert m.GPT(tiny(m, num_layers=2)).loop_order == ([0, 1], [1, 1])  # loop range clamped to the stack

    idx = tokens()
    y = torch.roll(idx, -1, dims=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # zero-init projections would make looping a no-op
        off = model(idx, y)
        model.set_looping(True)
        on = model(idx, y)
    assert not torch.equal(on, off)
    fresh = m.GPT(tiny(m, num_layers=9, loop_start=3, loop_end=5, num_loops=2))
    assert not fresh.looping_active
    fresh.load_state_dict(model.state_dict())  # what EVAL_ONLY does with the artifact
    assert fresh.looping_active
    with torch.no_grad():
        torch.testing.assert_close(fresh(idx, y), on)


# ------------------------------------------------------------------------------------------------ compile


@pytest.mark.parametrize("names", [(n,) for n in ARCH] + [ARCH], ids=[*ARCH, "all"])
def test_patched_gpt_traces_as_one_graph(load, names):
    """torch.compile(fullgraph=True) on CUDA fails on any graph break; dynamo's tracing is the same on CPU."""
    m = load(*names)
    torch._dynamo.reset()
    torch.manual_seed(0)
    h = tiny(m, rope_dims=4, num_loops=1, loop_start=1, loop_end=2)
    model = m.GPT(h)
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=False)
    idx = tokens()
    y = torch.roll(idx, -1, dims=1)
    compiled(idx, y).mean().backward()
    if hasattr(model, "set_looping"):
        model.set_looping(True)  # looping switches on mid-training: a second graph
        compiled(idx, y).mean().backward()


# ------------------------------------------------------------------------------------------------ end to end


def test_all_architecture_techniques_train_together_and_rescore_exactly(python, trainer_env, tmp_path):
    env = {**trainer_env, "ITERATIONS": "3", "MLP_MULT": "3", "ROPE_DIMS": "8", "NUM_LOOPS": "1", "LOOP_START": "0",
           "LOOP_END": "0", "ENABLE_LOOPING_AT": "0.5", "BIGRAM_VOCAB_SIZE": "512", "BIGRAM_DIM": "16", "RUN_ID": "t"}

    def run(folder: str, **extra: str) -> tuple[subprocess.CompletedProcess, Path]:
        cwd = tmp_path / folder
        cwd.mkdir(exist_ok=True)
        (cwd / "train_gpt.py").write_text(patched_source(*ARCH), encoding="utf-8")
        out = subprocess.run([python, "train_gpt.py"], env={**env, "RESULT_JSON": str(cwd / "r.json"), **extra},
                             cwd=cwd, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return out, cwd

    init, _ = run("init", ITERATIONS="0")
    trained, cwd = run("train")
    assert "layer_loop:enabled step:2 " in trained.stdout
    before = torch.load(tmp_path / "init" / "final_model.pt", map_location="cpu")
    after = torch.load(cwd / "final_model.pt", map_location="cpu")
    assert {"bigram.embed.weight", "bigram.proj.weight", "bigram.scale", "smear.gate.weight", "smear.lam"} <= set(after)
    stuck = [k for k in after if k != "loop_flag" and torch.equal(after[k], before[k])]
    assert not stuck, f"never updated (in no optimizer?): {stuck}"
    assert float(after["loop_flag"]) == 1.0 and float(before["loop_flag"]) == 0.0

    rescored, _ = run("train", EVAL_ONLY="1", RESULT_JSON=str(cwd / "eval.json"))
    score = json.loads((cwd / "r.json").read_text())["val_bpb"]
    assert abs(json.loads((cwd / "eval.json").read_text())["val_bpb"] - score) < 1e-6
