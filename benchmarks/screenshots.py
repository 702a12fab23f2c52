"""Screenshots of the console for the docs: the overview and a job's page, in headless Chromium.

    python -m benchmarks.screenshots --url URL --username NAME --password SECRET --job JOB_ID [--out docs]

`make console-screenshots` takes them on the benchmark's data (benchmarks/console.py --screenshots docs), which
writes docs/console-overview.png and docs/console-job.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH = 1280
MAX_HEIGHT = 1500


def browser() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WIDTH},900",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def shoot(driver: WebDriver, url: str, path: Path) -> None:
    """The page at `url`, as tall as its content (at most MAX_HEIGHT), once its live figures refreshed."""
    driver.set_window_size(WIDTH, 900)
    driver.get(url)
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.CSS_SELECTOR, "main h1"))
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(WIDTH, min(MAX_HEIGHT, height))
    time.sleep(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def take(*, url: str, username: str, password: str, job_id: str, out: Path) -> list[Path]:
    """Sign in and take the overview's and the job's screenshots into `out`; the paths written."""
    driver = browser()
    try:
        driver.get(url + "/console/login")
        driver.find_element(By.NAME, "username").send_keys(username)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        WebDriverWait(driver, 15).until(lambda d: d.current_url.rstrip("/").endswith("/console"))
        # The overview's workers are asked in the background: give the first answer time to arrive.
        driver.get(url + "/console/")
        time.sleep(5)
        written = [out / "console-overview.png", out / "console-job.png"]
        shoot(driver, url + "/console/", written[0])
        shoot(driver, f"{url}/console/jobs/{job_id}", written[1])
        return written
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="screenshots", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", required=True, help="the service's base URL")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--job", required=True, help="the job whose page to take")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where to write the PNG files (default docs)")
    args = parser.parse_args(argv)
    for path in take(url=args.url, username=args.username, password=args.password, job_id=args.job, out=args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
