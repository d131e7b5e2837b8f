"""Joining a Ray cluster that refuses us (`--address` / RAY_ADDRESS): nothing listening at the
address, or a real token-auth head (Ray 2.60: RAY_AUTH_MODE=token) that the driver's token does
not open. Each is exit 2 with one message naming the address and the fix, within seconds, and
before the MLflow store or the storage folder is touched. The drivers run as subprocesses, with
their own environment: this process's Ray and auth settings are left as they were."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench.mlflow_ui import free_port
from tests.test_sweep import write_space

LIMIT = 60  # seconds: far above a clean failure (a few s past start-up), far below Ray's hang
AUTH_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# A head with token auth: ray.init starts it (all ports picked free), prints its GCS address,
# and keeps it until stdin closes.
HEAD = """
import sys, ray
ray.init(num_cpus=1, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
"""


def clean_env(tmp_path: Path, ray_tmp: Path, **extra: str) -> dict[str, str]:
    """This process's environment without Ray's address and auth settings, a HOME without
    ~/.ray/auth_token and a private Ray temp folder (no `ray start` cluster to find)."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    (tmp_path / "home").mkdir(exist_ok=True)
    return env | {"HOME": str(tmp_path / "home"), "RAY_TMPDIR": str(ray_tmp), **extra}


def sweep(path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the sweep driver; a driver still waiting after LIMIT s fails the test (killed)."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "raywae.sweep", str(path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    return done, time.monotonic() - start


def refused(done: subprocess.CompletedProcess, took: float, folder: Path, *phrases: str) -> None:
    """Exit 2 in time, one error line holding every phrase, no traceback, no store touched."""
    err = done.stderr
    assert done.returncode == 2, err[-3000:]
    assert took < LIMIT
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert all(p in line for p in phrases), line
    assert "Traceback" not in err, err[-3000:]
    assert not (folder / "runs").exists() and not (folder / "mlruns" / "mlflow.db").exists()


@pytest.fixture
def ray_tmp():
    path = Path(tempfile.mkdtemp(prefix="rw-", dir="/tmp"))  # Ray's socket paths stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("via", ["--address", "RAY_ADDRESS"])
def test_address_where_nothing_listens_exits_2_at_once(
    tmp_path: Path, ray_tmp: Path, via: str
) -> None:
    address = f"127.0.0.1:{free_port()}"  # bound, then closed: nothing listens there now
    path = write_space(tmp_path, "nobody", arms={"beta_vae": {}})
    if via == "--address":
        done, took = sweep(path, clean_env(tmp_path, ray_tmp), "--address", address)
    else:
        done, took = sweep(path, clean_env(tmp_path, ray_tmp, RAY_ADDRESS=address))
    refused(done, took, tmp_path, address, via, "nothing is listening", "ray start --head")


@pytest.fixture
def token_head(tmp_path: Path, ray_tmp: Path):
    """A real Ray head on this host that requires the token it yields (its own process
    group: every Ray process it started is killed at the end, whatever the test did)."""
    token = secrets.token_hex(32)
    env = clean_env(tmp_path, ray_tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address, token
    finally:
        head.stdin.close()  # the head shuts Ray down and exits
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # whatever of its Ray is left
        except ProcessLookupError:
            pass


def test_cluster_refusing_our_token_exits_2_naming_the_fix(
    tmp_path: Path, ray_tmp: Path, token_head: tuple[str, str]
) -> None:
    address, token = token_head
    path = write_space(tmp_path, "refused", arms={"beta_vae": {}})
    wrong = clean_env(tmp_path, ray_tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token[::-1])
    done, took = sweep(path, wrong, "--address", address)
    refused(done, took, tmp_path, address, "refused", "token", "RAY_AUTH_TOKEN", "auth_token")
    # No RAY_AUTH_MODE here: a driver joining by address then sends no token at all.
    done, took = sweep(path, clean_env(tmp_path, ray_tmp), "--address", address)
    refused(done, took, tmp_path, address, "refused", "RAY_AUTH_MODE=token")
    # The right token joins (a reachable cluster still works): the sweep goes on to the next
    # check, the cluster's nodes (its one CPU cannot hold a 64-CPU trial).
    right = clean_env(tmp_path, ray_tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    done, _ = sweep(path, right, "--address", address, "--set", "resources.cpu=64")
    assert done.returncode == 2 and "no node of the Ray cluster has that" in done.stderr, (
        done.stderr[-3000:]
    )
