"""The Ray actors behind `harness.executor`: one slot per GPU set (or CPU), and the progress board.

A `Slot` holds k GPUs on one node and runs one run at a time through its runner (default
`run_candidate`), for as many runs as the driver sends. When its node does not see the driver's
run folder (`harness/shipping.py`), it runs in node-local scratch and returns the packed folder
with the outcome. It records where the run ran, on which GPUs (SKU, count, driver) and which data.
`ProgressBoard` keeps the latest progress dict of each running run for the driver to read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ray

from harness import shipping
from harness.runner import RunOutcome, RunSpec, RunStatus
from harness.staging import gpu_facts

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(e: BaseException, limit: int = 300, last: bool = False) -> str:
    """One line for an outcome's error: the exception type and the first (or last) line of its text."""
    text = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    line = f"{type(e).__name__}: {(text[-1] if last else text[0]) if text else ''}".strip().rstrip(":")
    return line[:limit]


def _ids(gpu_ids: list) -> list:
    return [int(g) if str(g).isdigit() else g for g in gpu_ids]


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest progress dict per running run, written by slots and read by the driver."""

    def __init__(self) -> None:
        self.latest: dict[str, dict] = {}

    def put(self, run_id: str, progress: dict) -> None:
        self.latest[run_id] = progress

    def drop(self, run_id: str) -> None:
        self.latest.pop(run_id, None)

    def snapshot(self) -> dict[str, dict]:
        return self.latest


@ray.remote
class Slot:
    """One GPU slot (or one CPU): runs one run at a time, for as many runs as the driver sends."""

    def __init__(self, runner: Callable, board, gpus: int, progress_interval_s: float) -> None:
        self.runner, self.board, self.gpus, self.interval = runner, board, gpus, progress_interval_s
        ctx = ray.get_runtime_context()
        self.facts = {"pid": os.getpid(), "node_id": ctx.get_node_id(), "hostname": socket.gethostname(),
                      "gpu_ids": _ids(ray.get_gpu_ids()) if gpus else [],
                      # Ray sets CUDA_VISIBLE_DEVICES for this actor; the trainer gets it explicitly
                      # because the runner builds the child's environment from an allowlist + spec.env.
                      "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "") if gpus else ""}
        if gpus and not self.facts["cuda_visible_devices"]:
            self.facts["cuda_visible_devices"] = ",".join(str(g) for g in self.facts["gpu_ids"])
        self.facts["gpu"] = gpu_facts(self.facts["cuda_visible_devices"] if gpus else None)  # SKU per run
        self.lock = threading.Lock()
        self.cancels: dict[str, threading.Event] = {}
        self.early_cancels: set[str] = set()  # cancel() that arrived before its run() started
        self.pending: dict | None = None  # newest progress not yet on the board

    def info(self) -> dict:
        return dict(self.facts)

    def cancel(self, run_id: str) -> bool:
        with self.lock:
            ev = self.cancels.get(run_id)
            if ev is None:
                self.early_cancels.add(run_id)
                return False
        ev.set()
        return True

    def run(self, spec: RunSpec, slot_index: int, nonce: str | None = None) -> tuple[RunOutcome, bytes | None]:
        """The outcome, and the packed run folder when this node does not see the driver's (else None)."""
        home = spec.run_dir
        local = None
        if nonce is not None and not shipping.sees_driver_disk(home.parent, nonce):
            local = shipping.scratch_dir(spec.run_id)
            spec = dataclasses.replace(spec, run_dir=local)
        try:
            outcome = self._run(spec, slot_index)
            if local is None:
                return outcome, None
            return self._ship(outcome, local, home)
        finally:
            if local is not None:
                shutil.rmtree(local, ignore_errors=True)

    def _ship(self, o: RunOutcome, local: Path, home: Path) -> tuple[RunOutcome, bytes]:
        """Make the scratch folder's outcome speak of the driver's paths, then pack the folder."""
        o.run_dir = str(home)
        o.error = o.error.replace(str(local), str(home)) if o.error else o.error
        o.notes = [n.replace(str(local), str(home)) for n in o.notes]
        try:
            (local / "outcome.json").write_text(json.dumps(o.to_dict(), indent=1, default=str))
        except OSError:
            pass
        blob, left = shipping.pack(local)
        o.result["placement"]["shipped_bytes"] = len(blob)
        if left:
            o.notes.append(f"left on {self.facts['hostname']} (links, or past {shipping.MAX_SHIP_BYTES} bytes): "
                           + ", ".join(left[:10]))
        return o, blob

    def _run(self, spec: RunSpec, slot_index: int) -> RunOutcome:
        ev = threading.Event()
        with self.lock:
            self.cancels[spec.run_id] = ev
            if spec.run_id in self.early_cancels:
                self.early_cancels.discard(spec.run_id)
                ev.set()
        env = dict(spec.env)
        env["CUDA_VISIBLE_DEVICES"] = self.facts["cuda_visible_devices"]  # "" hides GPUs from CPU runs
        spec = dataclasses.replace(spec, env=env)
        started_at = time.time()
        try:
            outcome = self._supervise(spec, ev)
        finally:
            with self.lock:
                self.cancels.pop(spec.run_id, None)
            self.board.drop.remote(spec.run_id)
        outcome.result = dict(outcome.result or {})
        outcome.result["placement"] = {
            "node": f"{self.facts['hostname']}:{self.facts['node_id'][:8]}", "node_id": self.facts["node_id"],
            "hostname": self.facts["hostname"], "gpu_ids": self.facts["gpu_ids"],
            "cuda_visible_devices": self.facts["cuda_visible_devices"], "slot": slot_index,
            "pid": self.facts["pid"], "started_at": started_at, "finished_at": time.time(),
            "gpu": self.facts["gpu"], "data_path": spec.env.get("DATA_PATH"),
        }
        return outcome

    def _supervise(self, spec: RunSpec, ev: threading.Event) -> RunOutcome:
        """Run the runner in a thread; this thread flushes progress to the board meanwhile."""
        box: list[RunOutcome] = []

        def call() -> None:
            try:
                box.append(self.runner(spec, on_progress=self._on_progress, cancel=ev))
            except BaseException as e:  # the runner promises not to raise; keep the slot alive if it does
                box.append(RunOutcome(run_id=spec.run_id, status=RunStatus.CRASH,
                                      error=f"runner raised {first_line(e)} (pgolf bug, not the candidate)"))

        self.pending = None
        th = threading.Thread(target=call, name=f"run-{spec.run_id}", daemon=True)
        th.start()
        while th.is_alive():
            th.join(self.interval)
            self._flush(spec.run_id)
        return box[0]

    def _on_progress(self, progress: dict) -> None:
        self.pending = dict(progress)

    def _flush(self, run_id: str) -> None:
        p, self.pending = self.pending, None
        if p is not None:
            self.board.put.remote(run_id, p)
