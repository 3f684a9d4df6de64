"""The executor's ledger of the cluster: its live nodes, the slot actors it placed on them, and where a new
one fits (best fit, or by killing idle actors of other sizes). Which run goes next is the executor's
business (harness/executor.py); this module only answers "where" and keeps the books.

The ledger assumes the executor is the only user of the cluster's GPUs. Nodes are re-read from Ray every
few seconds, and at once after a death (`stale`).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

log = logging.getLogger(__name__)

REFRESH_S = 5.0

Shape = tuple[int, float]  # (GPUs, CPUs) an actor holds


@dataclass(eq=False)
class SlotRef:
    handle: Any
    index: int
    shape: Shape
    node: str
    run_id: str | None = None  # None = idle
    probe: Any = None  # info() future while the actor starts; None once it answered


@dataclass(eq=False)
class Node:
    id: str
    hostname: str
    gpus: int = 0
    cpus: float = 0.0
    used_gpus: int = 0
    used_cpus: float = 0.0
    starting: int = 0  # actors being created here
    slots: set = field(default_factory=set)

    def fits(self, shape: Shape, extra: Shape = (0, 0.0)) -> bool:
        return (self.used_gpus - extra[0] + shape[0] <= self.gpus
                and self.used_cpus - extra[1] + shape[1] <= self.cpus + 1e-9)

    def holds(self, shape: Shape) -> bool:
        return shape[0] <= self.gpus and shape[1] <= self.cpus + 1e-9


class NodePool:
    def __init__(self, spawn: Callable[[Shape, str], Any], max_starting_per_node: int | None = None):
        """spawn(shape, node_id): a new slot actor holding `shape` on that node.
        max_starting_per_node: actors a node may be starting at once (None: its CPU count, at least 2)."""
        self.spawn = spawn
        self.max_starting_per_node = max_starting_per_node
        self.nodes: dict[str, Node] = {}
        self.slots: set[SlotRef] = set()
        self.idle: dict[Shape, list[SlotRef]] = {}
        self.starting: dict[Any, SlotRef] = {}  # readiness probe -> slot whose actor is starting
        self._seq = itertools.count()
        self._refreshed_at = float("-inf")

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes.values())

    def stale(self) -> None:
        """A node may be gone: re-read the cluster before placing anything."""
        self._refreshed_at = float("-inf")

    def refresh(self, force: bool = False) -> set[str] | None:
        """Re-read the live nodes (at most every REFRESH_S unless forced); their ids, or None when not re-read.
        Idle actors of a node that left are dropped; busy ones fail through their runs' futures."""
        now = time.monotonic()
        if not force and now - self._refreshed_at < REFRESH_S:
            return None
        self._refreshed_at = now
        alive: dict[str, Node] = {}
        for info in ray.nodes():
            if not info.get("Alive"):
                continue
            res = info.get("Resources") or {}
            nid = info["NodeID"]
            node = self.nodes.get(nid) or Node(nid, info.get("NodeManagerHostname") or "?")
            node.gpus, node.cpus = int(res.get("GPU", 0)), float(res.get("CPU", 0.0))
            alive[nid] = node
        for nid, node in self.nodes.items():
            if nid not in alive:
                for s in [s for s in node.slots if s.run_id is None]:
                    self.drop(s)
        self.nodes = alive
        return set(alive)

    # --- where a slot goes ----------------------------------------------------------------
    def take_idle(self, shape: Shape, avoid: set[str]) -> SlotRef | None:
        idle = self.idle.get(shape, [])
        for i in range(len(idle) - 1, -1, -1):  # most recently freed first
            if idle[i].node not in avoid:
                return idle.pop(i)
        return None

    def fit(self, shape: Shape, avoid: set[str]) -> str | None:
        """Best fit: the node with the fewest free GPUs (then CPUs) left after placing `shape`."""
        best, best_left = None, None
        for n in self.nodes.values():
            if n.id not in avoid and n.fits(shape) and self.may_start(n):
                left = (n.gpus - n.used_gpus - shape[0], n.cpus - n.used_cpus - shape[1])
                if best_left is None or left < best_left:
                    best, best_left = n.id, left
        return best

    def reclaim(self, shape: Shape, avoid: set[str]) -> str | None:
        """Kill the fewest idle actors of other sizes on one node so that `shape` fits there."""
        if not any(self.idle.values()):
            return None
        best: tuple[int, str, list[SlotRef]] | None = None
        for n in self.nodes.values():
            if n.id in avoid or not n.holds(shape) or not self.may_start(n):
                continue
            victims, freed = [], (0, 0.0)
            for s in sorted((s for s in n.slots if s.run_id is None and s.shape != shape), key=lambda s: s.shape,
                            reverse=True):
                if n.fits(shape, freed):
                    break
                victims.append(s)
                freed = (freed[0] + s.shape[0], freed[1] + s.shape[1])
            if victims and n.fits(shape, freed) and (best is None or len(victims) < best[0]):
                best = (len(victims), n.id, victims)
        if best is None:
            return None
        for s in best[2]:
            self.drop(s)
        return best[1]

    def pick_target(self, shape: Shape, avoid: set[str]) -> str | None:
        """The node closest to having room for `shape`: the one a starved run reserves and drains."""
        def free_soon(n: Node) -> tuple:
            idle = sum(s.shape[0] for s in n.slots if s.run_id is None)
            return (n.gpus - n.used_gpus + idle, -n.used_gpus, n.id)

        nodes = [n for n in self.nodes.values() if n.id not in avoid and n.holds(shape)]
        return max(nodes, key=free_soon).id if nodes else None

    def may_start(self, node: Node) -> bool:
        cap = self.max_starting_per_node or max(2, int(node.cpus))
        return node.starting < cap

    # --- the slots' books -----------------------------------------------------------------
    def new_slot(self, shape: Shape, node_id: str) -> SlotRef:
        handle = self.spawn(shape, node_id)
        slot = SlotRef(handle, next(self._seq), shape, node_id)
        log.debug("slot %d: new, %d GPU(s) %g CPU(s) on %s", slot.index, shape[0], shape[1], node_id[:8])
        node = self.nodes[node_id]
        node.used_gpus += shape[0]
        node.used_cpus += shape[1]
        node.starting += 1
        node.slots.add(slot)
        slot.probe = handle.info.remote()  # answers once the actor process is up
        self.starting[slot.probe] = slot
        self.slots.add(slot)
        return slot

    def started(self, slot: SlotRef) -> None:
        slot.probe = None
        node = self.nodes.get(slot.node)
        if node is not None and slot in node.slots:
            node.starting -= 1

    def release(self, slot: SlotRef) -> None:
        """Its run is over: the slot waits, idle, for the next run of its size."""
        slot.run_id = None
        if slot in self.slots:
            self.idle.setdefault(slot.shape, []).append(slot)

    def drop(self, slot: SlotRef) -> None:
        if slot not in self.slots:
            return
        self.slots.discard(slot)
        log.debug("slot %d: dropped (%s)", slot.index, "busy" if slot.run_id else "idle")
        idle = self.idle.get(slot.shape, [])
        if slot in idle:
            idle.remove(slot)
        if slot.probe is not None:
            self.starting.pop(slot.probe, None)
            self.started(slot)
        node = self.nodes.get(slot.node)
        if node is not None and slot in node.slots:
            node.slots.discard(slot)
            node.used_gpus -= slot.shape[0]
            node.used_cpus -= slot.shape[1]
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception as e:  # already dead
            log.debug("kill slot %s: %s", slot.index, e)
