"""Browser plumbing for tests of aft-bench's HTML pages: a headless Chromium driven by Selenium.

The browser is the system's Chromium with its matching chromedriver (Debian: ``apt-get install -y chromium
chromium-driver``; ``$AFT_BENCH_CHROMIUM`` / ``$AFT_BENCH_CHROMEDRIVER`` name other binaries). Selenium is pointed at
that chromedriver explicitly, so Selenium Manager never tries to download one. Where the browser, its driver or
Selenium is missing, :func:`require_browser` skips the test with a message naming what is missing and how to
install it, unless ``$AFT_BENCH_REQUIRE_BROWSER`` is set (the README's test command, so CI sets it): then the
test fails instead of skipping.

Use it from a test module (a fixture made by :func:`browser_fixture` and assigned to a module name)::

    from browser import Browser, browser_fixture

    browser = browser_fixture()

    def test_page(browser: Browser, tmp_path) -> None:
        browser.open(page)
        browser.screenshot(tmp_path / "page.png")
        assert browser.console_errors() == []
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("install them with `apt-get install -y chromium chromium-driver` and `pip install -e '.[test]'` "
                "(see the README's test command)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _binary(variable: str, names: tuple[str, ...]) -> str | None:
    """The executable that ``$variable`` names, else the first of ``names`` on PATH (None if there is none)."""
    chosen = os.environ.get(variable)
    if chosen:
        return chosen if os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    return next(filter(None, map(shutil.which, names)), None)


def find_browser() -> tuple[str | None, str | None, list[str]]:
    """The Chromium binary, its chromedriver, and what is missing (empty when both and Selenium are there)."""
    chromium = _binary("AFT_BENCH_CHROMIUM", CHROMIUM_NAMES)
    driver = _binary("AFT_BENCH_CHROMEDRIVER", ("chromedriver",))
    missing = [] if chromium else [f"a Chromium browser ({' / '.join(CHROMIUM_NAMES)} on PATH, or "
                                   "$AFT_BENCH_CHROMIUM)"]
    missing += [] if driver else ["chromedriver (on PATH, or $AFT_BENCH_CHROMEDRIVER)"]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return chromium, driver, missing


def require_browser() -> tuple[str, str]:
    """The Chromium and chromedriver paths; skips the test, naming what is missing, where there are none."""
    chromium, driver, missing = find_browser()
    if missing or chromium is None or driver is None:
        message = f"no browser to test the page in: missing {', '.join(missing)}; {INSTALL_HINT}"
        if os.environ.get("AFT_BENCH_REQUIRE_BROWSER"):
            pytest.fail(f"{message} ($AFT_BENCH_REQUIRE_BROWSER is set: the browser tests must run)")
        pytest.skip(message)
    return chromium, driver


class Browser:
    """A headless Chromium session: open a file, click, type, read the page, take screenshots, check downloads.

    Attributes:
        driver: The Selenium WebDriver. downloads: The folder downloads land in.
    """

    def __init__(self, driver: Any, downloads: Path) -> None:
        self.driver = driver
        self.downloads = downloads

    def open(self, path: Path) -> None:
        """Loads the local file ``path`` (a ``file://`` URL)."""
        self.driver.get(path.resolve().as_uri())

    def find(self, css: str) -> Any:
        """The first element matching the CSS selector ``css``."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        """Every element matching ``css``."""
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def script(self, code: str, *args: Any) -> Any:
        """Runs JavaScript ``code`` in the page (``arguments[i]`` are ``args``) and returns its result."""
        return self.driver.execute_script(code, *args)

    def press(self, *keys: str) -> None:
        """Sends keys to whatever has the focus (``"1"``, ``Keys.TAB``, ``Keys.ENTER``, ...)."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def focused(self) -> str:
        """The id (else the tag name) of the element that has the keyboard focus."""
        return self.script("const e = document.activeElement; return e ? (e.id || e.tagName.toLowerCase()) : '';")

    def tab_order(self, limit: int = 40) -> list[str]:
        """The ids of the elements the Tab key visits from the top of the page, in order, until the focus returns
        to the first one (at most ``limit`` presses)."""
        from selenium.webdriver.common.keys import Keys

        self.script("document.activeElement && document.activeElement.blur(); window.focus();")
        visited: list[str] = []
        for _ in range(limit):
            self.press(Keys.TAB)
            current = self.focused()
            if visited and current == visited[0]:
                break
            visited.append(current)
        return visited

    def screenshot(self, path: Path) -> Path:
        """Saves a PNG screenshot of the whole window to ``path`` and returns it.

        Raises:
            AssertionError: If no non-empty PNG was written.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(path)), f"the browser wrote no screenshot to {path}"
        assert is_png(path), f"{path} is not a non-empty PNG"
        return path

    def console_errors(self) -> list[str]:
        """The browser console's errors since the last call (JavaScript exceptions, failed loads)."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry.get("level") == "SEVERE"]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
        """Polls ``condition`` until it returns something truthy, and returns that.

        Raises:
            AssertionError: After ``timeout`` seconds.
        """
        end = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def downloaded(self, name: str, timeout: float = 10.0) -> Path:
        """The file ``name`` in the downloads folder, once the browser has finished writing it."""
        path = self.downloads / name
        return self.wait_for(lambda: path if path.is_file() and path.stat().st_size else None, timeout,
                             f"the download {path}")


def is_png(path: Path) -> bool:
    """Whether ``path`` is a non-empty PNG file (by its signature)."""
    return path.is_file() and path.stat().st_size > len(PNG_SIGNATURE) and path.read_bytes()[:8] == PNG_SIGNATURE


@contextlib.contextmanager
def launch(downloads: Path, width: int = 1280, height: int = 1000) -> Iterator[Browser]:
    """A headless Chromium (skipping the test if there is none) whose downloads go to ``downloads``.

    The window is ``width`` x ``height`` pixels; the console is logged at every level for
    :meth:`Browser.console_errors`. The browser is closed on exit.
    """
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        yield Browser(driver, downloads)
    finally:
        driver.quit()


def browser_fixture(scope: str = "module") -> Any:
    """A pytest fixture giving a :class:`Browser` launched once per ``scope`` (downloads to a fresh temporary folder),
    skipping where there is no browser; assign it to a name in a test module: ``browser = browser_fixture()``."""

    @pytest.fixture(scope=scope)
    def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
        with launch(tmp_path_factory.mktemp("downloads")) as opened:
            yield opened

    return browser
