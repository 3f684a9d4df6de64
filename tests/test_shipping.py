"""Run folders shipped home from a node without the driver's disk: what travels, what does not, and how it lands."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from harness import shipping
from harness.staging import DataNeed, gpu_facts, missing


def test_nonce_tells_a_shared_disk_from_a_private_one(tmp_path, monkeypatch):
    monkeypatch.delenv(shipping.NO_SHARED_FS_ENV, raising=False)
    nonce = shipping.write_nonce(tmp_path / "runs")
    assert shipping.sees_driver_disk(tmp_path / "runs", nonce)
    assert not shipping.sees_driver_disk(tmp_path / "runs", "another driver's nonce")
    assert not shipping.sees_driver_disk(tmp_path / "elsewhere", nonce)
    monkeypatch.setenv(shipping.NO_SHARED_FS_ENV, "1")  # the node says: ship, even if the path is visible
    assert not shipping.sees_driver_disk(tmp_path / "runs", nonce)


def test_pack_leaves_caches_links_and_excess_behind(tmp_path):
    rd = tmp_path / "run"
    (rd / "logs").mkdir(parents=True)
    (rd / "home").mkdir()
    (rd / "home" / "cache").write_bytes(b"c" * 100)
    (rd / "train.log").write_text("step:1/1\n")
    (rd / "logs" / "r.txt").write_text("log")
    (rd / "final_model.int8.ptz").write_bytes(b"m" * 5000)
    (rd / "aaa_junk.bin").write_bytes(b"j" * 5000)  # sorts first, ships last: the artifact wins the room
    (rd / "secret").symlink_to("/etc/hostname")  # a candidate's link must not carry a node's file home
    blob, left = shipping.pack(rd, limit=5020)
    names = tarfile.open(fileobj=io.BytesIO(blob)).getnames()
    assert "home/cache" not in names and "secret" not in names and "secret" in left
    assert "final_model.int8.ptz" in names and "logs/r.txt" in names
    assert "train.log" in names and "aaa_junk.bin" in left  # past the limit: noted, not shipped


def test_unpack_replaces_the_folder_atomically_and_refuses_escapes(tmp_path):
    rd = tmp_path / "runs" / "r1"
    rd.mkdir(parents=True)
    (rd / "stale.txt").write_text("from a reaped attempt")
    src = tmp_path / "src"
    src.mkdir()
    (src / "result.json").write_text("{}")
    blob, _ = shipping.pack(src)
    shipping.unpack(blob, rd)
    assert sorted(os.listdir(rd)) == ["result.json"]
    assert [p.name for p in rd.parent.iterdir()] == ["r1"]  # no temporary folder left behind

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(tarfile.TarError):
        shipping.unpack(evil.getvalue(), rd)
    assert not (tmp_path / "escaped.txt").exists() and (rd / "result.json").is_file()  # the old folder stays


def test_data_need_lists_the_driver_files_and_spots_partial_copies(tmp_path):
    root = tmp_path / "data"
    (root / "datasets" / "local_sp1024").mkdir(parents=True)
    (root / "tokenizers").mkdir()
    (root / "datasets" / "local_sp1024" / "fineweb_val_000000.bin").write_bytes(b"v" * 10)
    (root / "datasets" / "local_sp1024" / "fineweb_train_000000.bin").write_bytes(b"t" * 20)
    (root / "tokenizers" / "local_1024_bpe.model").write_bytes(b"m")
    (root / "tokenizers" / "local_1024_bpe.vocab").write_bytes(b"v")
    (root / "tokenizers" / "other.model").write_bytes(b"o")  # another tokenizer: not needed
    ds, tok = root / "datasets" / "local_sp1024", root / "tokenizers" / "local_1024_bpe.model"
    need = DataNeed.from_paths(str(ds), str(tok))
    assert dict(need.files) == {"datasets/local_sp1024/fineweb_train_000000.bin": 20,
                                "datasets/local_sp1024/fineweb_val_000000.bin": 10,
                                "tokenizers/local_1024_bpe.model": 1, "tokenizers/local_1024_bpe.vocab": 1}
    assert need.fetch_variant is None and need.train_shards == 1
    assert missing(need, root) == []
    (root / "datasets" / "local_sp1024" / "fineweb_val_000000.bin").write_bytes(b"v" * 4)  # a partial copy
    assert [rel for rel, _ in missing(need, root)] == ["datasets/local_sp1024/fineweb_val_000000.bin"]
    with pytest.raises(ValueError, match="pgolf's layout"):
        DataNeed.from_paths(str(root / "datasets" / "local_sp1024"), str(tmp_path / "tok.model"))


def test_gpu_facts_without_nvidia_smi(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("PGOLF_GPU_SKU", raising=False)
    assert gpu_facts(None) == {"sku": "cpu", "count": 0, "driver": None}
    assert gpu_facts("0,1") == {"sku": "unknown", "count": 2, "driver": None}
    monkeypatch.setenv("PGOLF_GPU_SKU", "NVIDIA H100 80GB HBM3")
    assert gpu_facts("3") == {"sku": "NVIDIA H100 80GB HBM3", "count": 1, "driver": None}


def test_gpu_facts_read_nvidia_smi(tmp_path, monkeypatch):
    """A real `nvidia-smi` answers in this CSV shape (--query-gpu=index,name,driver_version --format=csv,noheader);
    the executable here prints a mixed node's answer, as a node with an H100 pair and an A100 would."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3, 550.54.15'\necho '1, NVIDIA H100 80GB HBM3, 550.54.15'\n"
                   "echo '2, NVIDIA A100-SXM4-80GB, 550.54.15'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PGOLF_GPU_SKU", raising=False)
    assert gpu_facts("1") == {"sku": "NVIDIA H100 80GB HBM3", "count": 1, "driver": "550.54.15"}
    assert gpu_facts("0,2") == {"sku": "NVIDIA A100-SXM4-80GB + NVIDIA H100 80GB HBM3", "count": 2,
                                "driver": "550.54.15"}
    assert gpu_facts("") == {"sku": "NVIDIA A100-SXM4-80GB + NVIDIA H100 80GB HBM3", "count": 3,
                             "driver": "550.54.15"}  # the whole node (what staging looks at)


def test_the_driver_keeps_what_it_needs_to_join_a_token_ray_cluster():
    from harness.sandbox import is_secret_name

    assert not is_secret_name("RAY_AUTH_MODE") and not is_secret_name("RAY_AUTH_TOKEN_PATH")
    assert is_secret_name("RAY_AUTH_TOKEN")  # the token itself is still scrubbed: use ~/.ray/auth_token
