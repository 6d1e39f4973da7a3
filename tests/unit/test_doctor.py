"""`llmkit doctor`: each check, the fixes it proposes, and its JSON."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from llmkit.cli.plan import register
from llmkit.plan import doctor, hardware
from llmkit.plan.hardware import GIB, Device


@pytest.fixture(autouse=True)
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMKIT_HOME", str(tmp_path / "home"))


def test_doctor_json_lists_every_area():
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    areas = {check["area"] for check in data["checks"]}
    assert {
        "os",
        "python",
        "cpu",
        "ram",
        "disk",
        "gpu",
        "pytorch",
        "llama.cpp",
        "extra serve",
    } <= areas
    assert set(data["largest_models"]) == {"chat", "lora", "qlora"}
    assert all(check["status"] in ("ok", "info", "warn", "fail") for check in data["checks"])


def test_doctor_table_shows_largest_models():
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "largest catalog models" in result.output


def test_llama_cpp_backends_are_parsed():
    info = "CPU : SSE3 = 1 | AVX2 = 1 | CUDA : ARCHS = 890 | BLAS = 1 |"
    assert doctor.llama_cpp_backends(info) == ["CPU", "CUDA", "BLAS"]
    assert doctor.llama_cpp_backends("CPU : AVX = 1 |") == ["CPU"]


def test_nvidia_smi_output_is_parsed(monkeypatch):
    monkeypatch.setattr(hardware.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    output = "NVIDIA A10G, 23028, 550.54\nTesla T4, 15360, 550.54\n"
    monkeypatch.setattr(
        hardware.subprocess,
        "run",
        lambda *args, **kwargs: SimpleNamespace(stdout=output, returncode=0),
    )
    gpus = hardware.nvidia_smi_gpus()
    assert [(gpu.name, gpu.memory_bytes // 1024**2, gpu.driver) for gpu in gpus] == [
        ("NVIDIA A10G", 23028, "550.54"),
        ("Tesla T4", 15360, "550.54"),
    ]
    devices = hardware.local_gpus()
    assert devices[0].name == "NVIDIA A10G" and devices[0].tflops == 125
    assert devices[1].bf16 is False  # a T4


def test_nvidia_smi_failure_means_no_gpus(monkeypatch):
    monkeypatch.setattr(hardware.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def fail(*args, **kwargs):
        raise subprocess.CalledProcessError(9, "nvidia-smi")

    monkeypatch.setattr(hardware.subprocess, "run", fail)
    assert hardware.nvidia_smi_gpus() == []


def test_cpu_only_torch_with_a_gpu_gets_the_fix():
    torch = pytest.importorskip("torch")
    if torch.version.cuda:
        pytest.skip("this torch is a CUDA build")
    check = doctor.check_torch(has_gpu=True)
    assert check.status == "warn"
    assert check.fix == doctor.TORCH_CUDA_INSTALL


def test_llama_cpp_without_cuda_on_a_gpu_machine_gets_the_fix(monkeypatch):
    fake = SimpleNamespace(llama_print_system_info=lambda: b"CPU : AVX2 = 1 |")
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", fake)
    monkeypatch.setattr(doctor, "_version", lambda name: "0.3.0")
    check = doctor.check_llama_cpp(has_gpu=True)
    assert check.status == "warn" and "CMAKE_ARGS" in check.fix


def test_missing_extra_gets_its_install_command(monkeypatch):
    monkeypatch.setattr(doctor, "_has", lambda module: module != "fastapi")
    checks = {check.area: check for check in doctor.check_extras()}
    assert checks["extra serve"].fix == "pip install 'llmkit[serve]'"
    assert checks["extra torch"].status == "ok"


def test_low_disk_warns_with_a_fix(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: SimpleNamespace(free=GIB))
    check = doctor.check_disk()
    assert check.status == "warn" and "LLMKIT_HOME" in check.fix


def test_largest_models_grow_with_memory():
    small = doctor.largest_models(Device("16 GiB", "cuda", 16 * GIB))
    large = doctor.largest_models(Device("80 GiB", "cuda", 80 * GIB))
    assert small["chat"]["parameters"] < large["chat"]["parameters"]
    assert small["qlora"]["parameters"] > small["lora"]["parameters"]
    assert doctor.largest_models(Device("tiny", "cuda", GIB // 8))["chat"] is None


def test_fix_commands_are_printed_verbatim(monkeypatch):
    monkeypatch.setattr(doctor, "_has", lambda module: module != "fastapi")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert "pip install 'llmkit[serve]'" in result.output


def test_cpu_doctor_says_why_qlora_is_missing_and_how_to_see_each_plan(monkeypatch):
    from llmkit.plan.feasibility import cuda_requirement

    monkeypatch.setattr(hardware, "nvidia_smi_gpus", lambda: [])
    monkeypatch.setattr(doctor, "local_gpus", lambda: [])
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert str(cuda_requirement("qlora")) in result.output
    assert "see: llmkit plan " in result.output
