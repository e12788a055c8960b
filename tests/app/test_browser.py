"""The app in a real headless browser (Debian's Chromium + chromedriver, driven by Selenium): upload a PNG and a
DICOM, read the predicted class from the page, switch the head selector, open a false positive in the split
browser, and see an undecodable upload answered in the page. Screenshots go to test-artifacts/app/ (or
$FPTPLUS_TEST_ARTIFACTS/app). Skips when Chromium, chromedriver or Selenium is absent; `.ci/run` installs them."""

from __future__ import annotations

import csv
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from fptplus.app import AppService, serve
from imagegen import make_dicom
from runhelp import trained_tiny_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Chromium / chromedriver not installed")
ARTIFACTS = Path(os.environ.get("FPTPLUS_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "app"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(run):
    httpd = serve(AppService(run, decision="argmax"), port=0, max_upload=2_000_000, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


def test_upload_switch_head_and_open_a_false_positive(browser, page, run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 60)
    browser.get(page)
    wait.until(lambda d: "fpt_plus" in d.find_element(By.ID, "runinfo").text)
    png = run.parent / "data" / "neg" / "img1.png"
    dicom = make_dicom(tmp_path / "scan.dcm", np.random.default_rng(1).integers(0, 4096, (40, 40)))
    upload = browser.find_element(By.ID, "files")
    upload.send_keys(str(png))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result .prediction"))
    upload.send_keys(str(dicom))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result .prediction")) == 2)
    predicted = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .result .prediction")]
    assert all(p in ("neg", "pos") for p in predicted)
    assert browser.find_element(By.ID, "tokens").get_attribute("src").startswith("data:image/png")
    browser.save_screenshot(str(ARTIFACTS / "1-uploaded.png"))

    Select(browser.find_element(By.ID, "head")).select_by_visible_text("head 2")
    wait.until(lambda d: "head 2" in d.find_element(By.ID, "viewer-info").text)
    browser.save_screenshot(str(ARTIFACTS / "2-head-2.png"))

    with open(run / "predictions_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    false_pos = [r["path"] for r in rows if float(r["p_pos"]) > float(r["p_neg"]) and r["label"] == "neg"]
    assert false_pos, "the fixture run must make a false positive for this test"
    Select(browser.find_element(By.ID, "split-show")).select_by_value("fp")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#split-table .split-row")) == len(false_pos))
    first = browser.find_elements(By.CSS_SELECTOR, "#split-table .split-row")[0]
    shown_path = first.find_elements(By.TAG_NAME, "td")[0].text
    assert shown_path in false_pos
    first.click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "viewer-title"), f"test: {shown_path}"))
    assert browser.find_element(By.ID, "viewer-prediction").text == "pos"  # a false positive: predicted positive
    browser.save_screenshot(str(ARTIFACTS / "3-false-positive.png"))

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    upload.send_keys(str(broken))
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "broken.png" in browser.find_element(By.ID, "error").text
    assert "Traceback" not in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "4-undecodable.png"))


HOSTILE_CLASS = 'neg<img src=x onerror="window.__pwned=1">'
HOSTILE_FILE = '<img src=x onerror="window.__pwned=2"> 3.png'


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory):
    """A run whose class name and a test file name are HTML that runs script when inserted as markup."""
    from fptplus.cli import main
    from imagegen import save, write_csv
    from runhelp import tiny_weights, train_args

    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    rows = []
    for label in (HOSTILE_CLASS, "pos"):
        for i, split in enumerate(["train"] * 6 + ["val"] * 2 + ["test"] * 2):
            name = HOSTILE_FILE if (label == "pos" and i == 9) else f"img{i}.png"
            save(root / "data" / f"c{int(label == 'pos')}" / name, rng.integers(0, 255, (48, 48, 3)).astype(np.uint8))
            rows.append({"path": f"c{int(label == 'pos')}/{name}", "label": label, "split": split})
    data = write_csv(root / "data" / "labels.csv", rows, ["path", "label", "split"])
    assert main(train_args(data, root / "run", tiny_weights(root), "--epochs", "1")) == 0
    httpd = serve(AppService(root / "run", decision="argmax"), port=0, max_upload=2_000_000, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/", root
    httpd.shutdown()
    httpd.server_close()


def test_names_from_the_data_are_shown_as_text_never_run(browser, hostile_page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = hostile_page
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    wait.until(lambda d: "fpt_plus" in d.find_element(By.ID, "runinfo").text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#split-table .split-row"))
    upload = browser.find_element(By.ID, "files")
    upload.send_keys(str(root / "data" / "c1" / HOSTILE_FILE))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result .prediction"))
    cells = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#split-table td")]
    assert f"c1/{HOSTILE_FILE}" in cells  # the file name, as text
    assert HOSTILE_CLASS in browser.find_element(By.ID, "runinfo").text  # the class name, as text
    assert HOSTILE_FILE in browser.find_element(By.ID, "results").text
    assert browser.execute_script("return window.__pwned === undefined")  # no injected handler ran
    assert not browser.find_elements(By.CSS_SELECTOR, "img[src='x']")  # and no element was created from markup
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "5-hostile-names.png"))
