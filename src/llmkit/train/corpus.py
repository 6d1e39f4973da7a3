"""Plain-text corpora for pretraining: files -> documents -> one stream of token ids.

A corpus file is UTF-8 text. A line holding only `<|endoftext|>` separates documents (the
convention of GPT-2's data and TinyStories); a file without one is a single document. In the
token stream every document ends with the end-of-text token, so the model learns where texts end
and a window that spans two documents sees the boundary.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.train.data import DataError

DOCUMENT_SEPARATOR = "<|endoftext|>"
_SEPARATOR_LINE = re.compile(r"^[ \t]*<\|endoftext\|>[ \t]*$\n?", re.MULTILINE)
# Above this share of unknown tokens the tokenizer does not cover the text (a few stray symbols
# below it are tolerated: a reused tokenizer may lack an emoji or two).
MAX_UNKNOWN_SHARE = 0.01


@dataclass(frozen=True)
class Corpus:
    documents: list[str]
    digest: str  # of every file's bytes, in order: what --resume checks
    characters: int


def read_corpus(paths: Sequence[str | Path]) -> Corpus:
    """Every file's documents; raise DataError for a missing, unreadable or empty corpus."""
    if not paths:
        raise DataError("Give the training text with --data FILE (or --demo for the demo corpus).")
    digest = hashlib.sha256()
    documents: list[str] = []
    for name in paths:
        path = Path(name).expanduser()
        try:
            raw = path.read_bytes()
        except IsADirectoryError as error:
            raise DataError(f"{path} is a folder; --data takes a text file.") from error
        except OSError as error:
            raise DataError(f"Cannot read {path} ({error.strerror or error}).") from error
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"{path} is not UTF-8 text (byte {error.start} cannot be decoded); "
                "--data takes plain text files."
            ) from error
        if "\x00" in text:
            raise DataError(f"{path} holds NUL bytes: it looks binary, not like text.")
        digest.update(hashlib.sha256(raw).digest())
        found = [part.strip("\n") for part in _SEPARATOR_LINE.split(text)]
        documents.extend(part for part in found if part.strip())
    characters = sum(len(document) for document in documents)
    if not documents:
        names = ", ".join(str(path) for path in paths)
        raise DataError(f"The corpus ({names}) holds no text: there is nothing to learn from.")
    return Corpus(documents, digest.hexdigest()[:16], characters)


def separator_id(tokenizer: Any) -> int | None:
    """The token that ends a document: <|endoftext|> when the vocabulary has it, else EOS."""
    found = tokenizer.convert_tokens_to_ids(DOCUMENT_SEPARATOR)
    if isinstance(found, int) and found != tokenizer.unk_token_id:
        return found
    return tokenizer.eos_token_id


def encode_corpus(corpus: Corpus, tokenizer: Any, tokenizer_name: str) -> np.ndarray:
    """The token stream (int32), each document followed by the separator token.

    Raise DataError when the tokenizer produces nothing or maps too much of the text to its
    unknown token (a vocabulary made for other scripts or languages)."""
    end = separator_id(tokenizer)
    encoded = tokenizer(corpus.documents, add_special_tokens=False)["input_ids"]
    pieces = [np.asarray(ids + ([end] if end is not None else []), np.int32) for ids in encoded]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    if stream.size == 0:
        raise DataError(f"The tokenizer of {tokenizer_name} turns the corpus into no tokens.")
    unknown = tokenizer.unk_token_id
    if unknown is not None:
        share = float(np.mean(stream == unknown))
        if share > MAX_UNKNOWN_SHARE:
            example = _unencodable_example(corpus, tokenizer, unknown)
            raise DataError(
                f"The tokenizer of {tokenizer_name} cannot encode this text: {share:.0%} of its "
                f"tokens are unknown{example}; train one on the corpus with --tokenizer train."
            )
    return stream


def _unencodable_example(corpus: Corpus, tokenizer: Any, unknown: int) -> str:
    for document in corpus.documents:
        for character in dict.fromkeys(document[:10_000]):
            if tokenizer(character, add_special_tokens=False)["input_ids"] == [unknown]:
                return f" (for example {character!r})"
    return ""
