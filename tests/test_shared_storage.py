"""A sweep on shared storage, as on a cluster: Tune's folder in S3 (a real S3 API: moto's
server on localhost), one `mlflow server` process (sqlite backend, artifacts proxied to the
same bucket); interrupted, resumed from S3, read back through the server's API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from moto.server import ThreadedMotoServer

from bench.mlflow_ui import free_port
from raywae.sweep import main
from tests.test_multinode import PLACED
from tests.test_sweep import write_space

BUCKET = "raywae-test"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    """An S3 endpoint on localhost with one bucket; the AWS variables every process inherits
    (pyarrow, which Tune writes through, and boto3 read AWS_ENDPOINT_URL)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


@pytest.fixture
def mlflow_server(tmp_path: Path, s3: object):
    """`mlflow server` on localhost: runs in sqlite, artifacts proxied to s3://BUCKET/mlflow."""
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", f"s3://{BUCKET}/mlflow"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
    yield uri
    server.terminate()
    server.wait(timeout=30)
    log.close()


def sweep(path: Path, storage: str, uri: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "raywae.sweep", str(path), "--storage", storage,
         "--tracking-uri", uri, *extra],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def keys(s3: object, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


# ~3-4 min on 2 shared cores (an MLflow server, two drivers): with the slow tests.
@pytest.mark.slow
def test_sweep_on_s3_with_an_mlflow_server_resumes_from_s3(
    tmp_path: Path, s3: object, mlflow_server: str
) -> None:
    arms = {"beta_vae": {"grid": {"objective.beta": [1, 4]}}}
    path = write_space(tmp_path, "on_s3", arms=arms, base=PLACED, concurrency=1)
    storage = f"s3://{BUCKET}/runs"
    client = MlflowClient(mlflow_server)

    def finished() -> int:
        found = client.get_experiment_by_name("on_s3")
        runs = client.search_runs([found.experiment_id]) if found else []
        return sum(r.info.status == "FINISHED" for r in runs)

    driver = sweep(path, storage, mlflow_server)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None and not finished():
        time.sleep(0.5)
    time.sleep(2)  # the second trial is training
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130 and f"--storage {storage}" in out, out[-3000:]
    assert not (tmp_path / "runs").exists()  # nothing went to a local folder

    resumed = sweep(path, storage, mlflow_server, "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]

    experiment = client.get_experiment_by_name("on_s3")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(float(r.data.params["objective.beta"]) for r in runs) == [1.0, 4.0]
    assert all(r.info.status == "FINISHED" for r in runs)
    stored = keys(s3, "")
    for run in runs:
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.json", "metrics.json", "model.pt", "reconstructions.png"} <= names
        # Read back through the server's artifact proxy; the bytes live in the bucket.
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="metrics.json", tracking_uri=mlflow_server
        )
        final = json.loads(Path(local).read_text())
        assert final["test/recon"] == pytest.approx(run.data.metrics["test/recon"])
        assert any(k.startswith("mlflow/") and k.endswith(f"{run.info.run_id}/artifacts/model.pt")
                   for k in stored), stored  # fmt: skip
        # Tune's trial folder and its final checkpoint (with the artifacts) in S3 as well.
        trial = f"runs/on_s3/{run.data.tags['raywae.trial_id']}/"
        assert any(k.startswith(trial) and k.endswith("artifacts/metrics.json") for k in stored)
    assert any(k.startswith("runs/on_s3/experiment_state") for k in stored)


def test_a_tracking_server_that_does_not_answer_exits_2_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import ray

    path = write_space(tmp_path, "no_server", arms={"beta_vae": {}})
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main([str(path), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert f"the MLflow tracking server {uri} does not answer" in err, err
    assert "cluster/README.md" in err and not ray.is_initialized()
