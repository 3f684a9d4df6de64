"""Property-based tests (hypothesis) for what reads untrusted text: the patch applier, the log parser
and the result-file reader. None of them may raise on anything a candidate or an agent can produce,
and well-formed input must come back exactly.

Already covered elsewhere, not repeated: parse_edits never raises (tests/test_agents_patches.py),
make_diff -> apply_patch reproduces random edits of the real trainer (same file), the static audit
never raises (tests/test_audit.py).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agents.patches import PatchError, PatchRejected, apply_patch, make_diff
from harness.logparse import LogSummary, error_line, parse_line, parse_log
from harness.runner import _read_result

SRC = "import os\nimport sys\n\n\ndef main():\n    x = relu(1)\n    return x\n"
HUNK = "@@ -1,2 +1,2 @@\n-import os\n+import io\n import sys\n"
TARGETS = ("train_gpt.py", "a/train_gpt.py", "b/train_gpt.py")

# --- apply_patch -----------------------------------------------------------------------------

PATH_PART = st.sampled_from(["..", ".", "", "train_gpt.py", "a", "b", "etc", "harness", "loop.py", "~", "/", "\\",
                             "..\\..", "train_gpt.py.orig", " "])
PATHS = st.one_of(st.sampled_from(TARGETS), st.lists(PATH_PART, min_size=1, max_size=5).map("/".join),
                  st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\t "), max_size=30))
MODES = st.sampled_from(["", "new file mode 100644\n", "new file mode 120000\n", "old mode 100644\nnew mode 100755\n",
                         "deleted file mode 100644\n", "similarity index 90%\nrename from train_gpt.py\nrename to x\n",
                         "GIT binary patch\nliteral 3\nabc\n"])


@st.composite
def hostile_diffs(draw) -> tuple[str, str, str, str]:
    old, new, mode = draw(PATHS), draw(PATHS), draw(MODES)
    git = f"diff --git {old} {new}\n{mode}" if draw(st.booleans()) else mode
    return old, new, mode, f"{git}--- {old}\n+++ {new}\n{HUNK}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_diffs())
def test_apply_patch_only_ever_edits_the_trainer_in_memory(case):
    old, new, mode, diff = case
    cwd = Path.cwd()
    before = sorted(os.listdir(cwd))
    try:
        out = apply_patch(SRC, diff)
    except PatchError as e:  # PatchRejected included: one line, whatever the input
        assert "\n" not in str(e)
    else:
        assert {old.strip(), new.strip()} <= set(TARGETS) and mode == "", diff  # only a text edit of the trainer
        assert out == SRC.replace("import os", "import io")
    assert sorted(os.listdir(cwd)) == before  # nothing appeared beside the caller


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["..", "/", "/etc/", "../../", "a/../", "b/../../", "./.."]), st.sampled_from(TARGETS))
def test_apply_patch_rejects_every_path_that_leaves_the_folder(prefix, target):
    path = prefix + target
    assume(path not in TARGETS)
    diff = f"--- {path}\n+++ {path}\n{HUNK}"
    try:
        apply_patch(SRC, diff)
    except PatchRejected as e:
        assert "\n" not in str(e)
    except PatchError:
        pass
    else:
        raise AssertionError(f"{path!r} was applied")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_apply_patch_never_raises_anything_else_on_arbitrary_text(text):
    try:
        apply_patch(SRC, text)
    except PatchError as e:
        assert "\n" not in str(e)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30), min_size=1, max_size=8))
def test_make_diff_apply_patch_round_trip_on_appended_lines(lines):
    new = SRC + "\n".join(lines) + "\n"
    assert apply_patch(SRC, make_diff(SRC, new)) == new


# --- the log parser ----------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_parse_log_never_raises_on_arbitrary_text(text):
    s = parse_log(text)
    assert s.lines >= 1
    line = error_line(text.splitlines())
    assert line is None or ("\n" not in line and len(line) <= 240)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_log_summary_never_raises_on_arbitrary_bytes(data):
    summary = LogSummary()
    for raw in data.split(b"\n"):
        summary.feed(raw.decode("utf-8", "replace"))
    assert summary.lines == data.count(b"\n") + 1


LOSS = st.floats(min_value=0, max_value=20, allow_nan=False)
STEPS = st.integers(min_value=0, max_value=10**6)
MS = st.integers(min_value=0, max_value=10**8)


@settings(max_examples=300, deadline=None)
@given(STEPS, STEPS, LOSS, LOSS, MS, st.floats(min_value=0, max_value=1e5, allow_nan=False))
def test_official_val_lines_round_trip(step, total, loss, bpb, ms, avg):
    line = f"step:{step}/{total} val_loss:{loss:.4f} val_bpb:{bpb:.4f} train_time:{ms}ms step_avg:{avg:.2f}ms"
    p = parse_line(line)
    assert p["kind"] == "val" and p["step"] == step and p["total"] == total
    assert p["val_loss"] == float(f"{loss:.4f}") and p["val_bpb"] == float(f"{bpb:.4f}")
    assert p["train_time_ms"] == ms and p["step_avg_ms"] == float(f"{avg:.2f}")
    assert parse_line(f"[rank0]: {line}\r") == p  # launcher prefixes and CRLF change nothing


@settings(max_examples=300, deadline=None)
@given(LOSS, LOSS, st.integers(min_value=0, max_value=10**9), st.sampled_from(["", "\r", "\r\n"]))
def test_final_score_and_size_lines_round_trip(loss, bpb, size, end):
    text = (f"Total submission size int8+zlib: {size} bytes{end}\n"
            f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}{end}\n")
    s = parse_log(text)
    assert s.final_val_loss == float(f"{loss:.8f}") and s.final_val_bpb == float(f"{bpb:.8f}")
    assert s.submission_bytes == size and s.submission_format == "int8+zlib"
    assert s.final_name == "final_int8_zlib_roundtrip_exact"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["nan", "inf", "-inf", "NaN"]), STEPS)
def test_non_finite_losses_parse_as_such(word, step):
    p = parse_line(f"step:{step}/10 train_loss:{word} train_time:1ms step_avg:1.00ms")
    assert p["kind"] == "train" and not math.isfinite(p["train_loss"])


# --- the result-file reader --------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_read_result_never_raises_on_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("r") / "result.json"
    path.write_bytes(data)
    result, err = _read_result(path)
    assert (result is None) != (err is None)
    assert result is None or isinstance(result, dict)
    assert err is None or ("\n" not in err and err.startswith("result.json"))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), JSON, max_size=8), st.integers(min_value=1, max_value=40))
def test_read_result_round_trips_objects_and_names_truncation(tmp_path_factory, obj, cut):
    path = tmp_path_factory.mktemp("r") / "result.json"
    text = json.dumps(obj, indent=1)
    path.write_text(text)
    assert _read_result(path) == (obj, None)
    if cut < len(text):
        path.write_text(text[:-cut])
        result, err = _read_result(path)
        if result is None:
            assert "not valid JSON" in err or "not an object" in err or "empty" in err
