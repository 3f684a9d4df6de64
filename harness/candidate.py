"""Candidates: baseline hash + patch + env overrides + track, identified by a hash of those."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from agents.patches import diff_hash as patch_fingerprint  # changed lines only: header/context noise is no new idea

_NO_CHANGE = patch_fingerprint("")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Candidate:
    baseline_hash: str
    track: str
    patch: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        key = json.dumps(
            [self.baseline_hash, self.patch_hash, sorted(self.env.items()), self.track],
            separators=(",", ":"),
        )
        return "c" + sha256_text(key)[:11]

    @property
    def patch_hash(self) -> str:
        fingerprint = patch_fingerprint(self.patch)
        if self.patch.strip() and fingerprint == _NO_CHANGE:  # changes nothing a unified diff can say: not the
            return "raw" + sha256_text(self.patch)[:13]  # baseline, but an unreadable patch of its own
        return fingerprint


def run_id(candidate_id: str, rung: str, seed: int) -> str:
    return f"{candidate_id}-{rung}-s{seed}"
