"""agents.patches: parsing answers, applying edits and diffs, dedup hashes, combining."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.patches import (
    Edit,
    PatchError,
    PatchRejected,
    apply_answer,
    apply_edits,
    apply_patch,
    combine,
    diff_hash,
    make_diff,
    normalize_diff,
    parse_edits,
    similarity,
    to_diff,
)

SRC = textwrap.dedent(
    """\
    import os

    class Hyperparameters:
        model_dim = int(os.environ.get("MODEL_DIM", 512))
        num_layers = int(os.environ.get("NUM_LAYERS", 9))
        matrix_lr = float(os.environ.get("MATRIX_LR", 0.04))


    def mlp(x):
        x = relu(x)
        return x * x


    def main():
        args = Hyperparameters()
        for step in range(10):
            loss = step
        print(f"final val_bpb:{loss:.4f}")
    """
)

BLOCK = """train_gpt.py
<<<<<<< SEARCH
def mlp(x):
    x = relu(x)
    return x * x
=======
def mlp(x):
    x = leaky_relu(x, float(os.environ.get("LEAKY_SLOPE", 0.5)))
    return x * x
>>>>>>> REPLACE
"""


# --- parse_edits ------------------------------------------------------------------------------


def test_search_replace_with_prose_fence_rationale_and_knobs():
    answer = (
        "Sure, here is my idea.\n\nRATIONALE: LeakyReLU squared keeps gradients for negative inputs.\n\n"
        f"```python\n{BLOCK}```\n\nKnobs:\n"
        '```json\n{"knobs": {"LEAKY_SLOPE": {"low": 0.1, "high": 0.9}, "BAD name": {"low": 1, "high": 2}}}\n```\n'
    )
    parsed = parse_edits(answer)
    assert parsed.ok and len(parsed.edits) == 1 and not parsed.diff
    assert parsed.edits[0].search.startswith("def mlp(x):")
    assert parsed.rationale == "LeakyReLU squared keeps gradients for negative inputs."
    assert parsed.knob_ranges == {"LEAKY_SLOPE": {"low": 0.1, "high": 0.9, "log": False, "type": "float"}}
    assert any("BAD name" in w for w in parsed.warnings)
    new = apply_answer(SRC, parsed)
    assert "leaky_relu" in new and "    x = relu(x)" not in new


def test_crlf_and_unfenced_blocks_parse_the_same():
    plain = parse_edits(BLOCK)
    crlf = parse_edits(BLOCK.replace("\n", "\r\n"))
    assert plain.edits == crlf.edits and plain.ok


def test_rationale_falls_back_to_prose_outside_code():
    parsed = parse_edits(f"Use a leaky activation.\n\n```python\nprint('not an edit')\n```\n{BLOCK}")
    assert parsed.rationale == "Use a leaky activation."


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("I would raise the learning rate.", "no SEARCH/REPLACE block"),
        ("<<<<<<< SEARCH\nx = 1\n>>>>>>> REPLACE\n", "block 1: no '=======' line"),
        ("<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n", "block 1: no '>>>>>>> REPLACE' line"),
        ("data/build.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n", "only train_gpt.py"),
        ("```diff\n--- a/setup.py\n+++ b/setup.py\n@@ -1 +1 @@\n-a\n+b\n```", "setup.py'; only"),
        ("--- a/train_gpt.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-import os\n", "creates or deletes"),
    ],
)
def test_unusable_answers_give_one_clear_error(answer, error):
    parsed = parse_edits(answer)
    assert not parsed.ok
    assert error in parsed.errors[0]
    assert "\n" not in parsed.errors[0]


def test_fenced_diff_without_prefixes_and_wrong_counts_is_repaired():
    answer = """Here you go:

```diff
--- train_gpt.py
+++ train_gpt.py
@@ -9,2 +9,99 @@ def mlp
 def mlp(x):
-    x = relu(x)
+    x = leaky_relu(x, 0.5)
     return x * x


 def main():
```
RATIONALE: leaky.
"""
    parsed = parse_edits(answer)
    assert parsed.ok and parsed.diff.startswith("--- a/train_gpt.py\n+++ b/train_gpt.py\n@@ -9,6 +9,6 @@ def mlp\n")
    assert parsed.rationale == "leaky."
    assert apply_patch(SRC, parsed.diff) == SRC.replace("x = relu(x)", "x = leaky_relu(x, 0.5)")


def test_diff_whose_context_is_misindented_falls_back_to_tolerant_edits():
    answer = "```diff\n@@ -1,3 +1,3 @@\n def mlp(x):\n-    x = relu(x)\n+    x = gelu(x)\n    return x * x\n```"
    parsed = parse_edits(answer)
    with pytest.raises(PatchError):
        apply_patch(SRC, parsed.diff)  # the context line has 3 spaces, the file 4
    assert to_diff(SRC, parsed) == make_diff(SRC, SRC.replace("relu(x)", "gelu(x)"))


def test_bare_diff_with_hunk_header_missing_numbers():
    answer = "Change:\n@@ @@\n def mlp(x):\n-    x = relu(x)\n+    x = gelu(x)\n     return x * x\nThat is all."
    parsed = parse_edits(answer)
    assert parsed.ok, parsed.errors
    assert "gelu" in apply_answer(SRC, parsed)
    assert parsed.rationale.endswith("That is all.")


def test_diff_ignored_beside_blocks_with_warning():
    parsed = parse_edits(BLOCK + "\n```diff\n--- a/train_gpt.py\n+++ b/train_gpt.py\n@@ -1 +1 @@\n-a\n+b\n```\n")
    assert parsed.ok and parsed.edits and not parsed.diff
    assert parsed.warnings


def test_bare_knob_json_and_log_ranges():
    answer = BLOCK + '\n{"knobs": {"LR_X": {"low": 1e-4, "high": 1e-1, "log": true}, "N": {"low": 2, "high": 8},'
    answer += ' "BAD": {"low": 0, "high": 1, "log": true}, "ACT": {"choices": ["relu", "gelu"]}}}\n'
    parsed = parse_edits(answer)
    assert parsed.knob_ranges == {
        "LR_X": {"low": 1e-4, "high": 1e-1, "log": True, "type": "float"},
        "N": {"low": 2, "high": 8, "log": False, "type": "int"},
        "ACT": {"choices": ["relu", "gelu"]},
    }
    assert any("BAD" in w for w in parsed.warnings)


def test_broken_knob_json_is_a_warning_not_an_error():
    parsed = parse_edits(BLOCK + '\n```json\n{"knobs": {"A": {"low": 1,\n```\n')
    assert parsed.ok and parsed.knob_ranges == {}
    assert any("not valid JSON" in w for w in parsed.warnings)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_edits_never_raises_on_arbitrary_text(text):
    parsed = parse_edits(text)
    assert parsed.ok == (not parsed.errors)


FRAGMENTS = [
    "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE", "```", "```diff", "```json", "--- a/train_gpt.py",
    "+++ b/train_gpt.py", "@@ -1,3 +1,4 @@", "@@ @@", "-x = 1", "+x = 2", " y = 3", "", "\\ No newline at end of file",
    "diff --git a/train_gpt.py b/train_gpt.py", "new file mode 120000", '{"knobs": {"A": {"low": 1, "high": 2}}}',
    "RATIONALE: why", "train_gpt.py", "{", '"knobs": [', "GIT binary patch", "\r",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=25))
def test_parse_edits_never_raises_on_marker_soup(parts):
    parsed = parse_edits("\n".join(parts))
    if parsed.ok:
        try:
            apply_answer(SRC, parsed)
        except PatchError:
            pass  # may not apply; must not raise anything else


# --- apply_edits ------------------------------------------------------------------------------


def test_whitespace_tolerant_match_reindents_and_keeps_file_lines():
    search = "for step in range(10):\n    loss = step"  # the file's base indentation is missing
    edit = Edit(search, "for step in range(10):\n    loss = 2 * step\n    print(loss)")
    out = apply_edits(SRC, [edit])
    assert "    for step in range(10):\n        loss = 2 * step\n        print(loss)\n" in out


def test_trailing_whitespace_differences_are_tolerated():
    out = apply_edits(SRC, [Edit("def mlp(x):   \n    x = relu(x)", "def mlp(x):\n    x = gelu(x)")])
    assert "x = gelu(x)" in out


def test_missing_search_names_block_and_first_unmatched_line():
    edits = [Edit("import os", "import os, sys", 1), Edit("def mlp(x):\n    x = swish(x)\n    return x", "", 2)]
    with pytest.raises(PatchError, match=r"block 2: SEARCH not found .*'x = swish\(x\)'"):
        apply_edits(SRC, edits)


def test_ambiguous_search_lists_the_places():
    src = SRC.replace(
        'num_layers = int(os.environ.get("NUM_LAYERS", 9))', 'model_dim = int(os.environ.get("MODEL_DIM", 512))'
    )
    with pytest.raises(PatchError, match=r"block 1: SEARCH matches 2 places .*lines 4, 5"):
        apply_edits(src, [Edit('    model_dim = int(os.environ.get("MODEL_DIM", 512))', "x")])


def test_empty_search_is_an_error():
    with pytest.raises(PatchError, match="SEARCH is empty"):
        apply_edits(SRC, [Edit("  \n", "x")])


# --- make_diff / apply_patch ------------------------------------------------------------------


def test_make_diff_round_trip_without_trailing_newline():
    old, new = "a\nb", "a\nc"
    diff = make_diff(old, new)
    assert "\\ No newline at end of file" in diff
    assert apply_patch(old, diff) == new
    assert make_diff(old, old) == "" and apply_patch(old, "") == old


def test_apply_patch_recounts_wrong_hunk_lengths():
    diff = make_diff(SRC, SRC.replace("relu(x)", "gelu(x)")).replace("@@ -7,7 +7,7 @@", "@@ -7,2 +7,40 @@")
    assert apply_patch(SRC, diff) == SRC.replace("relu(x)", "gelu(x)")


def test_apply_patch_accepts_paths_without_prefix():
    diff = make_diff(SRC, SRC.replace("relu", "gelu")).replace("a/train_gpt.py", "train_gpt.py")
    assert "gelu" in apply_patch(SRC, diff.replace("b/train_gpt.py", "train_gpt.py"))


def test_apply_patch_failure_names_hunk_and_line():
    diff = make_diff(SRC, SRC.replace("relu(x)", "gelu(x)")).replace(" def mlp(x):", " def mlp(y):")
    with pytest.raises(PatchError, match=r"hunk 1 \(@@ -\d+,\d+ \+\d+,\d+ @@\) does not apply.*'def mlp\(y\):'"):
        apply_patch(SRC, diff)


HUNK = "@@ -1,1 +1,1 @@\n-import os\n+import sys\n"


@pytest.mark.parametrize(
    ("diff", "why"),
    [
        (f"--- a/setup.py\n+++ b/setup.py\n{HUNK}", "'a/setup.py'"),
        (f"--- /etc/passwd\n+++ /etc/passwd\n{HUNK}", "absolute"),
        (f"--- a/../train_gpt.py\n+++ b/../train_gpt.py\n{HUNK}", "leaves the directory"),
        (f"--- a/sub/train_gpt.py\n+++ b/sub/train_gpt.py\n{HUNK}", "'a/sub/train_gpt.py'"),
        (
            "diff --git a/link b/link\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/link\n"
            "@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n",
            "symlink",
        ),
        ("diff --git a/train_gpt.py b/train_gpt.py\nindex 1..2 100644\nGIT binary patch\nliteral 5\n", "binary"),
        ("diff --git a/train_gpt.py b/train_gpt.py\nindex 1..2 100644\nBinary files a/x and b/x differ\n", "binary"),
        ("diff --git a/train_gpt.py b/x.py\nsimilarity index 100%\nrename from train_gpt.py\nrename to x\n", "rename"),
        ("diff --git a/train_gpt.py b/train_gpt.py\nold mode 100644\nnew mode 100755\n", "mode"),
        (f"--- a/train_gpt.py\n+++ b/train_gpt.py\n{HUNK}diff --git a/o b/o\n--- a/o\n+++ b/o\n{HUNK}", "'a/o'"),
        ("--- a/train_gpt.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-import os\n", "deletes"),
    ],
)
def test_apply_patch_rejects_anything_but_a_text_edit_of_the_trainer(diff, why, tmp_path):
    with pytest.raises(PatchRejected, match=why) as info:
        apply_patch(SRC, diff)
    assert "\n" not in str(info.value)


def test_apply_patch_is_not_fooled_by_removed_lines_that_look_like_headers():
    src = "x = 1\n-- comment-ish\ny = 2\nz = 3\n"
    new = src.replace("-- comment-ish\n", "")
    assert apply_patch(src, make_diff(src, new)) == new


def _python_file() -> str:
    root = Path(__file__).resolve().parents[1]
    trainer = root / "trainer" / "train_gpt.py"
    return trainer.read_text() if trainer.exists() else Path(textwrap.__file__).read_text()


REAL = _python_file()
REAL_LINES = REAL.split("\n")
LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


@st.composite
def line_edits(draw):
    lines = list(REAL_LINES)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        if kind == "replace":
            lines[at] = draw(LINE)
        elif kind == "insert":
            lines.insert(at, draw(LINE))
        elif len(lines) > 2:
            del lines[at]
    return "\n".join(lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line_edits())
def test_make_diff_then_apply_patch_reproduces_random_edits_of_a_real_file(new):
    assert apply_patch(REAL, make_diff(REAL, new)) == new


# --- normalize / hash / similarity ------------------------------------------------------------


def test_hash_ignores_context_width_headers_and_whitespace_only_changes():
    new = SRC.replace("relu(x)", "gelu(x)")
    a = make_diff(SRC, new)
    b = make_diff(SRC, new, context=1).replace("--- a/train_gpt.py", "--- a/train_gpt.py\t2024-01-01")
    c = make_diff(SRC, new.replace("args = Hyperparameters()", "args = Hyperparameters()   "))
    d = make_diff(SRC, new.replace("    x = gelu(x)", "    x  =  gelu(x)"))
    assert diff_hash(a) == diff_hash(b) == diff_hash(c) == diff_hash(d)
    assert diff_hash(a) != diff_hash(make_diff(SRC, SRC.replace("relu(x)", "silu(x)")))
    assert normalize_diff(a) == "-x = relu(x)\n+x = gelu(x)"


def test_similarity_masks_numbers_and_measures_what_children_add():
    a = make_diff(SRC, SRC.replace("0.04", "0.05"))
    b = make_diff(SRC, SRC.replace("0.04", "0.06"))
    assert similarity(a, b) == 1.0  # only a constant differs: Optuna's job
    gelu = make_diff(SRC, SRC.replace("relu(x)", "gelu(x)"))
    assert similarity(a, gelu) == 0.0
    both = combine(SRC, a, gelu)
    assert similarity(both, a) == 0.5
    parent = make_diff(SRC, SRC.replace("512", "640").replace("9))", "11))"))
    x = combine(SRC, parent, gelu)
    y = combine(SRC, parent, make_diff(SRC, SRC.replace("return x * x", "return x * x * x")))
    assert similarity(x, y) >= 0.5  # half of each is the shared parent
    assert similarity(x, y, base=parent) == 0.0  # they add different things


# --- combine ----------------------------------------------------------------------------------


def test_combine_merges_disjoint_changes_even_when_contexts_overlap():
    a = make_diff(SRC, SRC.replace('NUM_LAYERS", 9', 'NUM_LAYERS", 11'))
    b = make_diff(SRC, SRC.replace('MATRIX_LR", 0.04', 'MATRIX_LR", 0.05'))  # the next line: contexts overlap
    merged = apply_patch(SRC, combine(SRC, a, b))
    assert '"NUM_LAYERS", 11' in merged and '"MATRIX_LR", 0.05' in merged
    assert combine(SRC, a, a) == a
    assert combine(SRC, "", b) == b


def test_combine_reports_the_conflicting_lines():
    a = make_diff(SRC, SRC.replace("relu(x)", "gelu(x)"))
    b = make_diff(SRC, SRC.replace("relu(x)", "silu(x)"))
    with pytest.raises(PatchError, match=r"conflict: A and B both change train_gpt.py lines 10-10") as info:
        combine(SRC, a, b)
    assert "gelu" in info.value.detail and "silu" in info.value.detail


def test_combine_insertions_at_the_same_place_conflict():
    a = make_diff(SRC, SRC.replace("def main():\n", "def main():\n    seed_a()\n"))
    b = make_diff(SRC, SRC.replace("def main():\n", "def main():\n    seed_b()\n"))
    with pytest.raises(PatchError, match="conflict"):
        combine(SRC, a, b)


def test_combine_names_the_side_that_does_not_apply():
    bad = make_diff(SRC, SRC.replace("relu", "gelu")).replace(" def mlp(x):", " def mlp(q):")
    with pytest.raises(PatchError, match="^B does not apply"):
        combine(SRC, "", bad)
