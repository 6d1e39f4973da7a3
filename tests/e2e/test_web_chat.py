"""The web chat page in headless Debian chromium: ask, watch it stream, stop, reload, find it again."""

from __future__ import annotations

import shutil
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


@pytest.fixture(scope="module")
def page(server: Server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        # The key a user would type after pressing "API key".
        context.add_init_script(f"localStorage.setItem('llmkit.apiKey', '{server.api_key}')")
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        browser.close()


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


def test_errors_are_shown_readably(page, server: Server) -> None:
    page.goto(server.url)
    page.evaluate("localStorage.setItem('llmkit.apiKey', 'wrong')")
    page.fill("#prompt", "hello")
    page.press("#prompt", "Enter")
    sync_api.expect(page.locator("#error")).to_contain_text("API key")
