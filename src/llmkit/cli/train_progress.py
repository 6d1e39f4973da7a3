"""How a training verb (finetune, pretrain) shows its progress: a bar on a terminal, lines in a log."""

from __future__ import annotations

from llmkit.cli.output import error_console, escape


class ProgressBar:
    """The terminal's bar, which appears with the first message (errors found up front print
    without one)."""

    def __init__(self, label: str, waiting: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        self.bar = Progress(
            TextColumn(f"[bold]{escape(label)}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("{task.fields[status]}"),
            console=error_console,
        )
        self.task = self.bar.add_task("train", total=None, status=escape(waiting))

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def show(self, step: int, total: int, status: str) -> None:
        self.bar.start()
        self.bar.update(self.task, completed=step, total=total, status=escape(status))

    def log(self, message: str) -> None:
        self.bar.start()
        self.bar.console.print(escape(message))


class ProgressLines:
    """One plain line for the first step, every EVERY steps and the last, for logs and pipes."""

    def __init__(self, every: int) -> None:
        self.every = every

    def show(self, step: int, total: int, status: str) -> None:
        if step == 1 or step % self.every == 0 or step == total:
            self.log(f"step {step}/{total}  {status}")

    def log(self, message: str) -> None:
        error_console.print(message, markup=False)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"
