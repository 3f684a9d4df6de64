"""Many machines as one, on one CPU machine: a real Ray cluster of a head and two worker nodes.

`ray.cluster_utils.Cluster` starts each node as its own raylet (separate processes, its own
logical GPUs). Each worker node gets its own data root (PGOLF_DATA_ROOT), its own scratch root
(PGOLF_SCRATCH), a GPU SKU name (PGOLF_GPU_SKU) and PGOLF_NO_SHARED_FS=1: the nodes share this
machine's disk, so without that the slots would (rightly) detect a shared filesystem and write
the driver's run folders in place. The head node has no GPU and no data, so GPU runs land only on
worker nodes, and every run folder the driver sees came home through Ray.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from faulty_trainers.scenarios import driver_env, harness_copy, search_toml, track_toml

from harness.executor import WORKER_DIED, RayExecutor
from harness.runner import RunOutcome, RunSpec, RunStatus

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

SKUS = {"a": "FakeGPU-A", "b": "FakeGPU-B"}


def node_runner(spec: RunSpec, on_progress=None, cancel=None) -> RunOutcome:
    """Stands in for run_candidate: writes a run folder the way the runner does, on this node's disk."""
    cancel = cancel if cancel is not None else threading.Event()
    rd = spec.run_dir
    rd.mkdir(parents=True, exist_ok=True)
    (rd / "train_gpt.py").write_text(spec.source)
    (rd / "started").write_text(str(os.getpid()))
    data = Path(spec.env["DATA_PATH"])
    if cancel.wait(float(spec.env.get("SLEEP", "0.2"))):
        return RunOutcome(run_id=spec.run_id, status=RunStatus.CANCELLED, error="cancelled", run_dir=str(rd))
    seen = {"data_path": str(data), "val_shards": sorted(p.name for p in data.glob("fineweb_val_*.bin")),
            "tokenizer_ok": Path(spec.env["TOKENIZER_PATH"]).is_file(), "node_root": os.environ.get("PGOLF_DATA_ROOT"),
            "run_dir": str(rd), "cuda": spec.env.get("CUDA_VISIBLE_DEVICES")}
    (rd / "result.json").write_text(json.dumps(seen))
    (rd / "final_model.int8.ptz").write_bytes(os.urandom(300_000))  # big enough to go through the object store
    (rd / "home").mkdir(exist_ok=True)
    (rd / "home" / "cache.bin").write_bytes(b"x" * 1000)  # scratch caches stay behind
    o = RunOutcome(run_id=spec.run_id, status=RunStatus.OK, val_bpb=1.0, run_dir=str(rd), result=seen,
                   error=None, notes=[f"wrote {rd}/result.json"])
    (rd / "outcome.json").write_text(json.dumps(o.to_dict()))
    return o


def fake_data(root: Path) -> tuple[Path, Path]:
    from data.shards import write_shard

    ds = root / "datasets" / "local_sp1024"
    ds.mkdir(parents=True)
    write_shard(ds / "fineweb_val_000000.bin", [1] + list(range(2, 500)))
    write_shard(ds / "fineweb_train_000000.bin", [1] + list(range(2, 900)))
    (root / "tokenizers").mkdir()
    tok = root / "tokenizers" / "local_1024_bpe.model"
    tok.write_bytes(b"not a real sentencepiece model, the stub runner only checks it exists")
    return ds, tok


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if ray.is_initialized():
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("cluster")
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False,
        # Notice a dead node within ~3 s instead of the default ~30 s.
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 4}})
    nodes = {}

    def add(name: str):
        (tmp / name).mkdir(exist_ok=True)
        # Node c's data root cannot be created (under a file): its staging fails, it must get no run.
        root = tmp / name / "data" if name != "c" else tmp / name / "not-a-dir" / "data"
        nodes[name] = c.add_node(num_cpus=1, num_gpus=2, env_vars={
            "PGOLF_DATA_ROOT": str(root), "PGOLF_SCRATCH": str(tmp / name / "scratch"),
            "PGOLF_NO_SHARED_FS": "1", "PGOLF_GPU_SKU": SKUS.get(name, "FakeGPU-C")})
        return nodes[name]

    for name in ("a", "b", "c"):
        add(name)
    (tmp / "c" / "not-a-dir").write_text("a file where node c's data folder should be")
    c.add_pgolf_node = add  # a test that kills a node puts a fresh one in its place for the next test
    ray.init(address=c.address, log_to_driver=False, logging_level=logging.WARNING)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    c.wait_for_nodes()
    ids = {name: n.node_id for name, n in nodes.items()}
    yield c, nodes, ids, tmp
    ray.shutdown()
    c.shutdown()


def spec(tmp: Path, rid: str, data: tuple[Path, Path], sleep: float = 0.2) -> RunSpec:
    return RunSpec(run_id=rid, run_dir=tmp / "runs" / rid, source="print('x')\n", time_cap_s=60.0,
                   env={"SLEEP": str(sleep), "DATA_PATH": str(data[0]), "TOKENIZER_PATH": str(data[1])})


def collect(ex: RayExecutor, ids, timeout: float = 90.0) -> dict[str, RunOutcome]:
    want, got = set(ids), {}
    deadline = time.monotonic() + timeout
    while want - got.keys():
        assert time.monotonic() < deadline, f"timed out waiting for {sorted(want - got.keys())}"
        for o in ex.poll(timeout=0.5):
            assert o.run_id not in got, f"{o.run_id} finished twice"
            got[o.run_id] = o
    return got


def test_runs_land_on_gpu_nodes_with_data_and_folders_come_home(cluster):
    c, nodes, ids, tmp = cluster
    data = fake_data(tmp / "driver_data")
    ex = RayExecutor(runner=node_runner, progress_interval_s=0.2)
    try:
        runs = [spec(tmp, f"one{i}", data) for i in range(4)] + [spec(tmp, "whole", data)]
        for s in runs[:4]:
            ex.submit(s, gpus=1)
        ex.submit(runs[4], gpus=2)
        got = collect(ex, [s.run_id for s in runs])
        status = {n["node"].split(":")[1]: n for n in ex.node_status()}
    finally:
        ex.shutdown()
    by_node = {v[:8]: k for k, v in ids.items()}
    for s in runs:
        o = got[s.run_id]
        assert o.status == RunStatus.OK, o.error
        pl = o.result["placement"]
        node = by_node[pl["node_id"][:8]]  # a worker node: the head has no GPU
        # Placement: a whole-node run holds both GPUs of one node; SKU recorded per run.
        assert len(pl["gpu_ids"]) == (2 if s.run_id == "whole" else 1)
        assert pl["gpu"] == {"sku": SKUS[node], "count": len(pl["gpu_ids"]), "driver": None}
        # Data: the node's own staged copy, not the driver's.
        node_root = tmp / node / "data"
        assert o.result["data_path"] == str(node_root / "datasets" / "local_sp1024")
        assert o.result["val_shards"] == ["fineweb_val_000000.bin"] and o.result["tokenizer_ok"]
        # Results home: the folder is at the driver's path, with driver paths inside, without scratch caches.
        rd = tmp / "runs" / s.run_id
        assert o.run_dir == str(rd) and o.notes == [f"wrote {rd}/result.json"]
        assert json.loads((rd / "outcome.json").read_text())["run_dir"] == str(rd)
        assert (rd / "final_model.int8.ptz").stat().st_size == 300_000 and (rd / "result.json").is_file()
        assert not (rd / "home").exists()
        assert o.result["run_dir"].startswith(str(tmp / node / "scratch"))  # it really ran elsewhere
        assert pl["shipped_bytes"] > 300_000
    assert {by_node[o.result["placement"]["node_id"][:8]] for o in got.values()} == {"a", "b"}
    for name in ("a", "b"):  # staged once per node, byte for byte
        staged = tmp / name / "data" / "datasets" / "local_sp1024" / "fineweb_val_000000.bin"
        assert staged.read_bytes() == (data[0] / "fineweb_val_000000.bin").read_bytes()
        assert status[ids[name][:8]]["data"] == "ready"
        assert "copied 3 file(s)" in status[ids[name][:8]]["reason"]
        assert not list((tmp / name / "scratch").iterdir())  # scratch folders removed after shipping
    # Node c could not stage the data: it got no run, and the reason is there for the dashboard.
    assert status[ids["c"][:8]]["data"] == "failed"
    assert "data staging under" in status[ids["c"][:8]]["reason"] and "not-a-dir" in status[ids["c"][:8]]["reason"]


def test_runs_of_one_group_share_a_gpu_model_until_that_model_leaves(cluster):
    """Confirm seeds run on one GPU model (nodes a and b differ). A group held to a model no live node has is
    released and picks the model of the node its next run lands on, instead of waiting forever."""
    c, nodes, ids, tmp = cluster
    data = fake_data(tmp / "model_data")
    ex = RayExecutor(runner=node_runner, progress_interval_s=0.2)
    try:
        ex.hold_gpu_model("confirm", SKUS["b"])
        held = [spec(tmp, f"held{i}", data) for i in range(4)]
        free = [spec(tmp, f"free{i}", data) for i in range(3)]
        for s in held:
            ex.submit(s, gpus=1, same_gpu_model="confirm")
        for s in free:
            ex.submit(s, gpus=1)
        got = collect(ex, [s.run_id for s in held + free])
        ex.hold_gpu_model("gone", "FakeGPU-Z")  # say, the pool a resumed search used was preempted overnight
        orphans = [spec(tmp, f"orphan{i}", data) for i in range(2)]
        for s in orphans:
            ex.submit(s, gpus=1, same_gpu_model="gone")
        got.update(collect(ex, [s.run_id for s in orphans]))
        models, released = ex.gpu_models(), ex.capacity()["gpu_models_released"]
    finally:
        ex.shutdown()
    model = {rid: o.result["placement"]["gpu"]["sku"] for rid, o in got.items()}
    assert all(o.status == RunStatus.OK for o in got.values()), {rid: o.error for rid, o in got.items()}
    assert {model[s.run_id] for s in held} == {SKUS["b"]}
    assert {model[s.run_id] for s in free} <= {SKUS["a"], SKUS["b"]}
    assert released == {"gone": "FakeGPU-Z"} and models["confirm"] == SKUS["b"]
    assert len({model[s.run_id] for s in orphans}) == 1 and models["gone"] == model["orphan0"]


def test_worker_node_killed_mid_run_loses_only_its_runs_which_rerun_elsewhere(cluster):
    c, nodes, ids, tmp = cluster
    data = fake_data(tmp / "kill_data")
    ex = RayExecutor(runner=node_runner, progress_interval_s=0.2)
    try:
        runs = {f"k{i}": spec(tmp, f"k{i}", data, sleep=4.0) for i in range(4)}
        for s in runs.values():
            ex.submit(s, gpus=1)
        deadline = time.monotonic() + 60
        while len(list((tmp / "a" / "scratch").glob("k*/started"))) < 2:  # both of node a's runs are training
            assert time.monotonic() < deadline, "runs did not start on node a"
            ex.poll(timeout=0.2)
        victims = {rid for rid in ex.running() if ex._running[rid].slot.node == ids["a"]}
        assert len(victims) == 2 and len(ex.running()) == 4
        t_kill = time.monotonic()
        c.remove_node(nodes["a"], allow_graceful=False)
        # The loop's rule: a "ray worker died" run is requeued, up to 2 attempts.
        attempts = {rid: 0 for rid in runs}
        done: dict[str, RunOutcome] = {}
        deadline = time.monotonic() + 120
        lost_at = None
        while len(done) < len(runs):
            assert time.monotonic() < deadline, f"waiting forever: {sorted(set(runs) - done.keys())}"
            for o in ex.poll(timeout=0.5):
                assert o.run_id not in done, f"{o.run_id} finished twice"
                if o.status == RunStatus.CRASH and o.error.startswith(WORKER_DIED) and attempts[o.run_id] < 2:
                    lost_at = lost_at or time.monotonic()
                    attempts[o.run_id] += 1
                    ex.submit(runs[o.run_id], gpus=1)
                    continue
                done[o.run_id] = o
        recovered_s = time.monotonic() - t_kill
    finally:
        ex.shutdown()
    assert {rid for rid, n in attempts.items() if n} == victims  # only the dead node's runs were lost
    for rid, o in done.items():
        assert o.status == RunStatus.OK, (rid, o.error)
        assert o.result["placement"]["node_id"] == ids["b"] or rid not in victims
        assert (tmp / "runs" / rid / "result.json").is_file()
    print(f"node lost: detected in {lost_at - t_kill:.1f} s, all runs done {recovered_s:.1f} s after the kill")
    ids["a"] = c.add_pgolf_node("a").node_id  # node a comes back (a new Ray node, the same disk)




def cluster_search(tmp_path: Path, local_data, name: str, budget: str) -> tuple[Path, dict[str, str]]:
    """A search of Optuna candidates, promotion off, on one tiny rung holding one (logical) GPU and trained on the
    CPU; `budget`: its [budget] section. The driver runs from a copy of the harness (its tripwire must not see the
    edits of whoever works in this checkout): that copy, and the driver's environment."""
    root = Path(local_data.dataset_dir).parent.parent
    (tmp_path / "track.toml").write_text(track_toml("cluster-smoke", time_cap=20, eval_cap=20, startup=40, root=root,
                                                    rungs=(("smoke", 1),)))
    (tmp_path / "search.toml").write_text(search_toml(tmp_path, name, budget + """[proposers]
optuna = 1.0
catalog = 0.0
llm = 0.0
[promotion]
enabled = false
"""))
    harness = harness_copy(tmp_path / "h")
    return harness, {k: v for k, v in driver_env(harness).items() if not k.startswith("PGOLF_")}


def test_pgolf_search_against_the_cluster_stops_on_its_cost_budget(cluster, local_data, tmp_path):
    """`pgolf search --ray-address` end to end: real trainer runs on the worker nodes, their folders come
    home, the store records node and GPU model, and the cost budget ends the search cleanly."""
    import sqlite3
    import subprocess

    from harness.audit import audit_path, format_report

    c, nodes, ids, tmp = cluster
    harness, env = cluster_search(tmp_path, local_data, "cluster", """
[budget]
max_candidates = 50
price_per_gpu_hour = 3600.0  # $1 per GPU-second: the first finished run spends the budget
max_cost_usd = 1.0
""")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "harness.cli", "search", str(tmp_path / "search.toml"),
                        "--ray-address", c.address], cwd=harness, env=env, capture_output=True, text=True,
                       timeout=420)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "cost budget of $1.0 reached" in p.stdout
    db = tmp_path / "runs" / "cluster" / "pgolf.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, status, node, gpu_sku, run_dir, attempt FROM runs").fetchall()
        cluster_meta = json.loads(conn.execute("SELECT value FROM meta WHERE key='cluster'").fetchone()[0])
    finished = [r for r in rows if r[1] == "ok"]
    assert finished, rows
    node_of = {v[:8]: k for k, v in ids.items()}
    for _, _, node, sku, run_dir, _ in finished:
        name = node_of[node.split(":")[1]]
        assert name in ("a", "b") and sku == SKUS[name]  # GPU runs on worker nodes that hold the data
        rd = Path(run_dir)
        assert rd.parent == tmp_path / "runs" / "cluster" / "runs" and (rd / "train.log").stat().st_size > 0
        assert (rd / "final_model.int8.ptz").is_file() and (rd / "rescore" / "result.json").is_file()
        assert json.loads((rd / "outcome.json").read_text())["run_dir"] == str(rd)
        assert str(tmp / name / "data") in (rd / "env.json").read_text()  # it read the node's own copy
        report = audit_path(rd, byte_cap=400_000)  # the audit works on the head, on the shipped folder
        assert report.ok, format_report(report)
    # A clean stop: nothing left queued or running; what had not started was cancelled, not trained.
    assert {r[1] for r in rows} <= {"ok", "cancelled"}, rows
    failed = [n for n in cluster_meta["node_status"] if n["data"] == "failed"]
    assert [n["node"].split(":")[1] for n in failed] == [ids["c"][:8]]
    out = subprocess.run([sys.executable, "-m", "harness.cli", "runs", "list", str(tmp_path / "runs" / "cluster")],
                         cwd=harness, env=env, capture_output=True, text=True, timeout=60).stdout
    assert "spent: " in out and " GPU-h · $" in out
    print(f"pgolf search on the 3-node cluster: {len(finished)} run(s) ok, {len(rows) - len(finished)} cancelled,"
          f" in {took:.0f} s")


def test_pgolf_search_loses_a_worker_node_mid_run_and_loses_no_run(cluster, local_data, tmp_path):
    """Kill worker node b while it trains a run of a real `pgolf search`: that run is requeued, trains again
    on node a, and every run finishes exactly once. (Last in this file: node b stays dead.)"""
    import sqlite3
    import subprocess

    c, nodes, ids, tmp = cluster
    harness, env = cluster_search(tmp_path, local_data, "nodeloss", """
[budget]
max_candidates = 3
""")
    driver = subprocess.Popen([sys.executable, "-m", "harness.cli", "search", str(tmp_path / "search.toml"),
                               "--ray-address", c.address], cwd=harness, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (victims := {p.parent.name for p in (tmp / "b" / "scratch").glob("*/train.log")}):
            assert driver.poll() is None and time.monotonic() < deadline, "no run trained on node b"
            time.sleep(0.2)
        c.remove_node(nodes["b"], allow_graceful=False)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-3000:]
    db = tmp_path / "runs" / "nodeloss" / "pgolf.db"
    with sqlite3.connect(db) as conn:
        runs = {r[0]: r[1:] for r in conn.execute("SELECT id, status, node, attempt FROM runs")}
        finished = [r[0] for r in conn.execute("SELECT run_id FROM events WHERE kind='finished'")]
        requeued = {r[0]: r[1] for r in conn.execute("SELECT run_id, data FROM events WHERE kind='requeued'")}
    assert len(runs) == 4 and all(status == "ok" for status, _, _ in runs.values()), runs
    assert sorted(finished) == sorted(runs)  # nothing lost, nothing recorded twice
    # The runs seen training on b were lost with it (others may have been starting there): each lost run
    # died with its node, and trained again, once, on the node left.
    assert victims <= set(requeued)
    for rid, why in requeued.items():
        status, node, attempt = runs[rid]
        # Ray lists b as alive until its health check fails; b cools off meanwhile (harness/node_rules.py), so a
        # requeued run does not die there a second time: one more attempt, and it ends on node a.
        assert "ray worker died" in why and attempt == 1 and node.split(":")[1] == ids["a"][:8]
