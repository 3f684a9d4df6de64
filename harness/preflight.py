"""Pre-flight: what a proposal must pass before it gets any training time.

apply -> compile -> static legality audit -> artifact-size estimate, then for LLM proposals the CPU
smoke (harness/smoke.py, run by agents/llm after this validator passes). Each stage's failure is a
one-line reason that goes back to the proposer (and, for LLM agents, into a repair turn).
"""

from __future__ import annotations

from collections.abc import Callable

from agents.patches import PatchError, apply_patch
from harness.audit import audit_source
from harness.proposals import Validation
from search_space.size_estimate import SizeCost, estimate_artifact_bytes


class Preflight:
    """Validates patches against one baseline; env-aware size checks via `check`."""

    def __init__(self, baseline_source: str, base_env: dict[str, str], byte_cap: int,
                 calibration_fn: Callable[[], object] | None = None):
        self.baseline_source = baseline_source
        self.base_env = base_env
        self.byte_cap = byte_cap
        self.calibration_fn = calibration_fn or (lambda: None)

    def __call__(self, patch: str) -> Validation:
        return self.check(patch, {})

    def check(self, patch: str, env: dict[str, str], cost: SizeCost | None = None) -> Validation:
        """`cost`: what the patch is known to add or change in bytes per parameter (a catalog technique's
        declared cost): the estimator reads shapes from env knobs only, so a new table is otherwise unseen."""
        if patch.strip():
            try:
                source = apply_patch(self.baseline_source, patch)
            except PatchError as e:
                return Validation(False, "apply", str(e))
        else:
            source = self.baseline_source
        try:
            compile(source, "train_gpt.py", "exec")
        except SyntaxError as e:
            return Validation(False, "compile", f"SyntaxError line {e.lineno}: {e.msg}; fix the patch so the file "
                              "compiles", source)
        errors = [f for f in audit_source(source) if f.severity == "error"]
        if errors:
            f = errors[0]
            where = f" (line {f.line})" if getattr(f, "line", None) else ""
            return Validation(False, "audit", f"{f.code}{where}: {f.message}", source)
        full_env = {**self.base_env, **env}
        est = estimate_artifact_bytes(full_env, len(source.encode("utf-8")), self.calibration_fn(), cost=cost)
        if est.total_bytes > self.byte_cap:
            return Validation(False, "size", f"estimated {est.total_bytes:,} bytes > cap {self.byte_cap:,}; "
                              "shrink the model or quantize harder", source, est.total_bytes)
        return Validation(True, "ok", "", source, est.total_bytes)
