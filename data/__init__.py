"""Data for pgolf: the official shard format, local builds, official downloads and verification.

Modules: ``shards`` (format), ``corpus`` (documents), ``tokenizer`` (SentencePiece settings), ``build``,
``fetch``, ``verify``, ``manifest`` and ``cli`` (``pgolf data ...``). Heavy dependencies (sentencepiece,
huggingface_hub) load only with the module that needs them.
"""

from .shards import ShardError, read_shard, write_shard

__all__ = ["ShardError", "read_shard", "write_shard"]
