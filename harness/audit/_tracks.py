"""Tracks and their byte caps: which cap a track name, folder name or submission.json 'track' means."""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_CAP = 16_000_000
TRACK_CAPS: dict[str, int] = {
    "track_10min_16mb": 16_000_000,
    "track_non_record_16mb": 16_000_000,
    "track_30min_2mb_local": 2_000_000,
    "main-10min-16mb": 16_000_000,
    "local-30min-2mb": 2_000_000,
    "10min_16mb": 16_000_000,
    "30min_2mb_local": 2_000_000,
}
# tracks whose claims are records (and so need several seeds), by any of their names
RECORD_TRACKS = {"track_10min_16mb", "track_30min_2mb_local", "main-10min-16mb", "local-30min-2mb", "10min_16mb",
                 "30min_2mb_local"}  # fmt: skip


def cap_for_track(track: str | None) -> int | None:
    """Byte cap of a track given by folder name, pgolf track name or submission.json 'track' value."""
    if not track:
        return None
    name = Path(track).name
    if name in TRACK_CAPS:
        return TRACK_CAPS[name]
    if m := re.search(r"(\d+)\s*mb", name, re.I):
        return int(m.group(1)) * 1_000_000
    return None
