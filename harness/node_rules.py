"""Which nodes may take a run, beyond room and data: one GPU model per group, and a cool-off after a worker died.

GPU model: runs whose scores are compared with each other for a record (the loop's confirm seeds, the
candidate's and the baseline's) must run on one GPU model. Under a wall-clock cap a faster GPU trains more
steps, so an H100 seed beside an A100 seed measures the hardware, not the patch. The first run of a group to
start fixes the group's model (the SKU of the node it landed on, known once that node tried to stage its
data); later runs of the group avoid nodes of other models. When no live node of that model can hold the run
any more (that pool was preempted), the group is released and picks again, with a warning: waiting forever
on a dead pool is worse, and the judge still names the mix in its verdict (`ledger.sku_note`).

Cool-off: a worker that died mid-run (node preempted, OOM kill) may be the first sign of a dying node, which
Ray declares dead only after its health checks fail. For `COOL_OFF_S` that node takes no run another live
node could hold, so a requeued run does not die there a second time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

COOL_OFF_S = 60.0


class NodeRules:
    def __init__(self, cool_off_s: float = COOL_OFF_S) -> None:
        self.cool_off_s = cool_off_s
        self.models: dict[str, str] = {}  # group -> the GPU model its runs are held to
        self.released: dict[str, str] = {}  # group -> the model it was held to before that pool left
        self._cooling: dict[str, float] = {}  # node id -> monotonic time its cool-off ends

    def hold(self, group: str, model: str) -> None:
        """Hold `group` to `model` (a resumed search: the model its earlier runs used)."""
        self.models[group] = model

    def placed(self, group: str | None, model: str | None) -> None:
        """A run of `group` started on a node of `model`: the group's first run fixes its model."""
        if group and model and group not in self.models:
            self.models[group] = model
            log.info("runs of %s are held to GPU model %s", group, model)

    def worker_died(self, node_id: str) -> None:
        self._cooling[node_id] = time.monotonic() + self.cool_off_s

    def avoid(self, group: str | None, holders: set[str], model_of: Mapping[str, str]) -> set[str]:
        """Nodes among `holders` (the live nodes big enough for the run) it should not start on now.
        `model_of`: node id -> GPU model, for the nodes whose model is known."""
        now = time.monotonic()
        self._cooling = {n: t for n, t in self._cooling.items() if t > now}
        out = set()
        cooling = holders & self._cooling.keys()
        if cooling and holders - cooling:  # a cooling node still takes a run that no other node could hold
            out |= cooling
        model = self.models.get(group) if group else None
        if model is not None:
            other = {n for n in holders if n in model_of and model_of[n] != model}
            if holders and other == holders:
                log.warning("no live node of GPU model %s can hold the runs of %s any more: they go to %s "
                            "(the judge's verdict names the mix)", model, group, sorted({model_of[n] for n in other}))
                self.released[group] = self.models.pop(group)
            else:
                out |= other
        return out
