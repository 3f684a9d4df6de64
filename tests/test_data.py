"""data/: shard format, the stdlib corpus, build (tokenizer + shards), verify and the CLI, on real components."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

import data.build
from data.build import BuildError, build_dataset, doc_hash, stdlib_documents
from data.cli import add_parser
from data.cli import main as data_main
from data.corpus import _live_docstrings, _stdlib_sources, read_text_documents
from data.shards import HEADER_BYTES, MAGIC, ShardError, read_header, read_shard, write_shard
from data.tokenizer import TokenizerError
from data.verify import verify_dataset

ROOT = Path(__file__).resolve().parents[1]


# --- shard format ---------------------------------------------------------------------------------------------


def test_shard_roundtrip(tmp_path: Path):
    tokens = np.random.default_rng(0).integers(0, 2**16, size=5000).astype(np.int64)
    tokens[:2] = [0, 65535]
    path = write_shard(tmp_path / "fineweb_val_000000.bin", tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * tokens.size
    header = np.fromfile(path, dtype="<i4", count=256)
    assert list(header[:3]) == [MAGIC, 1, tokens.size] and not header[3:].any()
    assert np.array_equal(read_shard(path), tokens) and read_shard(path).dtype == np.uint16
    assert read_header(path) == tokens.size
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file is left behind"
    write_shard(path, [1, 2, 3])  # overwrite in place, from a plain list
    assert read_shard(path).tolist() == [1, 2, 3]
    assert read_shard(write_shard(tmp_path / "empty.bin", [])).size == 0


@pytest.mark.parametrize("bad", [[-1], [2**16], [[1, 2]], [0.5]])
def test_write_shard_rejects_what_does_not_fit_uint16(tmp_path: Path, bad: list):
    with pytest.raises(ValueError):
        write_shard(tmp_path / "x.bin", bad)
    assert not list(tmp_path.iterdir())


def _corrupt(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "magic":
        raw[0:4] = (12345).to_bytes(4, "little")
    elif how == "version":
        raw[4:8] = (2).to_bytes(4, "little")
    elif how == "reserved":
        raw[40] = 7
    elif how == "truncated":
        raw = raw[:-3]
    elif how == "trailing":
        raw += b"\0\0"
    elif how == "header":
        raw = raw[:500]
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(("how", "fault"), [
    ("magic", "bad magic 12345"), ("version", "unsupported version 2"), ("reserved", "not zero"),
    ("truncated", "(truncated)"), ("trailing", "(trailing bytes)"), ("header", "shorter than the 1024-byte header"),
    ("missing", "no such shard file"),
])
def test_read_shard_names_file_fault_and_fix(tmp_path: Path, how: str, fault: str):
    path = write_shard(tmp_path / "fineweb_train_000003.bin", np.arange(100))
    if how == "missing":
        path.unlink()
    else:
        _corrupt(path, how)
    with pytest.raises(ShardError) as err:
        read_shard(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and fault in message and "pgolf data" in message
    assert "\n" not in message and err.value.path == path


# --- corpus ---------------------------------------------------------------------------------------------------


def test_stdlib_documents_are_real_unique_and_deterministic():
    docs = stdlib_documents()
    assert len(docs) > 2000 and len(set(docs)) == len(docs)
    assert all(isinstance(d, str) and d.strip() for d in docs)
    assert sum(len(d.encode()) for d in docs) > 500_000
    assert docs == stdlib_documents() and stdlib_documents(limit=7) == docs[:7]
    assert len({" ".join(d.split()) for d in docs}) == len(docs), "unique even up to whitespace"
    assert any("Return" in d for d in docs[:500]), "ordinary English docstrings"
    docs.clear()
    assert stdlib_documents(), "callers get a copy"


def test_stdlib_sources_skip_tests_and_fallback_has_docs():
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    sources = _stdlib_sources(root)
    assert sources and all(p.suffix == ".py" for p in sources)
    assert not [p for p in sources if {"test", "tests", "site-packages"} & set(p.relative_to(root).parts)]
    assert len(list(_live_docstrings(["json", "re", "os"]))) > 20


def test_read_text_documents(tmp_path: Path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "b.txt").write_text("  Second file.\n")
    (tmp_path / "corpus" / "a.md").write_text("First para.\n\n  \nSecond para\nstill second.\n")
    (tmp_path / "corpus" / "skip.bin").write_bytes(b"\0")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "one"}\n\n{"text": "two", "id": 2}\n{"text": "   "}\n')
    assert read_text_documents([jsonl, tmp_path / "corpus"]) == [
        "one", "two", "First para.\n\n  \nSecond para\nstill second.", "Second file."]
    assert read_text_documents([tmp_path / "corpus" / "a.md"], paragraphs=True) == [
        "First para.", "Second para\nstill second."]
    jsonl.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"docs\.jsonl:2: no string \"text\" field"):
        read_text_documents([jsonl])
    with pytest.raises(FileNotFoundError, match="nope.txt: no such file"):
        read_text_documents([tmp_path / "nope.txt"])


# --- build ----------------------------------------------------------------------------------------------------


def test_tokenizer_has_the_challenge_settings(local_data):
    sp = spm.SentencePieceProcessor(model_file=str(local_data.tokenizer_path))
    assert local_data.tokenizer_path == local_data.dataset_dir.parent.parent / "tokenizers" / "local_1024_bpe.model"
    assert local_data.vocab_path.read_text(encoding="utf-8").count("\n") == sp.get_piece_size() == 1024
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert all(sp.is_byte(i) for i in range(4, 260)) and sp.id_to_piece(259) == "<0xFF>"  # byte fallback
    space = sp.piece_to_id("\u2581")
    assert space != sp.unk_id() and sp.id_to_piece(space) == "\u2581", "a standalone '▁' piece"
    assert sp.encode("1234", out_type=str) == ["1", "2", "3", "4"]  # split_digits
    assert not sp.encode("hello", out_type=str)[0].startswith("\u2581")  # add_dummy_prefix=False
    assert sp.decode(sp.encode("\ufb01ne \u2460")) == "fine 1"  # nmt_nfkc
    assert all(sp.is_byte(i) for i in sp.encode("\U0001f600"))  # unseen characters fall back to bytes
    assert sp.unk_id() not in sp.encode("\u4e2d\u6587 caf\u00e9")


def _split_docs(*paths: Path) -> list[list[int]]:
    """Token ids of each document across consecutive shards (a document may straddle two)."""
    tokens = np.concatenate([read_shard(p) for p in paths]).tolist()
    starts = [i for i, t in enumerate(tokens) if t == 1]
    return [tokens[a + 1 : b] for a, b in zip(starts, [*starts[1:], len(tokens)], strict=True)]


def test_shards_hold_bos_prefixed_documents_that_decode_to_the_text(local_data):
    sp = spm.SentencePieceProcessor(model_file=str(local_data.tokenizer_path))
    assert [p.name for p in local_data.val_files] == ["fineweb_val_000000.bin"]
    assert [p.name for p in local_data.train_files] == ["fineweb_train_000000.bin"]
    for files, n_docs, n_tokens in ((local_data.val_files, local_data.num_val_docs, local_data.val_tokens),
                                    (local_data.train_files, local_data.num_train_docs, local_data.train_tokens)):
        tokens = np.concatenate([read_shard(p) for p in files])
        assert tokens[0] == 1 and int((tokens == 1).sum()) == n_docs and tokens.size == n_tokens
        assert not (tokens == 2).any(), "no EOS is appended"
        assert int(tokens.max()) < 1024
    by_hash = {doc_hash(d): d for d in stdlib_documents()}
    hashes = json.loads((local_data.dataset_dir / "doc_hashes.json").read_text())
    val_docs = _split_docs(local_data.val_files[0])
    assert len(val_docs) == len(hashes["val"]) == local_data.num_val_docs
    for ids, h in zip(val_docs, hashes["val"], strict=True):
        original = by_hash[h]
        assert sp.decode(ids) == sp.normalize(original).replace("\u2581", " ")


def test_train_and_val_are_disjoint_and_described_by_the_manifest(local_data):
    hashes = json.loads((local_data.dataset_dir / "doc_hashes.json").read_text())
    assert len(hashes["train"]) == local_data.num_train_docs
    assert not set(hashes["val"]) & set(hashes["train"])
    n = len(stdlib_documents())
    assert local_data.num_val_docs == round(0.1 * n) and local_data.num_train_docs == n - local_data.num_val_docs
    manifest = json.loads(local_data.manifest_path.read_text())
    (ds,), (tok,) = manifest["datasets"], manifest["tokenizers"]
    assert ds["name"] == "local_sp1024" and ds["path"] == "datasets/local_sp1024" and ds["vocab_size"] == 1024
    assert ds["stats"] == {
        "docs_total": n, "docs_val": local_data.num_val_docs, "docs_train": local_data.num_train_docs,
        "files_total": 2, "files_val": 1, "files_train": 1, "tokens_total": local_data.val_tokens
        + local_data.train_tokens, "tokens_val": local_data.val_tokens, "tokens_train": local_data.train_tokens}
    assert tok["model_path"] == "tokenizers/local_1024_bpe.model" and tok["recommended_bigram_vocab_size"] == 5120
    assert tok["source_spec"]["trainer"]["normalization_rule_name"] == "nmt_nfkc"
    meta = manifest["docs_meta"]
    assert meta["bytes_val"] == local_data.val_bytes and len(meta["docs_sha256_val"]) == 64
    assert meta["docs_sha256_val"] != meta["docs_sha256_train"]
    assert not manifest["append_eos"] and manifest["shuffle_seed"] == 1337


def test_build_is_deterministic(local_data, tmp_path: Path):
    again = build_dataset(stdlib_documents(), dest=tmp_path, vocab_size=1024)
    for a, b in zip((*local_data.val_files, *local_data.train_files), (*again.val_files, *again.train_files),
                    strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert again.tokenizer_path.read_bytes() == local_data.tokenizer_path.read_bytes()
    assert again.manifest_path.read_text() == local_data.manifest_path.read_text()


def test_tokenizer_sees_only_training_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: list[str] = []
    real = data.build.train_tokenizer

    def spy(texts, *args, **kwargs):
        texts = list(texts)
        seen.extend(texts)
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(data.build, "train_tokenizer", spy)
    docs = stdlib_documents()
    dups = [*docs[:9], docs[9] + "\n  "]  # the last one differs only in whitespace
    built = build_dataset([*docs, *dups], tmp_path, vocab_size=1024, num_val_docs=500, shard_tokens=100_000)
    assert built.duplicates_dropped == 10 and built.num_val_docs == 500 and len(seen) == built.num_train_docs
    assert len(built.train_files) == 7 and len(built.val_files) == 1  # 100k-token shards; docs straddle them
    sp = spm.SentencePieceProcessor(model_file=str(built.tokenizer_path))
    val_texts = {sp.decode(ids) for ids in _split_docs(built.val_files[0])}
    train_texts = {sp.decode(ids) for ids in _split_docs(*built.train_files)}
    seen_texts = {sp.decode(sp.encode(t)) for t in seen}
    assert len(val_texts) == 500 and not val_texts & seen_texts and train_texts <= seen_texts
    hashes = json.loads((built.dataset_dir / "doc_hashes.json").read_text())
    assert {doc_hash(t) for t in seen} == set(hashes["train"]) and not set(hashes["train"]) & set(hashes["val"])
    report = verify_dataset(built.dataset_dir)
    assert (report.val_docs, report.train_docs) == (500, built.num_train_docs), "BOS counted across straddles"


def test_build_sp2048(tmp_path: Path, local_data):
    built = build_dataset(stdlib_documents(), tmp_path, vocab_size=2048)
    assert built.name == "local_sp2048" and built.tokenizer_path.name == "local_2048_bpe.model"
    assert spm.SentencePieceProcessor(model_file=str(built.tokenizer_path)).get_piece_size() == 2048
    assert built.bytes_per_token > local_data.bytes_per_token > 2.0
    report = verify_dataset(built.dataset_dir)
    assert report.vocab_size == 2048 and max(s.max_id for s in (*report.val, *report.train)) >= 1024


def test_build_rejects_bad_inputs(tmp_path: Path):
    with pytest.raises(BuildError, match="at least 2 distinct"):
        build_dataset(["only one", "only one", "  "], tmp_path)
    with pytest.raises(BuildError, match=r"num_val_docs must be in 1\.\.2"):
        build_dataset(["a b", "c d", "e f"], tmp_path, num_val_docs=3)
    with pytest.raises(BuildError, match="plain folder name"):
        build_dataset(["a b", "c d"], tmp_path, name="../escape")
    with pytest.raises(TokenizerError, match=r"has \d+ pieces, expected exactly 1024"):
        build_dataset(["the cat sat on the mat", "a dog ran in the park", "birds fly south in winter"], tmp_path)
    with pytest.raises(TokenizerError, match="out of range"):
        build_dataset(["a b", "c d"], tmp_path, vocab_size=100)


# --- verify ---------------------------------------------------------------------------------------------------


def test_verify_reports_the_local_dataset(local_data):
    report = verify_dataset(local_data.dataset_dir)
    assert (report.vocab_size, report.vocab_source) == (1024, "manifest")
    assert (report.val_tokens, report.train_tokens) == (local_data.val_tokens, local_data.train_tokens)
    assert (report.val_docs, report.train_docs) == (local_data.num_val_docs, local_data.num_train_docs)
    assert report.tokenizer_path == local_data.tokenizer_path
    quick = verify_dataset(local_data.dataset_dir, deep=False)
    assert quick.val_docs is None and quick.val_tokens == local_data.val_tokens


def _dataset(root: Path, name: str, val: list[list[int]], train: list[list[int]]) -> Path:
    folder = root / name
    for i, toks in enumerate(val):
        write_shard(folder / f"fineweb_val_{i:06d}.bin", toks)
    for i, toks in enumerate(train):
        write_shard(folder / f"fineweb_train_{i:06d}.bin", toks)
    return folder


def test_verify_catches_bad_datasets(tmp_path: Path):
    folder = _dataset(tmp_path, "toy_sp1024", [[1, 5, 9, 1, 7]], [[1, 3, 4], [4, 1, 8]])
    report = verify_dataset(folder)
    assert (report.vocab_size, report.vocab_source, report.val_docs, report.train_docs) == (1024, "folder name", 2, 2)
    bad = _dataset(tmp_path, "ids_sp1024", [[1, 5, 1500]], [[1, 3]])
    with pytest.raises(ShardError, match=r"fineweb_val_000000\.bin: token id 1500 at position 2 is >= vocab size 1024"):
        verify_dataset(bad)
    assert verify_dataset(bad, vocab_size=2048).vocab_source == "argument"
    cases = {
        "no_bos": ([[5, 1, 3]], [[1, 3]], r"fineweb_val_000000\.bin: first token is 5, not BOS"),
        "no_train": ([[1, 2]], [], r"fineweb_train_000000\.bin: no training shard"),
        "no_val": ([], [[1, 2]], r"fineweb_val_000000\.bin: no validation shard"),
    }
    for name, (val, train, pattern) in cases.items():
        with pytest.raises(ShardError, match=pattern):
            verify_dataset(_dataset(tmp_path, name, val, train))
    gap = _dataset(tmp_path, "gap", [[1, 2]], [[1, 2], [3], [4]])
    (gap / "fineweb_train_000001.bin").unlink()
    with pytest.raises(ShardError, match=r"fineweb_train_000001\.bin: missing, yet later train shards exist"):
        verify_dataset(gap)
    with pytest.raises(ShardError, match="no such dataset folder"):
        verify_dataset(tmp_path / "absent")


def test_verify_checks_manifest_and_doc_hashes(local_data, tmp_path: Path):
    root = local_data.dataset_dir.parent.parent
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    folder = copy / "datasets" / "local_sp1024"
    write_shard(folder / "fineweb_val_000001.bin", [1, 5])
    with pytest.raises(ShardError, match="2 val shards, manifest lists 1"):
        verify_dataset(folder)
    (folder / "fineweb_val_000001.bin").unlink()
    hashes = json.loads((folder / "doc_hashes.json").read_text())
    hashes["train"].append(hashes["val"][0])
    (folder / "doc_hashes.json").write_text(json.dumps(hashes))
    with pytest.raises(ShardError, match="1 validation documents also appear in the training split"):
        verify_dataset(folder)


# --- CLI ------------------------------------------------------------------------------------------------------


def test_cli_build_from_jsonl_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    jsonl = tmp_path / "docs_selected.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in stdlib_documents()), encoding="utf-8")
    dest = tmp_path / "data"
    assert data_main(["build", "--text", str(jsonl), "--dest", str(dest), "--name", "docs_sp1024",
                      "--val-docs", "100"]) == 0
    out = capsys.readouterr().out
    folder = dest / "datasets" / "docs_sp1024"
    assert "100 val + " in out and f"DATA_PATH={folder}" in out
    assert f"TOKENIZER_PATH={dest / 'tokenizers' / 'docs_1024_bpe.model'}" in out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["docs_meta"]["source"] == f"text: {jsonl}"

    import argparse

    parser = argparse.ArgumentParser(prog="pgolf")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "verify", str(folder)])
    assert args.func(args) == 0
    assert "ok " in capsys.readouterr().out

    write_shard(folder / "fineweb_train_000000.bin", [1, 4000])
    args = parser.parse_args(["data", "verify", str(folder), "--vocab-size", "1024"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "token id 4000" in err


def test_cli_as_module(local_data):
    proc = subprocess.run([sys.executable, "-m", "data", "verify", str(local_data.dataset_dir), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "fineweb_val_000000.bin" in proc.stdout and "ok " in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "data", "build", "--text", "/nonexistent/x.txt"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: /nonexistent/x.txt: no such file")
