"""The web app in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

Screenshots go to results/web/. Skipped where Chromium, its driver, Gradio or Selenium
is missing (`make browser` installs the first two where apt-get is available).
"""

from __future__ import annotations

import gc
import re
import shutil
import socket
import warnings
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the web app needs gradio: pip install 'kbfm[web]'")
pytest.importorskip("selenium", reason="browser tests need selenium: pip install 'kbfm[web]'")

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from kbfm.web import serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "results" / "web"

pytestmark = [
    pytest.mark.slow,
    # Gradio and uvicorn leave asyncio event loops and their socket pairs for the garbage
    # collector (inside gradio's own launch, before any kbfm code runs); the only
    # ResourceWarning exception in the suite, and the fixture collects them before the
    # next module runs.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
        reason=f"no Chromium at {CHROMIUM} or chromedriver at {CHROMEDRIVER} "
        "(Debian: apt-get install chromium chromium-driver, or `make browser`)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    running = serve(host="127.0.0.1", port=_free_port(), max_upload_mb=5, block=False)
    assert running.url.startswith("http://127.0.0.1:")
    yield running
    running.close()
    assert not running.store.root.exists()  # every temporary file is gone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()  # gradio's leftovers, before a test that treats them as errors


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait_text(driver, css: str, text: str, timeout: float = 180) -> str:
    """Wait until the element's text contains ``text``; return the text."""
    WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        lambda d: text in d.find_element(By.CSS_SELECTOR, css).text
    )
    return driver.find_element(By.CSS_SELECTOR, css).text


def _flat(text: str) -> str:
    """Page text on one line (inline code is laid out on lines of its own)."""
    return re.sub(r"\s*\n\s*", " ", text).replace(" :", ":")


def _wait_image(driver, css: str, timeout: float = 60) -> None:
    WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f"{css} img[src]")
    )


def _tab(driver, label: str) -> None:
    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{label}']").click()


def _shot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / name))


def test_demo_annotation_query_agent_and_download(server, browser):
    browser.get(server.url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "load-demo"))
    browser.find_element(By.ID, "load-demo").click()
    status = _wait_text(browser, "#kbfm-status", "651 observations")
    assert "spot coordinates and an H&E image" in status
    _wait_image(browser, "#tissue-plot")
    _wait_image(browser, "#umap-plot")
    _shot(browser, "01_data.png")

    _tab(browser, "Annotate")
    browser.find_element(By.ID, "annotate").click()
    _wait_text(browser, "#annotation-table", "CL:")
    links = browser.find_elements(By.CSS_SELECTOR, "#annotation-table a[href]")
    hrefs = [a.get_attribute("href") for a in links]
    assert "https://www.ebi.ac.uk/ols4/ontologies/cl/classes?obo_id=CL:0000236" in hrefs  # B cell
    assert "fibroblast" in browser.find_element(By.ID, "annotation-table").text
    _wait_image(browser, "#annotate-plot")
    _shot(browser, "02_annotate.png")

    _tab(browser, "Query")
    box = browser.find_element(By.CSS_SELECTOR, "#query-text textarea, #query-text input")
    box.send_keys("plasma cell")
    browser.find_element(By.ID, "query").click()
    summary = _flat(_wait_text(browser, "#query-summary", "Highest mean by"))
    assert "Highest mean by kbfm_celltype: plasma cell" in summary
    _wait_image(browser, "#query-plot")
    _shot(browser, "03_query.png")

    _tab(browser, "Agent")
    browser.find_element(By.ID, "ask").click()
    transcript = _flat(_wait_text(browser, "#transcript", "Answer:"))
    assert "Step 1: annotate_cell_types (ok)" in transcript
    assert "Step 3: plot_spatial (ok)" in transcript
    _shot(browser, "04_agent.png")

    _tab(browser, "Download")
    browser.find_element(By.ID, "download").click()
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#downloads a[download]")
    )
    links = browser.find_elements(By.CSS_SELECTOR, "#downloads a[download]")
    names = {a.get_attribute("download") for a in links}
    assert {"demo_lymph_node.kbfm.h5ad", "tissue_kbfm_celltype.png", "transcript.md"} <= names
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text


def test_corrupt_upload_shows_the_error_in_the_page(server, browser, tmp_path):
    bad = tmp_path / "corrupt.h5ad"
    bad.write_bytes(b"\x89HDF\r\n but then garbage" * 200)
    browser.get(server.url)
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]")
    )
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(bad))
    message = "'corrupt.h5ad' is not a readable .h5ad file"
    body = _wait_text(browser, "body", message, timeout=60)
    assert "Traceback" not in body
    assert "No data loaded yet" in browser.find_element(By.ID, "kbfm-status").text
    _shot(browser, "05_upload_error.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.h5ad"]
