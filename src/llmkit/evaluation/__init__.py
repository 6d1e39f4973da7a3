"""Scoring models with EleutherAI's lm-eval harness, on local task files (`llmkit eval`).

An interface layer beside the CLI and the server: it uses the model, chat and generation layers,
and only the CLI imports it. lm-eval itself comes with the `eval` extra; `adapter` imports it,
the other modules do not.
"""
