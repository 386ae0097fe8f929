"""The dashboard in a real browser (headless Chromium), against real processes.

It checks what a person would look at: every node listed, an append through
the form showing on the primary's length, a delayed secondary's lag bar
rising and falling back to 0, and no console error on the way. The
screenshot it takes is the README's: ``UPDATE_SCREENSHOT=1`` writes it to
docs/img/dashboard.png (otherwise to the test's temporary directory).

With API_TOKEN set, the page loads without it, asks for it on the first
401, and sends it from then on.
"""

from __future__ import annotations

import os

import pytest

from tests.support.browser import PLAYWRIGHT_MISSING, console_errors, headless_chromium
from tests.support.http import get_health, post_message, request
from tests.support.processes import REPO
from tests.support.waiting import wait_until

expect = pytest.importorskip("playwright.sync_api", reason=PLAYWRIGHT_MISSING).expect

SCREENSHOT = REPO / "docs" / "img" / "dashboard.png"
TOKEN = "a-long-random-token-for-the-browser-test"
#: How long the page may take to show a change: it polls twice a second, on
#: a machine that other test runs share.
SHOWN_WITHIN_MS = 10_000


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 860})
    yield context.new_page()
    context.close()


def node_row(page, name: str):
    return page.locator(f'#nodes tr[data-node="{name}"]')


def test_the_dashboard_shows_every_node_appends_and_the_inconsistency_window(
        make_cluster, page, tmp_path):
    cluster = make_cluster({"secondary-1": {}, "secondary-2": {"REPLICATION_DELAY": "1"}})
    errors = console_errors(page)
    page.goto(f"{cluster.primary.url}/")

    for name in ("primary", "secondary-1", "secondary-2"):
        expect(node_row(page, name)).to_be_visible(timeout=SHOWN_WITHIN_MS)
    expect(node_row(page, "secondary-1").locator(".state")).to_have_text("healthy", timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#quorum")).to_have_text("writable")
    expect(page.locator("#w option")).to_have_text(["1", "2", "3", "majority", "all"])

    page.fill("#message", "seen in a browser")
    page.select_option("#w", "1")
    page.click("#append")
    expect(page.locator("#result")).to_contain_text("201 · id 0 · acks 1 of w=1 · acked_by primary",
                                                     timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#result")).to_contain_text("latency")
    expect(node_row(page, "primary").locator(".length")).to_have_text("1", timeout=SHOWN_WITHIN_MS)

    # More w=1 appends, until the page shows secondary-2, which holds each
    # message back 1 s, behind: its lag as a number and as a bar.
    sent = [1]

    def shown_behind() -> bool:
        assert post_message(cluster.primary.url, f"burst-{sent[0]}", w=1).status == 201
        sent[0] += 1
        return page.evaluate("""() => {
            const row = document.querySelector('#nodes tr[data-node="secondary-2"]');
            const primary = document.querySelector('#nodes tr[data-node="primary"] .length');
            return Number(primary.textContent) > 1 && Number(row.querySelector('.lag').textContent) >= 5
                && parseFloat(row.querySelector('.bar .fill').style.width) > 0;
        }""")

    wait_until(shown_behind, SHOWN_WITHIN_MS / 1000, what="the page to show secondary-2 behind")
    page.screenshot(path=SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "dashboard.png",
                    full_page=True)

    total = str(sent[0])
    expect(node_row(page, "secondary-2").locator(".lag")).to_have_text("0", timeout=SHOWN_WITHIN_MS)
    for name in ("primary", "secondary-1", "secondary-2"):
        expect(node_row(page, name).locator(".length")).to_have_text(total, timeout=SHOWN_WITHIN_MS)
    assert get_health(cluster.primary.url)["length"] == sent[0]
    assert errors == []


def test_a_secondary_page_shows_its_own_length(make_cluster, page):
    cluster = make_cluster({"s1": {}})
    errors = console_errors(page)
    assert post_message(cluster.primary.url, "one", w=2).status == 201
    page.goto(f"{cluster['s1'].url}/")
    expect(page.locator("#length")).to_have_text("1", timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#node")).to_have_text("s1")
    expect(page.locator("main")).to_contain_text("This node is a secondary")
    assert errors == []


def test_with_an_api_token_the_page_asks_for_it_once_and_sends_it(make_cluster, page):
    cluster = make_cluster({"s1": {"API_TOKEN": TOKEN}}, primary_env={"API_TOKEN": TOKEN})
    errors = console_errors(page)
    page.goto(f"{cluster.primary.url}/")  # the page itself needs no token, nor does /health
    expect(node_row(page, "s1")).to_be_visible(timeout=SHOWN_WITHIN_MS)
    token_form = page.locator("#token-section")
    expect(token_form).to_be_hidden()

    page.fill("#message", "with a token")
    page.click("#append")
    expect(token_form).to_be_visible(timeout=SHOWN_WITHIN_MS)
    page.fill("#token", "wrong guess")
    page.click("#token-form button")
    expect(page.locator("#token-reason")).to_contain_text("refused", timeout=SHOWN_WITHIN_MS)
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    expect(page.locator("#result")).to_contain_text("201 · id 0", timeout=SHOWN_WITHIN_MS)
    expect(token_form).to_be_hidden()
    assert page.evaluate("() => Object.values(sessionStorage)") == [TOKEN]

    page.reload()  # the same tab keeps the token, and does not ask again
    page.fill("#message", "again")
    page.click("#append")
    expect(page.locator("#result")).to_contain_text("201 · id 1", timeout=SHOWN_WITHIN_MS)
    expect(token_form).to_be_hidden()
    appended = request("GET", f"{cluster.primary.url}/messages",
                       headers={"Authorization": f"Bearer {TOKEN}"}).json["messages"]
    assert appended == ["with a token", "again"]
    # The two refusals show only as the browser's own log lines of the 401s.
    assert len(errors) == 2 and all("401" in error for error in errors), errors
