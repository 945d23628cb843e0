"""The Release Health page in a real browser: Debian's headless Chromium,
driven by Selenium through Debian's chromedriver (nothing is downloaded at
run time), against the real daemon fed by `release-verdict loadgen`.

Two loadgen runs make a mixed fleet: `shop-*` canaries as healthy as their
baselines, `pay-*` canaries failing 8% of requests. The page must show the
failing canary RED with its reason within seconds, the release view its
checks (both cohorts' numbers), charts and ledger timeline, the DORA panel,
and it must say "reconnecting…" while the daemon is down and recover when
it comes back on the same port (the ledger file keeps the state). All of
it under the page's Content-Security-Policy: the browser reports no
violation.

A second daemon gets a service the OpenTelemetry SDK sends spans for, its
canary failing on one endpoint only, with an error kind its baseline never
shows, and trace links configured: every table of its release view (checks,
endpoints, error kinds, exemplars) is read as text, numbers formatted and
the same as the API's, never JSON; the red's story names the endpoint.

Screenshots go to $RELEASE_VERDICT_SCREENSHOTS, else tests/python/screenshots/
(ignored by git): look at them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import pytest

from harness import Daemon, Daemons, Process, daemon_binary, free_port, launch, poll_release
from otel import CHECKOUT, RolloutTraffic

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

SCREENSHOTS = Path(os.environ.get("RELEASE_VERDICT_SCREENSHOTS", Path(__file__).parent / "screenshots"))

CONFIG = """
[ledger]
path = "ledger.db"
checkpoint_interval = "1s"
[baseline]
settle = "1s"
[judge]
min_duration = "5s"
epoch = "2s"
"""

RED, GREEN = "pay-0-canary", "shop-0-canary"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (tests/setup installs them)",
)


def loadgen(daemon: Daemon, prefix: str, canary_error: float) -> Process:
    argv = [
        str(daemon_binary()),
        "loadgen",
        "--target",
        f"grpc://{daemon.grpc_addr}",
        "--rate",
        "3000",
        "--duration",
        "600s",
        "--services",
        "2",
        "--service-prefix",
        prefix,
        "--canary-error",
        str(canary_error),
        "--concurrency",
        "1",
    ]
    return Process(*launch(daemon.workdir, f"loadgen-{prefix}", argv))


class Fleet:
    """A daemon on fixed ports (so it can come back on them, in the same
    directory, on the same ledger) and its traffic."""

    def __init__(self, workdir: Path):
        self.daemons = Daemons(workdir)
        self.grpc = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.daemon = self.start()
        self.traffic = [loadgen(self.daemon, "shop", 0.005), loadgen(self.daemon, "pay", 0.08)]

    def start(self) -> Daemon:
        return self.daemons.start(CONFIG, workdir=self.daemons.root, grpc_listen=self.grpc, http_listen=self.http)

    @property
    def url(self) -> str:
        return self.daemon.http_url + "/"

    def stop(self) -> None:
        """Stops the traffic, then every daemon, each checked (exit 0, no panic)."""
        for p in self.traffic:
            p.stop(timeout=10)
        self.daemons.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("page"))
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1920,1080", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # Before any page script runs, and outside the page's policy: record
    # every Content-Security-Policy violation the browser reports.
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.__csp = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        },
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: webdriver.Chrome, name: str, height: int = 1080) -> Path:
    """A screenshot of the page, `height` pixels tall."""
    driver.set_window_size(1920, height)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1920, 1080)
    return path


def tile(verdict: str, deployment_id: str) -> tuple[str, str]:
    return (By.CSS_SELECTOR, f'.tile[data-deployment-id="{deployment_id}"][data-verdict="{verdict}"]')


def test_a_red_canary_shows_red_and_its_reason_within_seconds(fleet: Fleet, browser: webdriver.Chrome):
    browser.get(fleet.url)
    red = tile("red", RED)[1]
    WebDriverWait(browser, 30).until(lambda d: text(d, red))
    assert "RED" in text(browser, red + " .band")
    reason = text(browser, red + " .reason")
    assert "error ratio" in reason, reason
    api = poll_release(fleet.daemon, RED, lambda v: v["verdict"] == "red")
    assert text(browser, red + " .service").startswith(api["service"])
    # The healthy canaries go green beside it; the baselines are listed apart.
    green = tile("green", GREEN)[1]
    WebDriverWait(browser, 60).until(lambda d: text(d, green))
    assert "GREEN" in text(browser, green)
    assert text(browser, '.tile[data-deployment-id="pay-0-stable"]') is None
    assert "pay-0-stable" in text(browser, "table.baselines")
    WebDriverWait(browser, 5).until(EC.text_to_be_present_in_element((By.ID, "conn"), "live"))
    assert_no_csp_violation(browser)
    shoot(browser, "overview")


def assert_no_csp_violation(driver: webdriver.Chrome) -> None:
    """The page drew what it drew within its Content-Security-Policy."""
    violations = driver.execute_script("return window.__csp || null;")
    assert violations == [], violations
    console = [e["message"] for e in driver.get_log("browser")]
    assert not [m for m in console if "Content Security Policy" in m], console


def text(driver: webdriver.Chrome, css: str) -> str | None:
    """The text of the first element matching `css`, read in one step: the
    page redraws by replacing its HTML, so element handles go stale."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)


def test_the_release_view_shows_checks_charts_and_timeline(fleet: Fleet, browser: webdriver.Chrome):
    browser.get(fleet.url)
    # The list is drawn again with each update: a tile found may be replaced
    # before the click lands, so find and click in one step, again if need be.
    WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: EC.element_to_be_clickable(tile("red", RED))(d) and (d.find_element(*tile("red", RED)).click() or True)
    )
    wait = WebDriverWait(browser, 20)
    banner = wait.until(lambda d: text(d, '#banner[data-verdict="red"]'))
    assert "RED" in banner and "error ratio" in text(browser, "#reason")
    row = '#checks tr[data-check="error_ratio"]'
    wait.until(lambda d: text(d, row))
    canary, baseline = text(browser, row + " td.canary"), text(browser, row + " td.baseline")
    assert "%" in canary and "requests" in canary, canary
    assert "%" in baseline and "requests" in baseline, baseline
    assert "FAIL" in text(browser, row)
    assert "p95" in text(browser, '#checks tr[data-check="latency"] td.baseline')
    # The ledger's timeline: the first verdict and the failure.
    wait.until(lambda d: text(d, '#timeline li[data-type="canary_failed"]'))
    assert text(browser, '#timeline li[data-type="release_started"]')

    # Charts: a line once there are two points (one every 5 s); the
    # screenshot waits for four, so it shows a trend.
    def segments(driver) -> int:
        return driver.execute_script(
            "const p = document.querySelector('#charts .chart path.line-canary');"
            "return p ? (p.getAttribute('d').match(/L/g) || []).length : 0;"
        )

    WebDriverWait(browser, 20).until(lambda d: segments(d) >= 1)
    WebDriverWait(browser, 30).until(lambda d: segments(d) >= 3)
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#charts .chart path.line-baseline"))
    # The endpoint breakdown names the failing endpoint, in words and
    # formatted numbers: "245 of 3,042 failed (8.05%)", never JSON.
    row = text(browser, "#endpoints tbody tr:first-child")
    assert row and "FAIL" in row, row
    canary = text(browser, "#endpoints tbody tr:first-child td.canary")
    assert re.search(r"^[\d,]+ of [\d,]+ failed \(\d+(\.\d+)?%\)", canary), canary
    assert "of the canary's requests" in canary, canary
    page_text = browser.find_element(By.TAG_NAME, "body").text
    assert '{"' not in page_text, page_text
    assert_no_csp_violation(browser)
    shoot(browser, "release-red", height=1800)


def test_the_dora_panel_renders_from_the_ledger(fleet: Fleet, browser: webdriver.Chrome):
    browser.get(fleet.url)
    row = '#dora-table tr[data-service="pay-0"]'
    WebDriverWait(browser, 20).until(lambda d: text(d, row))
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' td')).map(td => td.innerText);", row
    )
    assert cells[0] == "pay-0"
    # A red canary is a failed change.
    assert "%" in cells[4] and "of" in cells[4], cells
    assert_no_csp_violation(browser)
    browser.execute_script("document.getElementById('dora').scrollIntoView()")
    shoot(browser, "overview-full", height=1800)


def test_the_page_says_reconnecting_while_the_daemon_is_down_and_recovers(fleet: Fleet, browser: webdriver.Chrome):
    browser.get(fleet.url)
    WebDriverWait(browser, 30).until(EC.visibility_of_element_located(tile("red", RED)))
    WebDriverWait(browser, 10).until(EC.text_to_be_present_in_element((By.ID, "conn"), "live"))
    assert fleet.daemon.stop() == 0
    WebDriverWait(browser, 10).until(EC.text_to_be_present_in_element((By.ID, "conn"), "reconnecting"))
    # The last data stays on screen meanwhile.
    assert browser.find_elements(*tile("red", RED))
    shoot(browser, "reconnecting")
    fleet.daemon = fleet.start()
    WebDriverWait(browser, 20).until(EC.text_to_be_present_in_element((By.ID, "conn"), "live"))
    # Restored from the ledger's checkpoint: still red (red is final).
    WebDriverWait(browser, 10).until(EC.visibility_of_element_located(tile("red", RED)))


def test_without_a_ledger_the_dora_panel_says_so(daemon_factory, browser: webdriver.Chrome):
    d = daemon_factory('[ledger]\npath = ""\n')
    browser.get(d.http_url + "/")
    off = WebDriverWait(browser, 10).until(lambda d: text(d, "#dora-off"))
    assert "Ledger off" in off
    assert "No releases in flight" in text(browser, "#app")


# --- one endpoint, one new kind of error, trace links -------------------------

CART_CONFIG = """
[ledger]
path = "ledger.db"
[baseline]
settle = "1s"
[judge]
min_duration = "5s"
epoch = "2s"
trace_url_template = "https://traces.example.com/trace/{trace_id}"
"""
TRACES = "https://traces.example.com/trace/"
CART_SECONDS = 40.0


@pytest.fixture(scope="module")
def cart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, RolloutTraffic]]:
    daemons = Daemons(tmp_path_factory.mktemp("cart"))
    try:
        daemon = daemons.start(CART_CONFIG)
        traffic = RolloutTraffic(daemon, CART_SECONDS)
        try:
            yield daemon, traffic
        finally:
            traffic.stop()
    finally:
        daemons.close()


def cells(driver: webdriver.Chrome, row_css: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' td')).map(td => td.innerText);", row_css
    )


def test_a_red_on_one_endpoint_reads_as_one_story_with_every_table_designed(cart, browser: webdriver.Chrome):
    daemon, traffic = cart
    api = poll_release(daemon, "cart-v2", lambda v: v["verdict"] == "red", timeout=CART_SECONDS + 20)
    # The story names the endpoint and tells its numbers.
    assert api["reason"].startswith("red since "), api["reason"]
    assert CHECKOUT in api["reason"], api["reason"]
    ev = api["red_evidence"]
    assert ev["subject"] == CHECKOUT or ev["check"] == "error_ratio", ev
    assert ev["decided_at"] == api["red_since"], ev
    # Once every span is in, the counts are what the SDK sent.
    assert traffic.done.wait(CART_SECONDS + 30), "the traffic did not finish"
    sent = traffic.sent["cart-v2"]
    api = poll_release(daemon, "cart-v2", lambda v: [v["canary"]["requests"], v["canary"]["errors"]] == sent, timeout=15)

    browser.get(daemon.http_url + "/#/release/cart/prod/cart-v2")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: text(d, '#banner[data-verdict="red"]'))
    wait.until(lambda d: text(d, "#exemplars tbody tr"))
    reason = text(browser, "#reason")
    assert reason.startswith("red since ") and CHECKOUT in reason, reason

    # Endpoints: the failing one first, its numbers those of the API.
    row = cells(browser, "#endpoints tbody tr:first-child")
    assert row[0] == CHECKOUT and "FAIL" in row[1], row
    e = next(x for x in api["endpoints"] if x["name"] == CHECKOUT)
    assert row[2].startswith(f"{e['canary']['errors']:,} of {e['canary']['requests']:,} failed ("), row
    assert "p95" in row[2] and "of the canary's requests" in row[2], row
    assert re.search(r"regression shown \(odds [\d,e+]+ : 1\)", row[4]), row
    other = cells(browser, '#endpoints tr[data-endpoint="GET /api/items"]')
    assert "PASS" in other[1] and "regression" in other[4], other

    # Error kinds: KeyError is new, counted as the API counts it, linked to its first trace.
    kind = cells(browser, '#error-kinds tr[data-kind="KeyError"]')
    assert kind[0].startswith("KeyError") and "new" in kind[0].lower(), kind
    k = next(x for x in api["error_kinds"] if x["kind"] == "KeyError")
    assert kind[2].startswith(f"{k['canary']['errors']:,} of {k['canary']['requests']:,} failed"), kind
    assert kind[3].startswith("0 of "), kind
    link = browser.find_element(By.CSS_SELECTOR, '#error-kinds tr[data-kind="KeyError"] a')
    assert link.get_attribute("href") == TRACES + k["first_trace"]["trace_id"], link.get_attribute("href")

    # Checks: evidence in words, the statistic one hover away.
    check = cells(browser, '#checks tr[data-check="error_ratio"]')
    assert re.search(r"regression shown|leaning worse|no regression|not conclusive", check[4]), check
    assert browser.find_element(By.CSS_SELECTOR, '#checks tr[data-check="error_ratio"] td.evidence').get_attribute("title").startswith("e-value ")

    # Exemplars: failed requests on the endpoint, linked.
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#exemplars a")]
    assert links and all(h.startswith(TRACES) for h in links), links
    assert CHECKOUT in text(browser, "#exemplars tbody")

    page_text = browser.find_element(By.TAG_NAME, "body").text
    assert '{"' not in page_text, page_text
    assert_no_csp_violation(browser)
    shoot(browser, "release-red-one-endpoint", height=2200)
