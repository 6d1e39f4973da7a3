"""Store commands: list, show, import, rm, pull."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from llmkit.cli.output import (
    byte_progress,
    console,
    human_count,
    human_size,
    print_json,
    print_table,
    print_text,
    say,
)
from llmkit.cli.output import escape as escape_markup


def next_step(manifest) -> str:
    """The command to try a model with: chat when it has a chat template, else raw completion
    (a base model such as gemma3-base has none, and `chat` would refuse it)."""
    if manifest.chat_template or manifest.template_override:
        return f"Chat with it: llmkit chat {manifest.name}"
    return (
        f"It has no chat template (a base model); complete text with it: "
        f'llmkit run {manifest.name} "The capital of France is" --raw'
    )


def _print_notices(store) -> None:
    """What the store wants the user to know (reclaimed leftovers, a skipped built-in), on stderr."""
    for notice in store.notices:
        say("[yellow]{}[/]", notice, err=True)


def list_models(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the models in the store (built-ins are added when their package is installed)."""
    from rich.table import Table

    from llmkit.store.catalog import BUILTIN_MODELS
    from llmkit.store.store import ModelStore

    store = ModelStore()
    models = store.list()
    _print_notices(store)
    if json_output:
        print_json([_summary(m) for m in models])
        return
    table = Table("NAME", "ARCHITECTURE", "PARAMETERS", "QUANTIZATION", "SIZE", "SOURCE", box=None)
    for model in models:
        info = model.info
        table.add_row(
            *(
                escape_markup(cell)
                for cell in (
                    model.name,
                    (info.architecture or "-"),
                    human_count(info.parameters),
                    (info.quantization or "-"),
                    human_size(model.size_bytes),
                    model.source,
                )
            )
        )
    print_table(table)  # the name column is never cut: it is what the user types next
    missing = [b for b in BUILTIN_MODELS.values() if b.name not in {m.name for m in models}]
    for builtin in missing:
        say(
            "[dim]{}: {} — not installed; `llmkit pull {}` installs it[/]",
            builtin.name,
            builtin.description,
            builtin.name,
        )


def _summary(model) -> dict:
    info = model.info
    return {
        "name": model.name,
        "architecture": info.architecture,
        "parameters": info.parameters,
        "quantization": info.quantization,
        "size_bytes": model.size_bytes,
        "source": model.source,
        "path": model.path,
    }


def show(
    model: Annotated[str, typer.Argument(help="A model name from `llmkit list`, or a GGUF path.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    template: Annotated[
        bool, typer.Option("--template", help="Print only the chat template.")
    ] = False,
    modelfile: Annotated[
        bool,
        typer.Option("--modelfile", help="Print the model as a recipe (`llmkit create -f`)."),
    ] = False,
) -> None:
    """Everything about a model: shape, tokens, template, file, provenance."""
    from llmkit.store.recipes import modelfile_of
    from llmkit.store.store import ModelStore
    from llmkit.tuning.tune import describe_variant

    manifest = ModelStore().resolve(model)
    info = manifest.info
    if modelfile:
        print_text(modelfile_of(manifest))
        return
    if template:
        text = info.chat_template
        # Piped, the template exactly as stored (no tab expansion, no added newline).
        print_text(text or "none", final_newline=console.is_terminal or not text)
        return
    if json_output:
        data = manifest.to_json()
        data["info"] = {k: v for k, v in info.to_dict().items() if k != "special_tokens"}
        data["info"]["special_tokens"] = sorted(info.special_tokens)
        print_json(data)
        return
    from rich.table import Table

    rows = [
        ("name", manifest.name),
        ("architecture", info.architecture),
        (
            "parameters",
            f"{human_count(info.parameters)} ({info.parameters or '-':,})"
            if info.parameters
            else "-",
        ),
        ("layers", info.layers),
        ("attention heads", info.heads),
        ("KV heads", info.kv_heads),
        ("embedding length", info.embedding_length),
        ("context length", info.context_length),
        ("vocabulary size", info.vocab_size),
        ("quantization", info.quantization),
        ("format", manifest.format),
        ("file size", human_size(manifest.size_bytes)),
        ("sha256", manifest.sha256 or "-"),
        ("BOS token", info.bos_token),
        ("EOS token", info.eos_token),
        ("end-of-turn token", info.eot_token or _end_of_turn(manifest)),
        ("license", _first_line(manifest.license or info.license)),
        ("source", manifest.source),
        ("path", manifest.path),
    ]
    if manifest.variant:
        rows.append(("weights used", describe_variant(manifest)))
    if manifest.system_prompt:
        rows.append(("system prompt", manifest.system_prompt))
    if manifest.parameters:
        rows.append(("parameters (defaults)", str(manifest.parameters)))
    if manifest.messages:
        rows.append(("opening messages", str(len(manifest.messages))))
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", "-" if value is None else escape_markup(value))
    console.print(table)
    console.print("[bold]chat template[/]")
    console.print(info.chat_template or "none", markup=False)
    if manifest.ollama_template:
        # Go template text from an Ollama import: shown for reference, never rendered.
        console.print("[bold]Ollama template[/] [dim](kept from Ollama, not run)[/]")
        console.print(manifest.ollama_template, markup=False)


def _first_line(text: str | None) -> str | None:
    """A long license (Ollama carries the whole text) as its first line, in the table."""
    if not text or "\n" not in text.strip():
        return text
    lines = text.strip().splitlines()
    return f"{lines[0]} … ({len(lines) - 1} more lines: llmkit show --modelfile)"


def _end_of_turn(manifest) -> str | None:
    from llmkit.chat.template import end_of_turn_text

    template = manifest.chat_template
    if not template:
        return None
    info = manifest.info
    return end_of_turn_text(
        template,
        bos_token=info.bos_token,
        eos_token=info.eos_token,
        special_tokens=info.special_tokens,
    )


def import_model(
    items: Annotated[
        list[str] | None,
        typer.Argument(
            help="A .gguf file or Hugging Face model folder; with --from, the models to import "
            "(their names in that tool; default: all).",
            show_default=False,
            metavar="FILE|NAME",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="The name to store it under (default: from the file)."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Import what another tool downloaded: ollama, hf-cache, lmstudio, or the folder "
            "of one (its layout is recognised).",
        ),
    ] = None,
    list_only: Annotated[
        bool, typer.Option("--list", help="With --from: list what can be imported; import nothing.")
    ] = False,
    link: Annotated[
        bool | None,
        typer.Option(
            "--link/--copy",
            help="Point at the weights where they are, or copy them into the store (default: "
            "copy a file, link what --from finds).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a model with the same name.")
    ] = False,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Accept an HF folder whose only weights are pickles (they can run code).",
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="With --list: print JSON for scripts.")
    ] = False,
) -> None:
    """Add a local GGUF file (or HF folder) to the store, checked and hashed first; or, with
    --from, models Ollama, the Hugging Face cache or LM Studio already downloaded."""
    from llmkit.errors import InvalidParameterError
    from llmkit.store.store import ModelStore

    items = items or []
    if source is not None:
        _import_from(source, items, name, list_only, link is not False, force, allow_pickle,
                     json_output)  # fmt: skip
        return
    if list_only or json_output:
        raise InvalidParameterError("--list and --json show what --from finds; add --from.")
    if len(items) != 1:
        raise InvalidParameterError(
            "Name one .gguf file or model folder to import (or use --from ollama|hf-cache|lmstudio)."
        )
    path = Path(items[0]).expanduser()
    _hint_from(path)
    store = ModelStore()
    name = name or _name_for_path(path)
    try:
        with byte_progress(f"Importing {path.name}") as progress:
            manifest = store.import_model(
                path, name, link=bool(link), force=force, progress=progress,
                allow_pickle=allow_pickle,
            )  # fmt: skip
    finally:
        _print_notices(store)
    _say_imported(manifest)


def _name_for_path(path: Path) -> str:
    from llmkit.store.hub import name_from_filename

    return name_from_filename(path.resolve().name if path.exists() else path.name)


def _hint_from(path: Path) -> None:
    """A folder that is another tool's store, not a model: say how to import from it."""
    from llmkit.errors import InvalidModelFileError
    from llmkit.store.importers import SOURCE_NAMES, detect_kind

    if not path.is_dir() or (path / "config.json").exists():
        return
    detected = detect_kind(path)
    if detected is not None:
        raise InvalidModelFileError(
            f"{path} is not one model but a {SOURCE_NAMES[detected[0]]} folder; import from it "
            f"with: llmkit import --from {path} [NAME...] (--list shows what it holds)."
        )


def _say_imported(manifest, note: str = "") -> None:
    say(
        "Imported [bold]{}[/] ({}, sha256 {}…){}{}. {}",
        manifest.name,
        human_size(manifest.size_bytes),
        manifest.sha256[:12],
        " as a link" if manifest.linked else "",
        note,
        next_step(manifest),
    )


def _import_from(
    source: str,
    wanted: list[str],
    name: str | None,
    list_only: bool,
    link: bool,
    force: bool,
    allow_pickle: bool,
    json_output: bool,
) -> None:
    from llmkit.errors import InvalidParameterError, LlmkitError
    from llmkit.store import importers
    from llmkit.store.store import ModelStore

    kind, folder = importers.resolve_source(source)
    found = importers.find_models(kind, folder)
    store = ModelStore()
    if list_only or json_output:
        _print_found(source, kind, folder, found, store, json_output)
        return
    if name is not None and len(wanted) != 1:
        raise InvalidParameterError("--name renames one model: name exactly one to import.")
    chosen = importers.select(found, wanted) if wanted else found
    if not chosen:
        say("No models found in {} ({}).", folder, importers.SOURCE_NAMES[kind])
        return
    imported = 0
    try:
        for model in chosen:
            target = name or model.name
            if not wanted and model.problem is not None:
                say("[dim]Skipped {}: {}.[/]", model.label, model.problem, err=True)
                continue
            if importers.already_imported(store, model, target) and not force:
                say("[bold]{}[/] is already in the store (from {}).", target, model.label)
                continue
            if not wanted and store.has(target) and not force:
                say(
                    "[yellow]Skipped {}: the name {} is taken (import it with --name, or "
                    "--force to replace).[/]",
                    model.label, target, err=True,
                )  # fmt: skip
                continue
            try:
                with byte_progress(f"Importing {model.label}") as progress:
                    manifest = importers.import_found(
                        model, store=store, name=target, copy=not link, force=force,
                        allow_pickle=allow_pickle, progress=progress,
                    )  # fmt: skip
            except LlmkitError as error:
                if wanted:
                    raise
                say("[yellow]Skipped {}: {}[/]", model.label, error, err=True)
                continue
            imported += 1
            note = f" from {importers.SOURCE_NAMES[kind]} ({model.label})"
            _say_imported(manifest, note + (f"; {model.note}" if model.note else ""))
    finally:
        _print_notices(store)
    if not wanted and not imported:
        say("Nothing new to import from {}.", folder)


def _found_summary(model, status: str) -> dict:
    return {
        "label": model.label,
        "name": model.name,
        "format": model.format,
        "path": str(model.path),
        "size_bytes": model.size_bytes,
        "importable": model.problem is None,
        "status": status,
    }


def _print_found(source: str, kind: str, folder: Path, found, store, json_output: bool) -> None:
    from rich.table import Table

    from llmkit.store.importers import SOURCE_NAMES, already_imported

    def status(model) -> str:
        if model.problem:
            return f"cannot import: {model.problem}"
        if already_imported(store, model):
            return "in the store"
        if store.has(model.name):
            return "name taken (use --name)"
        return model.note or "ready"

    if json_output:
        print_json([_found_summary(model, status(model)) for model in found])
        return
    say("{} models in {}:", SOURCE_NAMES[kind], folder)
    table = Table("NAME", "FROM", "FORMAT", "SIZE", "STATUS", box=None)
    for model in found:
        table.add_row(*(escape_markup(cell) for cell in (
            model.name, model.label, model.format, human_size(model.size_bytes), status(model)
        )))  # fmt: skip
    print_table(table)
    if found:
        say(
            "[dim]Import: llmkit import --from {} [NAME...] (default: all, as links).[/]",
            shlex.quote(source),
        )


def remove(
    names: Annotated[list[str], typer.Argument(help="Models to remove.")],
) -> None:
    """Remove models from the store (linked and built-in weights stay where they are)."""
    from llmkit.store.catalog import BUILTIN_MODELS
    from llmkit.store.store import ModelStore

    store = ModelStore()
    try:
        for name in names:
            manifest = store.remove(name)
            builtin = BUILTIN_MODELS.get(manifest.name)
            if builtin and manifest.source.startswith("builtin:") and builtin.locate():
                # The package is still installed, so the next use registers it again.
                say(
                    "Removed [bold]{}[/] from the store. It is a built-in from the Python package "
                    "{} and comes back when next used; to remove it for good: pip uninstall {}",
                    manifest.name,
                    builtin.package,
                    " ".join(builtin.packages),
                )
            else:
                say("Removed [bold]{}[/].", manifest.name)
    finally:
        _print_notices(store)


def pull(
    source: Annotated[
        str,
        typer.Argument(
            help="A built-in name (smollm2, gemma3-base), or hf:OWNER/REPO[:QUANT] "
            "(hf.co/OWNER/REPO:QUANT as in Ollama)."
        ),
    ],
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="The GGUF file in the repository (default: Q4_K_M…)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Store name (default: REPO:QUANT, or from the file)."),
    ] = None,
    list_files: Annotated[
        bool, typer.Option("--list", help="List the repository's GGUF files; download nothing.")
    ] = False,
    revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
    endpoint: Annotated[
        str | None, typer.Option(help="Hub address (default: $HF_ENDPOINT or huggingface.co).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a model with the same name.")
    ] = False,
) -> None:
    """Download a model into the store, or install a built-in one.

    Without --file, a hub repository's GGUF files are listed and one is taken: the quantization
    after the colon (hf:OWNER/REPO:Q8_0), else Q4_K_M, else the nearest to it."""
    from llmkit.errors import InvalidParameterError
    from llmkit.store.hub import choose_gguf, list_gguf_files, parse_hub_source
    from llmkit.store.hub import pull as pull_model
    from llmkit.store.store import ModelStore

    hub_source = parse_hub_source(source)
    if hub_source is None and (file or list_files):
        raise InvalidParameterError(
            f"--file and --list are for hub repositories (hf:OWNER/REPO), not '{source}'."
        )
    store = ModelStore()
    try:
        if hub_source is not None and file is None:
            repo, quant = hub_source
            files = list_gguf_files(repo, revision=revision, endpoint=endpoint)
            if list_files:
                _print_hub_files(repo, files, choose_gguf(repo, files) if files else None)
                return
            chosen = choose_gguf(repo, files, quant)
            _say_choice(repo, files, chosen)
            file, source = chosen.path, f"hf:{repo}"
        elif list_files:
            raise InvalidParameterError("--file names one file: leave out --list.")
        manifest = pull_model(
            source, file=file, name=name, revision=revision, endpoint=endpoint, force=force,
            store=store,
        )  # fmt: skip
    finally:
        _print_notices(store)
    say(
        "[bold]{}[/] is ready ({}, sha256 {}…). {}",
        manifest.name,
        human_size(manifest.size_bytes),
        manifest.sha256[:12],
        next_step(manifest),
    )


def _say_choice(repo: str, files, chosen) -> None:
    offered = sorted({f.quantization for f in files if f.quantization and not f.split})
    say(
        "{} has {} GGUF file{} ({}); taking {}{}.",
        repo,
        len(files),
        "" if len(files) == 1 else "s",
        ", ".join(offered) or "no quantization in their names",
        chosen.path,
        f" ({human_size(chosen.size)})" if chosen.size else "",
    )


def _print_hub_files(repo: str, files, default) -> None:
    from rich.table import Table

    table = Table("FILE", "QUANTIZATION", "SIZE", "", box=None)
    for f in files:
        mark = "split (not supported)" if f.split else "default" if f is default else ""
        table.add_row(*(escape_markup(cell) for cell in
                        (f.path, f.quantization or "-", human_size(f.size), mark)))  # fmt: skip
    print_table(table)
    if default is not None:
        say(
            "[dim]Pull one: llmkit pull hf:{}:QUANT (default: {}).[/]",
            repo,
            default.quantization or default.path,
        )


def register(app: typer.Typer) -> None:
    app.command("list", help="List the models in the store.")(list_models)
    app.command("ls", hidden=True)(list_models)
    app.command("show")(show)
    app.command("import")(import_model)
    app.command("rm")(remove)
    app.command("pull")(pull)
