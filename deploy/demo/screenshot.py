"""Take a screenshot of a learner's workspace for the README.

Opens the workspace address in headless Chromium, logs in, waits until the editor
shows the welcome README, and saves a PNG.

Usage:
    PLATFORMCTL_WORKSPACE_PASSWORD=... python deploy/demo/screenshot.py URL [OUT]
    python deploy/demo/screenshot.py URL [OUT] < file-holding-the-password

OUT defaults to docs/screenshot.png. The password is read from the environment
variable, or else from the first line of standard input (a prompt on a terminal),
and never from the arguments, which every user of the machine can see.

Needs Debian's chromium and chromium-driver (apt-get install chromium
chromium-driver) and Selenium in the interpreter that runs this: `pip install
selenium` into the venv, or `apt-get install python3-selenium` and Debian's
python3. Chromium is started with a new, empty profile that is deleted afterwards.
"""

import getpass
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver import ChromeOptions
    from selenium.webdriver.remote.webdriver import WebDriver

PASSWORD_ENV = "PLATFORMCTL_WORKSPACE_PASSWORD"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1400, 800
EDITOR_TIMEOUT = 90.0
# The Markdown preview renders in a webview after its tab appears.
SETTLE_SECONDS = 4.0
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"


class ScreenshotError(Exception):
    """A step failed; the message says which and why."""


def read_password() -> str:
    """The workspace password, from the environment or standard input."""
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        if sys.stdin.isatty():
            password = getpass.getpass("workspace password: ")
        else:
            password = sys.stdin.readline()
    password = password.strip()
    if not password:
        raise ScreenshotError(
            f"no password: set {PASSWORD_ENV} or give it on standard input"
        )
    return password


def chromium_options(profile: str) -> "ChromeOptions":
    """Chromium's options: headless, quiet, with a fresh profile."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(flag)
    return options


def fit_viewport(driver: "WebDriver") -> None:
    """Size the window so that the page itself is WIDTH x HEIGHT.

    --window-size counts Chromium's own frame too, even when headless.
    """
    inner_width, inner_height = driver.execute_script(
        "return [window.innerWidth, window.innerHeight]"
    )
    outer = driver.get_window_size()
    driver.set_window_size(
        outer["width"] + WIDTH - inner_width, outer["height"] + HEIGHT - inner_height
    )


def take(url: str, password: str, out: Path) -> None:
    """Log in to the workspace at url and save the editor as a PNG at out."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="platformctl-chromium-")
    try:
        driver = webdriver.Chrome(
            service=Service(CHROMEDRIVER), options=chromium_options(profile)
        )
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        first = (exc.msg or type(exc).__name__).splitlines()[0]
        raise ScreenshotError(f"cannot start Chromium: {first}") from None

    try:
        fit_viewport(driver)
        driver.get(url)
        wait = WebDriverWait(driver, EDITOR_TIMEOUT, poll_frequency=0.5)
        try:
            field = wait.until(seen.presence_of_element_located((By.NAME, "password")))
        except TimeoutException:
            raise ScreenshotError(f"no login form at '{url}'") from None
        field.send_keys(password)
        field.submit()

        workbench = (By.CSS_SELECTOR, ".monaco-workbench")
        readme_tab = (By.CSS_SELECTOR, ".tabs-container .tab[aria-label*='README']")
        try:
            # code-server answers a wrong password with its login page again.
            wait.until(
                lambda d: d.find_elements(*workbench) or "Incorrect" in d.page_source
            )
            if not driver.find_elements(*workbench):
                raise ScreenshotError(f"'{url}' refused the password")
            wait.until(seen.presence_of_element_located(readme_tab))
        except TimeoutException:
            raise ScreenshotError(
                f"the editor with the README did not appear at '{url}' within"
                f" {EDITOR_TIMEOUT:.0f} s"
            ) from None

        time.sleep(SETTLE_SECONDS)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(out)):
            raise ScreenshotError(f"Chromium could not write '{out}'")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    """Parse the arguments, take the screenshot, print where it went."""
    if len(sys.argv) not in (2, 3) or sys.argv[1].startswith("-"):
        sys.exit(f"usage: {PASSWORD_ENV}=... {sys.argv[0]} URL [OUT]")
    url = sys.argv[1]
    out = Path(sys.argv[2]) if len(sys.argv) == 3 else DEFAULT_OUT
    try:
        import selenium  # noqa: F401
    except ImportError:
        sys.exit(
            "screenshot.py: Selenium is missing; run: pip install selenium"
            " (or apt-get install python3-selenium and use /usr/bin/python3)"
        )

    try:
        take(url, read_password(), out)
    except ScreenshotError as exc:
        sys.exit(f"screenshot.py: {exc}")
    print(out)


if __name__ == "__main__":
    main()
