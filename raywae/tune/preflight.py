"""Checks before a sweep trains anything: paths made absolute, storage and tracking store
writable, the tracking server answering, a cluster able to hold a trial, the same data under a
resumed sweep, every dataset opened once. Each failure is a SweepError (exit 2) naming the fix.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
from pathlib import Path
from typing import Any

from raywae.search_space import SweepSpec


class SweepError(RuntimeError):
    """A sweep that cannot start (no GPU, nothing to resume, an existing sweep in the way,
    storage it cannot write, data that changed under a resumed sweep)."""


PROBE_BYTES = 1 << 20  # a sweep writes checkpoints of tens of MB: a full disk fails here first


def check_writable(folder: Path, what: str) -> None:
    """Create `folder` and write (then remove) a 1 MiB probe in it, before any training: an
    unwritable or full place is a SweepError naming it, not a failure hours later."""
    probe = folder / f".raywae-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0" * PROBE_BYTES)
        probe.unlink()
    except OSError as err:
        raise SweepError(f"{what} {folder} is not writable: {err.strerror or err}") from None


def check_tracking_server(tracking_uri: str, timeout: float = 10) -> None:
    """An http(s) tracking URI must answer (MLflow's /health) before any trial trains: a
    closed tunnel or a stopped server is a SweepError, not hours of runs that never log."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = f"{tracking_uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            if answer.status == 200:
                return
            problem = f"HTTP {answer.status}"
    except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts are OSErrors
        problem = str(getattr(err, "reason", None) or err)
    raise SweepError(
        f"the MLflow tracking server {tracking_uri} does not answer ({url}: {problem}); "
        "start it (mlflow server ...) or open the tunnel to it (cluster/README.md)"
    )


def check_cluster(spec: SweepSpec, nodes: list[dict[str, Any]]) -> None:
    """Before any trial: some node can hold one trial (its CPUs and GPU fraction), and a sweep
    over more than one host writes to shared storage. nodes: `ray.nodes()`; hosts are told
    apart by address, so a local test cluster (many nodes, one host) may use a folder."""
    alive = [n for n in nodes if n.get("Alive")]
    fits = [
        n
        for n in alive
        if n["Resources"].get("CPU", 0) >= spec.cpu and n["Resources"].get("GPU", 0) >= spec.gpu
    ]
    if not fits:
        gpus = sum(n["Resources"].get("GPU", 0) for n in alive)
        raise SweepError(
            f"{spec.source}: resources ask for {spec.cpu} CPU and {spec.gpu} GPU per trial, but "
            f"no node of the Ray cluster has that ({len(alive)} nodes, {gpus:g} GPUs in all); "
            + (
                "run with --set resources.gpu=0 to train on CPUs"
                if spec.gpu > 0 and not gpus
                else "lower resources.cpu / resources.gpu or add a bigger node"
            )
            + (
                " (an autoscaling cluster must keep one GPU node up: min_workers: 1)"
                if spec.gpu > 0
                else ""
            )
        )
    hosts = sorted({n["NodeManagerAddress"] for n in alive})
    if len(hosts) > 1 and "://" not in spec.storage:
        raise SweepError(
            f"storage {spec.storage} is a folder on this machine, but the Ray cluster spans "
            f"{len(hosts)} hosts ({', '.join(hosts)}): trials elsewhere could not write their "
            "checkpoints there; pass --storage s3://BUCKET/PREFIX (or gs://...), or a folder "
            "that every node mounts (NFS) as file:///PATH"
        )


def resolve_paths(spec: SweepSpec, storage: str | None) -> SweepSpec:
    """Absolute storage and data paths: trials run inside their own folders."""
    storage = storage or spec.storage
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    base = dict(spec.base)
    data = dict(base.get("data", {}))
    if data.get("path"):
        data["path"] = str(Path(data["path"]).expanduser().resolve())
        base["data"] = data
    return dataclasses.replace(spec, storage=storage, base=base)


def check_same_data(name: str, tracking_uri: str, tags: dict[str, str]) -> None:
    """A resumed sweep must train on the data its runs were tagged with: a different image
    fingerprint (the real file replaced, a renderer change) is a SweepError naming both."""
    from raywae.tracking import logged_values

    key = "raywae.data/fingerprint"
    before = logged_values(tracking_uri, name, key) - {tags.get(key)}
    if before:
        raise SweepError(
            f"the data changed under sweep {name!r}: its runs were trained on fingerprint "
            f"{', '.join(sorted(before))}, the data now has {tags.get(key)}; restore that "
            "data, or start a new sweep (another name or --storage)"
        )


def prepare_data(spec: SweepSpec) -> dict[str, str]:
    """Open (building once, under a lock) every dataset the sweep's arms use, before any
    trial starts; returns their provenance as MLflow tags."""
    from raywae.data import open_dataset

    tags: dict[str, str] = {}
    for arm in spec.arms:
        ds = open_dataset(spec.config(spec.example(arm)).data)
        for key, value in ds.provenance().items():
            tags.setdefault(f"raywae.{key}", value)
    return tags
