"""Parameter Golf baseline trainer: a 9x512 GPT on FineWeb sp1024 trained with Muon + Adam, exported as int8+zlib.

One self-contained script (its bytes count toward the 16 MB artifact), configured only by environment variables.
Run `python train_gpt.py`, or `torchrun --standalone --nproc_per_node=N train_gpt.py` with N dividing 8; CUDA or CPU.
The reported score is val_bpb of the de-quantized artifact ("roundtrip"); EVAL_ONLY=1 re-scores an artifact.
"""

from __future__ import annotations

import copy
import glob
import io
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

E = os.environ.get
CONTROL_DEFAULT = "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights"


class Hyperparameters:
    # data and run
    data_path = E("DATA_PATH", "./data/datasets/fineweb10B_sp1024")  # folder of fineweb_{train,val}_NNNNNN.bin shards
    tokenizer_path = E("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")  # SentencePiece model (byte LUTs)
    run_id = E("RUN_ID", str(uuid.uuid4()))  # the log goes to logs/<RUN_ID>.txt
    seed = int(E("SEED", 1337))  # torch RNG seed (model init; the data order is fixed)
    # validation and logging
    val_batch_size = int(E("VAL_BATCH_SIZE", 524_288))  # tokens per validation batch, all ranks together
    val_loss_every = int(E("VAL_LOSS_EVERY", 1000))  # validate every N steps (0 = only after the last step)
    train_log_every = int(E("TRAIN_LOG_EVERY", 200))  # log train loss every N steps (and steps 1-10)
    val_tokens = int(E("VAL_TOKENS", 0))  # score only the first N val tokens (0 = all; for CPU smoke runs)
    eval_stride = int(E("EVAL_STRIDE", 0))  # sliding-window stride of the final score in tokens (0 = disjoint windows)
    # length and batch
    iterations = int(E("ITERATIONS", 20_000))  # max optimizer steps
    warmdown_iters = int(E("WARMDOWN_ITERS", 1200))  # LR decays linearly to 0 over the last N steps (N x step ms if capped)
    warmup_steps = int(E("WARMUP_STEPS", 20))  # compile-priming steps, undone before the clock starts
    train_batch_tokens = int(E("TRAIN_BATCH_TOKENS", 524_288))  # tokens per optimizer step, all ranks: 512 seqs x 1024
    train_seq_len = int(E("TRAIN_SEQ_LEN", 1024))  # tokens per sequence, train and eval
    max_wallclock_seconds = float(E("MAX_WALLCLOCK_SECONDS", 600.0))  # training clock cap in s (<= 0: no cap)
    # model shape
    vocab_size = int(E("VOCAB_SIZE", 1024))  # must equal the tokenizer's size
    num_layers = int(E("NUM_LAYERS", 9))  # transformer blocks: first half encoder, rest decoder (U-net skips)
    model_dim = int(E("MODEL_DIM", 512))  # residual width
    num_heads = int(E("NUM_HEADS", 8))  # query heads; head_dim = MODEL_DIM / NUM_HEADS
    num_kv_heads = int(E("NUM_KV_HEADS", 4))  # key/value heads (GQA when fewer than NUM_HEADS)
    mlp_mult = int(E("MLP_MULT", 2))  # MLP hidden = MLP_MULT x MODEL_DIM
    tie_embeddings = bool(int(E("TIE_EMBEDDINGS", 1)))  # output head reuses the token embedding
    rope_base = float(E("ROPE_BASE", 10000.0))  # rotary embedding base
    logit_softcap = float(E("LOGIT_SOFTCAP", 30.0))  # logits = cap * tanh(logits / cap)
    qk_gain_init = float(E("QK_GAIN_INIT", 1.5))  # initial per-head gain on normalized queries
    # optimizer
    embed_lr = float(E("EMBED_LR", 0.6))  # Adam lr of the untied token embedding
    head_lr = float(E("HEAD_LR", 0.008))  # Adam lr of the untied output head
    tied_embed_lr = float(E("TIED_EMBED_LR", 0.05))  # Adam lr of the tied embedding
    tied_embed_init_std = float(E("TIED_EMBED_INIT_STD", 0.005))  # init std of the tied embedding
    matrix_lr = float(E("MATRIX_LR", 0.04))  # Muon lr of the 2-D block matrices
    scalar_lr = float(E("SCALAR_LR", 0.04))  # Adam lr of vectors and control tensors
    muon_momentum = float(E("MUON_MOMENTUM", 0.95))  # Muon momentum after warmup
    muon_backend_steps = int(E("MUON_BACKEND_STEPS", 5))  # Newton-Schulz iterations
    muon_momentum_warmup_start = float(E("MUON_MOMENTUM_WARMUP_START", 0.85))  # Muon momentum at step 0
    muon_momentum_warmup_steps = int(E("MUON_MOMENTUM_WARMUP_STEPS", 500))  # linear momentum warmup length in steps
    beta1 = float(E("BETA1", 0.9))  # Adam beta1
    beta2 = float(E("BETA2", 0.95))  # Adam beta2
    adam_eps = float(E("ADAM_EPS", 1e-8))  # Adam epsilon
    grad_clip_norm = float(E("GRAD_CLIP_NORM", 0.0))  # global grad-norm clip (0 = off)
    # export and evaluation
    control_patterns = tuple(E("CONTROL_TENSOR_NAME_PATTERNS", CONTROL_DEFAULT).split(","))  # Adam-trained, fp32
    keep_fp32_patterns = tuple(E("INT8_KEEP_FLOAT_FP32_NAME_PATTERNS", CONTROL_DEFAULT).split(","))  # kept fp32 in export
    artifact_path = E("ARTIFACT_PATH", "final_model.int8.ptz")  # quantized artifact, written or (EVAL_ONLY) read
    eval_only = E("EVAL_ONLY", "0") == "1"  # 1: score ARTIFACT_PATH on the val shards; no training, no train shards
    result_json = E("RESULT_JSON", "")  # write the result file here (empty = don't)
    device = E("DEVICE", "cuda" if torch.cuda.is_available() else "cpu")  # cuda or cpu
    compile = E("COMPILE", "1" if device.startswith("cuda") else "0") == "1"  # torch.compile the model and Newton-Schulz


SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256  # shard = 256 int32 header + uint16 tokens
INT8_CLIP_Q = 0.9999984  # per-row clip at the 99.99984th percentile of |w|
INT8_KEEP_MAX_NUMEL = 65_536  # float tensors this small stay float (fp16; fp32 for control tensors)


def fail(msg: str) -> None:
    """Bad input: one line on stderr, exit code 2, no traceback."""
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# -------------------------------------------------------------------------------------------------- data


def shard_tokens(path: str) -> int:
    """Check a shard's header (magic, version) and exact file size; return its token count."""
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    n = int(header[2]) if header.size == HEADER_INTS else -1
    if n < 0 or header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION or os.path.getsize(path) != 4 * HEADER_INTS + 2 * n:
        fail(f"corrupt shard {path} (bad magic/version or size != 1024 + 2*num_tokens); rebuild or re-fetch the dataset")
    return n


def load_shard(path: str) -> np.ndarray:
    return np.fromfile(path, dtype="<u2", count=shard_tokens(path), offset=4 * HEADER_INTS)


class TokenLoader:
    """Sequential stream over the sorted train shards, wrapping around. Each micro-step takes the next
    (local_tokens + 1) * world tokens; rank r keeps its contiguous span as x = span[:-1], y = span[1:]."""

    def __init__(self, files: list[str], rank: int, world: int, local_tokens: int, seq_len: int, device):
        self.files, self.rank, self.world, self.seq_len, self.device = files, rank, world, seq_len, device
        self.span = local_tokens + 1
        self.shard, self.tokens, self.pos = 0, load_shard(files[0]), 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        need, parts = self.span * self.world, []
        while need:
            if self.pos == len(self.tokens):
                self.shard = (self.shard + 1) % len(self.files)
                self.tokens, self.pos = load_shard(self.files[self.shard]), 0
            k = min(need, len(self.tokens) - self.pos)
            parts.append(self.tokens[self.pos : self.pos + k])
            self.pos, need = self.pos + k, need - k
        span = np.concatenate(parts)[self.rank * self.span : (self.rank + 1) * self.span]
        t = torch.from_numpy(span.astype(np.int64)).to(self.device, non_blocking=True)
        return t[:-1].view(-1, self.seq_len), t[1:].view(-1, self.seq_len)


# -------------------------------------------------------------------------------------------------- model


def rms(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rope(x: Tensor, base: float) -> Tensor:
    """Rotary position embedding over the full head dim; channel i pairs with channel i + head_dim/2."""
    T, D = x.size(-2), x.size(-1)
    inv_freq = base ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)
    angle = torch.outer(torch.arange(T, device=x.device, dtype=torch.float32), inv_freq)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


class CastedLinear(nn.Linear):
    """Bias-free linear with an fp32 master weight, cast to the activation dtype at matmul time (bf16 under autocast)."""

    def __init__(self, fan_in: int, fan_out: int, zero_init: bool = False):
        super().__init__(fan_in, fan_out, bias=False)
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class Attention(nn.Module):
    """Causal GQA attention with QK-norm, RoPE and a learnable per-head query gain."""

    def __init__(self, h):
        super().__init__()
        self.nh, self.nkv, self.hd, self.rope_base = h.num_heads, h.num_kv_heads, h.model_dim // h.num_heads, h.rope_base
        self.c_q = CastedLinear(h.model_dim, h.model_dim)
        self.c_k = CastedLinear(h.model_dim, self.nkv * self.hd)
        self.c_v = CastedLinear(h.model_dim, self.nkv * self.hd)
        self.proj = CastedLinear(h.model_dim, h.model_dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((self.nh,), h.qk_gain_init))

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = rope(rms(q), self.rope_base) * self.q_gain.to(q.dtype)[:, None, None]
        k = rope(rms(k), self.rope_base)
        y = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, is_causal=True, enable_gqa=self.nkv != self.nh)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.fc = CastedLinear(h.model_dim, h.mlp_mult * h.model_dim)
        self.proj = CastedLinear(h.mlp_mult * h.model_dim, h.model_dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.attn, self.mlp = Attention(h), MLP(h)
        self.attn_scale = nn.Parameter(torch.ones(h.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(h.model_dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(h.model_dim), torch.zeros(h.model_dim))))  # x, x0 weights

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms(x))


class GPT(nn.Module):
    """Embedding -> RMSNorm (= x0) -> encoder blocks (outputs pushed) -> decoder blocks (popped skips added with
    skip_weights) -> RMSNorm -> tied head -> softcapped logits. forward returns the per-token loss (B, T) in fp32."""

    def __init__(self, h):
        super().__init__()
        self.softcap, self.n_enc = h.logit_softcap, h.num_layers // 2
        self.tok_emb = nn.Embedding(h.vocab_size, h.model_dim)
        self.blocks = nn.ModuleList(Block(h) for _ in range(h.num_layers))
        self.skip_weights = nn.Parameter(torch.ones(min(self.n_enc, h.num_layers - self.n_enc), h.model_dim))
        self.lm_head = None if h.tie_embeddings else CastedLinear(h.model_dim, h.vocab_size, zero_init=True)
        if h.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, std=h.tied_embed_init_std)

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        x = x0 = rms(self.tok_emb(idx))
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= self.n_enc and skips:
                x = x + self.skip_weights[i - self.n_enc].to(x.dtype) * skips.pop()
            x = block(x, x0)
            if i < self.n_enc:
                skips.append(x)
        x = rms(x)
        logits = F.linear(x, self.tok_emb.weight.to(x.dtype)) if self.lm_head is None else self.lm_head(x)
        logits = self.softcap * torch.tanh(logits.float() / self.softcap)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)


# -------------------------------------------------------------------------------------------------- optimizer


def newton_schulz(G: Tensor, steps: int) -> Tensor:
    """Approximate U V^T of G = U S V^T with a quintic Newton-Schulz iteration (bf16 on CUDA, fp32 on CPU)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    X = X / (X.norm() + 1e-7)
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalized by Newton-Schulz and scaled by sqrt(max(1, rows/cols)).
    Rank r orthogonalizes matrices r, r + world, ...; one all-reduce of a flat buffer shares the updates."""

    def __init__(self, params, lr: float, momentum: float, steps: int, orth):
        super().__init__(params, dict(lr=lr, base_lr=lr, momentum=momentum, steps=steps))
        self.orth = orth

    @torch.no_grad()
    def step(self):
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
        for group in self.param_groups:
            params, mom = group["params"], group["momentum"]
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device,
                               dtype=torch.bfloat16 if params[0].is_cuda else torch.float32)
            offset = 0
            for i, p in enumerate(params):
                if i % world == rank and p.grad is not None:
                    buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                    buf.mul_(mom).add_(p.grad)
                    update = self.orth(p.grad.add(buf, alpha=mom), group["steps"])
                    flat[offset : offset + p.numel()] = update.flatten() * max(1.0, p.size(0) / p.size(1)) ** 0.5
                offset += p.numel()
            if world > 1:
                dist.all_reduce(flat)
            offset = 0
            for p in params:
                p.add_(flat[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()


# -------------------------------------------------------------------------------------------------- evaluation


def build_luts(sp: spm.SentencePieceProcessor, device) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token byte accounting: UTF-8 bytes of the piece without its leading '▁' (1 for byte-fallback pieces,
    0 for control/unknown/unused), whether it has a leading '▁', and whether it is a boundary (control/unknown/unused).
    A target costs base + 1 when it has a leading space and the previous token is not a boundary."""
    n = sp.vocab_size()
    base, lead, boundary = np.zeros(n, np.int16), np.zeros(n, np.bool_), np.ones(n, np.bool_)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        piece = sp.id_to_piece(i)
        lead[i] = not sp.is_byte(i) and piece.startswith("▁")
        base[i] = 1 if sp.is_byte(i) else len(piece.removeprefix("▁").encode("utf-8"))
    return tuple(torch.from_numpy(a).to(device) for a in (base, lead, boundary))


def autocast(device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def eval_val(model, val: Tensor, luts, seq_len: int, stride: int, batch_seqs: int, rank: int, world: int, device):
    """Return (val_loss in nats/token, val_bpb). Windows of seq_len tokens start every `stride` tokens; the first
    window scores all its targets, later ones only their last `stride`, so every target is scored exactly once
    (stride = seq_len: disjoint windows). Windows are split contiguously over ranks; sums in fp64, all-reduced."""
    n = val.numel() - 1  # targets: val[1:]
    starts = torch.arange(0, n, stride)
    starts = starts[(starts == 0) | (starts + seq_len - stride < n)].tensor_split(world)[rank]
    base, lead, boundary = luts
    pos = torch.arange(seq_len)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, tokens, bytes
    with torch.no_grad():
        for ws in starts.split(batch_seqs):
            idx = ws[:, None] + pos  # index of each input token; its target is idx + 1
            first = torch.where(ws == 0, 0, seq_len - stride)[:, None]
            mask = ((idx < n) & (pos >= first)).to(device)
            x = val[idx.clamp(max=n - 1)].to(device).long()
            y = val[(idx + 1).clamp(max=n)].to(device).long()
            with autocast(device):
                loss = model(x, y)
            nbytes = base[y] + (lead[y] & ~boundary[x])
            sums += torch.stack(((loss.double() * mask).sum(), mask.sum().double(), (nbytes.double() * mask).sum()))
    if world > 1:
        dist.all_reduce(sums)
    loss_sum, tokens, nbytes = sums.tolist()
    return loss_sum / tokens, loss_sum / tokens / math.log(2) * tokens / nbytes


# -------------------------------------------------------------------------------------------------- export


def quantize_int8(state: dict[str, Tensor], keep_fp32: tuple[str, ...]) -> dict:
    """Per-row int8 (clip at the 99.99984th |w| percentile, scale = clip/127 >= 1/127, fp16 scales) for float
    tensors over 65,536 elements; smaller float tensors kept as fp16 (fp32 if control); other tensors as they are."""
    out = {"__quant_format__": "int8_clean_per_row_v1", "quantized": {}, "scales": {}, "dtypes": {},
           "passthrough": {}, "passthrough_orig_dtypes": {}}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        if not t.is_floating_point() or t.numel() <= INT8_KEEP_MAX_NUMEL:
            if t.is_floating_point() and any(p in name for p in keep_fp32):
                t = t.float()
            elif t.dtype in (torch.float32, torch.bfloat16):
                out["passthrough_orig_dtypes"][name] = str(t.dtype).removeprefix("torch.")
                t = t.half()
            out["passthrough"][name] = t
            continue
        rows = t.float().reshape(-1, t.size(-1))  # a 1-D tensor is one row
        clip = torch.quantile(rows.abs(), INT8_CLIP_Q, dim=1)
        scale = (clip / 127).clamp(min=1 / 127).half()
        q = rows.clamp(-clip[:, None], clip[:, None]) / scale.float()[:, None]
        out["quantized"][name] = q.round().clamp(-127, 127).to(torch.int8).view(t.shape)
        out["scales"][name], out["dtypes"][name] = scale, str(t.dtype).removeprefix("torch.")
    return out


def dequantize_int8(obj: dict) -> dict[str, Tensor]:
    state = {}
    for name, q in obj["quantized"].items():
        rows = q.float().reshape(-1, q.size(-1)) * obj["scales"][name].float()[:, None]
        state[name] = rows.view(q.shape).to(getattr(torch, obj["dtypes"][name]))
    for name, t in obj["passthrough"].items():
        orig = obj["passthrough_orig_dtypes"].get(name)
        state[name] = t.to(getattr(torch, orig)) if orig else t
    return state


# -------------------------------------------------------------------------------------------------- main


def main():
    h = Hyperparameters
    # ---- distributed setup and input checks (bad input: one line, exit 2)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world, local_rank = int(E("RANK", 0)), int(E("WORLD_SIZE", 1)), int(E("LOCAL_RANK", 0))
    master = rank == 0
    if 8 % world:
        fail(f"WORLD_SIZE={world} does not divide 8; run 1, 2, 4 or 8 processes")
    grad_accum_steps = 8 // world  # the global batch does not depend on the world size
    cuda = h.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        fail(f"DEVICE={h.device} but no GPU is visible; unset DEVICE or set DEVICE=cpu")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if not (h.tokenizer_path.endswith(".model") and os.path.isfile(h.tokenizer_path)):
        fail(f"tokenizer {h.tokenizer_path} not found; set TOKENIZER_PATH to a SentencePiece .model file")
    try:
        sp = spm.SentencePieceProcessor(model_file=h.tokenizer_path)
    except (OSError, RuntimeError) as e:
        fail(f"cannot load tokenizer {h.tokenizer_path} ({e}); set TOKENIZER_PATH to a SentencePiece .model file")
    if sp.vocab_size() != h.vocab_size:
        fail(f"VOCAB_SIZE={h.vocab_size} but tokenizer {h.tokenizer_path} has {sp.vocab_size()} pieces; "
             f"set VOCAB_SIZE={sp.vocab_size()}")
    L = h.train_seq_len
    stride = h.eval_stride or L
    if not 0 < stride <= L:
        fail(f"EVAL_STRIDE={h.eval_stride} is outside 1..TRAIN_SEQ_LEN={L}; use 0 for disjoint windows")
    val_pattern = os.path.join(h.data_path, "fineweb_val_*.bin")
    val_files = sorted(glob.glob(val_pattern))
    if not val_files:
        fail(f"no validation shards match {val_pattern}; set DATA_PATH or build the data (pgolf data build)")
    val = np.concatenate([load_shard(f) for f in val_files])[: h.val_tokens or None]
    n_val = (len(val) - 1) // L * L  # scored targets: whole sequences only
    if n_val <= 0:
        fail(f"only {len(val)} validation tokens, fewer than TRAIN_SEQ_LEN+1={L + 1}; "
             "raise VAL_TOKENS or lower TRAIN_SEQ_LEN")
    val = torch.from_numpy(val[: n_val + 1].astype(np.int32))
    if int(val.max()) >= h.vocab_size:
        fail(f"validation token id {int(val.max())} >= VOCAB_SIZE={h.vocab_size}; the shards and tokenizer do not match")
    if h.eval_only:
        if not os.path.isfile(h.artifact_path):
            fail(f"artifact {h.artifact_path} not found; set ARTIFACT_PATH to a final_model.int8.ptz")
    else:
        train_pattern = os.path.join(h.data_path, "fineweb_train_*.bin")
        train_files = sorted(glob.glob(train_pattern))
        if not train_files or sum(shard_tokens(f) for f in train_files) == 0:
            fail(f"no training tokens in {train_pattern}; set DATA_PATH or build the data (pgolf data build)")
        local_tokens = h.train_batch_tokens // (world * grad_accum_steps)
        if h.train_batch_tokens % (world * grad_accum_steps) or local_tokens % L:
            fail(f"TRAIN_BATCH_TOKENS={h.train_batch_tokens} is not a multiple of 8 x TRAIN_SEQ_LEN={8 * L}")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        torch.backends.cuda.enable_math_sdp(False)
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    sync = torch.cuda.synchronize if cuda else lambda: None
    torch.manual_seed(h.seed)

    # ---- logging: source, versions, then one line per event (rank 0, console + logs/<RUN_ID>.txt)
    code = Path(__file__).read_text(encoding="utf-8")
    logfile = f"logs/{h.run_id}.txt"

    def log0(msg: str, console: bool = True) -> None:
        if master:
            if console:
                print(msg, flush=True)
            with open(logfile, "a", encoding="utf-8") as f:
                print(msg, file=f)

    if master:
        os.makedirs("logs", exist_ok=True)
        print(logfile)
    log0(code, console=False)
    log0("=" * 100, console=False)
    log0(f"Running Python {sys.version}", console=False)
    log0(f"Running PyTorch {torch.__version__}", console=False)
    if cuda:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout if shutil.which("nvidia-smi") else ""
        log0(smi or "nvidia-smi: not found", console=False)
    log0("=" * 100, console=False)
    log0(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={h.tokenizer_path}")
    if not h.eval_only:
        log0(f"train_loader:dataset:{os.path.basename(os.path.normpath(h.data_path))} train_shards:{len(train_files)}")
    log0(f"val_loader:shards pattern={val_pattern} tokens:{n_val}")

    # ---- model: fp32 master weights; on CUDA the embedding is bf16 and matmuls run under bf16 autocast
    base_model = GPT(h).to(device)
    if cuda:
        base_model.tok_emb.bfloat16()
    compiled = torch.compile(base_model, dynamic=False, fullgraph=True) if h.compile else base_model
    luts = build_luts(sp, device)
    val_batch_seqs = max(1, h.val_batch_size // 8 // L)  # per rank: VAL_BATCH_SIZE / (WORLD_SIZE x grad_accum_steps)
    log0(f"model_params:{sum(p.numel() for p in base_model.parameters())}")
    log0(f"world_size:{world} grad_accum_steps:{grad_accum_steps}")
    log0(f"sdp_backends:cudnn={torch.backends.cuda.cudnn_sdp_enabled()} flash={torch.backends.cuda.flash_sdp_enabled()} "
         f"mem_efficient={torch.backends.cuda.mem_efficient_sdp_enabled()} math={torch.backends.cuda.math_sdp_enabled()}")
    attention_mode = "gqa" if h.num_kv_heads < h.num_heads else "mha"
    log0(f"attention_mode:{attention_mode} num_heads:{h.num_heads} num_kv_heads:{h.num_kv_heads}")

    def score_artifact() -> tuple[float, float, float, int]:
        """Load the int8+zlib artifact into the model, evaluate it (stride EVAL_STRIDE); this is the reported score."""
        blob = Path(h.artifact_path).read_bytes()
        try:
            base_model.load_state_dict(dequantize_int8(torch.load(io.BytesIO(zlib.decompress(blob)), map_location="cpu")))
        except Exception as e:  # corrupt file or a different model shape
            fail(f"cannot load artifact {h.artifact_path} ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                 "check ARTIFACT_PATH and use the shape env vars it was trained with")
        sync()
        t = time.perf_counter()
        vl, vb = eval_val(compiled, val, luts, L, stride, val_batch_seqs, rank, world, device)
        sync()
        ms = 1000 * (time.perf_counter() - t)
        log0(f"final_int8_zlib_roundtrip val_loss:{vl:.4f} val_bpb:{vb:.4f} eval_time:{ms:.0f}ms")
        log0(f"final_int8_zlib_roundtrip_exact val_loss:{vl:.8f} val_bpb:{vb:.8f}")
        return vl, vb, ms, len(blob)

    code_bytes = len(code.encode("utf-8"))
    result = dict(pre_quant_val_loss=None, pre_quant_val_bpb=None, steps=0, train_time_ms=0.0, stopped_early=False,
                  val_history=[])
    if h.eval_only:
        log0(f"Total submission size int8+zlib: {code_bytes + os.path.getsize(h.artifact_path)} bytes")
    else:
        # ---- optimizers: Muon for 2-D block matrices, Adam for the embedding, head, vectors and control tensors
        model = DDP(compiled, device_ids=[local_rank] if cuda else None) if distributed else compiled  # no buffers to sync
        named = list(base_model.blocks.named_parameters())
        is_control = lambda name, p: p.ndim < 2 or any(c in name for c in h.control_patterns)
        matrices = [p for name, p in named if not is_control(name, p)]
        scalars = [p for name, p in named if is_control(name, p)] + [p for p in [base_model.skip_weights] if p.numel()]
        adam = lambda params, lr: torch.optim.Adam([dict(params=params, lr=lr, base_lr=lr)], betas=(h.beta1, h.beta2),
                                                   eps=h.adam_eps, fused=cuda)
        orth = torch.compile(newton_schulz) if h.compile else newton_schulz
        muon = Muon(matrices, h.matrix_lr, h.muon_momentum, h.muon_backend_steps, orth)
        token_lr = h.tied_embed_lr if h.tie_embeddings else h.embed_lr
        optimizers = [adam([base_model.tok_emb.weight], token_lr), muon, adam(scalars, h.scalar_lr)]
        if base_model.lm_head is not None:
            optimizers.append(adam([base_model.lm_head.weight], h.head_lr))
        log0(f"tie_embeddings:{h.tie_embeddings} embed_lr:{token_lr} head_lr:{0.0 if h.tie_embeddings else h.head_lr} "
             f"matrix_lr:{h.matrix_lr} scalar_lr:{h.scalar_lr}")
        log0(f"train_batch_tokens:{h.train_batch_tokens} train_seq_len:{L} iterations:{h.iterations} "
             f"warmup_steps:{h.warmup_steps} max_wallclock_seconds:{h.max_wallclock_seconds:.3f}")
        log0(f"seed:{h.seed}")
        max_ms = 1000 * h.max_wallclock_seconds if h.max_wallclock_seconds > 0 else None

        def lr_mul(step: int, elapsed_ms: float) -> float:
            """1, then linear to 0 over the last WARMDOWN_ITERS steps; under a cap, over the last WARMDOWN_ITERS x
            (mean step time so far) ms of the cap."""
            if h.warmdown_iters <= 0:
                return 1.0
            if max_ms is None:
                return min(1.0, max(h.iterations - step, 0) / h.warmdown_iters)
            warmdown_ms = h.warmdown_iters * elapsed_ms / max(step, 1)
            remaining_ms = max(max_ms - elapsed_ms, 0.0)
            return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0

        def train_step(step: int, lr_scale: float) -> Tensor:
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * lr_scale
            frac = min(step / h.muon_momentum_warmup_steps, 1.0) if h.muon_momentum_warmup_steps > 0 else 1.0
            for group in muon.param_groups:
                group["momentum"] = (1 - frac) * h.muon_momentum_warmup_start + frac * h.muon_momentum
            train_loss = torch.zeros((), device=device)
            for micro in range(grad_accum_steps):
                if distributed:
                    model.require_backward_grad_sync = micro == grad_accum_steps - 1  # all-reduce grads once per step
                x, y = loader.next_batch()
                with autocast(device):
                    loss = model(x, y).mean()
                (loss / grad_accum_steps).backward()
                train_loss += loss.detach() / grad_accum_steps
            if h.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(base_model.parameters(), h.grad_clip_norm)
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
            return train_loss

        # ---- compile priming: WARMUP_STEPS real steps, then restore the initial weights, optimizer state and data
        loader = TokenLoader(train_files, rank, world, local_tokens, L, device)
        owned = sorted(id(p) for opt in optimizers for group in opt.param_groups for p in group["params"])
        if owned != sorted(id(p) for p in base_model.parameters() if p.requires_grad):  # a new module left untrained
            fail("every trainable parameter must be in exactly one optimizer; add the new parameters to one")
        if h.warmup_steps > 0:
            initial_model = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
            initial_opts = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
            for step in range(h.warmup_steps):
                train_step(step, 1.0)
                if h.warmup_steps <= 20 or (step + 1) % 10 == 0 or step + 1 == h.warmup_steps:
                    log0(f"warmup_step:{step + 1}/{h.warmup_steps}")
            base_model.load_state_dict(initial_model)
            for opt, state in zip(optimizers, initial_opts):
                opt.load_state_dict(state)
            loader = TokenLoader(train_files, rank, world, local_tokens, L, device)

        # ---- training loop; the clock excludes priming and validation
        train_ms, step, stop_after = 0.0, 0, None
        sync()
        t0 = time.perf_counter()
        while True:
            last_step = step == h.iterations or step == stop_after
            if last_step or (h.val_loss_every > 0 and step % h.val_loss_every == 0):
                sync()
                train_ms += 1000 * (time.perf_counter() - t0)
                vl, vb = eval_val(compiled, val, luts, L, L, val_batch_seqs, rank, world, device)
                result["val_history"].append(dict(step=step, val_loss=vl, val_bpb=vb, train_time_ms=train_ms))
                log0(f"step:{step}/{h.iterations} val_loss:{vl:.4f} val_bpb:{vb:.4f} "
                     f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")
                sync()
                t0 = time.perf_counter()
            if last_step:
                if step < h.iterations:
                    log0(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{h.iterations}")
                break
            train_loss = train_step(step, lr_mul(step, train_ms + 1000 * (time.perf_counter() - t0)))
            step += 1
            approx_ms = train_ms + 1000 * (time.perf_counter() - t0)
            cap = torch.tensor(float(max_ms is not None and approx_ms >= max_ms), device=device)
            flags = torch.stack((cap, (~train_loss.isfinite()).float()))
            if distributed:
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)  # every rank stops at the same step
            cap_reached, bad_loss = flags.tolist()
            if bad_loss:
                log0(f"FAIL: non-finite loss at step {step}")
                if distributed:
                    dist.destroy_process_group()
                sys.exit(1)
            if h.train_log_every > 0 and (step <= 10 or step % h.train_log_every == 0 or cap_reached):
                log0(f"step:{step}/{h.iterations} train_loss:{train_loss.item():.4f} "
                     f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
            if cap_reached and stop_after is None:
                stop_after = step
        if cuda:
            log0(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB "
                 f"reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB")

        # ---- export: raw state dict (debugging) and the int8+zlib artifact that counts
        if master:
            torch.save(base_model.state_dict(), "final_model.pt")
            raw_bytes = os.path.getsize("final_model.pt")
            log0(f"Serialized model: {raw_bytes} bytes")
            log0(f"Code size: {code_bytes} bytes")
            log0(f"Total submission size: {raw_bytes + code_bytes} bytes")
            quant = quantize_int8(base_model.state_dict(), h.keep_fp32_patterns)
            buf = io.BytesIO()
            torch.save(quant, buf)
            blob = zlib.compress(buf.getvalue(), level=9)
            Path(h.artifact_path).parent.mkdir(parents=True, exist_ok=True)
            Path(h.artifact_path).write_bytes(blob)
            nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)
            payload = sum(nbytes(quant[k].values()) for k in ("quantized", "scales", "passthrough"))
            log0(f"Serialized model int8+zlib: {len(blob)} bytes (payload:{payload} raw_torch:{buf.tell()} "
                 f"payload_ratio:{nbytes(base_model.state_dict().values()) / payload:.2f}x)")
            log0(f"Total submission size int8+zlib: {len(blob) + code_bytes} bytes")
        if distributed:
            dist.barrier()
        last = result["val_history"][-1]
        result.update(pre_quant_val_loss=last["val_loss"], pre_quant_val_bpb=last["val_bpb"], steps=step,
                      train_time_ms=train_ms, stopped_early=step < h.iterations)

    # ---- the score: roundtrip of the artifact; then the summary block and the result file
    val_loss, val_bpb, eval_ms, model_bytes = score_artifact()
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the CPU stand-in for GPU memory
    result = dict(val_loss=val_loss, val_bpb=val_bpb, **result, bytes_total=code_bytes + model_bytes, bytes_code=code_bytes,
                  bytes_model=model_bytes, eval_time_ms=eval_ms, torch_version=torch.__version__, world_size=world,
                  peak_memory_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib,
                  device=torch.cuda.get_device_name(device) if cuda else "cpu", seed=h.seed,
                  eval_only=h.eval_only, eval_stride=h.eval_stride)
    log0("---")
    for key in ("val_bpb", "val_loss", "bytes_total", "bytes_code", "bytes_model", "steps", "train_time_ms",
                "peak_memory_mib"):
        log0(f"{key}: {result[key]:.8f}" if key.startswith("val_") else f"{key}: {result[key]:.0f}")
    if master and h.result_json:
        Path(h.result_json).write_text(json.dumps(result, indent=1) + "\n")
    if distributed:
        dist.barrier()  # no rank tears down its connections while another still uses them
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
