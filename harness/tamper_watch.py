"""Which run changed what the harness owns: the loop's side of harness/tripwire.py.

After every poll the files (the tripwire) and the store's own rows (`Store.verify_own_writes`) are
checked; the runs in flight since the last clean check are the suspects. A lone suspect is convicted:
the files are put back, its numbers are void and its candidate is blocked. Beside other runs, every
suspect is rerun alone (the quarantine, kept in the store across a restart): one that changes them
again with nothing beside it is convicted, one that does not is innocent and its result stands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from harness.runner import RunOutcome, RunStatus
from harness.store import Store
from harness.tripwire import Tripwire

STORE_CHECK_S = 5.0  # the store's rows are re-read at least this often, and after every finished run

CONVICTED, RERUN_ALONE = "convicted", "rerun alone"


class TamperWatch:
    def __init__(self, store: Store, announce: Callable[[str], None]):
        self.store, self.announce = store, announce
        self.tripwire: Tripwire | None = None
        self.quarantine: set[str] = set()  # in flight when something they do not own changed: rerun alone
        self.culprits: dict[str, str] = {}  # changed it again while running alone: run id -> what
        self._alone: str | None = None  # the quarantined run in flight, with nothing beside it
        self._cancels: set[str] = set()  # runs stopped because they became suspects
        self._exposed: set[str] = set()  # in flight at the last check
        self._paths: dict[str, set[Path]] = {}  # run id -> changed files it is suspected of
        self._store_checked = 0.0

    def start(self, watched: Iterable[Path | str | None]) -> None:
        """Snapshot the harness's files and `watched` (config, baseline, track); a resumed search keeps its
        quarantine."""
        self.quarantine = set(self.store.get_meta("quarantine", []))
        self.tripwire = Tripwire.for_harness(list(watched))

    def check(self, outcomes: list[RunOutcome], executor, store: bool = False) -> None:
        """After each poll: did anything the harness owns change? The runs in flight since the last clean
        check are the suspects. Alone, a suspect is convicted; beside others, each is rerun alone."""
        now = time.monotonic()
        files = self.tripwire.check() if self.tripwire else []
        rows = []
        if store or files or outcomes or now - self._store_checked > STORE_CHECK_S:
            rows = self.store.verify_own_writes()
            self._store_checked = now
        running = set(executor.running())
        exposed = self._exposed | running | {o.run_id for o in outcomes}
        self._exposed = running
        if not files and not rows:
            return
        what = [f"changed {p}" for p in files] + rows
        summary = "; ".join(what[:4]) + (f"; and {len(what) - 4} more" if len(what) > 4 else "")
        self.store.event("tampering", runs=sorted(exposed), findings=what)
        if not exposed:
            self.announce(f"[bold red]harness files or store rows changed while no run was in flight[/bold red]:"
                          f" {summary}")
            return
        for rid in exposed:
            self._paths.setdefault(rid, set()).update(files)
        if len(exposed) == 1:
            (rid,) = exposed
            restored = self.tripwire.restore(self._paths.pop(rid, set())) if self.tripwire else []
            self.culprits[rid] = summary + (f" ({len(restored)} file(s) put back)" if restored else "")
            self.announce(f"[bold red]run {rid} changed what the harness owns[/bold red]: {summary}; "
                          "files put back, candidate blocked")
            if rid in running:
                executor.cancel(rid)
            return
        self.quarantine |= exposed
        self._cancels |= exposed & running
        self.store.set_meta("quarantine", sorted(self.quarantine))
        self.announce(f"[bold red]harness files or store rows changed[/bold red] while {len(exposed)} runs were in "
                      f"flight ({summary}); each of them is rerun alone to find out which")
        for rid in exposed & running:
            executor.cancel(rid)

    def admit(self, queued: list, executor, in_flight: bool) -> list:
        """The queued runs that may start now. A quarantined run starts only once nothing is in flight, and
        then alone; nothing starts beside it."""
        if self._alone is not None:
            return []
        held = [r for r in queued if r.id in self.quarantine]
        if not held:
            return queued
        if in_flight:
            return []
        self.check([], executor, store=True)  # what the others did is theirs: start a clean window
        self._exposed = set()
        self._alone = held[0].id
        return held[:1]

    def judge(self, run, o: RunOutcome) -> str:
        """CONVICTED (the outcome is now void: record it), RERUN_ALONE (requeue it), or "" (as usual)."""
        alone = o.run_id == self._alone
        if alone:
            self._alone = None
        stopped_by_us = o.run_id in self._cancels
        self._cancels.discard(o.run_id)
        if o.run_id in self.culprits:
            self._convict(run, o)
            return CONVICTED
        if o.run_id in self.quarantine:
            if not alone or stopped_by_us:
                return RERUN_ALONE
            self.quarantine.discard(o.run_id)  # ran alone and left everything as it was: innocent
            self.store.set_meta("quarantine", sorted(self.quarantine))
        return ""

    def _convict(self, run, o: RunOutcome) -> None:
        """A run that changed what the harness owns: its numbers are void and its candidate is blocked."""
        what = self.culprits[run.id]
        o.status, o.val_bpb, o.val_loss = RunStatus.INVALID, None, None
        o.flag("tampering", f"changed what the harness owns while it ran alone: {what}")
        o.error = f"tampering: changed what the harness owns while it ran alone: {what}"
        self.quarantine.discard(run.id)
        self.store.set_meta("quarantine", sorted(self.quarantine))
        try:  # the run folder says so too, for pgolf audit
            (Path(run.run_dir) / "outcome.json").write_text(json.dumps(o.to_dict(), indent=1, default=str))
        except OSError:
            pass
        self.store.set_candidate_state(run.candidate_id, "stopped", o.error)
