"""The /commands of `llmkit chat`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmkit.cli.output import console, print_error, say

if TYPE_CHECKING:
    from llmkit.chat.session import ChatSession

CHAT_HELP = """Commands:
  /set               the sampling settings and the system prompt
  /set NAME VALUE    change one: temperature, top_p, top_k, min_p, repeat_penalty,
                     max_tokens, seed ("off" unsets these two), system
  /system TEXT       set the system prompt (no TEXT: clear it)
  /history           the conversation so far, message by message
  /show [TEXT]       the exact prompt for your next message (or for TEXT)
  /reset             forget the conversation
  /save FILE · /load FILE · /help · /bye (or Ctrl-D)
Start a message with \"\"\" to write several lines, and end it with \"\"\".
Ctrl-C stops an answer without leaving the chat. Keys typed during an answer
are dropped."""

# Stands in for the next message in /show, so the view is the prompt the model will really get.
NEXT_MESSAGE = "⟨your next message⟩"


def handle(session: ChatSession, line: str) -> bool:
    """Run one /command; return True to leave the chat."""
    from llmkit.errors import LlmkitError

    command, _, argument = line.partition(" ")
    argument = argument.strip()
    try:
        if command in ("/bye", "/exit", "/quit"):
            return True
        if command == "/help":
            console.print(CHAT_HELP, markup=False, highlight=False)
        elif command == "/reset":
            session.reset()
            console.print("[dim](conversation cleared)[/]")
        elif command == "/system":
            say("[dim]({})[/]", session.set("system", argument))
        elif command == "/set":
            _set(session, argument)
        elif command == "/history":
            _history(session)
        elif command == "/show":
            _show_next_prompt(session, argument)
        elif command == "/save":
            if not argument:
                raise LlmkitError("Usage: /save FILE")
            say("[dim](saved to {})[/]", session.save(argument))
        elif command == "/load":
            if not argument:
                raise LlmkitError("Usage: /load FILE")
            say("[dim](loaded {} messages)[/]", session.load(argument))
        else:
            raise LlmkitError(f"Unknown command {command}; /help lists them.")
    except LlmkitError as error:
        print_error(error)
    return False


def _set(session: ChatSession, argument: str) -> None:
    if not argument:
        for name, value in session.settings().items():
            shown = "none" if value is None else repr(value) if name == "system" else value
            say("  {} {}", f"{name:<15}", shown)
        return
    name, _, value = argument.partition(" ")
    say("[dim]({})[/]", session.set(name, value.strip()))


def _history(session: ChatSession) -> None:
    messages = session.conversation()
    if not messages:
        console.print("[dim](no messages yet)[/]")
        return
    for number, message in enumerate(messages, 1):
        say("[bold]{}[/] {}", f"{number}. {message['role']}:", message["content"])


def _show_next_prompt(session: ChatSession, text: str) -> None:
    """The prompt the model is given when the next message is sent: the conversation so far, the
    next user turn, and the header the answer follows (so the text ends where the answer starts)."""
    from llmkit.cli.prompt import print_prompt_view

    pending = text or NEXT_MESSAGE
    if not text:
        say(
            "[dim]The prompt for your next message, written here as {} "
            "(/show TEXT shows it with TEXT); the answer starts where it ends.[/]",
            NEXT_MESSAGE,
        )
    print_prompt_view(console, session.model, session.conversation(pending))
