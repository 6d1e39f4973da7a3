"""Importing what Ollama, the Hugging Face cache and LM Studio already downloaded: each layout is
built in a temporary folder around the tiny GGUF model (symlinked, never copied)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli
from typer.testing import CliRunner, Result

from llmkit.errors import (
    InvalidModelFileError,
    InvalidParameterError,
    LlmkitError,
    ModelNotFoundError,
)
from llmkit.store import importers
from llmkit.store.store import ModelStore, sha256_of

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GO_TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ .Prompt }}"


# ---- the layouts ------------------------------------------------------------------------------
def _blob(blobs: Path, data: bytes | Path) -> str:
    """A blob the way Ollama keeps one (blobs/sha256-HEX); the weights as a symlink."""
    blobs.mkdir(parents=True, exist_ok=True)
    digest = sha256_of(data) if isinstance(data, Path) else hashlib.sha256(data).hexdigest()
    path = blobs / f"sha256-{digest}"
    if path.exists():  # one blob serves every model that holds it, as in Ollama
        pass
    elif isinstance(data, Path):
        path.symlink_to(data)
    else:
        path.write_bytes(data)
    return f"sha256:{digest}"


def ollama_store(root: Path, weights: Path, models: dict[str, dict[str, bytes | Path]]) -> Path:
    """models: 'library/NAME/TAG' -> {layer kind: content}; the weights are added to each."""
    for where, layers in models.items():
        entries = []
        for kind, data in {"model": weights, **layers}.items():
            digest = data if isinstance(data, str) else _blob(root / "blobs", data)
            entries.append({"mediaType": f"application/vnd.ollama.image.{kind}", "digest": digest})
        manifest = root / "manifests" / "registry.ollama.ai" / where
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"schemaVersion": 2, "layers": entries}))
    return root


def _ollama(tmp_path: Path, tiny_gguf: Path) -> Path:
    params = {"temperature": 0.2, "stop": ["<|im_end|>"], "num_ctx": 4096, "top_k": 20}
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    return ollama_store(
        tmp_path / "ollama" / "models",
        tiny_gguf,
        {
            "library/tiny/latest": {
                "params": json.dumps(params).encode(),
                "system": b"You answer in one sentence.",
                "template": GO_TEMPLATE.encode(),
                "license": b"Apache 2.0",
                "messages": json.dumps(messages).encode(),
            },
            "library/tiny/q8": {},
            "someone/Other Model/v1": {"system": b"Be brief."},
        },
    )


def _safetensors(values: int = 2) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}})
    return struct.pack("<Q", len(header)) + header.encode() + b"\0" * (4 * values)


def _cache_repo(cache: Path, repo: str, files: dict[str, bytes | Path]) -> Path:
    """hub/models--OWNER--REPO: blobs named by sha256, a snapshot of symlinks, refs/main."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        content = data.read_bytes() if isinstance(data, Path) else data
        blob = folder / "blobs" / hashlib.sha256(content).hexdigest()
        if isinstance(data, Path):
            blob.symlink_to(data)
        else:
            blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def _hf_cache(tmp_path: Path, tiny_gguf: Path) -> Path:
    cache = tmp_path / "huggingface" / "hub"
    _cache_repo(cache, "owner/Tiny-GGUF", {"Tiny-Q4_K_M.gguf": tiny_gguf, "README.md": b"hi"})
    config = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode()
    _cache_repo(
        cache, "owner/tiny-hf", {"config.json": config, "model.safetensors": _safetensors()}
    )
    _cache_repo(cache, "owner/config-only", {"config.json": config})
    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                       "b": "model-00002-of-00002.safetensors"}})  # fmt: skip
    _cache_repo(
        cache,
        "owner/half-downloaded",
        {"config.json": config, "model.safetensors.index.json": index.encode(),
         "model-00001-of-00002.safetensors": _safetensors()},
    )  # fmt: skip
    return cache


def _lmstudio(tmp_path: Path, tiny_gguf: Path) -> Path:
    root = tmp_path / "lmstudio" / "models"
    repo = root / "lmstudio-community" / "Tiny-GGUF"
    repo.mkdir(parents=True)
    for name in ("Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf", "mmproj-Tiny-F16.gguf"):
        (repo / name).symlink_to(tiny_gguf)
    mlx = root / "mlx-community" / "Tiny-4bit"
    mlx.mkdir(parents=True)
    (mlx / "config.json").write_text(
        json.dumps({"model_type": "llama", "quantization": {"bits": 4}})
    )
    (mlx / "model.safetensors").write_bytes(_safetensors())
    return root


# ---- Ollama -----------------------------------------------------------------------------------
def test_ollama_models_are_found_with_what_they_carry(tmp_path: Path, tiny_gguf: Path) -> None:
    root = _ollama(tmp_path, tiny_gguf)
    assert importers.detect_kind(root.parent) == ("ollama", root)  # ~/.ollama works too
    found = {model.label: model for model in importers.find_models("ollama", root)}
    assert sorted(found) == ["someone/Other Model:v1", "tiny:latest", "tiny:q8"]
    tiny = found["tiny:latest"]
    assert (tiny.name, found["tiny:q8"].name, found["someone/Other Model:v1"].name) == (
        "tiny", "tiny:q8", "other-model:v1"
    )  # fmt: skip
    assert tiny.sha256 == sha256_of(tiny_gguf) and tiny.path.name == f"sha256-{tiny.sha256}"
    assert tiny.settings["parameters"] == {"temperature": 0.2, "stop": ["<|im_end|>"], "top_k": 20}
    assert tiny.settings["system_prompt"] == "You answer in one sentence."
    assert tiny.settings["ollama_template"] == GO_TEMPLATE
    assert tiny.settings["license"] == "Apache 2.0" and len(tiny.settings["messages"]) == 2


def test_an_ollama_model_is_linked_with_its_settings(
    fresh_home: Path, tmp_path: Path, tiny_gguf: Path
) -> None:
    root = _ollama(tmp_path, tiny_gguf)
    store = ModelStore()
    [tiny] = importers.select(importers.find_models("ollama", root), ["tiny"])
    manifest = importers.import_found(tiny, store=store)
    assert manifest.linked and Path(manifest.path) == tiny.path.resolve()  # nothing copied
    assert manifest.source == "ollama:tiny:latest" and manifest.sha256 == sha256_of(tiny_gguf)
    stored = store.get("tiny")
    assert stored.system_prompt == "You answer in one sentence."
    assert stored.parameters["temperature"] == 0.2
    assert stored.ollama_template == GO_TEMPLATE
    # The GGUF's own Jinja template renders prompts; Ollama's Go text is never run.
    assert stored.chat_template is not None and "im_start" in stored.chat_template
    assert stored.template_override is None
    assert importers.already_imported(store, tiny)
    copied = importers.import_found(tiny, store=store, name="tiny-copy", copy=True)
    assert not copied.linked and Path(copied.path).read_bytes() == tiny_gguf.read_bytes()


@pytest.mark.parametrize(
    ("layers", "problem"),
    [
        ({"model": "sha256:../../../../etc/passwd"}, "no sha256 digest"),
        ({"model": "sha256:" + "0" * 64}, "missing from blobs/"),
        ({"model": b"not a gguf file"}, "not a GGUF file"),
        ({"params": b"{not json"}, "not the JSON Ollama writes"),
        ({"params": json.dumps({"temperature": "hot"}).encode()}, "must be a number"),
    ],
)
def test_a_broken_ollama_model_is_listed_with_its_problem(
    tmp_path: Path, tiny_gguf: Path, layers: dict, problem: str
) -> None:
    root = tmp_path / "models"
    layer_data = {k: v for k, v in layers.items() if k != "model"}
    ollama_store(root, tiny_gguf, {"library/bad/latest": layer_data})
    if "model" in layers:  # replace the weights' layer
        manifest = root / "manifests" / "registry.ollama.ai" / "library" / "bad" / "latest"
        data = json.loads(manifest.read_text())
        value = layers["model"]
        digest = value if isinstance(value, str) else _blob(root / "blobs", value)
        data["layers"][0]["digest"] = digest
        manifest.write_text(json.dumps(data))
    [bad] = importers.find_models("ollama", root)
    assert bad.problem is not None and problem in bad.problem
    with pytest.raises(InvalidModelFileError, match="bad:latest cannot be imported"):
        importers.import_found(bad, store=ModelStore(tmp_path / "home"))


def test_a_linked_ollama_blob_runs(fresh_home: Path, tmp_path: Path, tiny_gguf: Path) -> None:
    """End to end: imported from the layout, then run by the engine from the suffix-less blob."""
    root = _ollama(tmp_path, tiny_gguf)
    env = {"LLMKIT_HOME": str(fresh_home)}
    imported = run_cli("import", "--from", str(root), "tiny", env=env)
    assert imported.returncode == 0, imported.stderr
    assert "Imported tiny" in imported.stdout and "as a link" in imported.stdout
    ran = run_cli("run", "tiny", "hello", "--max-tokens", "3", "-t", "0", env=env)
    assert ran.returncode == 0, ran.stderr
    shown = run_cli("show", "tiny", env=env).stdout
    assert "You answer in one sentence." in shown and "Ollama template" in shown


# ---- the Hugging Face cache -------------------------------------------------------------------
def test_the_hf_cache_offers_gguf_files_and_model_folders(tmp_path: Path, tiny_gguf: Path) -> None:
    cache = _hf_cache(tmp_path, tiny_gguf)
    assert importers.detect_kind(cache.parent) == ("hf-cache", cache)
    found = {model.label: model for model in importers.find_models("hf-cache", cache)}
    gguf = found["owner/Tiny-GGUF/Tiny-Q4_K_M.gguf"]
    assert gguf.name == "tiny:q4_k_m" and gguf.sha256 == sha256_of(tiny_gguf)
    folder = found["owner/tiny-hf"]
    assert folder.format == "hf" and folder.problem is None and folder.path.name == COMMIT
    assert "no weights" in str(found["owner/config-only"].problem)
    assert "lacks 1 of the 2 weight files" in str(found["owner/half-downloaded"].problem)


def test_a_cached_folder_is_linked_and_a_half_download_refused(
    fresh_home: Path, tmp_path: Path, tiny_gguf: Path
) -> None:
    cache = _hf_cache(tmp_path, tiny_gguf)
    found = importers.find_models("hf-cache", cache)
    store = ModelStore()
    [folder] = importers.select(found, ["owner/tiny-hf"])
    manifest = importers.import_found(folder, store=store)
    assert manifest.format == "hf" and manifest.linked and manifest.info.architecture
    # The store's own check refuses the half download too, however it is reached.
    half = cache / "models--owner--half-downloaded" / "snapshots" / COMMIT
    with pytest.raises(InvalidModelFileError, match="an unfinished download"):
        store.import_model(half, "half", link=True)


# ---- LM Studio --------------------------------------------------------------------------------
def test_lmstudio_files_are_found_and_chosen_by_quantization(
    fresh_home: Path, tmp_path: Path, tiny_gguf: Path
) -> None:
    root = _lmstudio(tmp_path, tiny_gguf)
    assert importers.detect_kind(root) == ("lmstudio", root)
    found = importers.find_models("lmstudio", root)
    labels = {model.label: model for model in found}
    assert sorted(labels) == [
        "lmstudio-community/Tiny-GGUF/Tiny-Q4_K_M.gguf",
        "lmstudio-community/Tiny-GGUF/Tiny-Q8_0.gguf",
        "mlx-community/Tiny-4bit",
    ]  # the vision projector is no model
    assert "MLX" in str(labels["mlx-community/Tiny-4bit"].problem)
    [chosen] = importers.select(found, ["lmstudio-community/Tiny-GGUF:Q8_0"])
    assert chosen.name == "tiny:q8_0" and chosen.sha256 is None  # LM Studio keeps no digest
    with pytest.raises(InvalidParameterError, match="names 2 models"):
        importers.select(found, ["lmstudio-community/Tiny-GGUF"])
    with pytest.raises(ModelNotFoundError, match="Did you mean"):
        importers.select(found, ["lmstudio-community/Tiny-GGU"])
    manifest = importers.import_found(chosen, store=ModelStore())
    assert manifest.sha256 == sha256_of(tiny_gguf)  # hashed, as for any file


# ---- the command ------------------------------------------------------------------------------
def test_import_from_lists_imports_all_and_is_idempotent(
    fresh_home: Path, tmp_path: Path, tiny_gguf: Path
) -> None:
    root = _ollama(tmp_path, tiny_gguf)
    env = {"LLMKIT_HOME": str(fresh_home), "OLLAMA_MODELS": str(root)}
    listed = run_cli("import", "--from", "ollama", "--list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert {m["name"]: m["status"] for m in json.loads(listed.stdout)} == {
        "other-model:v1": "ready", "tiny": "ready", "tiny:q8": "ready"
    }  # fmt: skip
    first = run_cli("import", "--from", "ollama", env=env)
    assert first.returncode == 0, first.stderr
    assert ModelStore(fresh_home).names() == ["other-model:v1", "tiny", "tiny:q8"]
    again = run_cli("import", "--from", "ollama", env=env)
    assert again.returncode == 0 and "already in the store" in again.stdout
    assert "Nothing new to import" in again.stdout
    renamed = run_cli(
        "import", "--from", str(root), "tiny:q8", "--name", "eight", "--copy", env=env
    )
    assert renamed.returncode == 0, renamed.stderr
    assert not ModelStore(fresh_home).get("eight").linked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "--from", "ollama"], "No Ollama models folder at"),
        (["import", "--from", "somewhere-else"], "neither a folder nor one of ollama"),
        (["import", "--from", "OLLAMA", "no-such-model"], "is not among the models found"),
        (["import", "--from", "OLLAMA", "tiny", "tiny:q8", "--name", "x"], "renames one model"),
        (["import", "--from", "OLLAMA", "tiny", "--name", "../up"], "not a valid model name"),
        (["import", "OLLAMA"], "import --from"),
        (["import", "--list"], "add --from"),
    ],
)
def test_import_mistakes_are_one_sentence(
    fresh_home: Path,
    tmp_path: Path,
    tiny_gguf: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    root = _ollama(tmp_path, tiny_gguf)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    result = _invoke(*(str(root) if a == "OLLAMA" else a for a in args))
    # An LlmkitError is what `llmkit` prints as one line, without a traceback.
    assert isinstance(result.exception, LlmkitError), result.output
    assert message in str(result.exception)
    assert ModelStore(fresh_home).names() == []


def test_a_file_import_names_itself(fresh_home: Path, tiny_gguf: Path) -> None:
    result = _invoke("import", str(tiny_gguf))
    assert result.exit_code == 0, result.output
    assert ModelStore(fresh_home).names() == ["tiny-llama"]
    assert not ModelStore(fresh_home).get("tiny-llama").linked  # a file is copied by default


def _invoke(*args: str) -> Result:
    """The command in this process (quicker than a new one for each mistake)."""
    from llmkit.cli.app import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    ("parts", "label", "name"),
    [
        (("registry.ollama.ai", ["library", "llama3.2"], "1b"), "llama3.2:1b", "llama3.2:1b"),
        (("registry.ollama.ai", ["library", "qwen2.5"], "latest"), "qwen2.5:latest", "qwen2.5"),
        (("registry.ollama.ai", ["me", "Bot"], "v2"), "me/Bot:v2", "bot:v2"),
        (
            ("hf.co", ["bartowski", "Llama-3.2-1B-Instruct-GGUF"], "Q4_K_M"),
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "llama-3.2-1b-instruct:q4_k_m",
        ),
        (("registry.ollama.ai", ["library", "a..b"], "x..y"), "a..b:x..y", "a.b:x.y"),
    ],
)
def test_ollama_names(parts: tuple, label: str, name: str) -> None:
    from llmkit.store.importers import _ollama_name, ollama_label

    registry, repository, tag = parts
    assert ollama_label(registry, repository, tag) == label
    assert _ollama_name(repository, tag) == name
