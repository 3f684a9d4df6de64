"""Decoding self-extracting wrappers: the literal payload of an exec/eval, evaluated without running it.

Only string/bytes literals, module-level constant bindings, `+`/`|`, `.encode()`/`.decode()` and the known
decoders (base64/base85/ascii85/hex, zlib/gzip/bz2/lzma/brotli, codecs) are evaluated; output is size-capped.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import lzma
import zlib
from collections.abc import Callable

from harness.audit._context import Ctx

MAX_DECODED_BYTES = 8_000_000


class Undecodable(Exception):
    """The payload is not a literal this evaluator can decode (the message says why)."""


def _capped(out: bytes) -> bytes:
    if len(out) > MAX_DECODED_BYTES:
        raise Undecodable(f"payload expands beyond {MAX_DECODED_BYTES} bytes")
    return out


def _bounded(decompressor, data: bytes) -> bytes:
    return _capped(decompressor.decompress(data, MAX_DECODED_BYTES + 1))


def _zlib_decompress(data: bytes, wbits: int = zlib.MAX_WBITS, *_a, **_k) -> bytes:
    return _bounded(zlib.decompressobj(wbits), data)


def _lzma_decompress(data: bytes, format: int = lzma.FORMAT_AUTO, memlimit=None, filters=None) -> bytes:
    return _bounded(lzma.LZMADecompressor(format=format, memlimit=memlimit, filters=filters), data)


def _brotli_decompress(data: bytes, *_a, **_k) -> bytes:
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError as exc:
        raise Undecodable("brotli payload, but the brotli package is not installed here") from exc
    return _capped(brotli.decompress(data))

def _codecs_decode(data, encoding: str = "utf-8", errors: str = "strict"):
    enc = encoding.lower().replace("-", "_")
    if enc in ("base64", "base64_codec"):
        return base64.b64decode(data)
    if enc in ("zlib", "zlib_codec"):
        return _zlib_decompress(data)
    if enc in ("bz2", "bz2_codec"):
        return _bounded(bz2.BZ2Decompressor(), data)
    if enc in ("hex", "hex_codec"):
        return binascii.unhexlify(data)
    if isinstance(data, bytes):
        return data.decode(encoding, errors)
    raise Undecodable(f"codecs.decode with {encoding!r}")


_DECODERS: dict[str, Callable] = {
    "base64.b85decode": base64.b85decode,
    "base64.b64decode": base64.b64decode,
    "base64.urlsafe_b64decode": base64.urlsafe_b64decode,
    "base64.standard_b64decode": base64.standard_b64decode,
    "base64.a85decode": base64.a85decode,
    "base64.b32decode": base64.b32decode,
    "base64.b16decode": base64.b16decode,
    "base64.decodebytes": base64.decodebytes,
    "binascii.a2b_base64": binascii.a2b_base64,
    "binascii.unhexlify": binascii.unhexlify,
    "binascii.a2b_hex": binascii.a2b_hex,
    "bytes.fromhex": bytes.fromhex,
    "zlib.decompress": _zlib_decompress,
    "gzip.decompress": lambda data, *a, **k: _zlib_decompress(data, 31),
    "bz2.decompress": lambda data, *a, **k: _bounded(bz2.BZ2Decompressor(), data),
    "lzma.decompress": _lzma_decompress,
    "brotli.decompress": _brotli_decompress,
    "codecs.decode": _codecs_decode,
    "compile": lambda src, *a, **k: src,
}
_CONSTANT_MODULES = {"lzma": lzma, "zlib": zlib}


class WrapperEval:
    """Evaluates the tiny expression language of self-extracting wrappers, nothing else."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.bindings: dict[str, ast.AST] = {}
        for stmt in ctx.tree.body:  # module-level NAME = <expr> bindings (payload constants)
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
                self.bindings[name] = stmt.value if name not in self.bindings else ast.Constant(None)

    def eval(self, node: ast.AST, depth: int = 0):
        if depth > 40:
            raise Undecodable("expression too deep")
        ctx = self.ctx
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes, int, float, bool, type(None))):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.eval(e, depth + 1) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {
                self.eval(k, depth + 1): self.eval(v, depth + 1)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            }
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.BitOr)):
            left, right = self.eval(node.left, depth + 1), self.eval(node.right, depth + 1)
            if isinstance(node.op, ast.Add) and type(left) is type(right) and isinstance(left, (str, bytes)):
                return left + right
            if isinstance(node.op, ast.BitOr) and isinstance(left, int) and isinstance(right, int):
                return left | right
            raise Undecodable("unsupported operator in payload expression")
        if isinstance(node, ast.Name) and node.id in self.bindings and node.id not in ctx.aliases:
            return self.eval(self.bindings[node.id], depth + 1)
        if isinstance(node, ast.Attribute):
            q = ctx.qualname(node)
            mod_name, _, const = (q or "").rpartition(".")
            mod = _CONSTANT_MODULES.get(mod_name)
            if mod is not None and const.isupper() and isinstance(getattr(mod, const, None), int):
                return getattr(mod, const)
            raise Undecodable(f"unsupported attribute {q or ast.dump(node)[:40]}")
        if isinstance(node, ast.Call):
            args = [self.eval(a, depth + 1) for a in node.args]
            kwargs = {kw.arg: self.eval(kw.value, depth + 1) for kw in node.keywords if kw.arg}
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("decode", "encode"):
                recv = self.eval(node.func.value, depth + 1)
                if node.func.attr == "decode" and isinstance(recv, bytes):
                    return recv.decode(*args, **kwargs)
                if node.func.attr == "encode" and isinstance(recv, str):
                    return recv.encode(*args, **kwargs)
                raise Undecodable(f".{node.func.attr}() on {type(recv).__name__}")
            name = ctx.call_name(node)
            fn = _DECODERS.get(name)
            if fn is None:
                raise Undecodable(f"unsupported call {name or '<expression>'}()")
            try:
                return fn(*args, **kwargs)
            except Undecodable:
                raise
            except Exception as exc:  # corrupt payload, wrong filters, ...
                raise Undecodable(f"{name} failed: {type(exc).__name__}: {exc}") from exc
        raise Undecodable(f"unsupported expression {type(node).__name__}")
