"""The web chat page at phone width (390x844) in headless Debian chromium: nothing cut off, all reachable."""

from __future__ import annotations

import pytest

from tests.e2e import test_web_chat as desktop
from tests.e2e.conftest import Server, wait_for_idle

sync_api, open_page = desktop.sync_api, desktop.open_page
pytestmark = desktop.pytestmark  # the same skip: no chromium, no browser tests

# Every visible element whose box reaches past the viewport's left or right edge, and the page's
# own horizontal scroll width (a page that scrolls sideways has something cut off).
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const outside = [...document.querySelectorAll('body *')]
    .filter((e) => e.checkVisibility() && e.getClientRects().length)
    .filter((e) => { const r = e.getBoundingClientRect(); return r.width && (r.left < -0.5 || r.right > width + 0.5); })
    .map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' + e.className);
  return { outside, scrollWidth: document.documentElement.scrollWidth, width };
}"""


def assert_fits(page) -> None:
    layout = page.evaluate(OVERFLOW)
    assert not layout["outside"], f"cut off at {layout['width']} px: {layout['outside']}"
    assert layout["scrollWidth"] <= layout["width"], layout


@pytest.mark.slow
def test_phone_width_everything_fits_and_is_reachable(
    server: Server, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    expect = sync_api.expect
    with open_page(server, 390, 844) as page:
        page.goto(server.url)
        expect(page.locator("#model option")).to_have_text(["smollm2"])
        expect(page.locator("#sidebar")).to_be_hidden()  # folded away behind "Chats"
        assert_fits(page)

        # The sampling controls open, take input and fit.
        page.click("#settings summary")
        for selector, value in (("#temperature", "0"), ("#max-tokens", "3")):
            expect(page.locator(selector)).to_be_visible()
            page.click(selector)
            page.fill(selector, value)
        expect(page.locator("#system")).to_be_visible()
        assert_fits(page)

        # An answer long enough to wrap, then Regenerate: visible, whole and clickable.
        page.fill("#prompt", "Say hello " + "in many words " * 12)
        page.press("#prompt", "Enter")
        regenerate = page.locator("#regenerate")
        expect(regenerate).to_be_visible(timeout=60_000)
        assert_fits(page)
        box = regenerate.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
        page.click("#regenerate")
        expect(page.locator(".message.assistant .stats").last).to_contain_text(
            "3 tokens", timeout=60_000
        )
        expect(regenerate).to_be_visible()
        assert page.locator(".message.assistant").count() == 1

        # The conversation list opens as a panel, fits, and closes when a conversation is picked.
        page.click("#toggle-sidebar")
        expect(page.locator("#toggle-sidebar")).to_have_attribute("aria-expanded", "true")
        conversation = page.locator("#conversations li").first
        expect(conversation).to_be_visible()
        expect(page.locator("#new-chat")).to_be_visible()
        assert_fits(page)
        conversation.click()
        expect(page.locator("#sidebar")).to_be_hidden()
        expect(page.locator("#max-tokens")).to_have_value("3")

        screenshot = tmp_path / "web-chat-390x844.png"
        page.screenshot(path=str(screenshot), full_page=True)
        with capsys.disabled():
            print(f"\nphone-width screenshot: {screenshot}")
    wait_for_idle(server)
