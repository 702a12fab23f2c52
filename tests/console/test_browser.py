"""The console in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium
against a real API process and worker. Sign-in, live figures without a reload (paused while the tab is hidden),
filters, a job's page and its downloads, cancel as admin and refused as viewer, CSRF, and a phone's width."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import PartnerKey, make_partner
from tests.console.conftest import (
    Console,
    Operator,
    make_operator,
    mixed_records,
    partner_client,
    submit_businesses,
    wait_finished,
    waiting_job,
)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(driver: WebDriver, condition: Any, timeout: float = 15) -> Any:
    # An element found just before the page it is on is replaced (a form posted, a live refresh) goes stale: the
    # condition is asked again, as for one not found yet.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)


def sign_in(driver: WebDriver, console: Console, operator: Operator) -> None:
    """Sign in through the form, as a person does, starting signed out."""
    driver.delete_all_cookies()
    driver.get(console.url + "/console/")
    assert driver.current_url.startswith(console.url + "/console/login")
    driver.find_element(By.NAME, "username").send_keys(operator.username)
    driver.find_element(By.NAME, "password").send_keys(operator.password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, lambda d: d.current_url == console.url + "/console/")


def _api_job(console: Console, partner: PartnerKey, job_id: str) -> dict[str, Any]:
    with partner_client(console, partner) as client:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job


def test_signing_in_through_the_form_opens_the_overview_with_the_cookie_flags(
    browser: WebDriver, console: Console
) -> None:
    operator = make_operator("viewer")
    browser.delete_all_cookies()
    browser.get(console.url + "/console/login")
    browser.find_element(By.NAME, "username").send_keys(operator.username)
    browser.find_element(By.NAME, "password").send_keys("wrong password")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    assert (
        "Wrong username or password" in _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[role=alert]")).text
    )
    sign_in(browser, console, operator)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert operator.username in browser.find_element(By.CSS_SELECTOR, ".signout").text
    (cookie,) = [c for c in browser.get_cookies() if c["name"] == "pfsync_console"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script can read it

    browser.find_element(By.CSS_SELECTOR, ".signout button").click()
    _wait(browser, lambda d: "/console/login" in d.current_url)
    browser.get(console.url + "/console/jobs")
    assert "/console/login" in browser.current_url


def test_a_new_job_appears_live_without_a_reload(browser: WebDriver, console: Console) -> None:
    partner = make_partner("live partner")
    sign_in(browser, console, make_operator("viewer"))
    for path in ("/console/", "/console/jobs"):
        browser.get(console.url + path)
        browser.execute_script("window.notReloaded = true")
        job = submit_businesses(console, partner, [{"external_id": "live", "name": "Live"}])
        row = f'tr[data-job-id="{job["id"]}"]'
        _wait(browser, lambda d, row=row: d.find_elements(By.CSS_SELECTOR, row), timeout=12)
        assert browser.execute_script("return window.notReloaded") is True, path
        # And its figures follow the job as it finishes.
        wait_finished(console, partner, job["id"])
        _wait(browser, lambda d, row=row: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-status")
              == "completed", timeout=12)  # fmt: skip
        assert browser.execute_script("return window.notReloaded") is True, path


def test_live_figures_pause_while_the_tab_is_hidden(browser: WebDriver, console: Console) -> None:
    sign_in(browser, console, make_operator("viewer"))
    browser.get(console.url + "/console/")
    count = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/console/live/')).length"
    _wait(browser, lambda d: d.execute_script(count) >= 1, timeout=10)
    browser.execute_script(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    time.sleep(0.5)  # a refresh under way may still land
    hidden_at = browser.execute_script(count)
    time.sleep(9)
    assert browser.execute_script(count) == hidden_at
    browser.execute_script(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    _wait(browser, lambda d: d.execute_script(count) > hidden_at, timeout=3)  # at once on return


def test_filters_narrow_the_jobs(browser: WebDriver, console: Console) -> None:
    partner = make_partner("browser filters")
    queued = waiting_job(partner)
    done = wait_finished(console, partner, submit_businesses(console, partner, [{"name": "F"}])["id"])["id"]
    sign_in(browser, console, make_operator("viewer"))
    browser.get(console.url + "/console/jobs")
    Select(browser.find_element(By.ID, "filter-partner")).select_by_value(partner.partner_id)
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    _wait(browser, lambda d: f"partner={partner.partner_id}" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr[data-job-id]")
    assert [r.get_attribute("data-job-id") for r in rows] == [done, queued]

    Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("queued")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    _wait(browser, lambda d: "status=queued" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr[data-job-id]")
    assert [r.get_attribute("data-job-id") for r in rows] == [queued]
    assert Select(browser.find_element(By.ID, "filter-status")).first_selected_option.text == "queued"

    Select(browser.find_element(By.ID, "filter-type")).select_by_value("customers")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    _wait(browser, lambda d: "type=customers" in d.current_url)
    assert browser.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr[data-job-id]") == []

    finder = browser.find_element(By.ID, "find-job")
    finder.clear()
    finder.send_keys(done)
    browser.find_element(By.CSS_SELECTOR, "form.find button[type=submit]").click()
    _wait(browser, lambda d: d.current_url == f"{console.url}/console/jobs/{done}")


def test_a_jobs_page_and_its_downloads_agree_with_the_api(browser: WebDriver, console: Console) -> None:
    partner = make_partner("browser job page")
    job = wait_finished(console, partner, submit_businesses(console, partner, mixed_records(30, "bj"))["id"])
    sign_in(browser, console, make_operator("viewer"))
    browser.get(f"{console.url}/console/jobs/{job['id']}")
    shown = {
        cell.get_attribute("data-count"): int(cell.text)
        for cell in browser.find_elements(By.CSS_SELECTOR, "[data-count]")
    }
    assert shown == job["counts"]
    progress = browser.find_element(By.CSS_SELECTOR, ".job-status progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == str(job["counts"]["total"])
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-chunk]")
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-error-code]")

    with partner_client(console, partner) as client:
        expected = client.get(
            f"/jobs/{job['id']}/results", params={"outcome": "failed"}, headers={"Accept": "application/x-ndjson"}
        ).text
    failed_rows = browser.find_elements(By.CSS_SELECTOR, "table.results tr[data-index]")
    assert [int(r.get_attribute("data-index") or -1) for r in failed_rows] == [
        orjson.loads(line)["index"] for line in expected.splitlines()
    ]
    links = {a.text: a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, ".downloads a")}
    assert set(links) == {"NDJSON", "CSV"}
    ndjson_url = browser.find_element(By.CSS_SELECTOR, ".downloads a[href*='ndjson?outcome=failed']").get_attribute(
        "href"
    )
    csv_url = browser.find_element(By.CSS_SELECTOR, ".downloads a[href*='csv?outcome=failed']").get_attribute("href")
    fetch = "const [url, done] = arguments; fetch(url).then(r => r.text()).then(done, e => done('error ' + e))"
    assert browser.execute_async_script(fetch, ndjson_url) == expected
    csv_text = browser.execute_async_script(fetch, csv_url)
    assert (
        csv_text.splitlines()[0] == "index,outcome,id,external_id,changed_fields,error_codes,error_paths,error_messages"
    )
    assert len(csv_text.splitlines()) == job["counts"]["failed"] + 1


def test_an_admin_cancels_in_the_browser_and_a_viewer_is_refused(browser: WebDriver, console: Console) -> None:
    partner = make_partner("browser cancel")
    kept, cancelled = waiting_job(partner), waiting_job(partner)

    sign_in(browser, console, make_operator("viewer"))
    browser.get(f"{console.url}/console/jobs/{kept}")
    button = browser.find_element(By.XPATH, "//button[normalize-space()='Cancel job']")
    assert not button.is_enabled()
    browser.execute_script("document.querySelector('form[action$=\"/cancel\"]').submit()")
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == "Forbidden")
    assert "Only an admin" in browser.page_source
    assert _api_job(console, partner, kept)["status"] == "queued"

    sign_in(browser, console, make_operator("admin"))
    browser.get(f"{console.url}/console/jobs/{cancelled}")
    browser.find_element(By.XPATH, "//button[normalize-space()='Cancel job']").click()
    _wait(browser, lambda d: "notice=cancelled" in d.current_url)
    assert "Cancel requested" in browser.find_element(By.CSS_SELECTOR, "[role=status].alert").text
    assert _api_job(console, partner, cancelled)["status"] == "cancelled"
    assert browser.find_element(By.CSS_SELECTOR, '[data-count="cancelled"]').text == "5"
    assert _api_job(console, partner, kept)["status"] == "queued"


def test_a_forged_csrf_token_is_refused_in_the_browser(browser: WebDriver, console: Console) -> None:
    partner = make_partner("browser csrf")
    job_id = waiting_job(partner)
    sign_in(browser, console, make_operator("admin"))
    browser.get(f"{console.url}/console/jobs/{job_id}")
    browser.execute_script(
        "document.querySelector('form[action$=\"/cancel\"] input[name=csrf_token]').value = 'forged'"
    )
    browser.find_element(By.XPATH, "//button[normalize-space()='Cancel job']").click()
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == "Forbidden")
    assert "security token" in browser.page_source
    assert _api_job(console, partner, job_id)["status"] == "queued"


def test_pages_fit_a_phone_and_every_control_is_labelled(browser: WebDriver, console: Console) -> None:
    partner = make_partner("browser phone")
    job_id = waiting_job(partner)
    sign_in(browser, console, make_operator("admin"))
    pages = [
        "/console/",
        "/console/jobs",
        f"/console/jobs/{job_id}",
        "/console/partners",
        f"/console/partners/{partner.partner_id}",
    ]
    unlabelled = """
        return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
            .filter(e => !e.getAttribute('aria-label') && !(e.id && document.querySelector(`label[for="${e.id}"]`)))
            .map(e => e.outerHTML)"""
    try:
        for width in (1280, 390):
            browser.set_window_size(width, 900)
            for path in pages:
                browser.get(console.url + path)
                assert browser.execute_script(unlabelled) == [], path
                overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, (width, path, overflow)
                assert browser.find_element(By.TAG_NAME, "main").is_displayed()
    except WebDriverException:
        raise
    finally:
        browser.set_window_size(1280, 1000)
