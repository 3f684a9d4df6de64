"""Per-node data staging and node facts for the Ray executor.

Before a node gets its first run, a small task pinned to it (`stage`) makes sure the node holds
the track's dataset and tokenizer, and answers with the node's own paths for DATA_PATH and
TOKENIZER_PATH. Each node has its own data root: `PGOLF_DATA_ROOT` in the node's environment (set
when `ray start` launches it), else the driver's data root at the same path (the usual layout:
the repo at the same place on every node, or a shared filesystem). The check is cheap (every
file the driver's copy holds, by name and size, then every shard's header); when something is
missing the node fetches it from the official source where the dataset is fetchable (`pgolf data
fetch`, huggingface_hub), else, or when that fails, streams the driver's verified files through
Ray from a `FileServer` actor pinned to the driver's node. A node whose staging fails gets no
work; its reason is kept by the executor and shown in the dashboard.

`gpu_facts` names the GPUs a slot holds (SKU, count, driver) for each run's placement record.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from harness.ledger import UNNAMED_GPUS

DATA_ROOT_ENV = "PGOLF_DATA_ROOT"
GPU_SKU_ENV = "PGOLF_GPU_SKU"  # names a node's GPUs where nvidia-smi cannot (and fakes SKUs in tests)
CHUNK = 32 << 20  # bytes per round trip when streaming a file from the driver


@dataclass(frozen=True)
class DataNeed:
    """What a run reads, as the driver holds it: a dataset folder and a tokenizer under one data root."""

    root: str  # the driver's data root
    dataset: str  # datasets/<name>, relative to root
    tokenizer: str  # tokenizers/<file>, relative to root
    files: tuple[tuple[str, int], ...]  # (path relative to root, size) of everything a node must hold
    fetch_variant: str | None  # "sp1024" for the official fineweb10B_sp1024, else None (local builds)
    train_shards: int

    @classmethod
    def from_paths(cls, data_path: str, tokenizer_path: str) -> DataNeed:
        """The driver's side. ValueError (one line) when its copy is not in the standard layout."""
        ds, tok = Path(data_path).absolute(), Path(tokenizer_path).absolute()
        root = ds.parent.parent
        if ds.parent.name != "datasets" or tok.parent != root / "tokenizers":
            raise ValueError(f"DATA_PATH {ds} and TOKENIZER_PATH {tok} are not <root>/datasets/<name> and "
                             "<root>/tokenizers/<file>: keep the data in pgolf's layout (pgolf data fetch/build)")
        if not ds.is_dir() or not tok.is_file():
            raise ValueError(f"the driver has no data at {ds} / {tok}: run pgolf data fetch (or build) on the driver")
        files = [p for p in sorted(ds.iterdir()) if p.is_file()]
        files += [p for p in sorted(tok.parent.iterdir()) if p.is_file() and p.stem == tok.stem]
        if (root / "manifest.json").is_file():
            files.append(root / "manifest.json")
        variant = ds.name.split("_", 1)[1] if ds.name.startswith("fineweb10B_") else None
        return cls(str(root), str(ds.relative_to(root)), str(tok.relative_to(root)),
                   tuple((str(p.relative_to(root)), p.stat().st_size) for p in files),
                   variant, sum(1 for p in files if p.name.startswith("fineweb_train_")))


@ray.remote(num_cpus=0)
class FileServer:
    """Serves the driver's data files, in chunks, to nodes that stage them. Only the files of a need."""

    def __init__(self) -> None:
        self.allowed: dict[str, Path] = {}

    def allow(self, need: DataNeed) -> None:
        for rel, _ in need.files:
            self.allowed[rel] = Path(need.root) / rel

    def read(self, rel: str, offset: int, size: int) -> bytes:
        path = self.allowed.get(rel)
        if path is None:
            raise PermissionError(f"{rel} is not a data file this search serves")
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)


def node_root(need: DataNeed) -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV) or need.root).expanduser().absolute()


def missing(need: DataNeed, root: Path) -> list[tuple[str, int]]:
    """Files of `need` absent from `root` or of another size (a partial copy)."""
    out = []
    for rel, size in need.files:
        try:
            if (root / rel).stat().st_size == size:
                continue
        except OSError:
            pass
        out.append((rel, size))
    return out


def _stream(server, rel: str, size: int, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            offset = 0
            while offset < size:
                chunk = ray.get(server.read.remote(rel, offset, min(CHUNK, size - offset)))
                if not chunk:
                    raise OSError(f"{rel} shrank on the driver while it was copied")
                f.write(chunk)
                offset += len(chunk)
        os.replace(tmp, dest)  # a half-copied file is never taken for a whole one
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(need: DataNeed, root: Path) -> None:
    from data.fetch import fetch

    # The node's own environment names the source (HF_ENDPOINT, MATCHED_FINEWEB_REPO_ID, a mirror near it).
    fetch(need.fetch_variant, need.train_shards, dest=root, endpoint=os.environ.get("HF_ENDPOINT") or None,
          progress=False)


def stage_here(need: DataNeed, server) -> dict:
    """Run on the node: make sure it holds `need`; its paths, or the reason it cannot. Never raises."""
    root = node_root(need)
    gpu = gpu_facts("")  # the node's GPUs, for its placement record, whether or not it gets the data
    notes: list[str] = []
    try:
        todo = missing(need, root)
        if todo and need.fetch_variant:
            try:
                _fetch(need, root)
                notes.append("fetched from the official source")
            except Exception as e:  # offline node, Hub down: the driver's copy still works
                notes.append(f"fetch failed ({type(e).__name__}: {' '.join(str(e).split())[:120]})")
            todo = missing(need, root)
        if todo:
            free = shutil.disk_usage(_existing_parent(root)).free
            want = sum(size for _, size in todo)
            if want > free:
                raise OSError(f"needs {want / 1e9:.1f} GB under {root}, {free / 1e9:.1f} GB free: free space or "
                              f"point {DATA_ROOT_ENV} at a bigger disk")
            for rel, size in todo:
                _stream(server, rel, size, root / rel)
            notes.append(f"copied {len(todo)} file(s), {want / 1e6:.1f} MB, from the driver")
        from data.verify import verify_dataset

        verify_dataset(root / need.dataset, deep=False, require_train=need.train_shards > 0)
        if not (root / need.tokenizer).is_file():
            raise OSError(f"tokenizer {root / need.tokenizer} missing after staging")
    except Exception as e:
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        after = f" (after: {'; '.join(notes)})" if notes else ""
        return {"ok": False, "error": f"data staging under {root} failed: {msg}{after}", "gpu": gpu}
    return {"ok": True, "data_path": str(root / need.dataset), "tokenizer_path": str(root / need.tokenizer),
            "root": str(root), "how": "; ".join(notes) or "present", "gpu": gpu}


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


@ray.remote(num_cpus=0, max_retries=0)
def stage(need: DataNeed, server) -> dict:
    return stage_here(need, server)


def gpu_facts(cuda_visible_devices: str | None) -> dict:
    """{"sku", "count", "driver"} of the GPUs in `cuda_visible_devices` ("" = all of the node's GPUs,
    None = none: a CPU run). nvidia-smi answers where there is a driver; else PGOLF_GPU_SKU; else "cpu"."""
    if cuda_visible_devices is None:
        return {"sku": "cpu", "count": 0, "driver": None}
    ids = [i for i in cuda_visible_devices.split(",") if i.strip()]
    if os.environ.get(GPU_SKU_ENV):
        return {"sku": os.environ[GPU_SKU_ENV], "count": len(ids), "driver": None}
    cmd = ["nvidia-smi", "--query-gpu=index,name,driver_version", "--format=csv,noheader"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"sku": "cpu" if not ids else "unknown", "count": len(ids), "driver": None}
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.count(",") >= 2]
    if ids:  # Ray numbers GPUs by their index on the node, as nvidia-smi does
        rows = [r for r in rows if r[0] in ids] or rows
    names = sorted({r[1] for r in rows})
    return {"sku": " + ".join(names) or "unknown", "count": len(ids) or len(rows),
            "driver": rows[0][2] if rows else None}


Key = tuple[str, str]  # the driver's (DATA_PATH, TOKENIZER_PATH)
RETRY_FAILED_S = 120.0  # a node whose staging failed is tried again after this (a transient Hub or disk fault)


class DataBook:
    """The executor's view of which node holds which data: staging tasks, their answers, the reasons."""

    def __init__(self) -> None:
        self.needs: dict[Key, DataNeed] = {}
        self.state: dict[tuple[str, Key], dict] = {}  # (node, key) -> {"state", "reason"/paths, "at"}
        self.pending: dict = {}  # staging task ref -> (node, key)
        self.server = None

    def key_for(self, env: dict[str, str]) -> Key | None:
        """The data a run reads (None: none, e.g. a test's fake runner). ValueError when the driver lacks it."""
        if not env.get("DATA_PATH") or not env.get("TOKENIZER_PATH"):
            return None
        key = (env["DATA_PATH"], env["TOKENIZER_PATH"])
        if key not in self.needs:
            self.needs[key] = DataNeed.from_paths(*key)
        return key

    def not_ready(self, key: Key | None, nodes: dict[str, object]) -> set[str]:
        """Nodes that may not run `key`'s runs yet; starts staging where it has not started."""
        if key is None:
            return set()
        out = set()
        for nid in nodes:
            st = self.state.get((nid, key))
            if st is None or (st["state"] == "failed" and time.monotonic() - st["at"] > RETRY_FAILED_S):
                self._start(nid, key)
                st = self.state[(nid, key)]
            if st["state"] != "ready":
                out.add(nid)
        return out

    def _start(self, nid: str, key: Key) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        need = self.needs[key]
        if self.server is None:  # on the driver's node, where the driver's files are
            here = ray.get_runtime_context().get_node_id()
            self.server = FileServer.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote()
        self.server.allow.remote(need)
        ref = stage.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=nid, soft=False)).remote(
            need, self.server)
        self.pending[ref] = (nid, key)
        self.state[(nid, key)] = {"state": "staging", "at": time.monotonic()}

    def done(self, ref) -> None:
        nid, key = self.pending.pop(ref)
        try:
            ans = ray.get(ref)
        except ray.exceptions.RayError as e:  # the node died, or the task could not be placed
            ans = {"ok": False, "error": f"data staging task failed: {' '.join(str(e).split())[:200]}"}
        if ans.get("ok"):
            self.state[(nid, key)] = {"state": "ready", "at": time.monotonic(), **ans}
        else:
            self.state[(nid, key)] = {"state": "failed", "at": time.monotonic(), "reason": ans.get("error"),
                                      "gpu": ans.get("gpu")}

    def env_for(self, nid: str, key: Key | None) -> dict[str, str]:
        """DATA_PATH / TOKENIZER_PATH of the node's own copy."""
        if key is None:
            return {}
        st = self.state[(nid, key)]
        return {"DATA_PATH": st["data_path"], "TOKENIZER_PATH": st["tokenizer_path"]}

    def forget(self, alive: set[str]) -> None:
        """Drop what is known of nodes that left (a node that comes back is checked again)."""
        for nk in [nk for nk in self.state if nk[0] not in alive]:
            del self.state[nk]

    def status(self) -> dict[str, dict]:
        """Per node: data state ("ready", "staging", "failed") with the reason or how, and its GPUs."""
        out: dict[str, dict] = {}
        for (nid, _), st in self.state.items():
            cur = out.get(nid)
            if cur is not None and cur["data"] != "ready":
                continue  # a node's worst state is the one to show
            out[nid] = {"data": st["state"], "reason": st.get("reason") or st.get("how"), "gpu": st.get("gpu")}
        return out

    def gpu_models(self) -> dict[str, str]:
        """node id -> its GPU model, for the nodes that tried to stage some data (staging looks at the GPUs) and
        could name them."""
        return {nid: st["gpu"]["sku"] for (nid, _), st in self.state.items()
                if st.get("gpu") and st["gpu"].get("sku") not in (None, *UNNAMED_GPUS)}

    def shutdown(self) -> None:
        if self.server is not None:
            ray.kill(self.server)
            self.server = None
