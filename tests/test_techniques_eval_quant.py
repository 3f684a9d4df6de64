"""The eval, optimizer and quantization techniques, checked inside their patched trainer (imported with importlib).

What the generic suite (test_techniques.py) cannot see from the outside: score-first TTT scores every target once,
trains only on targets already scored, never on the last chunk, and a target's score does not depend on anything
after its chunk; with a zero learning rate it is exactly the plain evaluation. The int6 export stores matrices on the
int6 grid and the embedding on int8; GPTQ-lite keeps the per-row clip with the least error; QAT's forward sits on
the export's grid with a straight-through gradient; Muon weight decay shrinks by exactly lr x MUON_WD per step.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from agents.patches import apply_patch
from search_space.techniques import closure, combined_patch, load_catalog
from trainer import BASELINE_PATH

_counter = itertools.count()


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """load(*names) -> the trainer module with those techniques (and their requirements) applied."""
    cache: dict[tuple[str, ...], object] = {}
    folder = tmp_path_factory.mktemp("patched")
    base = BASELINE_PATH.read_text(encoding="utf-8")

    def _load(*names: str):
        if names not in cache:
            path = folder / f"train_gpt_{next(_counter)}.py"
            path.write_text(apply_patch(base, combined_patch(closure(names, load_catalog()), base)), encoding="utf-8")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            cache[names] = module
        return cache[names]

    return _load


def tiny_gpt(tg, vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    h = SimpleNamespace(vocab_size=vocab, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2,
                        tie_embeddings=True, tied_embed_init_std=0.05, rope_base=10000.0, logit_softcap=30.0,
                        qk_gain_init=1.5)
    return tg.GPT(h)


# ---------------------------------------------------------------------------------------------- score-first TTT

SEQ, CHUNK, N_TARGETS, SHIFT = 32, 128, 512, 1024  # 4 chunks of 4 sequences; token = position (+SHIFT if perturbed)


class Spy:
    """Wraps the model: records, per call, whether it trained (grad enabled) and which target positions it covers.
    Inputs are token ids equal to their positions (SHIFT added in a perturbed tail), so positions can be read back."""

    def __init__(self, model, seq_len: int, stride: int):
        self.model, self.seq_len, self.stride = model, seq_len, stride
        self.events: list[tuple[str, list[int]]] = []
        self.scores: dict[int, float] = {}

    def __call__(self, x, y):
        loss = self.model(x, y)
        pos = x % SHIFT
        if torch.is_grad_enabled():
            self.events.append(("train", sorted(pos.flatten().tolist())))
        else:
            scored = []
            for row in range(x.size(0)):
                ws = int(pos[row, 0])
                first = 0 if ws == 0 else self.seq_len - self.stride
                for j in range(first, self.seq_len):
                    if ws + j < N_TARGETS:
                        scored.append(ws + j)
                        self.scores[ws + j] = float(loss[row, j])
            self.events.append(("score", scored))
        return loss


def run_ttt(tg, stride: int, lr: float, tail_shift: bool = False, chunk: int = CHUNK, epochs: int = 2):
    val = torch.arange(N_TARGETS + 1, dtype=torch.int32)
    if tail_shift:  # a different last chunk: everything from target 3 * CHUNK on
        val[3 * CHUNK + 1 :] += SHIFT
    vocab = 2 * SHIFT
    luts = (torch.ones(vocab, dtype=torch.int16), torch.zeros(vocab, dtype=torch.bool),
            torch.zeros(vocab, dtype=torch.bool))
    model = tiny_gpt(tg, vocab)
    spy = Spy(model, SEQ, stride)
    saved = (tg.TTT_LR, tg.TTT_CHUNK_TOKENS, tg.TTT_EPOCHS, tg.TTT_BATCH_SEQS)
    tg.TTT_LR, tg.TTT_CHUNK_TOKENS, tg.TTT_EPOCHS, tg.TTT_BATCH_SEQS = lr, chunk, epochs, 4
    try:
        out = tg.eval_val_ttt(model, spy, val, luts, SEQ, stride, 8, 0, 1, torch.device("cpu"))
    finally:
        tg.TTT_LR, tg.TTT_CHUNK_TOKENS, tg.TTT_EPOCHS, tg.TTT_BATCH_SEQS = saved
    plain = tg.eval_val(tiny_gpt(tg, vocab), val, luts, SEQ, stride, 8, 0, 1, torch.device("cpu"))
    return out, plain, spy


@pytest.mark.parametrize("stride", [SEQ, 16])
def test_ttt_scores_each_target_once_before_training_on_it_and_never_trains_on_the_last_chunk(load, stride):
    (loss, bpb), _, spy = run_ttt(load("score_first_ttt"), stride, lr=0.05)
    scored: set[int] = set()
    trained_chunks = set()
    for kind, positions in spy.events:
        if kind == "score":
            assert not scored & set(positions), "a target scored twice"
            scored |= set(positions)
        else:
            assert set(positions) <= scored, "trained on targets not scored yet"
            assert max(positions) < 3 * CHUNK, "trained on the last chunk"
            trained_chunks.add(min(positions) // CHUNK)
    assert scored == set(range(N_TARGETS))
    assert trained_chunks == {0, 1, 2}
    assert sum(kind == "train" for kind, _ in spy.events) == 3 * 2 * (CHUNK // SEQ // 4)  # chunks x epochs x steps
    assert math.isfinite(loss) and bpb == pytest.approx(loss / math.log(2))  # 1 byte per token here


@pytest.mark.parametrize("stride", [SEQ, 16])
def test_a_targets_ttt_score_does_not_depend_on_later_chunks(load, stride):
    tg = load("score_first_ttt")
    _, _, a = run_ttt(tg, stride, lr=0.05)
    _, _, b = run_ttt(tg, stride, lr=0.05, tail_shift=True)
    early = [p for p in range(3 * CHUNK)]
    assert [a.scores[p] for p in early] == [b.scores[p] for p in early]
    assert any(a.scores[p] != b.scores[p] for p in range(3 * CHUNK, N_TARGETS))


def test_ttt_with_zero_lr_or_one_chunk_is_the_plain_evaluation_and_adapts_otherwise(load):
    tg = load("score_first_ttt")
    (loss0, bpb0), (loss_plain, bpb_plain), _ = run_ttt(tg, 16, lr=0.0)
    assert loss0 == pytest.approx(loss_plain, rel=1e-9) and bpb0 == pytest.approx(bpb_plain, rel=1e-9)
    (loss1, _), _, spy = run_ttt(tg, 16, lr=0.05, chunk=4 * N_TARGETS)
    assert loss1 == pytest.approx(loss_plain, rel=1e-9) and all(kind == "score" for kind, _ in spy.events)
    (loss2, _), _, _ = run_ttt(tg, 16, lr=0.05)
    assert loss2 != pytest.approx(loss_plain, rel=1e-6)


# ---------------------------------------------------------------------------------------------- quantization


def trained_like_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows whose max is well above 31/127, so the int6 grid (not the 1/127 floor) decides; heavy-tailed matrix."""
    g = torch.Generator().manual_seed(seed)
    heavy = torch.distributions.StudentT(3.0).sample((512, 256)) * 0.2
    return {"blocks.0.mlp.fc.weight": heavy, "tok_emb.weight": torch.randn(1024, 128, generator=g) * 0.5,
            "blocks.0.attn_scale": torch.ones(256)}


def grid_error(rows: torch.Tensor, clip: torch.Tensor, qmax: int) -> torch.Tensor:
    scale = (clip / qmax).clamp(min=1 / 127).half().float()[:, None]
    deq = (rows.clamp(-clip[:, None], clip[:, None]) / scale).round().clamp(-qmax, qmax) * scale
    return (rows - deq).square().sum(dim=1)


def test_int6_export_puts_matrices_on_the_int6_grid_and_keeps_the_embedding_int8(load):
    tg = load("int6_zstd_export")
    state = trained_like_state()
    quant = tg.quantize_int8(state, ("attn_scale",))
    q_mat, q_emb = quant["quantized"]["blocks.0.mlp.fc.weight"], quant["quantized"]["tok_emb.weight"]
    assert int(q_mat.abs().max()) == 31 and int(q_emb.abs().max()) == 127
    assert "blocks.0.attn_scale" in quant["passthrough"]
    back = tg.dequantize_int8(quant)
    scale = quant["scales"]["blocks.0.mlp.fc.weight"].float()[:, None]
    unclipped = state["blocks.0.mlp.fc.weight"].abs() < 31 * scale
    err = (back["blocks.0.mlp.fc.weight"] - state["blocks.0.mlp.fc.weight"]).abs()
    assert bool((err[unclipped] <= scale.expand_as(err)[unclipped] / 2 + 1e-6).all())
    buf = io.BytesIO()
    torch.save(quant, buf)
    blob = tg.zstandard.ZstdCompressor(level=tg.ZSTD_LEVEL).compress(buf.getvalue())
    again = torch.load(io.BytesIO(tg.zstandard.ZstdDecompressor().decompress(blob)))
    assert torch.equal(again["quantized"]["blocks.0.mlp.fc.weight"], q_mat)


def test_gptq_lite_keeps_the_least_error_clip_per_row(load):
    tg = load("gptq_lite")
    rows = trained_like_state()["blocks.0.mlp.fc.weight"]
    chosen = tg.gptq_lite_clip(rows, 31)
    best = grid_error(rows, chosen, 31)
    a = rows.abs()
    for q in tg.GPTQ_LITE_QUANTILES:
        clip = torch.quantile(a, q, dim=1) if q < 1 else a.amax(dim=1)
        assert bool((best <= grid_error(rows, clip, 31) + 1e-9).all())
    row_max = grid_error(rows, a.amax(dim=1), 31)
    assert best.sum() < 0.99 * row_max.sum()  # heavy tails: clipping below the row max pays on the int6 grid
    quant = tg.quantize_int8({"w": rows}, ())
    deq = tg.dequantize_int8(quant)["w"]
    assert float((deq - rows).square().sum()) == pytest.approx(float(best.sum()), rel=1e-4)


def test_qat_forward_sits_on_the_int6_grid_with_a_straight_through_gradient(load):
    tg = load("qat_int6")
    torch.manual_seed(0)
    layer = tg.CastedLinear(256, 512)
    with torch.no_grad():
        layer.weight.mul_(20)  # rows well above the 1/127 floor
    x = torch.randn(8, 256)
    plain = layer(x)
    plain.square().sum().backward()
    g_plain = layer.weight.grad.clone()
    layer.weight.grad = None
    tg.CastedLinear.qat = True
    try:
        out = layer(x)
        out.square().sum().backward()
    finally:
        tg.CastedLinear.qat = False
    w = layer.weight.detach()
    scale = (w.abs().amax(dim=1, keepdim=True) / 31).clamp(min=1 / 127)
    wq = (w / scale).round().clamp(-31, 31) * scale
    assert torch.allclose(out, F.linear(x, wq), atol=1e-4) and not torch.allclose(out, plain, atol=1e-3)
    assert torch.allclose(layer.weight.grad, 2 * (out.detach().T @ x), rtol=1e-4, atol=1e-3)  # STE: d/dw as if plain
    assert g_plain.shape == layer.weight.grad.shape
    small = tg.CastedLinear(64, 64)  # 4,096 elements: kept float by the export, so never fake-quantized
    tg.CastedLinear.qat = True
    try:
        assert torch.equal(small(x[:, :64]), F.linear(x[:, :64], small.weight))
    finally:
        tg.CastedLinear.qat = False


def test_muon_weight_decay_shrinks_by_lr_times_wd_per_step(load):
    tg = load("muon_weight_decay")
    p = torch.nn.Parameter(torch.randn(16, 8))
    p0 = p.detach().clone()
    opt = tg.Muon([p], lr=0.04, momentum=0.95, steps=5, orth=tg.newton_schulz)
    p.grad = torch.zeros_like(p)  # a zero update: only the decay moves the weights
    opt.step()
    assert tg.Muon.weight_decay == 0.04
    assert torch.allclose(p.detach(), p0 * (1 - 0.04 * 0.04), atol=1e-7)


def test_the_patched_trainers_still_import_together(load):
    names = ("score_first_ttt", "gptq_lite", "qat_int6", "muon_weight_decay", "ema_weights", "warmdown_schedule",
             "sliding_window_eval", "long_context_seq2048")
    tg = load(*names)
    assert callable(tg.eval_val_ttt) and callable(tg.gptq_lite_clip) and tg.Hyperparameters.eval_stride in (0, 64)
    assert Path(tg.__file__).is_file()


def test_gptq_rounds_on_the_given_grid_with_less_output_error_than_plain_rounding(load):
    tg = load("gptq_hessian")
    g = torch.Generator().manual_seed(0)
    mix = torch.eye(128) + 0.3 * torch.randn(128, 128, generator=g)  # correlated inputs: where GPTQ pays
    X = torch.randn(4096, 128, generator=g) @ mix
    W = torch.randn(256, 128, generator=g) * 0.5
    scale = (W.abs().amax(dim=1) / 31).clamp(min=1 / 127).half()
    Q = tg.gptq_quantize(W, X.T @ X / len(X), scale, 31)
    assert torch.equal(Q, Q.round()) and int(Q.abs().max()) <= 31
    s = scale.float()[:, None]
    rtn = (W / s).round().clamp(-31, 31)
    output_error = lambda q: float(((X @ (W - q * s).T) ** 2).mean())  # noqa: E731
    assert output_error(Q) < 0.7 * output_error(rtn)
    assert float(((W - Q * s) ** 2).mean()) > float(((W - rtn * s) ** 2).mean())  # it trades weight error for it
