"""Places training runs on a Ray cluster: an elastic pool of long-lived slot actors.

Why actors and not a Ray task per run: on the 2-core CI machine a fresh task per 2 s run kept 32
logical GPUs 16% busy (worker start-up bound), while long-lived actors kept them 99.1% busy
(docs: DESIGN.md, "Ray"). So every GPU slot is a `_Slot` actor holding `k` GPUs (k = the run's
GPU count) that runs one run at a time through `runner` (default `run_candidate`, which starts
the trainer as a child process group, torchrun when k > 1) and is reused for the next run of
the same size.

Placement rules:

* A run needing k GPUs gets ONE actor with num_gpus=k. Ray places an actor on a single node, so
  a run never straddles nodes; a k larger than every node's GPU count is a ValueError at submit.
  The executor picks the node itself (best fit, NodeAffinitySchedulingStrategy) and keeps its
  own per-node ledger of GPUs and CPUs held by its actors (harness/node_pool.py); it assumes it
  is the only user of the cluster's GPUs and that the cluster is static (nodes are re-read every
  few seconds).
* GPU slots request num_cpus=`gpu_slot_cpus` (default 0): the GPU is the scarce resource and a
  CI box has 2 CPUs next to 8 logical GPUs. CPU-only runs (gpus=0) get a slot with 1 CPU.
* At most max(2, CPUs) actors start at once per node (`max_starting_per_node`): hundreds of
  Python workers starting together on a small host thrash it and delay every one of them.
* Elastic pool: an idle actor of the right size is reused; else a new one is created where the
  run fits; else idle actors of other sizes that no queued run wants are killed to make room
  (so 1-GPU and 8-GPU runs share 8 GPUs).
* Order: priority (higher first), then submission order, with backfill: a run that does not fit
  lets later runs start. The first blocked run counts how often it was passed over; after
  `reserve_after_skips` it reserves the node closest to free: no other run may start there
  until it fits (then idle actors of other sizes there are killed). One reservation per node.

Failures: a slot process that dies mid-run (OOM kill, node loss, os.kill) surfaces through Ray's
fault handling (RayActorError / WorkerCrashedError ...) on the run's future; the run comes back
as a CRASH outcome whose error starts with "ray worker died:" so the loop can requeue it, and
the dead slot is dropped from the pool. A bad run is the runner's business and never raises.

Progress: the runner's on_progress dicts are kept by the slot and pushed, at most once per
`progress_interval_s`, to one small `_ProgressBoard` actor; `progress()` is one round trip.

Many nodes (docs/cluster.md):

* Data: a run whose env names DATA_PATH / TOKENIZER_PATH starts only on a node that holds that
  data. The first time a node could take such a run, a staging task pinned to it checks (and if
  need be fetches or copies) its own copy (`harness/staging.py`); the run's env then points at the
  node's paths. A node whose staging failed gets no run; `node_status()` (in `capacity()`, which
  the loop stores for the dashboard) says why.
* Results: the driver writes a nonce next to the run folders; a slot that cannot read it runs in
  node-local scratch and returns the packed folder, which `_finish` unpacks into the run folder
  before the outcome is handed out (`harness/shipping.py`). On a shared disk nothing is copied.
* Node loss: besides the CRASH outcome above, the node list is re-read at once and the node where
  the worker died cools off for a minute (no run another node could hold starts there); a run whose
  slot could not even be created because its node had just left goes back to the queue without an outcome.
* GPU models: the GPU runs of one `same_gpu_model` group (the loop's confirm seeds) all run on the GPU
  model of the first one to start (`harness/node_rules.py`); `gpu_models()` says which.

Placement facts go into `outcome.result["placement"]`: node, hostname, node_id, gpu_ids,
cuda_visible_devices, gpu {sku, count, driver}, data_path, slot, pid, queue_wait_s, started_at,
finished_at (wall clock of the slot's machine; queue_wait_s compares it with the driver's clock,
fine on NTP-synced nodes), shipped_bytes (when the folder came through Ray).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Read by Ray at import time. When the driver runs under `uv run`, Ray would otherwise start
# every worker through `uv run` too (an environment resolve per actor: slow, and network).
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import ray  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from harness import shipping  # noqa: E402
from harness.node_pool import NodePool, Shape, SlotRef  # noqa: E402
from harness.node_rules import NodeRules  # noqa: E402
from harness.runner import RunOutcome, RunSpec, RunStatus, run_candidate  # noqa: E402
from harness.slot import ProgressBoard as _ProgressBoard  # noqa: E402
from harness.slot import Slot as _Slot  # noqa: E402
from harness.slot import first_line as _first_line  # noqa: E402
from harness.staging import DataBook  # noqa: E402

log = logging.getLogger(__name__)

WORKER_DIED = "ray worker died"
# Ray's ways of saying "the process (or node) running this is gone", as opposed to an error
# raised by our own code inside the actor.
_DIED_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.OutOfMemoryError, ray.exceptions.ObjectLostError,
                ray.exceptions.ActorUnschedulableError, ray.exceptions.LocalRayletDiedError)
_SLOT_CONCURRENCY = 4  # run() in one thread; info()/cancel() answered by the others meanwhile


# --------------------------------------------------------------------------------------------
# Driver-side bookkeeping
# --------------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Queued:
    spec: RunSpec
    shape: Shape
    priority: int
    seq: int
    submitted_at: float
    skips: int = 0  # times a later run started while this one was the first blocked run
    target: str | None = None  # node reserved for it once skips reached reserve_after_skips
    data: tuple[str, str] | None = None  # the driver's (DATA_PATH, TOKENIZER_PATH): nodes must hold it
    unplaced: int = 0  # times its slot could not be created because the chosen node had left
    gpu_group: str | None = None  # runs of one group run on one GPU model (harness/node_rules.py)

    @property
    def key(self) -> tuple[int, int]:
        return (-self.priority, self.seq)

    @property
    def gpus(self) -> int:
        return self.shape[0]


@dataclass(eq=False)
class _Running:
    q: _Queued
    slot: SlotRef
    future: Any
    dispatched_at: float


class RayExecutor:
    """Runs `RunSpec`s on Ray: `submit`, then `poll` for `RunOutcome`s. Single-threaded driver API."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                 runner: Callable[..., RunOutcome] = run_candidate, namespace: str = "pgolf",
                 reserve_after_skips: int = 4, gpu_slot_cpus: float = 0.0, progress_interval_s: float = 1.0,
                 max_starting_per_node: int | None = None):
        """address: None starts a local Ray instance (num_cpus / num_gpus: logical resources for
        it, e.g. 8 GPUs on a CPU-only CI machine); "auto" or "ray://..." joins a cluster. An
        already initialized Ray (tests) is used as is and left running by `shutdown`.
        max_starting_per_node: actors a node may be starting at once (None: its CPU count, at least
        2). Starting hundreds at once on a small host thrashes it and delays them all."""
        if reserve_after_skips < 0 or gpu_slot_cpus < 0 or progress_interval_s <= 0:
            raise ValueError("reserve_after_skips and gpu_slot_cpus must be >= 0, progress_interval_s > 0")
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            kw: dict[str, Any] = {"namespace": namespace, "log_to_driver": False, "logging_level": logging.WARNING}
            if address is None:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline by default
                # A local start generates a token and says so at WARNING level: noise under a Live dashboard.
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                kw.update(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
                # ray.init(address=None) joins a cluster already running on this machine (ray start, or a
                # test's cluster) when it finds one; a search without --ray-address means a fresh local one.
                address = "local"
            elif num_cpus is not None or num_gpus is not None:
                raise ValueError("num_cpus / num_gpus set the resources of a local instance; with an address the "
                                 "cluster's nodes declare their own (ray start --num-gpus)")
            ray.init(address=address, **kw)
        self.runner = runner
        self.reserve_after_skips = reserve_after_skips
        self.gpu_slot_cpus = float(gpu_slot_cpus)
        self.progress_interval_s = progress_interval_s
        self._board = _ProgressBoard.remote()
        self._progress_ref = None
        self._progress: dict[str, dict] = {}
        self._seq = itertools.count()
        self._queues: dict[Shape, list[_Queued]] = {}  # per shape, sorted by key
        self._queued_ids: dict[str, _Queued] = {}
        self._reserving: dict[str, _Queued] = {}
        self._running: dict[str, _Running] = {}
        self._futures: dict[Any, str] = {}
        self._done: list[RunOutcome] = []
        self._pool = NodePool(self._spawn, max_starting_per_node)  # nodes, slot actors, where a new one fits
        self._data = DataBook()  # which node holds the data each run reads (harness/staging.py)
        self._rules = NodeRules()  # one GPU model per group; a cool-off for nodes where a worker died
        self._nonces: dict[Path, str] = {}  # runs folder -> nonce a slot reads there if it shares our disk
        self._busy_s = 0.0  # resource-seconds of finished runs
        self._avail_s = 0.0  # resource-seconds available while work was queued or running
        self._tick_at = time.monotonic()
        self._active = False
        self._closed = False
        self._refresh_nodes(force=True)

    # --- public API -------------------------------------------------------------------------
    def submit(self, spec: RunSpec, gpus: int, priority: int = 0, same_gpu_model: str | None = None) -> None:
        """Queue a run needing `gpus` GPUs on one node (0 = CPU only, 1 CPU). Higher priority first.
        same_gpu_model: a group name; the GPU runs of one group all run on one GPU model (see node_rules)."""
        if self._closed:
            raise RuntimeError("RayExecutor.submit after shutdown")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"gpus must be an int >= 0, got {gpus!r}")
        if spec.run_id in self._queued_ids or spec.run_id in self._running:
            raise ValueError(f"run {spec.run_id} is already queued or running")
        self._refresh_nodes()
        shape = self._shape(gpus)
        if not any(n.holds(shape) for n in self._pool.nodes.values()):
            most = max((n.gpus for n in self._pool.nodes.values()), default=0)
            if gpus and most == 0:
                raise ValueError(f"run {spec.run_id} needs {gpus} GPUs but the Ray cluster has none; on a machine "
                                 "without GPUs start the executor with num_gpus=N logical GPUs (scheduling tests)")
            if gpus:
                raise ValueError(f"run {spec.run_id} needs {gpus} GPUs on one node but the largest node has {most}; "
                                 "a run never spans nodes (torchrun runs on one machine): lower the rung's gpus "
                                 f"or add nodes with >= {gpus} GPUs")
            raise ValueError(f"run {spec.run_id} needs 1 CPU but no node offers one")
        if gpus and spec.nproc != gpus:
            spec = dataclasses.replace(spec, nproc=gpus)  # one process per GPU under torchrun
        data = self._data.key_for(spec.env)  # ValueError (one line) when the driver lacks the data
        self._tick()
        q = _Queued(spec, shape, int(priority), next(self._seq), time.time(), data=data,
                    gpu_group=same_gpu_model if gpus else None)
        bisect.insort(self._queues.setdefault(shape, []), q, key=lambda x: x.key)
        self._queued_ids[spec.run_id] = q
        self._schedule()
        self._tick()

    def poll(self, timeout: float = 0) -> list[RunOutcome]:
        """Finished runs since the last call, waiting up to `timeout` s for one. Never raises for a run."""
        self._tick()
        out, self._done = self._done, []
        if self._futures or self._pool.starting or self._data.pending:
            # A finished run, a started actor (which lets the next one be created) or a node done staging
            # its data ends the wait.
            refs = [*self._futures, *self._pool.starting, *self._data.pending]
            ready, _ = ray.wait(refs, num_returns=1, timeout=0 if out else timeout)
            if ready and len(refs) > 1:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                if ref in self._pool.starting:
                    self._pool.started(self._pool.starting.pop(ref))
                elif ref in self._data.pending:
                    self._data.done(ref)
                elif ref in self._futures:  # else: a probe whose slot an earlier ref in this batch dropped
                    o = self._finish(ref)
                    if o is not None:
                        out.append(o)
        elif not out and timeout > 0 and not self._closed:
            time.sleep(timeout)  # nothing in flight: wait for nodes to appear, do not spin
        self._refresh_nodes()
        self._schedule()
        self._tick()
        return out

    def progress(self, timeout: float = 0.25) -> dict[str, dict]:
        """Latest progress dict of each running run that has reported one.

        One round trip to the progress board, waited for at most `timeout` s: on a swamped machine
        the answer is picked up by a later call and the previous snapshot is returned meanwhile."""
        if not self._running:
            return {}
        if self._progress_ref is None:
            self._progress_ref = self._board.snapshot.remote()
        ready, _ = ray.wait([self._progress_ref], timeout=timeout)
        if ready:
            ref, self._progress_ref = self._progress_ref, None
            try:
                self._progress = ray.get(ref)
            except ray.exceptions.RayError as e:
                log.warning("progress board unavailable: %s", _first_line(e))
        return {rid: p for rid, p in self._progress.items() if rid in self._running}

    def cancel(self, run_id: str) -> bool:
        """Cancel a queued run (its outcome comes back from the next poll) or ask a running one to stop."""
        q = self._queued_ids.get(run_id)
        if q is not None:
            self._tick()
            self._unqueue(q)
            self._done.append(self._outcome(q, RunStatus.CANCELLED, "cancelled before start"))
            self._tick()
            return True
        r = self._running.get(run_id)
        if r is None:
            return False
        r.slot.handle.cancel.remote(run_id)  # the runner kills the trainer's process group and returns
        return True

    def running(self) -> list[str]:
        """Runs handed to a slot (starting or training)."""
        return list(self._running)

    def queued(self) -> list[str]:
        """Runs waiting for a slot, in the order they would start if resources allowed."""
        runs = sorted(self._queued_ids.values(), key=lambda q: q.key)
        return [q.spec.run_id for q in runs]

    def capacity(self) -> dict[str, Any]:
        self._refresh_nodes()
        busy = [r.q.shape for r in self._running.values()]
        return {"gpus": sum(n.gpus for n in self._pool.nodes.values()), "gpus_busy": sum(s[0] for s in busy),
                "cpus": sum(n.cpus for n in self._pool.nodes.values()),
                "cpus_busy": sum(s[1] for s in busy), "nodes": len(self._pool.nodes),
                "max_gpus_per_node": max((n.gpus for n in self._pool.nodes.values()), default=0),
                "slots": len(self._pool.slots), "slots_idle": sum(len(v) for v in self._pool.idle.values()),
                "running": len(self._running), "queued": len(self._queued_ids), "node_status": self.node_status(),
                "gpu_models": self.gpu_models(), "gpu_models_released": dict(self._rules.released)}

    def hold_gpu_model(self, group: str, model: str) -> None:
        """Hold the runs of `group` to GPU `model` (a resumed search: the model its earlier runs used)."""
        self._rules.hold(group, model)

    def gpu_models(self) -> dict[str, str]:
        """group -> the GPU model its runs are held to."""
        return dict(self._rules.models)

    def node_status(self) -> list[dict]:
        """One dict per live node: name, GPUs, its data state ("ready", "staging", "failed", "none": no run
        read data yet) with the reason, and its GPU SKU once staging has looked."""
        data = self._data.status()
        out = []
        for n in sorted(self._pool.nodes.values(), key=lambda n: (n.hostname, n.id)):
            d = data.get(n.id, {"data": "none", "reason": None, "gpu": None})
            out.append({"node": f"{n.hostname}:{n.id[:8]}", "gpus": n.gpus, "gpus_busy": n.used_gpus, **d})
        return out

    def busy_fraction(self) -> float:
        """GPU-seconds busy / GPU-seconds available, over the time work was queued or running.

        Finished runs count by the time their slot measured (runner start to end); running ones from
        dispatch (an estimate until they finish). With no GPU in the cluster, CPU slots are counted."""
        self._tick()
        if self._avail_s <= 0:
            return 0.0
        now = time.time()
        busy = self._busy_s + sum(self._weight(r.q.shape) * max(0.0, now - r.dispatched_at)
                                  for r in self._running.values())
        return min(1.0, busy / self._avail_s)

    def slot_info(self, run_id: str, timeout: float = 30.0) -> dict | None:
        """pid, node, GPU ids of the slot running `run_id` (None if it is not running)."""
        r = self._running.get(run_id)
        if r is None:
            return None
        return ray.get(r.slot.handle.info.remote(), timeout=timeout)

    def shutdown(self, grace_s: float = 15.0) -> None:
        """Cancel everything, give runners `grace_s` to kill their trainers, then stop the actors."""
        if self._closed:
            return
        self._closed = True
        if not ray.is_initialized():  # someone else shut Ray down: the actors went with it
            return
        for q in list(self._queued_ids.values()):
            self._unqueue(q)
        for rid, r in self._running.items():
            r.slot.handle.cancel.remote(rid)
        if self._futures:
            ray.wait(list(self._futures), num_returns=len(self._futures), timeout=grace_s)
        for s in list(self._pool.slots):
            self._pool.drop(s)
        self._running.clear()
        self._futures.clear()
        ray.kill(self._board)
        self._data.shutdown()
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # --- scheduling -------------------------------------------------------------------------
    def _schedule(self) -> None:
        """Start every queued run that can start now (see the module docstring for the rules)."""
        if not self._queued_ids or self._closed:
            return
        reserved: set[str] = set()
        blocked: set[Shape] = set()
        for q in sorted(self._reserving.values(), key=lambda x: x.key):  # reservations first
            if not self._start_reserving(q, reserved):
                blocked.add(q.shape)
        head: _Queued | None = None  # the first blocked run in order: it counts the skips
        while (q := self._next(blocked)) is not None:
            if self._try_start(q, avoid=reserved):
                if head is not None:
                    head.skips += 1
                continue
            blocked.add(q.shape)
            if head is None and q.gpus:  # CPU runs never wait on GPU runs, so only GPU runs reserve
                head = q
            if q is head and q.skips >= self.reserve_after_skips:
                self._reserving[q.spec.run_id] = q
                if self._start_reserving(q, reserved):
                    blocked.discard(q.shape)
                    head = None
        # Idle actors still idle now are of a size no startable run wants: blocked runs may reclaim them.
        for shape in sorted(blocked, key=lambda s: self._queues[s][0].key if self._queues.get(s) else (0, 0)):
            while (lst := self._queues.get(shape)) and lst[0].spec.run_id not in self._reserving:
                if not self._try_start(lst[0], avoid=reserved, reclaim=True):
                    break

    def _next(self, blocked: set[Shape]) -> _Queued | None:
        heads = [lst[0] for s, lst in self._queues.items() if lst and s not in blocked]
        return min(heads, key=lambda x: x.key) if heads else None

    def _start_reserving(self, q: _Queued, reserved: set[str]) -> bool:
        """A starved run: start it anywhere it fits, else hold one node for it and drain it."""
        if self._try_start(q, avoid=reserved):
            return True
        unsuitable = self._unsuitable(q)
        if q.target not in self._pool.nodes or q.target in reserved or q.target in unsuitable:
            q.target = self._pool.pick_target(q.shape, reserved | unsuitable)
        if q.target is None:  # every node that could hold it is reserved by an earlier run
            return False
        target = q.target
        reserved.add(target)
        # Idle actors of other sizes on the target are killed only once that makes q fit: if q starts
        # elsewhere first, they are still there to reuse.
        if self._try_start(q, avoid=set(self._pool.nodes) - {target}, reclaim=True):
            reserved.discard(target)
            return True
        return False

    def _unsuitable(self, q: _Queued) -> set[str]:
        """Nodes q may not start on now: without its data, of another GPU model than its group's, cooling off."""
        holders = {nid for nid, n in self._pool.nodes.items() if n.holds(q.shape)}
        other_model_or_cooling = self._rules.avoid(q.gpu_group, holders, self._data.gpu_models())
        return self._data.not_ready(q.data, self._pool.nodes) | other_model_or_cooling

    def _try_start(self, q: _Queued, avoid: set[str], reclaim: bool = False) -> bool:
        avoid = avoid | self._unsuitable(q)
        slot = self._pool.take_idle(q.shape, avoid)
        if slot is None:
            node = self._pool.fit(q.shape, avoid) or (self._pool.reclaim(q.shape, avoid) if reclaim else None)
            if node is None:
                return False
            slot = self._pool.new_slot(q.shape, node)
        self._dispatch(q, slot)
        return True

    # --- slots and runs ---------------------------------------------------------------------
    def _shape(self, gpus: int) -> Shape:
        return (gpus, self.gpu_slot_cpus) if gpus else (0, 1.0)

    def _dispatch(self, q: _Queued, slot: SlotRef) -> None:
        self._unqueue(q)
        slot.run_id = q.spec.run_id
        spec = q.spec
        if q.data is not None:  # the node's own copy of the data
            spec = dataclasses.replace(spec, env={**spec.env, **self._data.env_for(slot.node, q.data)})
        self._rules.placed(q.gpu_group, self._data.gpu_models().get(slot.node))
        future = slot.handle.run.remote(spec, slot.index, self._nonce(spec.run_dir.parent))
        self._running[q.spec.run_id] = _Running(q, slot, future, time.time())
        self._futures[future] = q.spec.run_id

    def _nonce(self, folder: Path) -> str | None:
        """The nonce a slot reads to learn whether it shares our disk (None: run in place, never ship)."""
        if folder not in self._nonces:
            try:
                self._nonces[folder] = shipping.write_nonce(folder)
            except OSError as e:
                log.warning("cannot write %s under %s (%s): runs write their folders in place", shipping.NONCE_NAME,
                            folder, e)
                return None
        return self._nonces[folder]

    def _unqueue(self, q: _Queued) -> None:
        lst = self._queues.get(q.shape, [])
        i = bisect.bisect_left(lst, q.key, key=lambda x: x.key)
        if i < len(lst) and lst[i] is q:
            del lst[i]
        self._queued_ids.pop(q.spec.run_id, None)
        self._reserving.pop(q.spec.run_id, None)
        q.target = None

    def _finish(self, ref) -> RunOutcome | None:
        """The run's outcome; None when it never started and went back to the queue."""
        rid = self._futures.pop(ref)
        r = self._running.pop(rid)
        slot = r.slot
        try:
            outcome, blob = ray.get(ref)
        except _DIED_ERRORS as e:
            self._pool.stale()  # a node may be gone: re-read the cluster before placing anything
            if (isinstance(e, ray.exceptions.ActorUnschedulableError) and not getattr(e, "actor_init_failed", False)
                    and r.q.unplaced < 3):  # bounded: a node Ray lists as alive yet refuses must not spin forever
                # Its node left between our last look and the actor's creation: the run never started, so it
                # goes back to the queue here instead of costing it one of its attempts.
                log.info("run %s: node %s gone before the run started; queued again", rid, slot.node[:8])
                self._pool.drop(slot)
                q = r.q
                q.unplaced += 1
                bisect.insort(self._queues.setdefault(q.shape, []), q, key=lambda x: x.key)
                self._queued_ids[rid] = q
                return None
            if getattr(e, "actor_init_failed", False):  # our slot code failed to start: no point in a retry
                error = f"executor error: slot actor failed to start: {_first_line(e, last=True)}"
            else:
                error = f"{WORKER_DIED}: {_first_line(e)}"
                self._rules.worker_died(slot.node)  # its node may be dying: requeued runs go elsewhere for now
            outcome = self._outcome(r.q, RunStatus.CRASH, error, slot)
            self._pool.drop(slot)
        except ray.exceptions.RayError as e:  # raised by our own actor code: the slot's state is unknown
            outcome = self._outcome(r.q, RunStatus.CRASH, f"executor error: {_first_line(e)}", slot)
            self._pool.drop(slot)
        else:
            self._pool.release(slot)
            if blob is not None:
                self._unpack(outcome, blob, r.q.spec.run_dir)
        pl = outcome.result.setdefault("placement", {})
        started = pl.get("started_at") or r.dispatched_at
        finished = pl.get("finished_at") or time.time()
        pl["queue_wait_s"] = round(max(0.0, started - r.q.submitted_at), 6)
        self._busy_s += self._weight(r.q.shape) * max(0.0, finished - started)
        return outcome

    @staticmethod
    def _unpack(outcome: RunOutcome, blob: bytes, run_dir: Path) -> None:
        """A run folder shipped from a node without our disk: into place before the store hears of it."""
        try:
            shipping.unpack(blob, run_dir)
        except Exception as e:  # disk full, or a folder the tar filter refused: the run's numbers are unusable
            outcome.status = RunStatus.CRASH
            outcome.val_bpb = outcome.val_loss = None
            outcome.flag("harness_error", f"run folder from the worker node not written: {_first_line(e)}")
            outcome.error = (f"harness error: the run folder from the worker node could not be written to {run_dir}:"
                             f" {_first_line(e)} (free space on the driver, then run the same command)")

    def _outcome(self, q: _Queued, status: RunStatus, error: str, slot: SlotRef | None = None) -> RunOutcome:
        o = RunOutcome(run_id=q.spec.run_id, status=status, error=error, run_dir=str(q.spec.run_dir))
        pl: dict[str, Any] = {"node": None, "gpu_ids": [], "started_at": None, "finished_at": time.time()}
        if slot is not None:
            node = self._pool.nodes.get(slot.node)
            pl.update(node=f"{node.hostname}:{slot.node[:8]}" if node else slot.node, node_id=slot.node,
                      slot=slot.index)
        else:
            pl["queue_wait_s"] = round(time.time() - q.submitted_at, 6)
        o.result["placement"] = pl
        return o

    def _spawn(self, shape: Shape, node_id: str):
        return _Slot.options(
            num_gpus=shape[0], num_cpus=shape[1], max_concurrency=_SLOT_CONCURRENCY,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(self.runner, self._board, shape[0], self.progress_interval_s)

    def _refresh_nodes(self, force: bool = False) -> None:
        alive = self._pool.refresh(force)
        if alive is not None:
            self._data.forget(alive)

    # --- accounting -------------------------------------------------------------------------
    def _weight(self, shape: Shape) -> float:
        """What a run counts toward busy_fraction: its GPUs, or its CPU on a GPU-less cluster."""
        return float(shape[0]) if self._total_gpus else (1.0 if shape[0] == 0 else 0.0)

    @property
    def _total_gpus(self) -> int:
        return self._pool.total_gpus

    def _tick(self) -> None:
        now = time.monotonic()
        if self._active:
            total = self._total_gpus or sum(n.cpus for n in self._pool.nodes.values())
            self._avail_s += total * (now - self._tick_at)
        self._tick_at = now
        self._active = bool(self._queued_ids or self._running)
