"""``pgolf data fetch | build | verify``: argparse wiring; each handler returns an exit code (2 on error)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_DEST = Path("data")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data`` and its subcommands on ``subparsers``; each leaf sets ``func`` (args -> exit code)."""
    data = subparsers.add_parser("data", help="fetch, build or verify tokenizers and shards",
                                 description="Official FineWeb shards, locally built datasets, and checks.")
    _add_commands(data)
    return data


def _add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{fetch,build,verify}", required=True)
    f = sub.add_parser("fetch", help="download the official manifest, tokenizer, val and train shards",
                       description="Download fineweb10B_<variant> from the Hugging Face dataset repo.")
    f.add_argument("--variant", default="sp1024", help="dataset variant: sp1024 (default), sp4096, byte260 ...")
    f.add_argument("--train-shards", type=int, default=80, metavar="N",
                   help="train shards to fetch, 100M tokens each (default 80; 0 = val only)")
    f.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="data root (default ./data)")
    f.add_argument("--repo-id", default=None,
                   help="HF dataset repo (default $MATCHED_FINEWEB_REPO_ID or willdepueoai/parameter-golf)")
    f.add_argument("--endpoint", default=None, help="Hub endpoint URL (default $HF_ENDPOINT or huggingface.co)")
    f.add_argument("--revision", default=None, help="repo branch, tag or commit (default main)")
    f.add_argument("--cache-dir", type=Path, default=None, help="HF cache (default <dest>/cache/huggingface)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=_guarded(_fetch))

    b = sub.add_parser("build", help="train a tokenizer and write shards from local text",
                       description="Build <dest>/datasets/<name>/ and <dest>/tokenizers/ from text "
                                   "(default: the Python standard library's docstrings).")
    b.add_argument("--text", nargs="+", type=Path, default=None, metavar="PATH",
                   help="text files or folders: .jsonl = one {\"text\": ...} document per line, "
                        "other files = one document per file (see --paragraphs)")
    b.add_argument("--paragraphs", action="store_true",
                   help="split plain-text files into one document per blank-line-separated block")
    b.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size (default 1024)")
    b.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="data root (default ./data)")
    b.add_argument("--name", default=None, help="dataset folder name (default local_sp<V>)")
    b.add_argument("--val-docs", type=int, default=None, metavar="N", help="validation documents (default 10%%)")
    b.add_argument("--seed", type=int, default=None, help="document shuffle seed (default 1337)")
    b.add_argument("--shard-tokens", type=int, default=None, help="tokens per shard (default 100,000,000)")
    b.set_defaults(func=_guarded(_build))

    v = sub.add_parser("verify", help="check a dataset folder's shards, vocabulary and manifest",
                       description="Verify every shard in DIR; exit 2 naming the first bad file.")
    v.add_argument("dir", type=Path, metavar="DIR", help="dataset folder, e.g. data/datasets/fineweb10B_sp1024")
    v.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (default: from the manifest)")
    v.add_argument("--quick", action="store_true", help="headers and sizes only; do not read the tokens")
    v.set_defaults(func=_guarded(_verify))


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``handler``; expected failures print one ``error: ...`` line to stderr and return 2."""

    def run(args: argparse.Namespace) -> int:
        from .fetch import FetchError  # imported late: keeps huggingface_hub off the CLI's import path

        try:
            return handler(args)
        except (FetchError, ValueError, OSError) as e:  # ShardError, BuildError, TokenizerError are ValueErrors
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            return 2

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _fetch(args: argparse.Namespace) -> int:
    """``pgolf data fetch``."""
    from .fetch import fetch

    result = fetch(args.variant, args.train_shards, args.dest, args.repo_id, args.endpoint, revision=args.revision,
                   cache_dir=args.cache_dir, progress=not args.no_progress)
    r = result.report
    print(f"fetched {result.variant} from {result.repo_id}: {len(result.downloaded)} downloaded, "
          f"{len(result.skipped)} already present; {len(r.val)} val shards ({r.val_tokens:,} tokens), "
          f"{len(r.train)} train shards ({r.train_tokens:,} tokens)")
    print(f"DATA_PATH={result.dataset_dir}\nTOKENIZER_PATH={result.tokenizer_path}")
    return 0


def _build(args: argparse.Namespace) -> int:
    """``pgolf data build``."""
    from .build import DEFAULT_SEED, DEFAULT_SHARD_TOKENS, build_dataset
    from .corpus import read_text_documents, stdlib_documents

    start = time.perf_counter()
    if args.text:
        docs = read_text_documents(args.text, paragraphs=args.paragraphs)
        source = "text: " + ", ".join(str(p) for p in args.text)
    else:
        docs = stdlib_documents()
        source = f"stdlib docstrings (Python {sys.version.split()[0]})"
    b = build_dataset(docs, args.dest, args.vocab_size, args.name, args.val_docs,
                      args.shard_tokens or DEFAULT_SHARD_TOKENS, DEFAULT_SEED if args.seed is None else args.seed,
                      source=source)
    seconds = time.perf_counter() - start
    print(f"built {b.name} in {seconds:.1f}s: {b.num_val_docs:,} val + {b.num_train_docs:,} train docs, "
          f"{b.val_tokens:,} val + {b.train_tokens:,} train tokens, {b.bytes_per_token:.3f} bytes/token"
          + (f", {b.duplicates_dropped} duplicate docs dropped" if b.duplicates_dropped else ""))
    print(f"DATA_PATH={b.dataset_dir}\nTOKENIZER_PATH={b.tokenizer_path}\nVOCAB_SIZE={b.vocab_size}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    """``pgolf data verify``."""
    from .verify import verify_dataset

    r = verify_dataset(args.dir, args.vocab_size, deep=not args.quick)
    vocab = f"vocab {r.vocab_size} ({r.vocab_source})" if r.vocab_size else "vocab unknown (ids not bounded)"
    for s in (*r.val, *r.train):
        docs = "" if s.docs is None else f", {s.docs:,} docs, max id {s.max_id}"
        print(f"{s.path.name}: {s.tokens:,} tokens{docs}")
    print(f"ok {r.dataset_dir}: {len(r.val)} val + {len(r.train)} train shards, {r.val_tokens:,} val + "
          f"{r.train_tokens:,} train tokens, {vocab}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m data ...``), the same commands as ``pgolf data ...``."""
    parser = argparse.ArgumentParser(prog="python -m data", description="pgolf data commands")
    _add_commands(parser)
    args = parser.parse_args(argv)
    return args.func(args)
