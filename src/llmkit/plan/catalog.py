"""The bundled catalog of popular open models' configs, so a model can be planned before it is downloaded."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from llmkit.plan.spec import ModelSpec, spec_from_hf_config


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    display: str
    repo: str
    config: dict[str, Any]

    def spec(self) -> ModelSpec:
        return spec_from_hf_config(self.config, name=self.name, source=f"catalog:{self.repo}")


@cache
def catalog() -> dict[str, CatalogEntry]:
    """Every catalog entry by its canonical name, e.g. 'llama-3.2-1b'."""
    text = resources.files("llmkit.plan").joinpath("catalog.json").read_text(encoding="utf-8")
    models = json.loads(text)["models"]
    return {
        name: CatalogEntry(name, entry["display"], entry["repo"], entry["config"])
        for name, entry in models.items()
    }


def normalize_name(text: str) -> str:
    """'meta-llama/Llama-3.2-1B-Instruct', 'Llama 3.2 1B' and 'llama3.2:1b' all become 'llama-3.2-1b'."""
    name = text.strip().lower().rsplit("/", 1)[-1]
    name = re.sub(r"[\s_:]+", "-", name)
    name = re.sub(r"-(instruct|chat|it|hf|pt|base)$", "", name)
    name = re.sub(r"^(llama|qwen|gemma|phi|smollm)(\d)", r"\1-\2", name)
    return name


def find_catalog_entry(text: str) -> CatalogEntry | None:
    entries = catalog()
    name = normalize_name(text)
    if name in entries:
        return entries[name]
    # Spellings such as 'qwen-2.5-7b' or 'gemma3-1b' differ from the canonical name only in dashes.
    squashed = name.replace("-", "")
    return next((entry for key, entry in entries.items() if key.replace("-", "") == squashed), None)


def closest_catalog_names(text: str, count: int = 3) -> list[str]:
    names = list(catalog())
    return difflib.get_close_matches(normalize_name(text), names, n=count, cutoff=0.4)
