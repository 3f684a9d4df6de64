"""Pre-flight artifact-size estimator: bytes of code + compressed model, before any training.

The model, tensor by tensor, follows the official baseline's export (`quantize_state_dict_int8`):

* float tensors with more than 65,536 elements -> int8, one fp16 scale per row (2-D);
* smaller float tensors -> passthrough: fp32 for control tensors (attn_scale, mlp_scale,
  resid_mix, q_gain, skip_weights), fp16 for everything else. The baseline keeps tok_emb in
  bf16, so a small tok_emb stored as fp16 has 3 always-zero mantissa bits: it counts
  BF16_PASSTHROUGH_WEIGHT of its bytes toward the compressed size;
* the container is `torch.save`d (a few hundred bytes of pickle/zip records per tensor) and
  compressed with zlib level 9.

    payload      = sum of the stored tensor bytes (the baseline logs it: 17,178,912 B)
    serialized   = payload (bf16-origin passthrough weighted) + torch.save container overhead
    compressed   = ratio * serialized + overhead_bytes          <- `Calibration`
    total        = compressed + code bytes

The ratio is a property of the trained weights, not of the shapes: int8 of Muon-trained weights
(per-row max ~ several sigma above 1/127) compresses to ~0.92 under zlib, while freshly
initialised weights (tiny, clamped to the 1/127 minimum scale) compress to ~0.5. The default
calibration is fitted to the one official measurement (the naive baseline: .ptz 15,815,847 B);
the harness refines it with `Calibration.refined()` from every finished run's real artifact.
Keep one calibration per export scheme AND per fidelity: a CPU smoke run's few steps leave
near-init weights (ratio 0.3-0.5, bench/size_estimator.py), which must not pull down the
calibration used to gate full-scale candidates against the byte cap.

How a technique declares its cost (`SizeCost`, all fields optional):

    bits_per_weight   bits of each quantized (large) weight: 8 = int8 baseline, 6 = int6, ...
                      The payload counts bits_per_weight / 8 bytes per weight (int6 values in
                      int8 containers carry ~6 bits of information for the compressor).
    embed_bits        the same for tok_emb / lm_head (16 = kept as fp16, no scales)
    compressor_ratio  compressed / serialized for the technique's scheme (zstd-22, brotli, ...),
                      replacing the calibrated ratio
    extra_params      parameters the technique adds (BigramHash tables, gates), stored at
                      bits_per_weight like the matrices
    bytes_per_param   alias: bits_per_weight = 8 * bytes_per_param
    scheme            name of the export scheme; the harness keeps one Calibration per scheme

Declare it in the technique's metadata as a table with those keys (`SizeCost.from_metadata`),
or let it come from the env: a trainer that reads MATRIX_BITS / EMBED_BITS gets them from the
sampled env (`SizeCost.from_env`). `estimate_artifact_bytes` merges env-derived, then explicit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from search_space.knobs import OFFICIAL_DEFAULTS, parse_env_value

# --- the official baseline's export, and its one measured artifact -------------------------------
CONTROL_TENSOR_PATTERNS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
                           "q_gain", "skip_weight", "skip_weights")
KEEP_FLOAT_MAX_NUMEL = 65_536
SCALE_BYTES = 2  # fp16 per-row scale

BASELINE_PARAMS = 17_059_912
BASELINE_PAYLOAD_BYTES = 17_178_912
BASELINE_RAW_TORCH_BYTES = 17_224_025
BASELINE_MODEL_BYTES = 15_815_847
BASELINE_CODE_BYTES = 47_642
BASELINE_TOTAL_BYTES = 15_863_489

# torch.save container: zip records + pickle per stored tensor. Measured with torch 2.13 on the
# baseline container (17,223,321 B vs 17,224,025 B logged under torch 2.8: 0.004% apart) and on
# 1- to 20-layer variants (bench/size_estimator.py): overhead ~ 280 + 302.5 x stored tensors.
TORCH_SAVE_BASE_BYTES = 280
TORCH_SAVE_BYTES_PER_TENSOR = 302.5

# zlib ratio of bf16 values stored as fp16 relative to fp32 values stored as fp16: 0.769 / 0.923
# measured (bench/size_estimator.py); 13 of 16 bits carry information (13/16 = 0.81).
BF16_PASSTHROUGH_WEIGHT = 0.83

# Relative error band used until a calibration has >= 3 measured points: the spread of the
# estimate across shapes on synthetic trained-like exports (bench/size_estimator.py, leave-one-out
# max error 1.0%), widened because real weights vary more than synthetic ones.
DEFAULT_BAND = 0.03
MIN_BAND = 0.005
MAX_CALIBRATION_POINTS = 500

_SHAPE_KNOBS = ("VOCAB_SIZE", "NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS", "MLP_MULT", "TIE_EMBEDDINGS")


# ==================================================================================== shapes
@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the baseline's state_dict."""

    name: str
    shape: tuple[int, ...]
    group: str  # count_params key

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def control(self) -> bool:
        return any(p in self.name for p in CONTROL_TENSOR_PATTERNS)

    @property
    def embedding(self) -> bool:
        return self.group in ("tok_emb", "lm_head")

    @property
    def bf16(self) -> bool:
        """Held in bf16 by the baseline at export (nn.Embedding; Linear weights are fp32)."""
        return self.group == "tok_emb"


def _shape(env: Mapping[str, str], defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {}
    for name in _SHAPE_KNOBS:
        if name in env:
            text = str(env[name])
            if name == "TIE_EMBEDDINGS":
                out[name] = parse_env_value(text, bool)
            elif name == "MLP_MULT":
                out[name] = float(text)  # int in the baseline; float in later stacks (hidden = int(mult * dim))
            else:
                try:
                    out[name] = int(text)
                except ValueError:
                    raise ValueError(f"{name}={text!r} is not an integer") from None
        elif defaults is not None and defaults.get(name) is not None:
            out[name] = defaults[name]
        else:
            out[name] = OFFICIAL_DEFAULTS[name]
    return out


def model_tensors(env: Mapping[str, str], defaults: Mapping[str, Any] | None = None) -> list[TensorSpec]:
    """The baseline GPT's state_dict tensors (names and shapes) for this env.

    Unset knobs take `defaults` (e.g. the trainer's discovered defaults), then the official ones.
    Raises ValueError for shapes the baseline refuses (head_dim, GQA).
    """
    s = _shape(env, defaults)
    V, L, d = s["VOCAB_SIZE"], s["NUM_LAYERS"], s["MODEL_DIM"]
    heads, kv, tied = s["NUM_HEADS"], s["NUM_KV_HEADS"], s["TIE_EMBEDDINGS"]
    if min(V, L, d, heads, kv) < 1:
        raise ValueError(f"shape knobs must be >= 1: {s}")
    if d % heads or (d // heads) % 2 or heads % kv:
        raise ValueError(f"invalid attention shape MODEL_DIM={d} NUM_HEADS={heads} NUM_KV_HEADS={kv}: "
                         f"need MODEL_DIM % NUM_HEADS == 0, an even head_dim and NUM_HEADS % NUM_KV_HEADS == 0")
    kv_dim = kv * (d // heads)
    hidden = int(s["MLP_MULT"] * d)
    out = [TensorSpec("tok_emb.weight", (V, d), "tok_emb")]
    n_skip = min(L // 2, L - L // 2)
    if n_skip:
        out.append(TensorSpec("skip_weights", (n_skip, d), "skip_weights"))
    for i in range(L):
        b = f"blocks.{i}."
        out += [
            TensorSpec(b + "attn_scale", (d,), "attn_scale"),
            TensorSpec(b + "mlp_scale", (d,), "mlp_scale"),
            TensorSpec(b + "resid_mix", (2, d), "resid_mix"),
            TensorSpec(b + "attn.c_q.weight", (d, d), "attn.c_q"),
            TensorSpec(b + "attn.c_k.weight", (kv_dim, d), "attn.c_k"),
            TensorSpec(b + "attn.c_v.weight", (kv_dim, d), "attn.c_v"),
            TensorSpec(b + "attn.proj.weight", (d, d), "attn.proj"),
            TensorSpec(b + "attn.q_gain", (heads,), "q_gain"),
            TensorSpec(b + "mlp.fc.weight", (hidden, d), "mlp.fc"),
            TensorSpec(b + "mlp.proj.weight", (d, hidden), "mlp.proj"),
        ]
    if not tied:
        out.append(TensorSpec("lm_head.weight", (V, d), "lm_head"))
    return out


def count_params(env: Mapping[str, str], defaults: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Parameter count per tensor group (summed over layers), plus "total".

    Groups: tok_emb, attn.c_q, attn.c_k, attn.c_v, attn.proj, mlp.fc, mlp.proj, attn_scale,
    mlp_scale, resid_mix, q_gain, skip_weights, lm_head (0 when tied). 17,059,912 at the defaults.
    """
    groups = dict.fromkeys(("tok_emb", "attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj",
                            "attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights", "lm_head"), 0)
    for t in model_tensors(env, defaults):
        groups[t.group] += t.numel
    groups["total"] = sum(groups.values())
    return groups


# ==================================================================================== technique cost
@dataclass(frozen=True)
class SizeCost:
    """How a technique changes the bytes per parameter (see the module docstring). None = baseline."""

    bits_per_weight: float | None = None
    embed_bits: float | None = None
    compressor_ratio: float | None = None
    extra_params: int = 0
    scheme: str | None = None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any] | None) -> SizeCost:
        """From a technique's metadata table: bits_per_weight | bytes_per_param, embed_bits,
        compressor_ratio, extra_params, scheme. Unknown keys raise ValueError."""
        if not meta:
            return cls()
        allowed = ("bits_per_weight", "bytes_per_param", "embed_bits", "compressor_ratio", "extra_params", "scheme")
        unknown = [k for k in meta if k not in allowed]
        if unknown:
            raise ValueError(f"size cost: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")
        bits = meta.get("bits_per_weight")
        if meta.get("bytes_per_param") is not None:
            if bits is not None:
                raise ValueError("size cost: give bits_per_weight or bytes_per_param, not both")
            bits = 8.0 * float(meta["bytes_per_param"])
        cost = cls(
            bits_per_weight=None if bits is None else float(bits),
            embed_bits=None if meta.get("embed_bits") is None else float(meta["embed_bits"]),
            compressor_ratio=None if meta.get("compressor_ratio") is None else float(meta["compressor_ratio"]),
            extra_params=int(meta.get("extra_params", 0)),
            scheme=meta.get("scheme"),
        )
        cost.validate()
        return cost

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SizeCost:
        """Quantization knobs a (technique-patched) trainer reads: MATRIX_BITS, EMBED_BITS."""
        bits = float(env["MATRIX_BITS"]) if "MATRIX_BITS" in env else None
        embed = float(env["EMBED_BITS"]) if "EMBED_BITS" in env else None
        cost = cls(bits_per_weight=bits, embed_bits=embed)
        cost.validate()
        return cost

    def validate(self) -> None:
        for name in ("bits_per_weight", "embed_bits"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 32:
                raise ValueError(f"size cost: {name}={v} must be in (0, 32]")
        if self.compressor_ratio is not None and not 0 < self.compressor_ratio <= 2:
            raise ValueError(f"size cost: compressor_ratio={self.compressor_ratio} must be in (0, 2]")
        if self.extra_params < 0:
            raise ValueError(f"size cost: extra_params={self.extra_params} must be >= 0")

    def merged(self, other: SizeCost | None) -> SizeCost:
        """`other` on top of self: its set fields win, extra_params add up (several techniques)."""
        if other is None:
            return self
        pick = {k: getattr(other, k) if getattr(other, k) is not None else getattr(self, k)
                for k in ("bits_per_weight", "embed_bits", "compressor_ratio", "scheme")}
        return SizeCost(**pick, extra_params=self.extra_params + other.extra_params)

    @property
    def key(self) -> str:
        """The calibration key: the scheme, or int<bits> when only the bits differ from the baseline."""
        if self.scheme:
            return self.scheme
        if self.bits_per_weight not in (None, 8.0) or self.embed_bits not in (None, 8.0):
            return f"int{self.bits_per_weight or 8:g}-emb{self.embed_bits or self.bits_per_weight or 8:g}-zlib"
        return "int8-zlib"


def _as_cost(cost: SizeCost | Mapping[str, Any] | None) -> SizeCost | None:
    if cost is None or isinstance(cost, SizeCost):
        return cost
    return SizeCost.from_metadata(cost)


@dataclass(frozen=True)
class Payload:
    """Uncompressed bytes of the quantized container, split by storage class."""

    params: int
    quantized_bytes: int  # int8 (or bits_per_weight) weights
    scale_bytes: int  # fp16 per-row scales
    passthrough_bytes: int  # small tensors kept as fp16/fp32, fp16 embeddings
    stored_tensors: int  # torch.save records
    bf16_passthrough_bytes: int = 0  # part of passthrough_bytes that holds bf16 values as fp16

    @property
    def total(self) -> int:
        """Exact payload bytes (what the baseline logs as `payload:`)."""
        return self.quantized_bytes + self.scale_bytes + self.passthrough_bytes

    @property
    def container_bytes(self) -> float:
        return TORCH_SAVE_BASE_BYTES + TORCH_SAVE_BYTES_PER_TENSOR * self.stored_tensors

    @property
    def serialized(self) -> float:
        """Bytes the compressor sees, weighted by how much information they carry (see module doc)."""
        return self.total - (1 - BF16_PASSTHROUGH_WEIGHT) * self.bf16_passthrough_bytes + self.container_bytes


def payload_bytes(env: Mapping[str, str], cost: SizeCost | Mapping[str, Any] | None = None,
                  defaults: Mapping[str, Any] | None = None) -> Payload:
    """The quantized container's uncompressed bytes for this env (and technique cost)."""
    c = SizeCost.from_env(env).merged(_as_cost(cost))
    bits = c.bits_per_weight or 8.0
    embed_bits = c.embed_bits or bits
    params = q = sc = pt = bf = n = 0
    for t in model_tensors(env, defaults):
        params += t.numel
        if t.numel <= KEEP_FLOAT_MAX_NUMEL:
            pt += t.numel * (4 if t.control else 2)
            bf += 0 if t.control or not t.bf16 else t.numel * 2
            n += 1
            continue
        b = embed_bits if t.embedding else bits
        if b >= 16:
            pt += t.numel * 2
            n += 1
            continue
        q += math.ceil(t.numel * b / 8)
        sc += (t.shape[0] * SCALE_BYTES) if len(t.shape) == 2 else 4
        n += 2
    if c.extra_params:
        params += c.extra_params
        q += math.ceil(c.extra_params * bits / 8)
        n += 2
    return Payload(params, q, sc, pt, n, bf)


# ==================================================================================== calibration
@dataclass(frozen=True)
class Calibration:
    """compressed = ratio * serialized + overhead_bytes, fitted to measured artifacts.

    `points` keeps (serialized estimate, measured model bytes) so the harness can refine it from
    every finished run (`refined`) and store it as JSON (`to_json` / `from_json`).
    """

    ratio: float
    overhead_bytes: float = 0.0
    scheme: str = "int8-zlib"
    fit_overhead: bool = False
    n_points: int = 0
    mean_abs_rel_error: float | None = None
    max_abs_rel_error: float | None = None
    points: tuple[tuple[float, int], ...] = ()
    source: str = ""

    def predict(self, serialized: float) -> float:
        return self.ratio * serialized + self.overhead_bytes

    @property
    def band(self) -> float:
        """Relative half-width of the estimate's [low, high] band."""
        if self.n_points >= 3 and self.max_abs_rel_error is not None:
            return max(1.5 * self.max_abs_rel_error, MIN_BAND)
        return DEFAULT_BAND

    def refined(self, env: Mapping[str, str], measured_model_bytes: int,
                cost: SizeCost | Mapping[str, Any] | None = None) -> Calibration:
        """This calibration plus one more measured artifact, refitted."""
        return calibrate([(env, measured_model_bytes, cost)], base=self, fit_overhead=self.fit_overhead,
                         scheme=self.scheme)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["points"] = [list(p) for p in self.points]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        known = {f for f in cls.__dataclass_fields__}
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ValueError(f"calibration: unknown field(s) {unknown}")
        d = dict(data)
        d["points"] = tuple((float(s), int(m)) for s, m in d.get("points", ()))
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        return cls.from_dict(json.loads(text))


def _fit(points: Sequence[tuple[float, int]], fit_overhead: bool) -> tuple[float, float]:
    """Least squares on relative errors: minimize sum(((r*s + c) - m) / m)^2."""
    xs = [s / m for s, m in points]
    zs = [1.0 / m for _, m in points]
    if fit_overhead and len(points) >= 2:
        sxx = sum(x * x for x in xs)
        szz = sum(z * z for z in zs)
        sxz = sum(x * z for x, z in zip(xs, zs, strict=True))
        sx, sz = sum(xs), sum(zs)
        det = sxx * szz - sxz * sxz
        if det > 1e-12 * sxx * szz:
            r = (sx * szz - sz * sxz) / det
            c = (sz * sxx - sx * sxz) / det
            if r > 0:
                return r, c
    return sum(xs) / sum(x * x for x in xs), 0.0


def calibrate(pairs: Iterable[tuple], *, fit_overhead: bool = False, base: Calibration | None = None,
              scheme: str | None = None, source: str = "") -> Calibration:
    """Fit the compression ratio (and, with fit_overhead, a constant) to measured exports.

    pairs: (env, measured_model_bytes) or (env, measured_model_bytes, cost) — measured bytes are
    the compressed model file (the artifact without code). `base`'s points are kept, so
    calibrate(new, base=old) refines `old`. Reports the in-sample relative errors.
    """
    points: list[tuple[float, int]] = list(base.points) if base is not None else []
    for item in pairs:
        env, measured = item[0], int(item[1])
        cost = item[2] if len(item) > 2 else None
        if measured <= 0:
            raise ValueError(f"calibrate: measured bytes must be positive, got {measured}")
        points.append((payload_bytes(env, cost).serialized, measured))
    points = points[-MAX_CALIBRATION_POINTS:]
    if not points:
        raise ValueError("calibrate: need at least one (env, measured_model_bytes) pair")
    ratio, overhead = _fit(points, fit_overhead)
    errors = [abs(ratio * s + overhead - m) / m for s, m in points]
    return Calibration(
        ratio=ratio, overhead_bytes=overhead,
        scheme=scheme or (base.scheme if base is not None else "int8-zlib"),
        fit_overhead=fit_overhead, n_points=len(points),
        mean_abs_rel_error=sum(errors) / len(errors), max_abs_rel_error=max(errors),
        points=tuple(points), source=source or (base.source if base is not None else ""),
    )


_DEFAULT: Calibration | None = None


def default_calibration() -> Calibration:
    """Fitted to the official naive baseline's export (8xH100, 13,780 steps): .ptz 15,815,847 B."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = calibrate([({}, BASELINE_MODEL_BYTES)],
                             source="official NaiveBaseline int8+zlib export (15,815,847 B)")
    return _DEFAULT


# ==================================================================================== the estimate
@dataclass(frozen=True)
class SizeEstimate:
    """Estimated artifact bytes; [low, high] is the calibration's error band around total_bytes."""

    params: int
    quantized_payload_bytes: int
    compressed_bytes: int
    total_bytes: int
    low: int
    high: int
    code_bytes: int = 0
    serialized_bytes: int = 0
    ratio: float = 0.0
    band: float = 0.0
    breakdown: dict[str, int] = field(default_factory=dict)

    def fits(self, cap: int, conservative: bool = False) -> bool:
        """total (or, conservatively, high) <= cap."""
        return (self.high if conservative else self.total_bytes) <= cap

    def headroom(self, cap: int) -> int:
        return cap - self.total_bytes


def estimate_artifact_bytes(env: Mapping[str, str], code_bytes: int, calibration: Calibration | None = None,
                            cost: SizeCost | Mapping[str, Any] | None = None,
                            defaults: Mapping[str, Any] | None = None) -> SizeEstimate:
    """Estimate code + compressed model bytes for the baseline architecture under `env`.

    cost: a technique's SizeCost (or its metadata table); its compressor_ratio replaces the
    calibration's ratio. defaults: the trainer's discovered defaults for unset knobs.
    """
    if code_bytes < 0:
        raise ValueError(f"code_bytes must be >= 0, got {code_bytes}")
    calib = calibration or default_calibration()
    c = SizeCost.from_env(env).merged(_as_cost(cost))
    p = payload_bytes(env, c, defaults)
    if c.compressor_ratio is not None:
        calib = replace(calib, ratio=c.compressor_ratio, overhead_bytes=0.0)
    compressed = max(0, round(calib.predict(p.serialized)))
    band = calib.band
    return SizeEstimate(
        params=p.params,
        quantized_payload_bytes=p.total,
        compressed_bytes=compressed,
        total_bytes=compressed + code_bytes,
        low=math.floor(compressed * (1 - band)) + code_bytes,
        high=math.ceil(compressed * (1 + band)) + code_bytes,
        code_bytes=code_bytes,
        serialized_bytes=round(p.serialized),
        ratio=calib.ratio,
        band=band,
        breakdown={"quantized": p.quantized_bytes, "scales": p.scale_bytes, "passthrough": p.passthrough_bytes,
                   "container": round(p.container_bytes)},
    )
