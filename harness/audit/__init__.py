"""Legality audit: static checks on a ``train_gpt.py`` plus record-folder and run-folder checks.

``pgolf audit PATH`` works on a record folder (``records/<track>/<YYYY-MM-DD>_<Name>/``), a folder of
record folders, a pgolf run folder (has ``result.json``), or a single ``.py`` file.

Static checks (``audit_source``) are AST-based and conservative: they look for the patterns that
got submissions rejected (PARAMETER_GOLF.md §1.4, §10). Each check is a small function in
``SOURCE_CHECKS``. What they can and cannot see:

* Validation data. Names that look like validation data (``val_tokens``, ``x_val``, ``args.val_files``;
  not metrics such as ``val_loss``) and val-shard path literals (``fineweb_val_*``) are tainted.
  Taint follows assignments in order, through branches, through loops (each body is walked twice so
  loop-carried values count), into the parameters of module functions called with tainted
  arguments, and into the names a nested function captures from the function around it, where that
  closure is called or handed to a call (``opt.step(closure)``). Sizes (``len``, ``.numel()``,
  ``.shape``) do not carry taint.
  A ``backward()`` / ``autograd.grad`` on tainted data, or a call with tainted arguments to a module
  function that back-propagates on its arguments, or running a closure that back-propagates on tainted
  data it captures, is an *adaptation* on validation tokens. It is
  legal only inside a loop that also adds val losses into a score accumulator (``loss_sum += ...``,
  ``nlls.append(...)``; a name with loss/nll/bpb/bits/score that is not train/running/ema), and
  only after that iteration's score accumulation: an adaptation on data of the current iteration
  before the first accumulation is ``ttt_adapt_before_score``; an accumulation into the same
  accumulator after an adaptation, or a scoring loop nested in an epoch/pass/round loop, is
  ``ttt_rescore``; an adaptation with no scoring loop around it is ``val_used_for_training``.
  "Data of the current iteration" = built from values assigned in this iteration (loop targets
  included) or read from a loop-invariant val source (``val_tokens[pos:pos + n]``).
  Limits: aliasing through containers, ``self`` state or other objects is not followed; adapting
  on the previous chunk before scoring the current one passes only when that chunk is carried over
  in a variable (``prev = chunk``), not when it is re-sliced by index (a false positive); scoring
  inside a helper that mutates an accumulator argument is not seen; whether the returned score is
  the one reported is only checked within the function (``ttt_score_not_returned``); closures are
  followed from functions only (not methods of a class defined inside a function, nor lambdas).
* Network, processes, clock and environment: imports and calls resolved through import aliases
  (``import lzma as L``, ``from os import system``) and ``getattr(module, "literal")``. Computed
  attribute names, ``eval`` of strings built at runtime, and native extensions are not seen.
* Self-extracting wrappers: ``exec``/``eval``/``compile`` of a payload built from string/bytes
  literals with base64/base85/ascii85/hex decoders and zlib/gzip/bz2/lzma (raw filters included)/
  brotli decompressors is decoded (size-capped) and the inner source audited recursively; anything
  else is reported as unauditable.

Modules:

_findings   Finding, AuditReport and the severities
_context    Ctx: the parsed source with import aliases, and small AST helpers the checks share
_network    check_network, check_processes
_clock_env  check_clock, check_environment (time knobs, timer signals, secrets)
_writes     check_writes (paths outside the working directory)
_decode     WrapperEval: decoding literal self-extracting payloads, size-capped
_exec       check_exec (wrappers audited recursively), check_dynamic_access
_taint      what looks like validation data / a score accumulator / an epoch loop; keys an expression reads
_scopes     the scopes walked: module, classes, functions with their parameters and closure captures
_flow       FlowWalker: the flow-sensitive taint and freshness walk of one scope
_val        check_val_flow (training, calibration and TTT order on val data), check_val_globs
_source     SOURCE_CHECKS, audit_source
_tracks     TRACK_CAPS, DEFAULT_CAP, cap_for_track
_files      reading text, train_gpt.py and JSON without raising
_logs       LogSummary, parse_train_log, the checks on train logs
_record     RECORD_CHECKS, audit_record_folder
_run        audit_run_dir
_cli        audit_path, format_report, add_parser, main (`pgolf audit`, `python -m harness.audit`)
"""

from harness.audit._cli import add_parser, audit_path, format_report, main
from harness.audit._findings import ERROR, AuditReport, Finding
from harness.audit._logs import LogSummary, parse_train_log
from harness.audit._record import RECORD_CHECKS, audit_record_folder
from harness.audit._run import audit_run_dir
from harness.audit._source import SOURCE_CHECKS, audit_source
from harness.audit._tracks import DEFAULT_CAP, TRACK_CAPS, cap_for_track

__all__ = [
    "DEFAULT_CAP",
    "ERROR",
    "RECORD_CHECKS",
    "SOURCE_CHECKS",
    "TRACK_CAPS",
    "AuditReport",
    "Finding",
    "LogSummary",
    "add_parser",
    "audit_path",
    "audit_record_folder",
    "audit_run_dir",
    "audit_source",
    "cap_for_track",
    "format_report",
    "main",
    "parse_train_log",
]
