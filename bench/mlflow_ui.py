"""The MLflow UI as a user opens it: `mlflow server` over a store on a free localhost port, a
headless Chromium (selenium) on it, and the experiment page switched to its runs table.
Used by tests/test_analysis_store.py (the UI shows the trials) and bench/study_scale.py (how
long the page takes at the study's size)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1920,1080",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(tracking_uri: str, log: Path, timeout: float = 180) -> Iterator[str]:
    """`mlflow server` (one worker) over `tracking_uri` on 127.0.0.1; yields its URL once
    /health answers; its log goes to `log`. RuntimeError if it dies or never answers."""
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    port = free_port()
    cmd = [mlflow, "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1"]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*cmd, "--port", str(port), "--workers", "1"],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/health", timeout=5).status == 200:
                        break
                except OSError:
                    if server.poll() is not None:
                        raise RuntimeError(
                            f"mlflow server died: {log.read_text()[-3000:]}"
                        ) from None
                    if time.time() > deadline:
                        raise RuntimeError(f"mlflow server did not answer in {timeout} s") from None
                    time.sleep(1)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers
            server.wait(timeout=30)


def have_chromium() -> str | None:
    """None if a headless Chromium can run here, else why not."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "chromium + chromedriver not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install selenium)"
    return None


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium webdriver with its profile in `profile`; quit on exit."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def visible(driver: Any, xpath: str) -> list:
    from selenium.webdriver.common.by import By

    return [e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()]


def click(driver: Any, element: object) -> None:
    """A JS click: MLflow's onboarding popovers overlay the elements."""
    driver.execute_script("arguments[0].click()", element)


def open_runs_table(driver: Any, url: str, experiment_id: str, wait: Any) -> None:
    """Open the experiment's page and switch to its runs table: a fresh browser opens MLflow
    3 on the GenAI view of an experiment (traces, no runs); a user clicks "Model training"."""
    driver.get(f"{url}/#/experiments/{experiment_id}")
    xpath = "//*[normalize-space(text())='Model training']"
    click(driver, wait.until(lambda d: visible(d, xpath))[0])
