"""The annotation page in headless Chromium, driven through selenium: ``benchmark_app.py`` beside
it imports it, and ``tests/test_app_browser.py`` loads it from this folder. Development tools,
not runtime needs: ``pip install selenium`` (the ``dev`` extra) and the Debian packages
``chromium chromium-driver`` (selenium then drives ``/usr/bin/chromedriver`` without
downloading anything).
"""
from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = ("chromedriver",)


def _which(names: Tuple[str, ...]) -> Optional[str]:
    return next((path for path in map(shutil.which, names) if path), None)


def missing() -> Optional[str]:
    """Why the browser cannot run here (None when it can)."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium, or the package's dev extra)"
    if _which(CHROMIUM) is None:
        return "no Chromium binary on PATH (apt-get install chromium)"
    if _which(CHROMEDRIVER) is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A headless Chromium selenium driver with a ``width`` x ``height`` window; quits on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    reason = missing()
    if reason:
        raise RuntimeError(f"cannot start Chromium: {reason}")
    options = webdriver.ChromeOptions()
    options.binary_location = _which(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(_which(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class AppPage:
    """The annotation page in ``driver``: waits, clicks in image pixels, reads what it shows."""

    def __init__(self, driver: Any, url: str, timeout: float = 120.0) -> None:
        self.driver = driver
        self.timeout = timeout
        driver.get(url)
        self.wait_idle()

    def requests(self) -> int:
        """How many requests the page has made so far."""
        return int(self.driver.execute_script("return Number(document.body.dataset.requests || 0);"))

    def wait_idle(self, after: int = 0) -> None:
        """Wait until the page has made more than ``after`` requests and every one is answered
        and drawn; an error the page shows is raised."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            made, busy, kind, text = self.driver.execute_script(
                "const s = document.getElementById('status'), d = document.body.dataset;"
                "return [Number(d.requests || 0), Number(d.pending || 0), s.dataset.state, s.textContent];")
            if kind == "error":
                raise AssertionError(f"the page shows an error: {text}")
            if made > after and busy == 0 and kind == "ready":
                return
            time.sleep(0.02)
        raise TimeoutError(f"the page did not settle within {self.timeout} s")

    def image_size(self) -> Tuple[int, int]:
        """(width, height) of the open image, full resolution."""
        return tuple(self.driver.execute_script("return [state.image.width, state.image.height];"))

    def click_image(self, x: float, y: float, positive: bool = True) -> None:
        """Click full-image pixel (x, y): left for positive, right for negative; waits for the mask."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        overlay = self.driver.find_element(By.ID, "overlay")
        width, height = self.image_size()
        rect = overlay.rect
        dx = round((x + 0.5) / width * rect["width"] - rect["width"] / 2)
        dy = round((y + 0.5) / height * rect["height"] - rect["height"] / 2)
        made = self.requests()
        chain = ActionChains(self.driver).move_to_element_with_offset(overlay, dx, dy)
        (chain.click() if positive else chain.context_click()).perform()
        self.wait_idle(made)

    def key(self, key: str) -> None:
        """Press ``key`` (``selenium.webdriver.common.keys.Keys`` for special keys), one that
        makes a request, and wait for its answer."""
        from selenium.webdriver.common.action_chains import ActionChains

        made = self.requests()
        ActionChains(self.driver).send_keys(key).perform()
        self.wait_idle(made)

    def objects(self) -> List[Dict[str, Any]]:
        """The instance list as shown: id, area (working-size pixels), clicks, current."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#object-list li')].map(li => ({id: Number(li.dataset.id), "
            "area: Number(li.dataset.area), clicks: Number(li.dataset.clicks), "
            "current: li.classList.contains('current')}));")

    def mask_pixels(self) -> int:
        """Pixels drawn on the overlay canvas (masks and click markers)."""
        return self.driver.execute_script(
            "const c = document.getElementById('overlay'); const data = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++; return n;")

    def latency(self) -> Dict[str, float]:
        """The last click-to-mask time the page shows (``ms``), the model's and the server's
        shares (``model_ms``, ``server_ms``) and how many clicks it has timed (``count``)."""
        data = self.driver.execute_script("return {...document.getElementById('latency').dataset};")
        return {"ms": float(data.get("ms", "nan")), "model_ms": float(data.get("modelMs", "nan")),
                "server_ms": float(data.get("serverMs", "nan")), "count": int(data.get("count", 0))}

    def status(self) -> str:
        """The text of the page's status line."""
        return self.driver.execute_script("return document.getElementById('status').textContent;")
