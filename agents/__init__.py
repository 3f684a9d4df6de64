"""Agents that propose patches to the trainer.

- `agents.patches`: parse an agent's answer; apply edits and unified diffs (`apply_patch` is the
  one function the harness uses to apply a candidate's patch); dedup hashes; combine two diffs.
- `agents.llm`: `LLMProposer` for any OpenAI-compatible endpoint (explorer and combiner roles,
  repairs, retries, budget, the CPU smoke stage), `make_proposer`; modules `config`, `client`,
  `answers`, `proposer`.
- `agents.catalog`: `CatalogProposer`, the offline agent that proposes known techniques.
- `agents.prompts`: versioned prompt templates (agents/prompts/*.md).
- `agents.events`: the record each attempt produces for the run store.
"""
