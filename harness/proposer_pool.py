"""The search's proposers: who is asked next (shares), who is backed off, and the catalog they draw on.

Optuna, the offline catalog agent and the LLM agent each get a share of the proposals (`[proposers]`);
the catalog agent stands in for a missing or spent LLM. A proposer that answers nothing is backed off
exponentially (its endpoint may be down, or it is out of ideas); one whose answers are still being
written (LLM conversations in the background) is asked again next tick, without back-off. Every LLM and
catalog attempt reaches the store through `_on_event`, in the driver's thread.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

from harness.config import SearchConfig, Track
from harness.optuna_proposer import OptunaProposer
from harness.preflight import Preflight
from harness.proposals import Proposal, SearchView
from harness.store import Store

ERROR_BACKOFF_S = 300.0  # a proposer that raised is left alone this long
MAX_BACKOFF_S = 1800.0


class ProposerPool:
    def __init__(self, cfg: SearchConfig, track: Track, preflight: Preflight, study, space, store: Store,
                 announce: Callable[[str], None]):
        self.cfg, self.track, self.preflight, self.store, self.announce = cfg, track, preflight, store, announce
        self.by_name: dict[str, object] = {}
        self.optuna: OptunaProposer | None = None
        self.proposed_by: dict[str, int] = {}
        self.exhausted: dict[str, float] = {}  # name -> time before which it is not asked
        self._empty_streak: dict[str, int] = {}  # consecutive empty answers per proposer
        shares = cfg.proposers
        catalog = self.catalog if shares.catalog > 0 or shares.llm > 0 else []
        if shares.optuna > 0:
            self.optuna = OptunaProposer(study, space, track.byte_cap)
            self.by_name["optuna"] = self.optuna
        if shares.llm > 0:
            self._add_llm(catalog)
        if shares.catalog > 0 or "llm" not in self.by_name and shares.llm > 0:
            self._add_catalog(catalog)

    # --- set-up ---------------------------------------------------------------------------
    @functools.cached_property
    def catalog(self) -> list:
        """The technique catalog, read once (every patch is parsed) and shared by every proposer."""
        from search_space.techniques import load_catalog

        return load_catalog()

    def _add_llm(self, catalog: list) -> None:
        from agents.llm import Budget, LLMConfig, make_proposer
        from harness import views

        llm = self.cfg.llm
        spent = views.llm_spend(self.store)  # a resumed search keeps what it already spent
        budget = Budget(llm.max_total_tokens, llm.max_cost_usd, llm.price_per_1k_input, llm.price_per_1k_output,
                        spent_tokens=int(spent.get("prompt_tokens", 0) + spent.get("completion_tokens", 0)),
                        spent_usd=float(spent.get("cost_usd", 0.0)))
        # The smoke of an LLM's code may not change the run store, nor the baseline it was given.
        protect = [self.store.root.absolute()]
        if self.cfg.baseline:
            protect.append(Path(self.cfg.baseline).absolute().parent)
        proposer, reason = make_proposer(LLMConfig.coerce(llm), self.preflight, on_event=self._on_event,
                                         catalog=catalog, budget=budget, protect=protect)
        if proposer is None:
            self.announce(f"llm proposer off: {reason}; the catalog agent proposes instead")
            self.store.event("llm_disabled", reason=reason)
        else:
            self.by_name["llm"] = proposer

    def _add_catalog(self, catalog: list) -> None:
        from agents.catalog import CatalogProposer

        self.by_name["catalog"] = CatalogProposer(catalog, self.preflight, on_event=self._on_event,
                                                  scale=self.track.scale, env_for=self._technique_env)

    def _technique_env(self, technique) -> dict[str, str]:
        """A technique's settings that its patched defaults cannot carry: the knobs the track pins, and on a small
        track its small-scale settings."""
        env = {k: v for k, v in technique.env.items() if k in self.track.env}
        return {**env, **(technique.small_env if self.track.scale == "small" else {})}

    def _on_event(self, event: dict) -> None:
        self.store.add_llm_call(event)
        if event.get("outcome") == "budget" and "catalog" not in self.by_name:
            self.announce("llm budget spent; the catalog agent takes over its share")
            self._add_catalog(self.catalog)

    def technique_cost(self, names: tuple[str, ...]):
        """The declared byte cost of a proposal's catalog techniques (None when it names none)."""
        from search_space.techniques import merged_cost

        if not names:
            return None
        by_name = {t.name: t for t in self.catalog}
        return merged_cost(by_name[n] for n in names if n in by_name)

    # --- asking ---------------------------------------------------------------------------
    def _share(self, name: str) -> float:
        share = float(getattr(self.cfg.proposers, name, 0.0))
        if name == "catalog" and "llm" not in self.by_name:
            share += self.cfg.proposers.llm  # the offline agent stands in for a missing or spent LLM
        return share

    def next(self, skip: set[str] | frozenset[str] = frozenset()) -> str | None:
        """The proposer furthest behind its share, among those not backed off or skipped."""
        live = [n for n in self.by_name if n not in skip and self.exhausted.get(n, 0) < time.time()]
        if not live:
            return None
        total = sum(self.proposed_by.values()) + 1
        return max(live, key=lambda n: self._share(n) * total - self.proposed_by.get(n, 0))

    def ask(self, name: str, view: Callable[[], SearchView], want: int) -> list[Proposal] | None:
        """Up to `want` proposals from `name`; None while its answers are still being written (ask next tick)."""
        proposer = self.by_name[name]
        if getattr(proposer, "saturated", False):  # nothing finished and no free slot: skip building a view
            return None
        try:
            props = proposer.propose(view(), want)
        except Exception as e:  # a proposer bug must not end an overnight search
            self.store.event("proposer_error", proposer=name, error=f"{type(e).__name__}: {e}")
            self.exhausted[name] = time.time() + ERROR_BACKOFF_S
            return []
        if not props and getattr(proposer, "busy", False):  # not out of ideas: still thinking, no back-off
            return None
        if not props:  # out of ideas, or its endpoint is down: ask again later, and later each time
            streak = self._empty_streak.get(name, 0)
            self.exhausted[name] = time.time() + min(60 * 2**streak, MAX_BACKOFF_S)
            self._empty_streak[name] = streak + 1
            return []
        self._empty_streak[name] = 0
        self.proposed_by[name] = self.proposed_by.get(name, 0) + 1
        return props

    def observe(self, proposer: str, candidate_id: str, proposal: Proposal, val_bpb: float | None,
                status: str) -> None:
        p = self.by_name.get(proposer.split(":")[0])
        if p is not None:
            p.observe(candidate_id, proposal, val_bpb, status)

    # --- background work ------------------------------------------------------------------
    def busy(self) -> bool:
        """Some proposer has work in flight (LLM conversations): the search is not out of ideas."""
        return any(getattr(p, "busy", False) for p in list(self.by_name.values()))

    def drain(self) -> None:
        """Store the attempts background conversations finished: the store is written from this thread only."""
        for p in list(self.by_name.values()):  # a budget event may add the catalog proposer meanwhile
            drain = getattr(p, "drain", None)
            if drain is not None:
                drain()

    def close(self, timeout: float) -> None:
        """Stop background proposers, waiting up to `timeout` seconds for what they are writing."""
        for name, p in list(self.by_name.items()):
            close = getattr(p, "close", None)
            if close is not None and not close(timeout) and timeout > 0:
                self.announce(f"{name} proposer still busy after {timeout:g} s; its unfinished attempts are not"
                              " recorded")
