"""`fptplus app` latency in a real browser: page load, then the first prediction of an uploaded image.

    .venv/bin/python benchmarks/app/latency.py runs/demo/fpt_plus IMAGE [IMAGE ...] [--screenshot docs/app.png]

Starts the app on RUN (the run is loaded first, as `fptplus app` does before serving), opens headless Chromium,
and times (a) the page load with the run's info, (b) for each image, upload -> prediction shown in the page, and
(c) a head switch (re-rendered overlays, no new forward pass). Needs Chromium, chromedriver and Selenium.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from fptplus.app import AppService, serve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    t0 = time.perf_counter()
    service = AppService(args.run)
    loaded = time.perf_counter() - t0
    httpd = serve(service, port=0, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    wait = WebDriverWait(driver, 120)
    try:
        t = time.perf_counter()
        driver.get(f"http://127.0.0.1:{httpd.server_port}/")
        wait.until(lambda d: service.ex.cfg.method in d.find_element(By.ID, "runinfo").text)
        page = time.perf_counter() - t
        print(f"run loaded (checkpoint, model) in {loaded:.2f} s before serving; page + run info: {page:.2f} s")
        upload = driver.find_element(By.ID, "files")
        for k, image in enumerate(args.images):
            t = time.perf_counter()
            upload.send_keys(image)
            wait.until(lambda d, n=k + 1: len(d.find_elements(By.CSS_SELECTOR, "#results .result .prediction")) == n)
            shown = driver.find_elements(By.CSS_SELECTOR, "#results .result .prediction")[0].text
            print(f"upload -> prediction shown ({'first' if k == 0 else 'next'}): {time.perf_counter() - t:.2f} s"
                  f"  [{image}: {shown}]")  # fmt: skip
        if service.ex.fpt:
            t = time.perf_counter()
            Select(driver.find_element(By.ID, "head")).select_by_visible_text("head 1")
            wait.until(lambda d: "head 1" in d.find_element(By.ID, "viewer-info").text)
            print(f"head switch -> overlays re-rendered: {time.perf_counter() - t:.2f} s")
        if args.screenshot:
            Select(driver.find_element(By.ID, "head")).select_by_visible_text("all heads")
            wait.until(lambda d: "all heads" in d.find_element(By.ID, "viewer-info").text)
            driver.save_screenshot(args.screenshot)
            print(f"screenshot: {args.screenshot}")
    finally:
        driver.quit()
        httpd.shutdown()


if __name__ == "__main__":
    main()
