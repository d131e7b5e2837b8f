"""The cluster definitions, checked offline (no cloud provider, no Kubernetes is called):
cluster/gpu.yaml is a valid `ray up` config, cluster/kuberay.yaml a RayJob with the fields
KubeRay requires."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
IMAGE = "rayproject/ray:2.60.0-py311-gpu"


def test_gpu_cluster_config_validates() -> None:
    config = prepare_config(yaml.safe_load((CLUSTER / "gpu.yaml").read_text()))
    validate_config(config)
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["resources"]["GPU"] == 1 and isinstance(worker["resources"]["CPU"], int)
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}  # no trials there
    assert config["docker"]["image"] == IMAGE
    assert any("pip install" in c and "raywae" in c for c in config["setup_commands"])
    # PyTorch pinned, from the CUDA wheel index (the image ships none).
    torch = next(c for c in config["setup_commands"] if "torch==" in c)
    assert '"torch==2.13.0"' in torch and "download.pytorch.org/whl/cu" in torch


def test_gpu_cluster_token_auth_is_shipped_not_expanded_remotely() -> None:
    config = yaml.safe_load((CLUSTER / "gpu.yaml").read_text())
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    text = yaml.safe_dump(config)
    assert "${RAY_AUTH_TOKEN}" not in text and "$RAY_AUTH_TOKEN" not in text
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    for command in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token" in command


def test_gpu_cluster_exposes_nothing_but_narrow_ssh() -> None:
    config = yaml.safe_load((CLUSTER / "gpu.yaml").read_text())
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    (rule,) = config["provider"]["security_group"]["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == ["YOUR-CIDR/32"]


def test_gpu_cluster_runs_one_mlflow_server_on_the_head() -> None:
    config = yaml.safe_load((CLUSTER / "gpu.yaml").read_text())
    (server,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    args = shlex.split(server.split("nohup", 1)[1].split(">", 1)[0])
    flags = dict(zip(args[2::2], args[3::2]))
    assert flags["--host"] == "127.0.0.1"
    assert flags["--backend-store-uri"].startswith("sqlite:////")
    assert flags["--artifacts-destination"].startswith("s3://")
    assert not any("mlflow server" in c for c in config["worker_start_ray_commands"])


def container(pod: dict, name: str) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def test_kuberay_rayjob_has_what_kuberay_requires() -> None:
    job = yaml.safe_load((CLUSTER / "kuberay.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m raywae.sweep search_spaces/")
    assert "--storage s3://" in spec["entrypoint"]
    assert (CLUSTER.parent / spec["entrypoint"].split()[3]).is_file()
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    ray_head = container(head["template"], "ray-head")
    assert ray_head["image"] and "nvidia.com/gpu" not in ray_head["resources"]["limits"]
    mlflow = container(head["template"], "mlflow")
    assert mlflow["command"][:2] == ["mlflow", "server"]
    assert "127.0.0.1" in mlflow["command"] and "--artifacts-destination" in mlflow["command"]
    (group,) = cluster["workerGroupSpecs"]
    assert group["groupName"] and "rayStartParams" in group
    assert group["minReplicas"] <= 1 <= group["replicas"] <= group["maxReplicas"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    # Kubernetes requires requests == limits for extended resources such as GPUs.
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
    for pod in (head["template"], group["template"]):
        for c in pod["spec"]["containers"]:
            assert c["name"] and c["image"] and c["resources"]["limits"]


def test_dockerfile_pins_the_cuda_torch_of_the_project() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM {IMAGE}" in text
    assert '"torch==2.13.0" --index-url https://download.pytorch.org/whl/cu' in text
    assert '"torch==2.13.0"' in (CLUSTER.parent / "pyproject.toml").read_text()
