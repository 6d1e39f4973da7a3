"""The web chat page in headless Debian chromium: ask, watch it stream, stop, reload, find it again."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, wait_for_idle

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


@contextmanager
def open_page(server: Server, width: int, height: int) -> Iterator:
    """A chromium page of the given viewport size that already holds the server's API key."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": width, "height": height})
        # The key a user would type after pressing "API key".
        context.add_init_script(f"localStorage.setItem('llmkit.apiKey', '{server.api_key}')")
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def page(server: Server):
    with open_page(server, 1200, 800) as page:
        yield page


def test_ask_stream_stop_reload_and_find_the_conversation(page, server: Server) -> None:
    expect = sync_api.expect
    page.goto(server.url)
    expect(page.locator("#model option")).to_have_text(["smollm2"])

    page.click("#settings summary")
    page.fill("#system", "You are a patient teacher.")
    page.fill("#prompt", "Write a long story about a lighthouse keeper.")
    page.press("#prompt", "Enter")
    answer = page.locator(".message.assistant .content").last
    expect(page.locator("#stop")).to_be_visible()
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll('.message.assistant .content')].pop();"
        " return a && a.textContent.split(' ').length >= 4; }"
    )
    page.click("#stop")
    expect(page.locator(".message.assistant .stats").last).to_contain_text("stopped")
    expect(page.locator(".message.assistant .stats").last).to_contain_text("first token")
    expect(page.locator("#send")).to_be_visible()
    streamed = answer.text_content()
    assert streamed and len(streamed.split()) >= 4
    wait_for_idle(server)  # stopping in the page cancelled the generation on the server

    # Regenerate replaces the answer with a new one.
    page.click("#regenerate")
    page.wait_for_function(
        "() => document.querySelector('.message.assistant .content').textContent.length > 10"
    )
    page.click("#stop")
    expect(page.locator("#send")).to_be_visible()
    assert page.locator(".message.assistant").count() == 1

    page.reload()
    conversations = page.locator("#conversations li")
    expect(conversations.first).to_contain_text("Write a long story about a lighthouse")
    conversations.first.click()
    expect(page.locator(".message.user .content")).to_contain_text("lighthouse keeper")
    expect(page.locator(".message.assistant .content")).not_to_be_empty()
    expect(page.locator("#system")).to_have_value("You are a patient teacher.")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-chat.png"), full_page=True)
    wait_for_idle(server)


def test_the_page_bounds_are_the_servers(page, server: Server) -> None:
    """The page's min and max for each setting are exactly what the server's schema accepts."""
    from pydantic import ValidationError

    from llmkit.server.schemas import ChatCompletionRequest

    page.goto(server.url)
    for selector, field, step in (
        ("#temperature", "temperature", 0.001),
        ("#max-tokens", "max_tokens", 1),
    ):
        low, high = (float(page.get_attribute(selector, name) or "nan") for name in ("min", "max"))
        for value in (low, high):
            ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], **{field: value})
        for value in (low - step, high + step):
            with pytest.raises(ValidationError):
                ChatCompletionRequest(
                    messages=[{"role": "user", "content": "hi"}], **{field: value}
                )


def test_temperature_and_max_tokens_go_with_the_request(page, server: Server) -> None:
    expect = sync_api.expect
    page.goto(server.url)
    page.click("#new-chat")
    page.click("#settings summary")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "1")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.fill("#prompt", "Name a colour.")
        page.press("#prompt", "Enter")
    body = sent.value.post_data_json
    assert (body["temperature"], body["max_tokens"]) == (0, 1)
    stats = page.locator(".message.assistant .stats").last
    expect(stats).to_contain_text(re.compile(r"^1 token · "), timeout=60_000)
    one_token = page.locator(".message.assistant .content").last.text_content() or ""
    assert one_token.strip()

    # Greedy, so five tokens start with the same one.
    page.fill("#max-tokens", "5")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click("#regenerate")
    assert sent.value.post_data_json["max_tokens"] == 5
    expect(stats).to_contain_text(re.compile(r"^5 tokens · "), timeout=60_000)
    five_tokens = page.locator(".message.assistant .content").last.text_content() or ""
    assert five_tokens.startswith(one_token.strip()) and len(five_tokens) > len(one_token)

    # The settings belong to the conversation and survive a reload.
    page.reload()
    expect(page.locator("#temperature")).to_have_value("0")
    expect(page.locator("#max-tokens")).to_have_value("5")
    wait_for_idle(server)


def test_out_of_range_settings_are_refused_in_the_page(page, server: Server) -> None:
    expect = sync_api.expect
    page.goto(server.url)
    page.click("#new-chat")
    page.click("#settings summary")
    sent: list[str] = []
    page.on(
        "request", lambda request: sent.append(request.url) if "/v1/chat" in request.url else None
    )

    for selector, value, message in (
        ("#temperature", "11", "Temperature must be a number from 0 to 10"),
        ("#temperature", "-0.5", "Temperature must be a number from 0 to 10"),
        ("#max-tokens", "0", "Max tokens must be a whole number from 1 to 1048576"),
        ("#max-tokens", "2.5", "Max tokens must be a whole number from 1 to 1048576"),
    ):
        page.fill(selector, value)
        page.fill("#prompt", "hello")
        page.press("#prompt", "Enter")
        expect(page.locator("#error")).to_contain_text(message)
        expect(page.locator(selector)).to_have_attribute("aria-invalid", "true")
        page.fill(selector, "")
    assert not sent and page.locator(".message").count() == 0

    # Should the page and the server ever disagree, the server's refusal is what the user reads.
    page.evaluate("document.getElementById('temperature').removeAttribute('max')")
    page.fill("#temperature", "11")
    page.fill("#prompt", "hello")
    page.press("#prompt", "Enter")
    expect(page.locator("#error")).to_contain_text("temperature")
    expect(page.locator("#error")).to_contain_text("10")
    assert sent
    page.fill("#temperature", "")
    page.locator("#temperature").dispatch_event("change")


def test_errors_are_shown_readably(page, server: Server) -> None:
    page.goto(server.url)
    page.evaluate("localStorage.setItem('llmkit.apiKey', 'wrong')")
    page.fill("#prompt", "hello")
    page.press("#prompt", "Enter")
    sync_api.expect(page.locator("#error")).to_contain_text("API key")
