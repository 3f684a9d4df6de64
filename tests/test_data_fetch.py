"""`data.fetch` against a real HTTP server on 127.0.0.1 that serves a dataset repo the way the Hub does.

huggingface_hub's `hf_hub_download(..., endpoint=URL, repo_type="dataset")` sends HEAD then GET to
`{URL}/datasets/{repo_id}/resolve/{revision}/{path}` and needs `X-Repo-Commit`, `ETag` and `Content-Length`;
a missing file is a 404 with `X-Error-Code: EntryNotFound`, an unknown repo `X-Error-Code: RepoNotFound`.
The served repo holds an official-shaped manifest, a tokenizer, one val and two train shards, all made by
`data.build.build_dataset`. Every request is recorded, so tests count what was downloaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from data.build import build_dataset, stdlib_documents
from data.cli import main as data_main
from data.fetch import FetchError, _describe, _Hub, fetch
from data.shards import ShardError, read_shard
from data.verify import verify_dataset

REPO = "pgolf-tests/parameter-golf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DATASET = "datasets/datasets/fineweb10B_sp1024"


@dataclass
class HubRepo:
    """A served dataset repo: files by path in the repo, and the (method, path) of every request."""

    files: dict[str, bytes]
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    def gets(self, suffix: str = "") -> int:
        return sum(1 for m, p in self.requests if m == "GET" and p.endswith(suffix))


class _Handler(BaseHTTPRequestHandler):
    server: _HubServer

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        repo = self.server.repo
        path = unquote(self.path.split("?", 1)[0])
        repo.requests.append((self.command, path))
        prefix = f"/datasets/{REPO}/resolve/"
        if not path.startswith(prefix):
            return self._error(404, "RepoNotFound")
        _revision, _, filename = path[len(prefix) :].partition("/")
        data = repo.files.get(filename)
        if data is None:
            return self._error(404, "EntryNotFound")
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, code: int, error_code: str) -> None:
        payload = json.dumps({"error": error_code}).encode()
        self.send_response(code)
        self.send_header("X-Error-Code", error_code)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, repo: HubRepo) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repo = repo


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """An official-shaped repo tree built from the stdlib corpus: manifest, tokenizer, 1 val + 2 train shards."""
    built = build_dataset(stdlib_documents(), tmp_path_factory.mktemp("remote"), shard_tokens=400_000)
    assert len(built.train_files) == 2 and len(built.val_files) == 1
    manifest = json.loads(built.manifest_path.read_text())
    tok, ds = manifest["tokenizers"][0], manifest["datasets"][0]
    tok.update(name="sp_bpe_1024", model_path="tokenizers/fineweb_1024_bpe.model",
               vocab_path="tokenizers/fineweb_1024_bpe.vocab")
    ds.update(name="fineweb10B_sp1024", tokenizer_name="sp_bpe_1024", path="datasets/fineweb10B_sp1024")
    files = {
        "datasets/manifest.json": json.dumps(manifest).encode(),
        "datasets/tokenizers/fineweb_1024_bpe.model": built.tokenizer_path.read_bytes(),
        "datasets/tokenizers/fineweb_1024_bpe.vocab": built.vocab_path.read_bytes(),
    }
    for shard in (*built.val_files, *built.train_files):
        files[f"{DATASET}/{shard.name}"] = shard.read_bytes()
    return files


@pytest.fixture()
def hub(repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubRepo]:
    """A fresh server (its own request log) per test; nothing may reach the user's HF home or a proxy."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    repo = HubRepo(files=dict(repo_files))
    server = _HubServer(repo)
    repo.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield repo
    server.shutdown()
    server.server_close()


def _fetch(hub: HubRepo, tmp_path: Path, train_shards: int, **kwargs: object):
    kwargs.setdefault("repo_id", REPO)
    return fetch("sp1024", train_shards, dest=tmp_path / "data", endpoint=hub.url, cache_dir=tmp_path / "hf_cache",
                 token=False, progress=False, **kwargs)


def test_fetch_downloads_verifies_and_resumes(hub: HubRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", REPO)  # the repo id comes from the environment, as upstream
    first = _fetch(hub, tmp_path, 1, repo_id=None)
    data = tmp_path / "data"
    assert first.repo_id == REPO
    assert first.dataset_dir == data / "datasets" / "fineweb10B_sp1024"
    assert first.tokenizer_path == data / "tokenizers" / "fineweb_1024_bpe.model"
    assert (data / "manifest.json").read_bytes() == hub.files["datasets/manifest.json"]
    for name in ("fineweb_val_000000.bin", "fineweb_train_000000.bin"):
        assert (first.dataset_dir / name).read_bytes() == hub.files[f"{DATASET}/{name}"]
    assert not (first.dataset_dir / "fineweb_train_000001.bin").exists()
    assert (data / "tokenizers" / "fineweb_1024_bpe.vocab").is_file()
    assert len(first.downloaded) == 4 and first.skipped == ()
    assert hub.gets() == 5 and hub.gets(".bin") == 2  # manifest, 2 tokenizer files, 2 shards: each once
    manifest = json.loads(hub.files["datasets/manifest.json"])
    assert first.report.val_tokens == manifest["datasets"][0]["stats"]["tokens_val"]
    deep = verify_dataset(first.dataset_dir)  # vocab and tokenizer come from the downloaded root manifest
    assert (deep.vocab_size, deep.vocab_source) == (1024, "manifest")
    assert deep.tokenizer_path == first.tokenizer_path

    before = hub.gets()
    again = _fetch(hub, tmp_path, 1)
    assert hub.gets() == before, "a re-run must download nothing"
    assert again.downloaded == () and len(again.skipped) == 4

    damaged = first.dataset_dir / "fineweb_train_000000.bin"
    damaged.unlink()  # a new file, not a write through the hard link into the cache
    damaged.write_bytes(b"\0" * 100)
    more = _fetch(hub, tmp_path, 2)
    assert more.downloaded == ("datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
                               "datasets/fineweb10B_sp1024/fineweb_train_000001.bin")
    assert hub.gets(".bin") == 3, "the damaged file is restored from the cache; only the new shard is fetched"
    assert len(read_shard(more.dataset_dir / "fineweb_train_000001.bin")) == more.report.train[1].tokens


def test_fetch_rejects_a_corrupt_served_shard(hub: HubRepo, tmp_path: Path):
    name = f"{DATASET}/fineweb_train_000000.bin"
    hub.files[name] = hub.files[name][:-10]  # truncated on the server: the header promises more tokens
    with pytest.raises(ShardError) as err:
        _fetch(hub, tmp_path, 1)
    message = str(err.value)
    assert "fineweb_train_000000.bin" in message and "truncated" in message and "corrupt" in message
    assert "\n" not in message
    assert hub.gets("fineweb_train_000000.bin") == 2, "one retry that bypasses the cache, then a clear error"
    assert not (tmp_path / "data" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin").exists()


def test_fetch_more_shards_than_the_manifest_lists(hub: HubRepo, tmp_path: Path):
    with pytest.raises(FetchError, match=r"only 2 train shards .* requested 3; pass --train-shards 2"):
        _fetch(hub, tmp_path, 3)
    assert hub.gets(".bin") == 0


def test_fetch_unknown_variant_and_repo(hub: HubRepo, tmp_path: Path):
    with pytest.raises(FetchError, match=r"no dataset named 'fineweb10B_sp4096' \(available: fineweb10B_sp1024\)"):
        fetch("sp4096", 1, dest=tmp_path / "d", repo_id=REPO, endpoint=hub.url, cache_dir=tmp_path / "c",
              token=False, progress=False)
    with pytest.raises(FetchError, match=r"dataset repo someone/else at http://127\.0\.0\.1:\d+ not found"):
        _fetch(hub, tmp_path, 1, repo_id="someone/else")


def test_fetch_cli(hub: HubRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = ["fetch", "--repo-id", REPO, "--endpoint", hub.url, "--dest", str(tmp_path / "data"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert data_main([*args, "--train-shards", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "requested 5" in err
    assert data_main([*args, "--train-shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "5 downloaded, 0 already present" in out and "2 train shards" in out
    assert f"DATA_PATH={tmp_path / 'data' / 'datasets' / 'fineweb10B_sp1024'}" in out


def test_network_errors_read_as_one_actionable_line(tmp_path: Path):
    # A refused connection is retried with backoff for ~20 s before huggingface_hub gives up, so the mapping
    # is checked on the exception it raises then: LocalEntryNotFoundError caused by the network error.
    from huggingface_hub.errors import LocalEntryNotFoundError

    hub = _Hub(REPO, "datasets", "http://127.0.0.1:9", None, tmp_path, False)
    try:
        raise LocalEntryNotFoundError("An error happened ...\nPlease check your connection") from (
            ConnectionRefusedError(111, "Connection refused"))
    except LocalEntryNotFoundError as e:
        message = _describe(e, "datasets/manifest.json", hub)
    assert message.startswith(f"cannot reach {REPO} at http://127.0.0.1:9 for datasets/manifest.json")
    assert "ConnectionRefusedError: [Errno 111] Connection refused" in message and "check the network" in message
    assert "\n" not in message
