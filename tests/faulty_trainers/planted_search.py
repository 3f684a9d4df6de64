"""`pgolf search` with a scripted proposer: the driver the fault-matrix and hostile tests run.

    PYTHONPATH=<harness root> python tests/faulty_trainers/planted_search.py CONFIG PLANTS_JSON [--cpus N]

Exactly `harness.cli search CONFIG` except that the proposers are replaced by one that hands the
loop the planted candidates of PLANTS_JSON ([{"name", "patch", "env"}, ...]) in order, then runs
out of ideas. Everything else is the real driver: Ray, the runner, the store, the pre-flight,
resume. Running the same command again resumes, like the CLI. The harness is imported from
PYTHONPATH, so a test can run a disposable copy of it (the hostile suite's candidates attack it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from harness.config import load_config
from harness.errors import PgolfError
from harness.loop import Search
from harness.proposals import Proposal
from harness.proposer_pool import ProposerPool


class PlantedProposer:
    name = "planted"

    def __init__(self, plants: list[dict]):
        self.plants = plants
        self.next = 0

    def propose(self, view, n: int) -> list[Proposal]:
        out = []
        while self.next < len(self.plants) and len(out) < n:
            p = self.plants[self.next]
            self.next += 1
            out.append(Proposal(patch=p.get("patch", ""), env=dict(p.get("env", {})), proposer=f"planted:{p['name']}",
                                rationale=f"planted {p['name']}"))
        return out

    def observe(self, candidate_id, proposal, val_bpb, status) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("plants")
    ap.add_argument("--cpus", type=int, default=None, help="logical CPUs (run slots) for the local Ray")
    args = ap.parse_args(argv)

    def announce(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    def executor():
        from harness.executor import RayExecutor

        return RayExecutor(num_cpus=args.cpus)

    try:
        cfg = load_config(args.config)
        with open(args.plants) as f:
            plants = json.load(f)
        ProposerPool.catalog = property(lambda self: [])  # planted searches test the harness, not the technique catalog
        search = Search(cfg, executor_factory=executor, announce=announce, config_path=args.config)
        search.pool.by_name = {"planted": PlantedProposer(plants)}
        summary = search.run()
    except PgolfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "rung_agreement"}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
