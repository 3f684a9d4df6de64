"""Every technique folder under search_space/techniques/ (found by scanning, never listed here).

The catalog loads and validates; each patch applies to the baseline alone, compiles and audits clean, bakes its
[env] in as defaults and reads the knobs it declares; every pair not declared conflicting combines; each technique
(with what it requires) trains a few CPU steps, writes result.json, and its artifact re-scores to the same val_bpb in
a fresh EVAL_ONLY process that sees only the val shards; its declared byte cost points the way the real export goes.
Bad technique.toml files give one-line errors naming the folder and the key. The smoke runs are made once per module,
two at a time.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.catalog import TechniqueLike
from agents.patches import apply_patch
from harness.audit import audit_source
from search_space import (
    SearchSpace,
    SizeCost,
    default_calibration,
    discover_knobs,
    estimate_artifact_bytes,
    parse_env_value,
)
from search_space.techniques import (
    TECHNIQUES_DIR,
    CatalogError,
    Technique,
    closure,
    combined_patch,
    load_catalog,
    merged_cost,
    merged_env,
)
from trainer import BASELINE_PATH

NAMES = sorted(p.name for p in TECHNIQUES_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
BASE = BASELINE_PATH.read_text(encoding="utf-8")
# Over the tiny config (conftest): 256 wide so the MLP matrices (512 x 256) and the embedding exceed the
# 65,536-element passthrough limit and the export really quantizes them (int6, GPTQ-lite and QAT act on something);
# 4 steps, one priming step, half the val tokens.
SMOKE = {"MODEL_DIM": "256", "ITERATIONS": "4", "WARMUP_STEPS": "1", "VAL_TOKENS": "16384"}
RESCORE_TOLERANCE = 1e-4  # bpb: what the harness's re-score allows (harness/runner.py)
# Byte-cost check. A 4-step model is near its initialization and compresses unlike a trained one (the size
# estimator's notes: ratio 0.3-0.5 vs 0.92). Its rows are all below 1, so the int8 path's 1/127 scale floor binds and
# a lower bit width stores the very same values: the prediction counts 8 bits whatever is declared or set;
# the compressor, the shapes in the env and extra parameters can. Declared extra_params count full-scale shapes, so
# with them only the direction is checked. Otherwise a predicted change of >= 3% must show in the same direction and
# within a factor 1.5; a smaller one must stay within 15% (a different schedule moves a 4-step model's weights:
# +7% bytes seen).
COST_NEUTRAL, COST_SAME_BAND, COST_FACTOR = 0.03, 0.15, 1.5


def catalog() -> list[Technique]:
    return load_catalog()


def patched(techniques) -> str:
    return apply_patch(BASE, combined_patch(techniques, BASE))


def test_catalog_loads_every_folder_sorted_and_as_the_catalog_agent_needs():
    techniques = catalog()
    assert [t.name for t in techniques] == NAMES
    for t in techniques:
        assert isinstance(t, TechniqueLike)
        assert t.description and "\n" not in t.description
        for other in t.conflicts:  # symmetric, whichever side declared it
            assert t.name in next(u for u in techniques if u.name == other).conflicts


@pytest.mark.parametrize("name", NAMES)
def test_patch_applies_alone_compiles_and_audits_clean(name):
    t = next(t for t in catalog() if t.name == name)
    source = apply_patch(BASE, t.patch)
    assert t.patch.strip() == "" or source != BASE
    compile(source, f"{name}/train_gpt.py", "exec")
    errors = [str(f) for f in audit_source(source) if f.severity == "error"]
    assert not errors, errors


@pytest.mark.parametrize("name", NAMES)
def test_patch_bakes_in_its_env_and_reads_its_knobs(name):
    techniques = closure([name], catalog())
    t = techniques[-1]
    source = patched(techniques)
    knobs = {k.name: k for k in discover_knobs(source)}
    assert not [k for k in t.knobs if k not in knobs], "declared knobs the patched trainer never reads"
    for key, value in t.env.items():
        if key in knobs and knobs[key].default is not None:
            assert knobs[key].default == parse_env_value(value, knobs[key].type), f"[env] {key}={value} vs the patch"
    space = SearchSpace.from_source(source).extend(dict(t.knobs))
    assert set(t.knobs) <= set(space.ranges)


def test_every_pair_not_declared_conflicting_combines():
    techniques = catalog()
    failures = []
    for a, b in itertools.combinations(techniques, 2):
        try:
            pair = closure([a.name, b.name], techniques)
        except CatalogError:
            continue  # declared (or required) conflict
        try:
            compile(patched(pair), f"{a.name}+{b.name}", "exec")
        except Exception as e:  # PatchError or SyntaxError
            failures.append(f"{a.name} + {b.name}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------------- smoke runs


@dataclass
class Smoke:
    name: str
    techniques: list[Technique]
    env: dict[str, str]  # the whole environment of the run: tiny config, SMOKE, [env], [small_env]
    cwd: Path
    proc: subprocess.CompletedProcess | None = None
    rescore: subprocess.CompletedProcess | None = None
    result: dict = field(default_factory=dict)
    rescore_result: dict = field(default_factory=dict)


def _val_only(dataset_dir: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in dataset_dir.glob("fineweb_val_*.bin"):
        shutil.copy(f, dest / f.name)
    return dest


def _run(run: Smoke, data: dict[int, tuple[Path, Path, Path]]) -> Smoke:
    dataset, tokenizer, val_only = data[int(run.env["VOCAB_SIZE"])]
    run.cwd.mkdir(parents=True)
    (run.cwd / "train_gpt.py").write_text(patched(run.techniques), encoding="utf-8")
    env = {**run.env, "DATA_PATH": str(dataset), "TOKENIZER_PATH": str(tokenizer), "RUN_ID": run.name,
           "RESULT_JSON": str(run.cwd / "result.json"), "ARTIFACT_PATH": str(run.cwd / "final_model.ptz")}
    run.proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=run.cwd, env=env, capture_output=True, text=True,
                              timeout=600)
    if run.proc.returncode != 0 or not (run.cwd / "result.json").is_file():
        return run
    run.result = json.loads((run.cwd / "result.json").read_text())
    rescore_dir = run.cwd / "rescore"
    rescore_dir.mkdir()
    shutil.copy(run.cwd / "train_gpt.py", rescore_dir / "train_gpt.py")
    env.update(EVAL_ONLY="1", DATA_PATH=str(val_only), RESULT_JSON=str(rescore_dir / "result.json"))
    run.rescore = subprocess.run([sys.executable, "train_gpt.py"], cwd=rescore_dir, env=env, capture_output=True,
                                 text=True, timeout=600)
    if run.rescore.returncode == 0:
        run.rescore_result = json.loads((rescore_dir / "result.json").read_text())
    return run


_SMOKE: dict[str, Smoke] = {}


@pytest.fixture()
def smoke(trainer_env, local_data, tmp_path_factory) -> dict[str, Smoke]:
    """The baseline and every technique (with its requirements) at tiny + SMOKE + [env] + [small_env], 2 at a time;
    made once per session by whichever test asks first."""
    if not _SMOKE:
        _SMOKE.update(_smoke_runs(trainer_env, local_data, tmp_path_factory))
    return _SMOKE


def _smoke_runs(trainer_env, local_data, tmp_path_factory) -> dict[str, Smoke]:
    techniques = catalog()
    root = tmp_path_factory.mktemp("smoke")
    base_env = {**trainer_env, **SMOKE}
    runs = [Smoke("baseline", [], base_env, root / "baseline")]
    for t in techniques:
        chosen = closure([t.name], techniques)
        runs.append(Smoke(t.name, chosen, {**base_env, **merged_env(chosen, small=True)}, root / t.name))
    data = {1024: (local_data.dataset_dir, local_data.tokenizer_path)}
    for vocab in sorted({int(r.env["VOCAB_SIZE"]) for r in runs} - {1024}):  # e.g. a larger-vocabulary technique
        from data.build import build_dataset, stdlib_documents

        built = build_dataset(stdlib_documents(), dest=tmp_path_factory.mktemp(f"data{vocab}"), vocab_size=vocab)
        data[vocab] = (built.dataset_dir, built.tokenizer_path)
    data = {v: (d, tok, _val_only(d, root / f"val_only_{v}")) for v, (d, tok) in data.items()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda r: _run(r, data), runs))
    return {r.name: r for r in done}


def _tail(proc: subprocess.CompletedProcess | None) -> str:
    return "" if proc is None else (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:])


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_and_eval_only_rescore_agree(name, smoke):
    run = smoke[name]
    assert run.proc is not None and run.proc.returncode == 0, _tail(run.proc)
    assert run.result, "no result.json"
    assert run.rescore is not None and run.rescore.returncode == 0, _tail(run.rescore)
    r, again = run.result, run.rescore_result
    assert r["steps"] == int(SMOKE["ITERATIONS"]) and again["eval_only"]
    assert abs(again["val_bpb"] - r["val_bpb"]) <= RESCORE_TOLERANCE, (r["val_bpb"], again["val_bpb"])
    assert again["bytes_total"] == r["bytes_total"]
    assert r["eval_stride"] == int(run.env.get("EVAL_STRIDE", 0))
    final = [line for line in run.proc.stdout.splitlines() if "_exact val_loss:" in line][-1]
    assert f"val_bpb:{r['val_bpb']:.8f}" in final  # the harness reads the last *_exact line
    size = [line for line in run.proc.stdout.splitlines() if line.startswith("Total submission size ")][-1]
    assert size.endswith(f": {r['bytes_total']} bytes")


@pytest.mark.parametrize("name", NAMES)
def test_declared_cost_matches_the_direction_of_the_real_export(name, smoke):
    run, base = smoke[name], smoke["baseline"]
    if not (run.result and base.result):
        pytest.skip("the smoke run failed (reported by test_smoke_run_and_eval_only_rescore_agree)")
    calibration = default_calibration()
    declared = merged_cost(run.techniques)
    cost = SizeCost(bits_per_weight=8, embed_bits=8, compressor_ratio=declared.compressor_ratio,
                    extra_params=declared.extra_params, scheme=declared.scheme)  # int8 values: see above COST_NEUTRAL
    predicted = (estimate_artifact_bytes(run.env, 0, calibration, cost=cost).compressed_bytes
                 / estimate_artifact_bytes(base.env, 0, calibration).compressed_bytes)
    actual = run.result["bytes_model"] / base.result["bytes_model"]
    where = f"{name}: artifact {run.result['bytes_model']} B vs baseline {base.result['bytes_model']} B"
    if abs(predicted - 1) < COST_NEUTRAL:
        assert abs(actual - 1) <= COST_SAME_BAND, f"{where}: x{actual:.3f} but the declared cost predicts no change"
        return
    assert (actual - 1) * (predicted - 1) > 0, f"{where}: x{actual:.3f}, the declared cost predicts x{predicted:.3f}"
    if not declared.extra_params:
        assert 1 / COST_FACTOR <= actual / predicted <= COST_FACTOR, f"{where}: x{actual:.3f} vs x{predicted:.3f}"


# ---------------------------------------------------------------------------------------------- schema errors

GOOD = """category = "eval"
description = "Does a thing."
introduced_in = "2026-03-19_SlidingWindowEval"
reported_gain = "-0.01 bpb"
scale = "both"
[env]
EVAL_STRIDE = "64"
"""


def write(root: Path, name: str, toml: str, patch: str | None = None) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "technique.toml").write_text(toml)
    if patch is not None:
        (root / name / "patch.diff").write_text(patch)


def test_a_minimal_env_only_technique_loads(tmp_path):
    write(tmp_path, "alpha", GOOD)
    (t,) = load_catalog(tmp_path)
    assert (t.name, t.patch, dict(t.env), t.conflicts, t.requires) == ("alpha", "", {"EVAL_STRIDE": "64"}, (), ())
    assert t.size_cost.bits_per_weight is None and t.time_factor == 1.0


def test_conflicts_are_made_symmetric(tmp_path):
    write(tmp_path, "alpha", GOOD.replace("[env]", 'conflicts = ["beta"]\n[env]'))  # only alpha says it
    write(tmp_path, "beta", GOOD)
    alpha, beta = load_catalog(tmp_path)
    assert alpha.conflicts == ("beta",) and beta.conflicts == ("alpha",)
    with pytest.raises(CatalogError, match="'alpha' and 'beta' conflict"):
        closure(["alpha", "beta"], [alpha, beta])


def top(line: str) -> str:
    """GOOD with a top-level line (before its [env] table)."""
    return GOOD.replace("[env]", line + "\n[env]")


@pytest.mark.parametrize(
    "folder,toml,patch,expect",
    [
        ("alpha", top("colour = 1"), None, "alpha/technique.toml: unknown key 'colour'"),
        ("alpha", top("require = []"), None, "unknown key 'require' (did you mean 'requires'?)"),
        ("alpha", GOOD.replace('scale = "both"\n', ""), None, "alpha/technique.toml: missing required key 'scale'"),
        ("alpha", top('conflicts = ["nope"]'), None, "alpha/technique.toml: conflicts names unknown technique 'nope'"),
        ("alpha", top('requires = ["bet"]'), None, "requires names unknown technique 'bet' (did you mean 'beta'?)"),
        ("alpha", top('requires = ["alpha"]'), None, "requires names the technique itself"),
        ("alpha", GOOD.replace('"eval"', '"evals"'), None, "category 'evals' is not one of"),
        ("alpha", GOOD.replace('"Does a thing."', '"""One.\n\nTwo."""'), None, "description must be one paragraph"),
        ("alpha", GOOD + "EVAL_STRIDE_X = [1]\n", None, "[env] EVAL_STRIDE_X must be a string or a number"),
        ("alpha", GOOD + "[knobs.EVAL_STRIDE]\nlow = 8\nhigh = 4\ndefault = 6\n", None, "knobs.EVAL_STRIDE: range"),
        ("alpha", GOOD + "[knobs.EVAL_STRIDE]\nlow = 8\nhigh = 64\ndefault = 128\n", None, "outside its range"),
        ("alpha", GOOD + "[knobs.EVAL_STRIDE]\nlow = 8\nhigh = 64\n", None, "knobs.EVAL_STRIDE has no default"),
        ("alpha", GOOD + "[cost]\nbits_per_weigth = 6\n", None, "cost.bits_per_weigth is not a cost key"),
        ("alpha", GOOD + "[cost]\ntime_factor = 0\n", None, "cost.time_factor must be a positive number"),
        ("alpha", GOOD + "[cost]\nbits_per_weight = 40\n", None, "alpha/technique.toml: [cost] size cost"),
        ("alpha", GOOD.replace('[env]\nEVAL_STRIDE = "64"\n', ""), None, "changes nothing"),
        ("alpha", GOOD, "not a diff\n", "alpha/patch.diff: not a unified diff of train_gpt.py"),
        ("alpha", GOOD.replace("scale = ", "scale == "), None, "alpha/technique.toml: not valid TOML"),
        ("Alpha", GOOD, None, "lower_snake_case"),
    ],
)
def test_bad_technique_folders_are_one_line_errors_naming_folder_and_key(tmp_path, folder, toml, patch, expect):
    write(tmp_path, "beta", GOOD)
    write(tmp_path, folder, toml, patch)
    with pytest.raises(CatalogError) as exc:
        load_catalog(tmp_path)
    message = str(exc.value)
    assert expect in message and "\n" not in message, message


def test_a_folder_without_technique_toml_is_an_error(tmp_path):
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpha" / "patch.diff").write_text("")
    with pytest.raises(CatalogError, match="alpha/technique.toml: missing"):
        load_catalog(tmp_path)


def test_requirements_that_bring_conflicts_together_are_refused(tmp_path):
    write(tmp_path, "alpha", GOOD.replace("[env]", 'requires = ["beta", "gamma"]\n[env]'))
    write(tmp_path, "beta", GOOD.replace("[env]", 'conflicts = ["gamma"]\n[env]'))
    write(tmp_path, "gamma", GOOD)
    with pytest.raises(CatalogError, match="alpha/technique.toml: its requirements bring 'beta' and 'gamma'"):
        load_catalog(tmp_path)


# ---------------------------------------------------------------------------------------------- the CLI


def pgolf(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)


def test_cli_lists_and_shows_techniques():
    listing = pgolf("techniques", "list")
    assert listing.returncode == 0, listing.stderr
    assert all(name in listing.stdout for name in NAMES)
    shown = pgolf("techniques", "show", NAMES[0])
    t = catalog()[0]
    assert shown.returncode == 0, shown.stderr
    assert t.introduced_in in shown.stdout and t.category in shown.stdout


def test_cli_unknown_technique_is_a_one_line_error_with_close_matches():
    name = NAMES[0]
    shown = pgolf("techniques", "show", name[:-1] + "x")
    assert shown.returncode == 2 and shown.stdout == ""
    assert shown.stderr.count("\n") == 1 and f"did you mean '{name}'" in shown.stderr, shown.stderr
