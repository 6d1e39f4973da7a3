"""A byte-level BPE tokenizer trained on the corpus (GPT-2's scheme, with the `tokenizers` library).

Byte level means every text can be encoded: the 256 byte values are in the vocabulary from the
start, and merges of frequent pairs are learnt on top. The result is saved as a Hugging Face
tokenizer folder (tokenizer.json), which transformers loads and the GGUF export turns into
llama.cpp's `gpt2` tokenizer with the same pre-tokenizer, so both engines split text alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmkit.errors import require_module
from llmkit.train.corpus import DOCUMENT_SEPARATOR

FOLDER = "tokenizer"


def train_tokenizer(documents: Sequence[str], vocab_size: int, folder: Path) -> Any:
    """Train, save into FOLDER and return the tokenizer (a transformers PreTrainedTokenizerFast).

    The vocabulary may end up smaller than VOCAB_SIZE when the corpus has fewer pairs worth
    merging; the model is then built for the size it has."""
    tokenizers = require_module("tokenizers", feature="Pretraining", extra="torch")
    transformers = require_module("transformers", feature="Pretraining", extra="torch")
    byte_level = tokenizers.pre_tokenizers.ByteLevel
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    # No prefix space: a text is encoded as written, as llama.cpp's gpt2 tokenizer does.
    tokenizer.pre_tokenizer = byte_level(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[DOCUMENT_SEPARATOR],
        initial_alphabet=byte_level.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer, length=len(documents))
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=DOCUMENT_SEPARATOR,
        eos_token=DOCUMENT_SEPARATOR,
        pad_token=DOCUMENT_SEPARATOR,
    )
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(folder)
    return wrapped


def load_saved_tokenizer(folder: Path) -> Any:
    transformers = require_module("transformers", feature="Pretraining", extra="torch")
    return transformers.PreTrainedTokenizerFast.from_pretrained(folder)
