"""A small corpus from a little grammar, and a model shape that trains on it in seconds."""

from __future__ import annotations

import random
from pathlib import Path

NOUNS = ["cat", "dog", "bird", "fox", "child", "teacher", "farmer", "king"]
VERBS = ["sees", "likes", "follows", "helps", "finds", "calls"]
PLACES = ["in the garden", "by the river", "at the market", "under the tree", "on the hill"]
ENDINGS = ["and smiles.", "every morning.", "after the rain.", "before dinner."]
# Small enough to train in a few seconds, big enough to hold a little grammar.
TEST_SHAPE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 400,
    "max_position_embeddings": 64,
}


def story_corpus(path: Path, sentences: int = 3000, seed: int = 0) -> Path:
    """Sentences from a little grammar: what follows what is learnable, token counts alone are not."""
    rng = random.Random(seed)
    lines = []
    for index in range(sentences):
        subject, other = rng.choice(NOUNS), rng.choice(NOUNS)
        lines.append(
            f"The {subject} {rng.choice(VERBS)} the {other} {rng.choice(PLACES)} "
            f"{rng.choice(ENDINGS)}"
        )
        if index % 40 == 39:
            lines.append("<|endoftext|>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
