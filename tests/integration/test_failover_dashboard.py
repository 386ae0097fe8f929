"""The failover dashboard in a real browser (headless Chromium), against a
real failover cluster of three (tests/support/failover.py).

It checks what a person watching a failover would look at: the page loaded
from a secondary names the primary; when the primary is killed, it names
the new one within seconds, shows the old one not answering, and lists the
election; when the node that served it goes too, it goes on naming the
primary and showing the others, read from them. Appends through its form
are forwarded to the primary and answered 201 with Served-By. The
screenshot it takes, after the first failover, is the README's:
``UPDATE_SCREENSHOT=1`` writes it to docs/img/dashboard-failover.png
(otherwise to the test's temporary directory).

With API_TOKEN set, the page asks for it on the first 401 of an append and
sends it to its own node only: the other nodes' /health is read without it.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import pytest

from tests.support.browser import PLAYWRIGHT_MISSING, console_errors, headless_chromium
from tests.support.http import request
from tests.support.processes import REPO

expect = pytest.importorskip("playwright.sync_api", reason=PLAYWRIGHT_MISSING).expect

SCREENSHOT = REPO / "docs" / "img" / "dashboard-failover.png"
TOKEN = "a-long-random-token-for-the-failover-browser-test"
#: How long the page may take to show a change: it polls twice a second, on
#: a machine that other test runs share. Counted from when the cluster
#: shows the change itself (a new primary elected, say).
SHOWN_WITHIN_MS = 10_000
#: What Chromium logs, as a console error, of a fetch to a node that is down
#: (which one depends on when the node died: before the connection, during it,
#: or with a keep-alive socket to it still pooled).
NODE_DOWN = re.compile(r"Failed to load resource: net::ERR_(CONNECTION_(REFUSED|RESET)|SOCKET_NOT_CONNECTED)")


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1150, "height": 900})
    yield context.new_page()
    context.close()


def node_row(page, name: str):
    return page.locator(f'#nodes tr[data-node="{name}"]')


def expect_roles(page, roles: dict[str, str]) -> None:
    for name, role in roles.items():
        expect(node_row(page, name).locator(".state")).to_have_text(role, timeout=SHOWN_WITHIN_MS)


def append_through_the_form(page, message: str, w: str) -> None:
    page.fill("#message", message)
    page.select_option("#w", w)
    page.click("#append")


def test_the_dashboard_follows_failovers_and_outlives_the_node_that_served_it(
        make_failover, page, tmp_path):
    cluster = make_failover()
    first = cluster.primary()
    home, other = cluster.secondaries(first)
    errors = console_errors(page)
    page.goto(f"{cluster[home].url}/")

    expect(page.locator("#primary")).to_have_text(first, timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#home")).to_have_text(home)
    expect_roles(page, {first: "primary", home: "secondary", other: "secondary"})
    expect(node_row(page, home)).to_contain_text("served this page")
    expect(page.locator("#answering")).to_have_text("3 of 3")
    expect(page.locator("#w option")).to_have_text(["1", "2", "3", "majority", "all"])
    expect(page.locator("#elections tr").first).to_contain_text(first)

    # An append through the form: sent to this page's node, a secondary,
    # which forwards it to the primary.
    append_through_the_form(page, "from the dashboard", "all")
    result = page.locator("#result")
    expect(result).to_contain_text("201 · id 0 · acks 3 of w=3", timeout=SHOWN_WITHIN_MS)
    expect(result).to_contain_text(f"Served-By {first}")
    for name in cluster.names:
        expect(node_row(page, name).locator(".lengths")).to_have_text("1 / 1", timeout=SHOWN_WITHIN_MS)

    # kill -9 the primary: the page names the one the others elect.
    term = cluster.term(first)
    cluster.kill(first)
    second = cluster.primary(among=[home, other], above_term=term)
    expect(page.locator("#primary")).to_have_text(second, timeout=SHOWN_WITHIN_MS)
    expect(node_row(page, first).locator(".state")).to_have_text("no answer", timeout=SHOWN_WITHIN_MS)
    expect(node_row(page, first).locator(".answers")).to_contain_text("no, for")
    expect(node_row(page, second).locator(".state")).to_have_text("primary")
    newest = page.locator("#elections tr").first
    expect(newest.locator(".who")).to_have_text(second, timeout=SHOWN_WITHIN_MS)
    expect(newest.locator(".term")).to_have_text(str(cluster.term(second)))
    expect(page.locator("#elections")).to_contain_text(first)  # the first election, still listed
    expect(page.locator("#answering")).to_have_text("2 of 3")
    append_through_the_form(page, "after the failover", "majority")
    expect(result).to_contain_text("201 · id 1 · acks 2 of w=2", timeout=SHOWN_WITHIN_MS)  # of 2 up
    expect(result).to_contain_text(f"Served-By {second}")
    expect(node_row(page, second).locator(".lengths")).to_have_text("2 / 2", timeout=SHOWN_WITHIN_MS)
    page.screenshot(path=SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "dashboard.png",
                    full_page=True)

    # The old primary comes back as a secondary, and the page, which
    # remembers its address, shows it answering again.
    cluster.restart(first)
    expect_roles(page, {first: "secondary", second: "primary"})

    # Now the node that served the page goes: the page names the primary
    # (a third one, if that node was the second) and shows the others, read from them.
    cluster.stop(home)
    third = cluster.primary(among=[first, other])
    expect(page.locator("#primary")).to_have_text(third, timeout=SHOWN_WITHIN_MS)
    expect(node_row(page, home).locator(".state")).to_have_text("no answer", timeout=SHOWN_WITHIN_MS)
    expect_roles(page, {third: "primary", ({first, other} - {third}).pop(): "secondary"})
    expect(page.locator("#banner")).to_contain_text(f"{home}, which served this page, does not answer")
    source = page.locator("#source")
    expect(source).to_contain_text(re.compile(
        rf"Reading from ({first}, {other}|{other}, {first})\. Not answering: {home}\."), timeout=SHOWN_WITHIN_MS)
    for name in (first, other):
        expect(node_row(page, name).locator(".answers")).to_contain_text("yes")
    # Chromium logs every refused fetch to a node that is down; nothing else.
    assert [e for e in errors if not NODE_DOWN.search(e)] == []


def test_with_an_api_token_the_page_asks_for_it_once_and_sends_it_to_its_own_node_only(
        make_failover, page):
    cluster = make_failover(env={"API_TOKEN": TOKEN})
    leader = cluster.primary()
    home = cluster.secondaries(leader)[0]
    errors = console_errors(page)
    origin = urlsplit(cluster[home].url).netloc
    sent_elsewhere = []
    page.on("request", lambda r: urlsplit(r.url).netloc != origin and "authorization" in r.headers
            and sent_elsewhere.append(r.url))
    page.goto(f"{cluster[home].url}/")  # the page and every /health need no token
    expect(page.locator("#primary")).to_have_text(leader, timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#answering")).to_have_text("3 of 3", timeout=SHOWN_WITHIN_MS)
    token_form = page.locator("#token-section")
    expect(token_form).to_be_hidden()

    append_through_the_form(page, "with a token", "2")
    expect(token_form).to_be_visible(timeout=SHOWN_WITHIN_MS)
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    expect(page.locator("#result")).to_contain_text("201 · id 0 · acks ", timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#result")).to_contain_text(re.compile(f" of w=2 · .* · Served-By {leader} · "))
    expect(token_form).to_be_hidden()
    append_through_the_form(page, "again", "1")  # the token is kept: not asked for again
    expect(page.locator("#result")).to_contain_text("201 · id 1", timeout=SHOWN_WITHIN_MS)
    expect(token_form).to_be_hidden()

    appended = request("GET", f"{cluster[leader].url}/messages",
                       headers={"Authorization": f"Bearer {TOKEN}"}).json["messages"]
    assert appended == ["with a token", "again"]
    assert sent_elsewhere == []
    # The one refusal shows only as the browser's own log line of the 401.
    assert len(errors) == 1 and "401" in errors[0], errors
