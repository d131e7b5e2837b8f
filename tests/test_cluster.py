"""cluster/gpu.yaml is a valid `ray up` config (checked offline: no cloud provider is called)."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster" / "gpu.yaml"


def test_gpu_cluster_config_validates() -> None:
    config = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    validate_config(config)
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["resources"]["GPU"] == 1 and isinstance(worker["resources"]["CPU"], int)
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0-py311-gpu")
    assert any("pip install" in c and "raywae" in c for c in config["setup_commands"])
