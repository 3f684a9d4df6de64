"""search_space: knob discovery, the curated table, the Optuna space and the size estimator."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from search_space import (
    OFFICIAL_DEFAULTS,
    Calibration,
    ConstraintError,
    KnobRange,
    KnobSpec,
    SearchSpace,
    SizeCost,
    calibrate,
    constraint_violations,
    count_params,
    curated_ranges,
    default_calibration,
    discover_knobs,
    estimate_artifact_bytes,
    never_reason,
    never_searched,
    payload_bytes,
)
from trainer import BASELINE_PATH

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A trainer in the official Hyperparameters style, plus the other read forms discovery must handle.
SYNTHETIC_TRAINER = '''
import os
import uuid
from os import environ, getenv

DEFAULT_CLIP = 0.25

class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    tokenizer_path = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    run_id = os.environ.get("RUN_ID", str(uuid.uuid4()))
    seed = int(os.environ.get("SEED", 1337))
    val_batch_size = int(os.environ.get("VAL_BATCH_SIZE", 524_288))
    val_loss_every = int(os.environ.get("VAL_LOSS_EVERY", 1000))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    warmdown_iters = int(os.environ.get("WARMDOWN_ITERS", 1200))
    warmup_steps = int(os.environ.get("WARMUP_STEPS", 20))
    train_batch_tokens = int(os.environ.get("TRAIN_BATCH_TOKENS", 524_288))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))
    qk_gain_init = float(os.environ.get("QK_GAIN_INIT", 1.5))
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    num_layers = int(os.environ.get("NUM_LAYERS", 9))
    num_kv_heads = int(os.environ.get("NUM_KV_HEADS", 4))
    model_dim = int(os.environ.get("MODEL_DIM", 512))
    num_heads = int(os.environ.get("NUM_HEADS", 8))
    mlp_mult = int(os.environ.get("MLP_MULT", 2))
    tie_embeddings = bool(int(os.environ.get("TIE_EMBEDDINGS", "1")))
    rope_base = float(os.environ.get("ROPE_BASE", 10000.0))
    logit_softcap = float(os.environ.get("LOGIT_SOFTCAP", 30.0))
    embed_lr = float(os.environ.get("EMBED_LR", 0.6))
    head_lr = float(os.environ.get("HEAD_LR", 0.008))
    tied_embed_lr = float(os.environ.get("TIED_EMBED_LR", 0.05))
    tied_embed_init_std = float(os.environ.get("TIED_EMBED_INIT_STD", 0.005))
    matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))
    scalar_lr = float(os.environ.get("SCALAR_LR", 0.04))
    muon_momentum = float(os.environ.get("MUON_MOMENTUM", 0.95))
    muon_backend_steps = int(os.environ.get("MUON_BACKEND_STEPS", 5))
    muon_momentum_warmup_start = float(os.environ.get("MUON_MOMENTUM_WARMUP_START", 0.85))
    muon_momentum_warmup_steps = int(os.environ.get("MUON_MOMENTUM_WARMUP_STEPS", 500))
    beta1 = float(os.environ.get("BETA1", 0.9))
    beta2 = float(os.environ.get("BETA2", 0.95))
    adam_eps = float(os.environ.get("ADAM_EPS", 1e-8))
    grad_clip_norm = float(os.environ.get("GRAD_CLIP_NORM", 0.0))

# other forms
eval_stride = int(os.getenv("EVAL_STRIDE", "0"))
compile_model = os.environ.get("COMPILE", "1") == "1"
device = environ.get("DEVICE")
artifact_path = getenv("ARTIFACT_PATH", "final_model.int8.ptz")
result_json = os.environ["RESULT_JSON"]
clip = float(os.environ.get("CLIP_FRAC", DEFAULT_CLIP))
fast = os.environ.get("FAST_PATH", "off").strip().lower() in ("1", "on", "true")

def env_int(name, default=7):
    return int(os.environ.get(name, default))

loops = env_int("NUM_LOOPS", 2)
lazy = env_int("LAZY_KNOB")
by_keyword = env_int(name="KW_KNOB", default=11)
rank = int(os.environ.get("RANK", "0"))

E = os.environ.get
ENV = os.environ
from os import getenv as ge
aliased = float(E("ALIAS_GET", 0.5))
mapped = int(ENV.get("ALIAS_MAP", 3))
subscripted = ENV["ALIAS_SUB"]
renamed = ge("ALIAS_IMPORT", "x")
distributed = "WORLD_SIZE" in os.environ
'''


def _by_name(source: str) -> dict[str, KnobSpec]:
    return {k.name: k for k in discover_knobs(source)}


# ----------------------------------------------------------------------------------- discovery
def test_discover_hyperparameters_class_forms():
    knobs = _by_name(SYNTHETIC_TRAINER)
    assert knobs["NUM_LAYERS"] == KnobSpec("NUM_LAYERS", int, 9, knobs["NUM_LAYERS"].line)
    assert (knobs["MATRIX_LR"].type, knobs["MATRIX_LR"].default) == (float, 0.04)
    assert (knobs["VAL_BATCH_SIZE"].type, knobs["VAL_BATCH_SIZE"].default) == (int, 524_288)
    assert (knobs["TIE_EMBEDDINGS"].type, knobs["TIE_EMBEDDINGS"].default) == (bool, True)
    assert (knobs["ADAM_EPS"].type, knobs["ADAM_EPS"].default) == (float, 1e-8)
    assert (knobs["DATA_PATH"].type, knobs["DATA_PATH"].default) == (str, "./data/datasets/fineweb10B_sp1024")
    assert (knobs["RUN_ID"].type, knobs["RUN_ID"].default) == (str, None)  # computed at run time


def test_discover_other_read_forms():
    knobs = _by_name(SYNTHETIC_TRAINER)
    assert (knobs["EVAL_STRIDE"].type, knobs["EVAL_STRIDE"].default) == (int, 0)  # os.getenv + string default
    assert (knobs["COMPILE"].type, knobs["COMPILE"].default) == (bool, True)  # == "1" comparison
    assert (knobs["DEVICE"].type, knobs["DEVICE"].default) == (str, None)  # from os import environ
    assert knobs["ARTIFACT_PATH"].default == "final_model.int8.ptz"  # bare getenv
    assert (knobs["RESULT_JSON"].type, knobs["RESULT_JSON"].default) == (str, None)  # os.environ[...]
    assert (knobs["CLIP_FRAC"].type, knobs["CLIP_FRAC"].default) == (float, 0.25)  # module constant default
    assert (knobs["FAST_PATH"].type, knobs["FAST_PATH"].default) == (bool, False)  # .strip().lower() in (...)
    assert (knobs["NUM_LOOPS"].type, knobs["NUM_LOOPS"].default) == (int, 2)  # through a helper function
    assert (knobs["LAZY_KNOB"].type, knobs["LAZY_KNOB"].default) == (int, 7)  # helper's own default
    assert (knobs["KW_KNOB"].type, knobs["KW_KNOB"].default) == (int, 11)  # helper called with keywords
    assert (knobs["ALIAS_GET"].type, knobs["ALIAS_GET"].default) == (float, 0.5)  # E = os.environ.get
    assert (knobs["ALIAS_MAP"].type, knobs["ALIAS_MAP"].default) == (int, 3)  # ENV = os.environ
    assert "ALIAS_SUB" in knobs and knobs["ALIAS_IMPORT"].default == "x"  # from os import getenv as ge
    assert "WORLD_SIZE" not in knobs  # a membership test is not a read
    names = [k.name for k in discover_knobs(SYNTHETIC_TRAINER)]
    assert names.index("DATA_PATH") < names.index("NUM_LAYERS") < names.index("RANK")  # source order
    assert len(names) == len(set(names))


def test_discover_knobs_rejects_broken_source():
    with pytest.raises(SyntaxError):
        discover_knobs("def broken(:\n")


def test_discover_knobs_on_the_baseline_trainer():
    if not BASELINE_PATH.exists():
        pytest.skip(f"{BASELINE_PATH} is not written yet (another engineer's part)")
    source = BASELINE_PATH.read_text(encoding="utf-8")
    knobs = _by_name(source)
    for name in ("NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS", "MLP_MULT", "MATRIX_LR", "TRAIN_SEQ_LEN"):
        assert name in knobs, f"the baseline trainer should read {name} (contract)"
    for name in ("NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS", "TRAIN_SEQ_LEN"):
        assert knobs[name].type is int and knobs[name].default == OFFICIAL_DEFAULTS[name]
    assert knobs["MATRIX_LR"].type is float
    defaults = {k.name: k.default for k in knobs.values()}
    assert count_params({}, defaults)["total"] == 17_059_912
    space = SearchSpace.from_source(source)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        env = space.sample(trial)
        assert space.check(env) == []
        study.tell(trial, 1.0)


# ----------------------------------------------------------------------------------- curated table
def test_every_curated_range_contains_its_default():
    ranges = curated_ranges()
    assert len(ranges) >= 40
    for name, rng in ranges.items():
        if name in OFFICIAL_DEFAULTS:
            official = OFFICIAL_DEFAULTS[name]
            assert rng.default == official or float(rng.default) == float(official), name
        if rng.kind == "fixed":
            continue
        assert rng.default is not None, f"{name} has no reference default"
        assert rng.contains(rng.default), f"{name}: {rng.to_dict()} does not contain its default {rng.default}"
        dist = rng.distribution()
        internal = dist.to_internal_repr(rng.default) if rng.kind == "categorical" else rng.default
        assert dist._contains(internal), name


def test_curated_table_covers_the_brief():
    ranges = curated_ranges()
    for name in ("MATRIX_LR", "SCALAR_LR", "TIED_EMBED_LR", "EMBED_LR", "HEAD_LR", "ROPE_BASE", "TIED_EMBED_INIT_STD"):
        assert ranges[name].log, f"{name} should be searched on a log scale"
    assert ranges["MODEL_DIM"].step == 64
    assert ranges["TRAIN_SEQ_LEN"].choices == (1024, 2048, 4096)
    assert ranges["TRAIN_BATCH_TOKENS"].kind == "categorical"
    assert ranges["WARMUP_STEPS"].kind == "fixed"
    for name in ("NUM_LAYERS", "MODEL_DIM", "NUM_KV_HEADS", "MLP_MULT"):
        assert ranges[name].group == "architecture"
    for name in ("EVAL_STRIDE", "MUON_WD", "EMA_DECAY", "MATRIX_BITS", "LATE_QAT_THRESHOLD"):
        assert name in ranges
    assert ranges["MATRIX_LR"].group == "optimizer" and ranges["EVAL_STRIDE"].group == "eval"


def test_never_searched_have_reasons():
    never = never_searched()
    for name in ("DATA_PATH", "TOKENIZER_PATH", "RUN_ID", "SEED", "MAX_WALLCLOCK_SECONDS", "ITERATIONS",
                 "RESULT_JSON", "ARTIFACT_PATH", "EVAL_ONLY", "DEVICE", "COMPILE", "VOCAB_SIZE"):
        assert never_reason(name), name
    assert never_reason("VAL_TOKENS") and never_reason("VAL_LOSS_EVERY")  # VAL_* pattern
    assert never_reason("MATRIX_LR") is None
    assert all(len(reason) > 10 for reason in never.values())
    assert not set(never) & set(curated_ranges())


# ----------------------------------------------------------------------------------- the space
def _check_env(env: dict[str, str], types: dict[str, type]) -> None:
    """Independent re-statement of the trainer's shape rules (not the code under test)."""
    parsed = {}
    for name, text in env.items():
        typ = types[name]
        parsed[name] = bool(int(text)) if typ is bool else typ(text)  # how the trainer parses it
    get = {**OFFICIAL_DEFAULTS, **parsed}.get
    heads, kv, dim = get("NUM_HEADS"), get("NUM_KV_HEADS"), get("MODEL_DIM")
    assert heads % kv == 0, env
    assert dim % heads == 0 and (dim // heads) % 2 == 0, env
    seq = get("TRAIN_SEQ_LEN")
    assert (get("TRAIN_BATCH_TOKENS") // 8) % seq == 0, env
    assert get("VAL_BATCH_SIZE") // 8 >= seq, env
    assert 0 <= get("EVAL_STRIDE") <= seq, env


def test_sample_200_trials_valid_and_parseable():
    space = SearchSpace.from_source(SYNTHETIC_TRAINER)
    types = {k.name: k.type for k in discover_knobs(SYNTHETIC_TRAINER)}
    assert {"NUM_HEADS", "GQA_GROUP", "MODEL_DIM", "MATRIX_LR", "TRAIN_SEQ_LEN"} <= set(space.distributions())
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=20))
    seen_kv = set()
    for _ in range(200):
        trial = study.ask()
        env = space.sample(trial)
        assert set(env) <= set(types)
        assert all(isinstance(v, str) for v in env.values())
        _check_env(env, types)
        seen_kv.add((env["NUM_HEADS"], env["NUM_KV_HEADS"]))
        assert "EMBED_LR" not in env and "HEAD_LR" not in env  # tied: untied-only lrs are inactive
        objective = math.log(float(env["MATRIX_LR"])) ** 2 + int(env["NUM_LAYERS"]) / 10
        study.tell(trial, objective)
    assert len(seen_kv) >= 6  # GQA combinations are explored, all valid
    assert len(study.trials) == 200


def test_distributions_and_to_params_roundtrip():
    space = SearchSpace.from_source(SYNTHETIC_TRAINER)
    dists = space.distributions()
    baseline = space.to_params()
    assert baseline["GQA_GROUP"] == 2 and baseline["MATRIX_LR"] == 0.04 and baseline["NUM_HEADS"] == 8
    for name, value in baseline.items():
        assert dists[name]._contains(dists[name].to_internal_repr(value)), name
    # Enqueued baseline params reproduce the official defaults through sample().
    study = optuna.create_study()
    study.enqueue_trial(baseline)
    env = space.sample(study.ask())
    assert env["NUM_KV_HEADS"] == "4" and env["MODEL_DIM"] == "512" and env["MATRIX_LR"] == "0.04"
    assert env["TRAIN_BATCH_TOKENS"] == "524288" and env["GRAD_CLIP_NORM"] == "0"


def test_include_exclude_and_ranges_override():
    space = SearchSpace.from_source(
        SYNTHETIC_TRAINER, include=["MATRIX_LR", "NUM_LAYERS", "WARMDOWN_ITERS"], exclude=["WARMDOWN_ITERS"],
        ranges={"MATRIX_LR": {"low": 0.02, "high": 0.06}, "MUON_MOMENTUM": {"choices": [0.95, 0.97, 0.99]}})
    dists = space.distributions()
    assert set(dists) == {"MATRIX_LR", "NUM_LAYERS", "MUON_MOMENTUM"}  # a range opts its knob in
    assert (dists["MATRIX_LR"].low, dists["MATRIX_LR"].high, dists["MATRIX_LR"].log) == (0.02, 0.06, True)
    assert list(dists["MUON_MOMENTUM"].choices) == [0.95, 0.97, 0.99]
    env = space.sample(optuna.create_study().ask())
    assert 0.02 <= float(env["MATRIX_LR"]) <= 0.06 and int(env["NUM_LAYERS"]) in range(4, 15)


def test_unknown_knob_names_suggest_close_matches():
    with pytest.raises(ValueError, match=r"unknown knob 'MATRX_LR'.*did you mean 'MATRIX_LR'"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, include=["MATRX_LR"])
    with pytest.raises(ValueError, match=r"NUM_LAYER'.*'NUM_LAYERS'"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, ranges={"NUM_LAYER": {"low": 2, "high": 4}})
    with pytest.raises(ValueError, match="must never be searched.*seed"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, include=["SEED"])
    with pytest.raises(ValueError, match="does not read it"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, include=["MUON_WD"])
    with pytest.raises(ValueError, match="no curated range"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, include=["CLIP_FRAC"])
    with pytest.raises(ValueError, match="fixed in the curated table"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, include=["WARMUP_STEPS"])
    with pytest.raises(ValueError, match=r"unknown key 'hgih'.*'high'"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, ranges={"MATRIX_LR": {"hgih": 0.1}})
    with pytest.raises(ValueError, match="int\\(\\)"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, ranges={"NUM_LAYERS": {"kind": "float", "low": 2, "high": 4}})


def test_constraints_are_valid_by_construction_or_refused():
    # Only NUM_KV_HEADS searched: choices are the divisors of the pinned NUM_HEADS.
    space = SearchSpace.from_source(SYNTHETIC_TRAINER, include=["NUM_KV_HEADS"], base_env={"NUM_HEADS": "6",
                                                                                          "MODEL_DIM": "192"})
    assert sorted(space.distributions()["NUM_KV_HEADS"].choices) == [1, 2]
    # MODEL_DIM searched under 6 pinned heads: step becomes a multiple of 12.
    space = SearchSpace.from_source(SYNTHETIC_TRAINER, include=["MODEL_DIM"], base_env={"NUM_HEADS": "6",
                                                                                       "NUM_KV_HEADS": "2"})
    d = space.distributions()["MODEL_DIM"]
    assert d.step % 12 == 0 and all(v % 12 == 0 for v in range(d.low, d.high + 1, d.step))
    # A user range that allows invalid combinations is refused, with the reason.
    with pytest.raises(ConstraintError, match=r"invalid combinations, e.g. NUM_HEADS=4, GQA_GROUP=8.*must divide"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, include=["NUM_HEADS", "NUM_KV_HEADS"],
                                ranges={"NUM_HEADS": {"choices": [4, 8]}, "GQA_GROUP": {"choices": [1, 8]}})
    with pytest.raises(ConstraintError, match=r"NUM_HEADS: value\(s\) \[6\] are never valid in this space"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, include=["NUM_HEADS"], ranges={"NUM_HEADS": {"choices": [6, 8]}})
    with pytest.raises(ConstraintError, match=r"GQA_GROUP=4 must divide NUM_HEADS=6"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, ranges={"NUM_HEADS": {"choices": [6, 8]}})
    # A curated choice that can never fit the base env is dropped (EVAL_STRIDE 256 > a 128-token sequence).
    space = SearchSpace.from_source(SYNTHETIC_TRAINER, include=["EVAL_STRIDE"],
                                    base_env={"TRAIN_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "8192",
                                              "VAL_BATCH_SIZE": "16384"})
    assert max(space.distributions()["EVAL_STRIDE"].choices) == 128
    assert any("EVAL_STRIDE" in note for note in space.notes)


def test_constraint_violations_messages():
    assert constraint_violations({}) == []
    assert "must divide NUM_HEADS" in constraint_violations({"NUM_KV_HEADS": "3"})[0]
    assert "even" in constraint_violations({"MODEL_DIM": "520", "NUM_HEADS": "8"})[0]
    assert "micro-batches" in constraint_violations({"TRAIN_BATCH_TOKENS": "4096"})[0]
    assert "does not parse" in constraint_violations({"NUM_LAYERS": "9.5"})[0]


def test_conditional_knobs_follow_tie_embeddings():
    space = SearchSpace.from_source(SYNTHETIC_TRAINER, include=["TIE_EMBEDDINGS", "EMBED_LR", "TIED_EMBED_LR"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(30):
        env = space.sample(trial := study.ask())
        study.tell(trial, 0.0)
        tied = env["TIE_EMBEDDINGS"] == "1"
        seen.add(tied)
        assert ("TIED_EMBED_LR" in env) == tied and ("EMBED_LR" in env) == (not tied)
    assert seen == {True, False}
    with pytest.raises(ValueError, match="only used when TIE_EMBEDDINGS=0"):
        SearchSpace.from_source(SYNTHETIC_TRAINER, include=["EMBED_LR"])


def test_base_env_pins_knobs_and_techniques_extend():
    space = SearchSpace.from_source(SYNTHETIC_TRAINER, base_env={"NUM_LAYERS": "2", "MODEL_DIM": "64"})
    assert "NUM_LAYERS" not in space.distributions() and "MODEL_DIM" not in space.distributions()
    rows = {r["name"]: r for r in space.describe()}
    assert rows["NUM_LAYERS"]["status"] == "pinned" and rows["SEED"]["status"] == "never"
    assert rows["WARMUP_STEPS"]["status"] == "fixed" and rows["MATRIX_LR"]["status"] == "searched"
    # A technique adds a knob the baseline does not read, with its own range.
    bigger = space.extend([(KnobSpec("MUON_WD", float, 0.0), {"low": 0.0, "high": 0.1})])
    assert "MUON_WD" in bigger.distributions() and "MUON_WD" not in space.distributions()
    env = bigger.sample(optuna.create_study().ask())
    assert 0.0 <= float(env["MUON_WD"]) <= 0.1
    # Mapping form: the technique's knob is curated, its range partially overridden.
    tech = space.extend({"EMA_DECAY": {"low": 0.995}})
    assert tech.distributions()["EMA_DECAY"].low == 0.995 and tech.ranges["EMA_DECAY"].source == "technique"


def test_knob_range_from_dict_validation():
    rng = KnobRange.from_dict("X", {"low": 1, "high": 8}, knob_type=int)
    assert rng.kind == "int" and rng.values() == list(range(1, 9))
    assert KnobRange.from_dict("X", {"choices": ["a", "b"]}).kind == "categorical"
    with pytest.raises(ValueError, match="log range needs low > 0"):
        KnobRange.from_dict("X", {"low": 0.0, "high": 1.0, "log": True})
    with pytest.raises(ValueError, match="low 2 > high 1"):
        KnobRange.from_dict("X", {"low": 2, "high": 1})


# ----------------------------------------------------------------------------------- size estimator
def test_count_params_baseline():
    groups = count_params({})
    assert groups["total"] == 17_059_912
    assert groups["tok_emb"] == 1024 * 512
    assert groups["attn.c_k"] == 9 * 256 * 512 and groups["mlp.fc"] == 9 * 1024 * 512
    assert groups["skip_weights"] == 4 * 512 and groups["q_gain"] == 9 * 8 and groups["lm_head"] == 0
    assert count_params({"TIE_EMBEDDINGS": "0"})["total"] == 17_059_912 + 1024 * 512
    assert count_params({"NUM_LAYERS": "1"})["skip_weights"] == 0
    with pytest.raises(ValueError, match="even head_dim"):
        count_params({"NUM_HEADS": "3"})


def test_estimate_baseline_within_3_percent():
    est = estimate_artifact_bytes({}, code_bytes=47_642)
    assert est.params == 17_059_912
    assert est.quantized_payload_bytes == 17_178_912  # the baseline log's payload, exactly
    assert abs(est.total_bytes - 15_863_489) / 15_863_489 < 0.03
    assert est.low < est.total_bytes < est.high and est.fits(16_000_000)
    bigger = estimate_artifact_bytes({"NUM_LAYERS": "11", "MLP_MULT": "3"}, code_bytes=47_642)
    assert not bigger.fits(16_000_000)


def test_technique_cost_changes_the_estimate():
    env = {"NUM_LAYERS": "11", "MLP_MULT": "3"}
    int8 = estimate_artifact_bytes(env, 0)
    int6 = estimate_artifact_bytes(env, 0, cost={"bits_per_weight": 6})
    assert int6.compressed_bytes < 0.8 * int8.compressed_bytes
    assert estimate_artifact_bytes({**env, "MATRIX_BITS": "6"}, 0).compressed_bytes == int6.compressed_bytes
    ratio = estimate_artifact_bytes(env, 0, cost=SizeCost(bits_per_weight=6, compressor_ratio=0.8))
    assert ratio.ratio == 0.8
    extra = estimate_artifact_bytes(env, 0, cost={"extra_params": 1_000_000})
    assert extra.params == int8.params + 1_000_000
    fp16_emb = payload_bytes({}, {"embed_bits": 16})
    assert fp16_emb.passthrough_bytes - payload_bytes({}).passthrough_bytes == 1024 * 512 * 2
    assert SizeCost.from_metadata({"bytes_per_param": 0.75}).bits_per_weight == 6
    with pytest.raises(ValueError, match="unknown key"):
        SizeCost.from_metadata({"bits": 6})


def test_calibrate_recovers_planted_ratio():
    envs = [{"NUM_LAYERS": str(n), "MODEL_DIM": str(d)} for n, d in ((4, 256), (6, 384), (9, 512), (11, 512))]
    planted = 0.8125
    pairs = [(env, round(planted * payload_bytes(env).serialized)) for env in envs]
    calib = calibrate(pairs)
    assert abs(calib.ratio - planted) < 1e-6 and calib.max_abs_rel_error < 1e-6 and calib.n_points == 4
    # With an overhead constant as well.
    pairs = [(env, round(0.9 * payload_bytes(env).serialized + 12_345)) for env in envs]
    calib = calibrate(pairs, fit_overhead=True)
    assert abs(calib.ratio - 0.9) < 1e-5 and abs(calib.overhead_bytes - 12_345) < 5
    # Refinement keeps old points, and the JSON form round-trips.
    refined = calib.refined({"NUM_LAYERS": "7"}, round(0.9 * payload_bytes({"NUM_LAYERS": "7"}).serialized + 12_345))
    assert refined.n_points == 5 and abs(refined.ratio - 0.9) < 1e-5
    again = Calibration.from_json(refined.to_json())
    assert again == refined and json.loads(refined.to_json())["n_points"] == 5
    same = estimate_artifact_bytes({}, 0, again).compressed_bytes
    assert same == estimate_artifact_bytes({}, 0, refined).compressed_bytes
    with pytest.raises(ValueError):
        calibrate([])


def test_default_calibration_is_the_official_baseline():
    calib = default_calibration()
    assert calib.n_points == 1 and calib.band == 0.03
    assert round(calib.predict(payload_bytes({}).serialized)) == 15_815_847
