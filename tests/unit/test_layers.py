"""The layers hold: no module imports a layer above its own, and packages import in no cycle.

Read from the source with ast (imports inside functions and TYPE_CHECKING blocks count too), so
a lazy import cannot hide an upward dependency.

    interfaces (cli, server, the Python API) -> train -> chat -> generation -> engines -> store
    plan reads store beside them; params, errors, messages, settings and system_memory are leaves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmkit

SOURCE = Path(llmkit.__file__).parent

# Higher numbers are higher layers; a module may import its own package, lower layers and leaves.
LAYERS = {
    "store": 0,
    "engines": 1,
    "generation": 2,
    "chat": 3,
    "train": 4,
    "interfaces": 5,
}
INTERFACES = {
    "cli",
    "server",
    "agent",
    "tuning",
    "evaluation",
    "__init__",
    "__main__",
    "model",
    "bench",
}
LEAVES = {"params", "errors", "system_memory", "messages", "settings"}


def package_of(module: str) -> str:
    """The unit a module belongs to: its first part below llmkit ('llmkit' itself is __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(package: str) -> int | None:
    """None for leaves and plan, which have rules of their own."""
    if package in INTERFACES:
        return LAYERS["interfaces"]
    return LAYERS.get(package)


def module_name(path: Path) -> str:
    parts = ["llmkit", *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path) for path in SOURCE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every llmkit module the file imports, resolved to absolute names."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            for alias in node.names:
                # `from llmkit import model` imports the module; `from llmkit.x import f`, x.
                submodule = f"{prefix}.{alias.name}"
                found.add(submodule if submodule in MODULES else prefix)
    return {item for item in found if item in MODULES and item != name}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted(SOURCE.rglob("*.py"))}


def allowed(importer: str, imported: str) -> bool:
    source, target = package_of(importer), package_of(imported)
    if imported == "llmkit":
        return source in INTERFACES  # the package root is the Python API, an interface
    if source == target or target in LEAVES:
        return True
    if source in LEAVES:
        return False  # a leaf imports only other leaves
    if target == "plan":
        return source in INTERFACES or source == "train"
    if source == "plan":
        return target == "store"
    source_layer, target_layer = layer_of(source), layer_of(target)
    assert source_layer is not None and target_layer is not None, (source, target)
    # Interfaces share the top layer and may use each other (the cli starts the server).
    return target_layer < source_layer or source_layer == target_layer == LAYERS["interfaces"]


def test_no_module_imports_a_layer_above_it() -> None:
    upward = sorted(
        f"{importer} imports {imported}"
        for importer, targets in graph().items()
        for imported in targets
        if not allowed(importer, imported)
    )
    assert upward == []


def test_packages_import_each_other_in_no_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for importer, targets in graph().items():
        for imported in targets:
            source, target = package_of(importer), package_of(imported)
            if source != target and imported != "llmkit":
                edges.setdefault(source, set()).add(target)
    cycles = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_graph_sees_lazy_imports() -> None:
    """A guard on the checker itself: imports inside functions are found."""
    assert "llmkit.engines.llamacpp" in graph()["llmkit.model"]
    assert allowed("llmkit.generation.loop", "llmkit.engines.base")
    assert not allowed("llmkit.engines.base", "llmkit.generation.loop")
