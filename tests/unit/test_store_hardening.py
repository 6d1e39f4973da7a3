"""Store writes under pressure: concurrent writers, killed writers, full disks, pickled weights.

Every case runs against the real filesystem with real processes: concurrent imports are separate
Python processes, a killed import is SIGKILLed mid-copy, and a full disk is a small tmpfs mounted
for the test (the tests and CI run as root).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmkit.errors import InvalidModelFileError, InvalidParameterError
from llmkit.store.locking import OWNER_FILE, staging_directory
from llmkit.store.space import DiskFullError
from llmkit.store.store import ModelStore
from llmkit.store.weights import PickledWeightsError

SRC = str(Path(__file__).resolve().parents[2] / "src")
ROOT = str(Path(__file__).resolve().parents[2])


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "LLMKIT_HOME": str(home), "PYTHONPATH": f"{SRC}:{ROOT}"}


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmkit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(home),
    )


def leftovers(home: Path) -> list[str]:
    """Staging folders, partial and temporary files anywhere under the store."""
    found = []
    for path in (home / "models").rglob("*") if (home / "models").exists() else []:
        relative = path.relative_to(home / "models")
        staging = relative.parts[0].startswith(".") and relative.parts[0] != ".lock"
        if staging or path.name.endswith((".partial", ".tmp")):
            found.append(str(relative))
    return found


# ---- concurrent writers -------------------------------------------------------------------------

RACER = """
import sys, time
from pathlib import Path
from llmkit.errors import LlmkitError
from llmkit.store.store import ModelStore
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
try:
    ModelStore().import_model(sys.argv[1], "same")
    print("won")
except LlmkitError as error:
    print("lost:", error)
"""


def test_concurrent_imports_of_one_name_have_exactly_one_winner(
    fresh_home: Path, tmp_path: Path, tiny_gguf: Path
) -> None:
    for trial in range(3):
        go = tmp_path / f"go-{trial}"
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(tiny_gguf), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(fresh_home),
            )
            for _ in range(4)
        ]
        time.sleep(1.5)  # let every racer reach its start line
        go.touch()
        outputs = [racer.communicate(timeout=60)[0].strip() for racer in racers]
        assert sorted(o.split(":")[0] for o in outputs) == ["lost", "lost", "lost", "won"], outputs
        for output in outputs:
            if output.startswith("lost"):
                assert "already exists" in output and "--force" in output
        assert ModelStore().names() == ["same"]
        assert leftovers(fresh_home) == []
        ModelStore().remove("same")


def test_the_lock_is_reentrant_and_names_are_rechecked_under_it(
    fresh_home: Path, tiny_gguf: Path
) -> None:
    store = ModelStore()
    with store.writing():
        store.import_model(tiny_gguf, "inner")  # an import inside a held lock does not deadlock
        with pytest.raises(InvalidParameterError, match="already exists"):
            store.import_model(tiny_gguf, "inner")
    assert store.names() == ["inner"]


# ---- killed writers -----------------------------------------------------------------------------

KILLED_IMPORT = """
import os, signal, sys
from llmkit.store.store import ModelStore
def progress(done, total):
    os.kill(os.getpid(), signal.SIGKILL)  # die mid-copy, the way kill -9 does
ModelStore().import_model(sys.argv[1], "victim", progress=progress)
"""


def test_a_killed_import_is_cleaned_on_the_next_write_and_reported(
    fresh_home: Path, tiny_gguf: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILLED_IMPORT, str(tiny_gguf)], env=_env(fresh_home), timeout=60
    )
    assert result.returncode == -signal.SIGKILL
    stale = [p for p in (fresh_home / "models").iterdir() if p.name.startswith(".victim-")]
    assert len(stale) == 1 and (stale[0] / "model.gguf").exists()
    # An unmarked leftover of an interrupted built-in assembly, inside a model folder.
    (fresh_home / "models" / "half").mkdir()
    (fresh_home / "models" / "half" / "weights.partial").write_bytes(b"x" * 1000)

    result = run_cli(fresh_home, "import", str(tiny_gguf), "--name", "next")
    assert result.returncode == 0, result.stderr
    assert "Reclaimed" in result.stderr and "2 leftover staging" in result.stderr
    assert "KB" in result.stderr  # how much, in a readable unit
    assert leftovers(fresh_home) == []
    assert ModelStore().names() == ["next"]
    # Nothing left to reclaim: the next write says nothing about it.
    result = run_cli(fresh_home, "rm", "next")
    assert result.returncode == 0 and "Reclaimed" not in result.stderr


def test_a_live_writers_staging_folder_is_left_alone(fresh_home: Path, tiny_gguf: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from llmkit.store.locking import staging_directory;"
            "print(staging_directory(Path(sys.argv[1]), 'busy'), flush=True); time.sleep(60)",
            str(fresh_home / "models"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(fresh_home),
    )
    try:
        live = Path(holder.stdout.readline().strip())  # type: ignore[union-attr]
        (live / "model.gguf").write_bytes(b"in progress")
        store = ModelStore()
        store.import_model(tiny_gguf, "other")
        assert live.exists() and (live / "model.gguf").exists()
        assert store.notices == []
    finally:
        holder.kill()
        holder.wait(timeout=10)
    store = ModelStore()
    store.remove("other")
    assert not live.exists()
    assert any("Reclaimed" in notice for notice in store.notices)


def test_a_reused_pid_does_not_keep_a_dead_owners_folder(fresh_home: Path) -> None:
    folder = staging_directory(fresh_home / "models", "old")
    owner = json.loads((folder / OWNER_FILE).read_text())
    owner["start"] = "1"  # this pid is alive, but it is not the process that made the folder
    (folder / OWNER_FILE).write_text(json.dumps(owner))
    store = ModelStore()
    with store.writing():
        pass
    assert not folder.exists()


# ---- full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real filesystem that fills up (mounting needs root, as in CI)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"These tests mount a small tmpfs and need root: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the filesystem up to the last byte."""
    filler = disk / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_copy_import_on_a_full_disk_is_one_sentence(small_disk: Path, tiny_gguf: Path) -> None:
    home = small_disk / "home"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1536 * 1024))  # leaves about 0.5 MB, a little more than the file
    result = run_cli(home, "import", str(tiny_gguf), "--name", "tiny")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Not enough disk space for importing tiny-llama.gguf: it needs" in result.stderr
    assert "MB" in result.stderr and "free" in result.stderr
    assert leftovers(home) == []
    filler.unlink()
    result = run_cli(home, "import", str(tiny_gguf), "--name", "tiny")
    assert result.returncode == 0, result.stderr
    assert ModelStore(home).names() == ["tiny"]


def test_a_disk_that_fills_during_the_copy_leaves_nothing(
    small_disk: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program takes the space after the check: the real ENOSPC of the copy is reported.
    import llmkit.store.store as store_module

    monkeypatch.setattr(store_module, "ensure_free_space", lambda *args: None)
    home = small_disk / "home"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1800 * 1024))
    store = ModelStore(home)
    with pytest.raises(DiskFullError, match="Not enough disk space for importing"):
        store.import_model(tiny_gguf, "tiny")
    assert leftovers(home) == [] and store.names() == []
    filler.unlink()
    store.import_model(tiny_gguf, "tiny")
    assert store.names() == ["tiny"]


def test_link_import_on_a_full_disk_leaves_no_tmp(small_disk: Path, tiny_gguf: Path) -> None:
    home = small_disk / "home"
    (home / "models").mkdir(parents=True)
    filler = _fill(small_disk)
    result = run_cli(home, "import", str(tiny_gguf), "--name", "linked", "--link")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Not enough disk space" in result.stderr
    assert leftovers(home) == []
    assert not (home / "models" / "linked").exists()
    filler.unlink()
    result = run_cli(home, "import", str(tiny_gguf), "--name", "linked", "--link")
    assert result.returncode == 0, result.stderr
    assert ModelStore(home).get("linked").linked


# The real CLI with one more built-in: a 3 MB file in two parts, which `list` registers (joins).
SPLIT_BUILTIN_CLI = """
import sys
from pathlib import Path
from llmkit.store.catalog import BUILTIN_MODELS, BuiltinModel
from llmkit.cli.app import main

parts = [Path(p) for p in sys.argv[1:3]]
fake = BuiltinModel("fake-base", "test", "fake", "fake", "fake.gguf", sys.argv[3], "x", ("a",))
BuiltinModel.locate = lambda self, root=None: parts if self is fake else None
BUILTIN_MODELS.clear()
BUILTIN_MODELS["fake-base"] = fake
sys.argv = ["llmkit", *sys.argv[4:]]
main()
"""


def test_list_on_a_full_disk_skips_the_builtin_assembly_and_keeps_working(
    small_disk: Path, tmp_path: Path, tiny_gguf: Path
) -> None:
    import hashlib

    # A split built-in bigger than the 2 MiB disk: it cannot be joined there.
    data = tiny_gguf.read_bytes() + os.urandom(3 * 1024 * 1024)
    parts = [tmp_path / "part0", tmp_path / "part1"]
    parts[0].write_bytes(data[:4096])
    parts[1].write_bytes(data[4096:])
    digest = hashlib.sha256(data).hexdigest()
    home = small_disk / "home"
    import_result = run_cli(home, "import", str(tiny_gguf), "--name", "tiny", "--link")
    assert import_result.returncode == 0, import_result.stderr
    for _ in range(2):  # the failure is not sticky: every later call works the same
        result = subprocess.run(
            [sys.executable, "-c", SPLIT_BUILTIN_CLI, *map(str, parts), digest, "list"],
            capture_output=True, text=True, timeout=120, env=_env(home),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "fake-base is not available yet: Not enough disk space" in result.stderr
        assert "it needs 4" in result.stderr  # the ~3 MB joined file and 1 MiB of headroom
        assert "tiny" in result.stdout
        assert leftovers(home) == []
        assert not (home / "models" / "fake-base").exists()


def test_builtin_assembly_that_hits_enospc_leaves_no_partial(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import llmkit.store.store as store_module
    from llmkit.store.catalog import BUILTIN_MODELS, BuiltinModel

    # A built-in in four parts, assembled on a disk that fills up midway.
    parts = []
    for index in range(4):
        part = tmp_path / f"part{index}"
        part.write_bytes(os.urandom(700 * 1024))
        parts.append(part)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    fake = BuiltinModel(
        "fake-base", "test", "fake", "fake", "fake.gguf", digest, "pip install fake", ("a",)
    )
    monkeypatch.setitem(BUILTIN_MODELS, "fake-base", fake)
    monkeypatch.setattr(BuiltinModel, "locate", lambda self: parts)
    monkeypatch.setattr(store_module, "ensure_free_space", lambda *args: None)
    store = ModelStore(small_disk / "home")
    with pytest.raises(DiskFullError, match="assembling the built-in model 'fake-base'"):
        store.ensure_builtin("fake-base")
    assert leftovers(small_disk / "home") == []
    assert not (small_disk / "home" / "models" / "fake-base").exists()


# ---- model folders: pickles and missing weights -------------------------------------------------


def _hf_folder(path: Path, weights: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    )
    for name, data in weights.items():
        (path / name).write_bytes(data)
    return path


def _safetensors(values: int = 2) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}})
    return struct.pack("<Q", len(header)) + header.encode() + b"\0" * (4 * values)


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "model.ckpt"])
def test_import_refuses_pickled_weights_without_the_opt_in(
    fresh_home: Path, tmp_path: Path, weights: str
) -> None:
    folder = _hf_folder(tmp_path / "pickled", {weights: b"\x80\x04pickle"})
    result = run_cli(fresh_home, "import", str(folder), "--name", "pickled")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "holds only pickled weights" in result.stderr and "--allow-pickle" in result.stderr
    assert ModelStore().names() == [] and leftovers(fresh_home) == []
    result = run_cli(fresh_home, "import", str(folder), "--name", "pickled", "--allow-pickle")
    assert result.returncode == 0, result.stderr
    assert ModelStore().get("pickled").allow_pickle


def test_finetune_on_pickled_weights_is_one_sentence(fresh_home: Path, tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "pickled", {"pytorch_model.bin": b"\x80\x04pickle"})
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "completion": "hello"}) + "\n")
    result = run_cli(fresh_home, "finetune", str(folder), "--data", str(data), "--out", "ft")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "holds only pickled weights" in result.stderr and "--allow-pickle" in result.stderr


def test_finetune_opt_in_reaches_the_loader_with_pickles_allowed(tmp_path: Path) -> None:
    from llmkit.errors import LlmkitError
    from llmkit.train.config import FinetuneConfig
    from llmkit.train.prepare import model_folder_arguments, prepare_run

    folder = _hf_folder(tmp_path / "pickled", {"pytorch_model.bin": b"\x80\x04pickle"})
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "completion": "hello"}) + "\n")
    config = FinetuneConfig(base=str(folder), data=str(data), out="ft")
    with pytest.raises(PickledWeightsError):
        prepare_run(config, tmp_path / "home")
    # With the opt-in the pickle check passes; this folder has no tokenizer, which is what fails.
    config = FinetuneConfig(
        base=str(folder), data=str(data), out="ft", exports=("hf",), allow_pickle=True
    )
    with pytest.raises(LlmkitError) as caught:
        prepare_run(config, tmp_path / "home")
    assert not isinstance(caught.value, PickledWeightsError)
    assert "tokenizer" in str(caught.value) or "extra" in str(caught.value)
    manifest = ModelStore(tmp_path / "home").resolve(str(folder))
    with pytest.raises(PickledWeightsError):
        model_folder_arguments(manifest)
    manifest.allow_pickle = True
    assert model_folder_arguments(manifest) == (str(folder), {"use_safetensors": False})


def test_safetensors_folders_load_with_safetensors_only(tmp_path: Path) -> None:
    from llmkit.train.prepare import model_folder_arguments

    folder = _hf_folder(
        tmp_path / "safe", {"model.safetensors": _safetensors(), "training_args.bin": b"\x80"}
    )
    manifest = ModelStore(tmp_path / "home").resolve(str(folder))
    assert model_folder_arguments(manifest) == (str(folder), {"use_safetensors": True})


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "no weights"),
        ({"model.safetensors": b"\x01"}, "not a safetensors file"),
        ({"model.safetensors": struct.pack("<Q", 10**12) + b"{}"}, "not a whole safetensors"),
        ({"model.safetensors": struct.pack("<Q", 4) + b"nope"}, "header is not JSON"),
        ({"model.safetensors": _safetensors()[:-4]}, "truncated"),
    ],
)
def test_import_checks_that_an_hf_folders_weights_are_readable(
    fresh_home: Path, tmp_path: Path, weights: dict[str, bytes], message: str
) -> None:
    folder = _hf_folder(tmp_path / "hf", weights)
    with pytest.raises(InvalidModelFileError, match=message):
        ModelStore().import_model(folder, "hf")
    assert ModelStore().names() == [] and leftovers(fresh_home) == []


def test_an_hf_folder_with_readable_safetensors_imports(fresh_home: Path, tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "hf", {"model.safetensors": _safetensors()})
    manifest = ModelStore().import_model(folder, "hf")
    assert manifest.format == "hf" and not manifest.allow_pickle
    assert (Path(manifest.path) / "model.safetensors").exists()
