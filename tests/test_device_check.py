"""bench/device_check.py, the GPU check, runs end to end on the CPU (`--smoke --device cpu`)
where Ray, MLflow, Optuna and platformdirs cannot be imported (as on the bare GPU machine),
and writes a report whose checks pass on real figures; raywae's data directory needs no
platformdirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raywae.data import data_dir

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("ray", "mlflow", "optuna", "platformdirs")  # not on the GPU machine
# Runs the check with those packages unimportable: an import of one is an ImportError.
RUNNER = """
import importlib.abc, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {absent!r}:
            raise ImportError(f"{{name}} is not on the GPU machine")
sys.meta_path.insert(0, Absent())
sys.argv = [{script!r}, *{argv!r}]
runpy.run_path({script!r}, run_name="__main__")
"""
CORRECTNESS = ("environment", "cuda_vs_cpu", "pack_vs_solo", "nan_window", "checkpoint")
MEASURES = ("data", "peaks", "speed", "paper_mix", "bound", "metrics", "projection")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str, float]:
    """One smoke run: (device_check.json, device_check.md, stdout, wall seconds)."""
    out = tmp_path_factory.mktemp("device-check")
    argv = ["--smoke", "--device", "cpu", "--out", str(out), "--budget-s", "600"]
    code = RUNNER.format(absent=ABSENT, script=str(ROOT / "bench" / "device_check.py"), argv=argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "device_check.json").read_text())
    return report, (out / "device_check.md").read_text(), done.stdout, wall


def checks(section: dict) -> dict[str, dict]:
    return {c["name"]: c for c in section["checks"]}


def test_smoke_runs_every_section_without_ray_mlflow_optuna_platformdirs(smoke):
    report, md, stdout, wall = smoke
    assert wall < 60
    sections = report["sections"]
    assert list(sections) == list(SECTIONS_IN_ORDER)
    assert report["meta"]["complete"] and report["meta"]["smoke"]
    for name in CORRECTNESS:
        assert sections[name]["status"] == "pass", (name, sections[name])
    for name in MEASURES:
        assert sections[name]["status"] == "done", (name, sections[name])
    env = sections["environment"]
    assert checks(env)["imported of ray/mlflow/optuna/platformdirs"]["value"] == []
    assert env["figures"]["installed of ray, mlflow, optuna, platformdirs"] == []  # all blocked
    for name in sections:
        assert f"## {name}: {sections[name]['status']}" in md
    assert "| precision | run | kind | R | steps/s |" in md
    assert "raywae vmap R=2" in stdout and "report:" in stdout


def test_correctness_checks_carry_their_figures(smoke):
    sections = smoke[0]["sections"]
    same = checks(sections["cuda_vs_cpu"])
    # on the CPU the 'device' run must replay the Trainer's own batches and noise bit for bit
    assert same["same device: max |weight diff|"]["value"] == 0.0
    assert same["loss rel diff at step 1"]["limit"] == "<= 1e-05"
    pack = checks(sections["pack_vs_solo"])
    assert pack["test_pack setting: weights allclose(rtol=atol=0.0001)"]["value"] is True
    step1 = pack["paper network: step 1 loss rel diff"]["value"]
    assert 0 <= step1 <= 1e-5
    assert pack["paper network: members differ"]["value"] is True
    nan = checks(sections["nan_window"])
    assert nan["pack: failed (term, step)"]["value"] == ["recon", 13]
    assert nan["solo: NonFiniteLossError (term, step)"]["value"] == ["recon", 13]
    assert nan["pack: active after"]["value"] == [0]
    ckpt = checks(sections["checkpoint"])
    assert ckpt["pack R=2: weights bit-exact after resuming"]["value"] is True
    assert sections["checkpoint"]["figures"]["pack R=2: checkpoint MiB"] > 0


def test_speed_metric_and_projection_figures_are_measured(smoke):
    sections = smoke[0]["sections"]
    rows = sections["speed"]["rows"]
    runs = {(r["precision"], r["run"]) for r in rows}
    for precision in ("fp32", "tf32"):
        for run in ("hand loop", "raywae R=1", "raywae vmap R=2", "hand bmm R=2"):
            assert (precision, run) in runs
    assert all(r["steps/s"] > 0 and r["img/s total"] > 0 for r in rows)
    assert all(r["% peak"] > 0 for r in rows)
    ours = [r for r in rows if r["kind"] == "raywae"]
    assert all(r["train/loss"] > 0 for r in ours)
    assert {r["arm"] for r in sections["paper_mix"]["rows"]} == {
        "beta_vae",
        "wae_gaussian",
        "wae_box",
    }
    metric_rows = sections["metrics"]["rows"]
    assert [m["R"] for m in metric_rows] == [1, 2]
    assert all(m["higgins s"] > 0 and m["encode s"] > 0 for m in metric_rows)
    bound = sections["bound"]["rows"][0]
    assert bound["step ms"] > 0 and bound["compute floor ms"] > 0
    figures = sections["projection"]["figures"]
    assert figures["best: training min"] > 0 and figures["best: total min"] > 0
    assert "not a GPU" in " ".join(sections["projection"]["notes"])


def test_data_dir_needs_no_platformdirs(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # import platformdirs: ImportError
    monkeypatch.delenv("RAYWAE_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data_dir() == tmp_path / "raywae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_dir() == Path("~/.cache/raywae").expanduser()
    monkeypatch.setenv("RAYWAE_DATA_DIR", str(tmp_path / "here"))
    assert data_dir() == tmp_path / "here"


SECTIONS_IN_ORDER = (
    "environment",
    "data",
    "cuda_vs_cpu",
    "pack_vs_solo",
    "nan_window",
    "checkpoint",
    "peaks",
    "speed",
    "paper_mix",
    "bound",
    "metrics",
    "projection",
)
