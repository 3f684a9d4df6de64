"""The baseline trainer. `train_gpt.py` is run as a script, never imported: it is the submission."""

from pathlib import Path

BASELINE_PATH = Path(__file__).with_name("train_gpt.py")
