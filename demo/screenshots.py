"""Refresh the README's screenshots from the demo, in a real Chromium.

    .venv/bin/python -m demo.screenshots [--port 8799] [--warmup 90]

Starts the demo (``demo/run.py``: embedded Redis, a worker, beat, the monitor,
the producer) in a data directory of its own, lets it make live data for
``--warmup`` seconds, then logs in with Playwright and Debian's Chromium and
writes docs/screenshots/: the overview in light and in dark, the dead-letter
console, a dead letter, and a queue's page. Nothing here is for production.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback URL
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the demo did not answer at {url} within {timeout:.0f} s")


def shoot(base: str, username: str, password: str) -> list[Path]:
    from playwright.sync_api import ViewportSize, sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium on PATH (apt-get install chromium)")
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-background-networking"]
        )
        for scheme in ("light", "dark"):
            page = browser.new_page(
                viewport=ViewportSize(width=1280, height=860), color_scheme=scheme
            )
            page.goto(f"{base}/login/")
            page.fill("input[name=username]", username)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            page.wait_for_load_state("networkidle")
            shots = [("overview" if scheme == "light" else "overview-dark", "/")]
            if scheme == "light":
                shots += [("deadletters", "/deadletters/"), ("queue", "/queues/default/")]
            for name, path in shots:
                page.goto(f"{base}{path}")
                page.wait_for_load_state("networkidle")
                target = OUT / f"{name}.png"
                page.screenshot(path=str(target))
                written.append(target)
            if scheme == "light":
                page.goto(f"{base}/deadletters/")
                page.locator("table a[href^='/deadletters/']").first.click()
                page.wait_for_load_state("networkidle")
                target = OUT / "deadletter.png"
                page.screenshot(path=str(target))
                written.append(target)
            page.close()
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--warmup", type=float, default=90.0, help="seconds of live data first")
    options = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="ops-screenshots-"))
    env = {**os.environ, "DATA_DIR": str(data)}
    env.pop("CELERY_BROKER_URL", None)  # the demo's own Redis
    demo = subprocess.Popen(
        [sys.executable, "-m", "demo.run", "--port", str(options.port), "--interval", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{options.port}"
        wait_for(f"{base}/healthz", timeout=120)
        print(f"the demo runs at {base}; {options.warmup:.0f} s of live data first", flush=True)
        time.sleep(options.warmup)  # live data to show: this waits for a clock, on purpose
        username, password = (data / "demo-login.txt").read_text().strip().split(":", 1)
        OUT.mkdir(parents=True, exist_ok=True)
        for path in shoot(base, username, password):
            print(f"wrote {path.relative_to(ROOT)}", flush=True)
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
