"""A sweep on a real multi-node Ray (ray.cluster_utils.Cluster: a CPU-only head and two nodes
declaring 2 GPUs each, all on this host): GPU-fraction placement, a lost node, the data cache.
The trials declare GPUs but train on CPU (`train.device: auto` finds no CUDA here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from raywae.search_space import load
from raywae.tune.preflight import SweepError, check_cluster
from tests.test_sweep import TINY, write_space

# Long enough that trials overlap and one is mid-training when its node goes (~10 s each).
PLACED = {**TINY, "train": {**TINY["train"], "steps": 600, "report_every": 100}}
GPU_SHARE = 0.5  # resources.gpu: two trials per GPU at most
# Node death noticed in ~3 s instead of Ray's default ~30 s.
FAST_HEALTH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def results(experiment: Path) -> dict[str, list[dict]]:
    """Every trial's reports (all attempts), from Tune's result.json files."""
    out = {}
    for path in experiment.glob("*/result.json"):
        whole = path.read_text().rsplit("\n", 1)[0]  # a line being written is not read
        out[path.parent.name] = [json.loads(x) for x in whole.splitlines() if x]
    return out


def attempts(reports: list[dict]) -> list[dict]:
    """One row per attempt of a trial (an attempt = a process start): node, GPUs, times."""
    rows: dict[float, dict] = {}
    for r in reports:
        row = rows.setdefault(
            r["started_at"],
            {"node_id": r["node_id"], "gpu_ids": r["gpu_ids"], "device": r["device"]},
        )
        row |= {"start": r["started_at"], "end": r["reported_at"], "last_step": r["step"]}
        row.setdefault("first_step", r["step"])
        row.setdefault("first_report", r["reported_at"])
        row["done"] = bool(r.get("done"))
    return sorted(rows.values(), key=lambda row: row["start"])


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] intervals that overlap at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Head: 1 CPU, no GPU. Two workers: 4 CPUs, 2 GPUs each (logical: Ray schedules by them;
    CUDA_VISIBLE_DEVICES names a GPU the trial cannot find, so it trains on CPU). Each node
    has its own empty data directory, as separate machines would: the workers by their
    environment, the driver (no RAYWAE_DATA_DIR) its user cache, here under tmp_path."""
    # Ray writes "the latest cluster" to $RAY_TMPDIR/ray/ray_current_cluster, and a plain
    # ray.init() anywhere on this machine would join it: keep it private to this test (short:
    # Ray's socket paths must stay under 108 characters).
    ray_tmp = Path(tempfile.mkdtemp(prefix="rw-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.delenv("RAYWAE_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "driver-cache"))
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "_system_config": FAST_HEALTH},
    )
    workers = [
        c.add_node(
            num_cpus=4, num_gpus=2, env_vars={"RAYWAE_DATA_DIR": str(node_data(tmp_path, i))}
        )
        for i in range(2)
    ]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)


# ~110 s on 2 idle cores (3 Ray nodes, 8 trials, a restart): with the slow tests.
@pytest.mark.slow
def test_gpu_placement_and_a_lost_node(tmp_path: Path, cluster: tuple) -> None:
    c, workers = cluster
    arms = {"beta_vae": {"grid": {"objective.beta": [1, 2, 3, 4]}}}
    path = write_space(
        tmp_path,
        "placed",
        arms=arms,
        base=PLACED,
        seeds=2,
        resources={"cpu": 1, "gpu": GPU_SHARE},
        max_failures=2,
    )
    experiment = tmp_path / "runs" / "placed"
    driver = subprocess.Popen(
        [sys.executable, "-m", "raywae.sweep", str(path), "--address", c.address],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lost = workers[1]

    def training_on_lost() -> bool:
        return any(
            reports and reports[-1]["node_id"] == lost.node_id and not reports[-1].get("done")
            for reports in results(experiment).values()
        )

    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None and not training_on_lost():
        time.sleep(0.2)
    assert driver.poll() is None, driver.stdout.read()
    removed_at = time.time()
    c.remove_node(lost, allow_graceful=False)  # a crash: raylet and its trials SIGKILLed
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, out[-4000:]

    head = c.head_node.node_id
    table = {trial: attempts(reports) for trial, reports in results(experiment).items()}
    names = {head: "head", workers[0].node_id: "w0", lost.node_id: "w1"}
    print_placement(table, names)
    print(f"node w1 removed at +{removed_at - min_start(table):.1f} s")
    rows = [row for runs in table.values() for row in runs]
    assert len(table) == 8
    # No trial on the head; both workers used; one GPU id per trial (a 0.5 share).
    assert {row["node_id"] for row in rows} == {workers[0].node_id, lost.node_id}
    assert all(row["gpu_ids"] in ("0", "1") for row in rows)
    assert {row["device"] for row in rows} == {"cpu"}  # GPUs declared, CUDA absent: CPU
    by_gpu = defaultdict(list)
    for row in rows:
        by_gpu[(row["node_id"], row["gpu_ids"])].append((row["start"], row["end"]))
    peaks = {gpu: most_at_once(spans) for gpu, spans in by_gpu.items()}
    print("most trials at once per GPU:", {f"{names[n]}/{g}": k for (n, g), k in peaks.items()})
    assert max(peaks.values()) <= int(1 / GPU_SHARE), peaks
    # The lost node's trials: cut short there, continued from a checkpoint on the other node.
    moved = [runs for runs in table.values() if len(runs) > 1]
    assert moved, "no trial was running on the removed node"
    for runs in moved:
        assert runs[0]["node_id"] == lost.node_id and not runs[0]["done"]
        assert runs[-1]["node_id"] == workers[0].node_id and runs[-1]["done"]
        assert runs[-1]["first_step"] > 100  # resumed from a checkpoint, not from step 0
        assert runs[-1]["start"] > removed_at
    assert all(runs[-1]["done"] and runs[-1]["last_step"] == 600 for runs in table.values())
    # Every trial finished exactly once in MLflow, its metric history without repeated steps.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("placed")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["raywae.trial_id"] for r in runs) == sorted(table)
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == sorted(set(steps)) and max(steps) == 600, steps
    # The data cache: written once per node, by its first trial (the others wait on the file
    # lock, then open it), never rewritten by a later trial or a restart.
    driver = list((tmp_path / "driver-cache" / "raywae" / "cache").glob("*.npy"))
    print(f"driver (head host): {[(p.name, p.stat().st_size) for p in driver]}")
    for i, worker in enumerate(workers):
        ran = [row for row in rows if row["node_id"] == worker.node_id]
        (cache,) = (node_data(tmp_path, i) / "cache").glob("*.npy")
        written = cache.stat().st_mtime
        print(
            f"w{i}: {len(ran)} attempts, cache {cache.name} {cache.stat().st_size} bytes, "
            f"written at +{written - min_start(table):.1f} s"
        )
        # By this node's first trial: after it started, before anything reported there.
        assert min(r["start"] for r in ran) < written < min(r["first_report"] for r in ran)
    assert len(driver) == 1 and driver[0].stat().st_size == cache.stat().st_size


def node_data(tmp_path: Path, i: int) -> Path:
    return tmp_path / f"node{i}-data"


def min_start(table: dict[str, list[dict]]) -> float:
    return min(row["start"] for runs in table.values() for row in runs)


def print_placement(table: dict[str, list[dict]], names: dict[str, str]) -> None:
    t0 = min_start(table)
    print("\ntrial     attempt node gpu  start    end      steps")
    for trial, runs in sorted(table.items(), key=lambda kv: kv[1][0]["start"]):
        for i, row in enumerate(runs):
            print(
                f"{trial:9} {i:7} {names[row['node_id']]:4} {row['gpu_ids']:4} "
                f"{row['start'] - t0:6.1f} s {row['end'] - t0:6.1f} s "
                f"{row['first_step']}-{row['last_step']}{' done' if row['done'] else ''}"
            )


# --- the driver's checks on a cluster it joins (pure: node records as ray.nodes() gives) --------
def node(ip: str, cpu: float, gpu: float = 0) -> dict:
    return {"Alive": True, "NodeManagerAddress": ip, "Resources": {"CPU": cpu, "GPU": gpu}}


def test_a_local_folder_is_refused_on_a_cluster_of_several_hosts(tmp_path: Path) -> None:
    spec = load(write_space(tmp_path, "hosts", resources={"cpu": 1, "gpu": 0.5}))
    two_hosts = [node("10.0.0.1", 8), node("10.0.0.2", 8, 1)]
    with pytest.raises(SweepError, match=r"spans 2 hosts \(10.0.0.1, 10.0.0.2\).*s3://"):
        check_cluster(spec, two_hosts)
    check_cluster(spec, [node("127.0.0.1", 1), node("127.0.0.1", 4, 2)])  # one host: fine
    s3 = load(write_space(tmp_path, "s3", storage="s3://bucket/runs", resources={"gpu": 0.5}))
    check_cluster(s3, two_hosts)
    with pytest.raises(SweepError, match=r"no node of the Ray cluster has that.*gpu=0"):
        check_cluster(spec, [node("10.0.0.1", 8), node("10.0.0.2", 8)])
