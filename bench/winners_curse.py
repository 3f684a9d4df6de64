"""Winner's-curse check: a search whose every candidate equals the baseline must promote nothing.

Simulates 1,000 candidates that are the baseline plus seed noise. The search phase ranks them on
one noisy screen run each, the best is selected (and so looks better than it is: the winner's
curse), and promotion judges it the way harness.promote does: N fresh confirm seeds against N
reference seeds, one-sided Welch, margin in nats. Prints the false-promotion rate for the
harness's rule and for two weaker rules a naive harness might use.

    python bench/winners_curse.py [--candidates 1000] [--searches 200] [--noise 0.004]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.judge import judge  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--searches", type=int, default=200, help="independent simulated searches")
    ap.add_argument("--noise", type=float, default=0.004, help="seed-to-seed std of val_loss in nats")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    base = 2.07  # the baseline's val_loss in nats; every candidate's true loss equals it
    rules = {
        "pgolf: fresh seeds, margin 0.005, p<0.01": dict(fresh=True, margin=0.005),
        "fresh seeds, no margin, p<0.01": dict(fresh=True, margin=0.0),
        "reuse selecting seed, no margin, p<0.01": dict(fresh=False, margin=0.0),
    }
    promoted = dict.fromkeys(rules, 0)
    per_candidate = 0
    for _ in range(args.searches):
        screen = base + rng.normal(0, args.noise, args.candidates)
        best = int(np.argmin(screen))
        ref = base + rng.normal(0, args.noise, args.seeds)
        for name, rule in rules.items():
            fresh = base + rng.normal(0, args.noise, args.seeds)
            cand = fresh if rule["fresh"] else np.concatenate([[screen[best]], fresh[1:]])
            promoted[name] += judge(list(cand), list(ref), margin_nats=rule["margin"], alpha=0.01).promoted
    # Every candidate confirmed on its own (no selection at all): the per-test false-positive rate.
    for _ in range(args.candidates):
        cand, ref = base + rng.normal(0, args.noise, (2, args.seeds))
        per_candidate += judge(list(cand), list(ref), margin_nats=0.005, alpha=0.01).promoted
    print(f"{args.searches} searches x {args.candidates} null candidates, seed noise {args.noise} nats, "
          f"{args.seeds} confirm seeds per side")
    print(f"{'rule':45s} {'false promotions':>17s} {'rate':>8s}")
    for name in rules:
        print(f"{name:45s} {promoted[name]:>17d} {promoted[name] / args.searches:>8.3f}")
    print(f"{'pgolf rule, each of the candidates confirmed':45s} {per_candidate:>17d} "
          f"{per_candidate / args.candidates:>8.4f}")


if __name__ == "__main__":
    main()
