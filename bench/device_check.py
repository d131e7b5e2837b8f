"""The GPU check: the first command on a bare GPU machine. CUDA correctness (a solo run vs the
CPU run of its seed, a pack vs its solo runs, the NaN check per report window, the checkpoint
round trip), then speed (hand loop, raywae R = 1, packs by vmap and by hand-written batched
matmuls; fp32 / TF32 / bf16; peak memory), what bounds a step, the metric pass per model and
the projected wall time of search_spaces/paper.yaml on this device. Imports torch, numpy and
raywae's core only (no Ray, MLflow, Optuna, platformdirs). Writes device_check.json and
device_check.md to --out after every section; a failing section is recorded, the rest runs.

    PYTHONPATH=. python bench/device_check.py --out bench/results/h200
    PYTHONPATH=. python bench/device_check.py --smoke --device cpu --out /tmp/dc   # < 1 min
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from device_correctness import checkpoint, cuda_vs_cpu, nan_window, pack_vs_solo  # noqa: E402
from device_report import Report, equal  # noqa: E402
from device_speed import (  # noqa: E402
    TEST_IMAGES,
    bound,
    metrics,
    paper_mix,
    peaks,
    projection,
    speed,
)
from train_throughput import SUBGRID  # noqa: E402

from raywae.config import Config, from_dict  # noqa: E402
from raywae.data import FactorGrid, data_dir, load_dsprites  # noqa: E402
from raywae.train import resolve_device  # noqa: E402

HEAVY = ("ray", "mlflow", "optuna", "platformdirs")  # absent on the GPU machine


@dataclass(frozen=True)
class Settings:
    """What the sections run; SMOKE is the same code at CPU-test sizes."""

    hidden: int = 1200  # the paper's FC width (PROTOCOL §3)
    early_steps: int = 10  # the tight comparisons
    compare_steps: int = 300  # CUDA vs CPU, the loose comparison
    check_pack: int = 4  # pack vs solo, checkpoint round trip
    packs: tuple[int, ...] = (4, 10, 30)
    speed_steps: int = 50  # timed steps per round
    rounds: int = 3
    warmup: int = 5
    matmul_n: int = 8192
    higgins_steps: int = 2000  # timed at this and twice this, extrapolated to 100,000
    metric_grid: dict[str, int] = field(  # 92,160 images: the encoding pass scales x8
        default_factory=lambda: {"orientation": 2, "posX": 2, "posY": 2}
    )
    eval_images: int = TEST_IMAGES  # test recon timing (scaled to the full test split)
    with_dci: bool = True
    budget_s: float = 330
    reserve_s: float = 45  # kept for the metric pass when the speed groups are cut


SMOKE = Settings(
    hidden=32,
    compare_steps=20,
    check_pack=2,
    packs=(2,),
    speed_steps=3,
    rounds=2,
    warmup=1,
    matmul_n=256,
    higgins_steps=20,
    metric_grid=SUBGRID,
    eval_images=1000,
    with_dci=False,
    budget_s=60,
    reserve_s=5,
)


@dataclass
class Context:
    """What the sections share: settings, device, data, and the figures later ones read."""

    s: Settings
    device: torch.device
    report: Report
    ds: Any = None
    peaks: dict[str, float] = field(default_factory=dict)  # precision -> FLOP/s; "bandwidth"
    speed_rows: list[dict[str, Any]] = field(default_factory=list)
    metric_rows: list[dict[str, Any]] = field(default_factory=list)
    mix_rows: list[dict[str, Any]] = field(default_factory=list)
    bounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def config(self, **train: Any) -> Config:
        """The paper's network and batch, β-VAE β = 1, on this device; a budget far beyond the
        check keeps the learning rate at 1e-3."""
        return from_dict(
            {
                "model": {"hidden": self.s.hidden},
                "objective": {"name": "beta_vae", "beta": 1.0},
                "train": {"steps": 10**9, "report_every": 10**6, "device": str(self.device)}
                | train,
            }
        )

    @staticmethod
    @contextmanager
    def precision(name: str) -> Iterator[None]:
        """fp32 and bf16: TF32 off (fp32 matmuls in full fp32); tf32: fp32 tensors, TF32 matmuls
        (torch.backends.cuda.matmul.allow_tf32, float32 matmul precision "high")."""
        before = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32
        torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(before[0])
            torch.backends.cuda.matmul.allow_tf32 = before[1]


def commit() -> str:
    """The checkout's commit (+ "dirty" with uncommitted changes), or "unknown" (no git)."""
    try:
        run = {"cwd": Path(__file__).parent, "capture_output": True, "text": True, "timeout": 10}
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, **run).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], **run).stdout.strip()
        return head.strip() + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def installed(name: str) -> bool:
    """Whether `import name` would find the package (a finder may refuse it: not installed)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# --- sections ---------------------------------------------------------------------------------
def environment(ctx: Context) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda (torch build)": torch.version.cuda,
        "cpu cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "data dir": str(data_dir()),
        "installed of " + ", ".join(HEAVY): [m for m in HEAVY if installed(m)],
    }
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        figures |= {
            "gpu": props.name,
            "memory GiB": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "compute capability": f"{props.major}.{props.minor}",
            "bf16": torch.cuda.is_bf16_supported(including_emulation=False),
        }
    imported = [m for m in HEAVY if m in sys.modules]
    return {"figures": figures, "checks": [equal("imported of " + "/".join(HEAVY), imported, [])]}


def data(ctx: Context) -> dict[str, Any]:
    start = time.perf_counter()
    ctx.ds = load_dsprites("procedural", grid=FactorGrid.dsprites().subgrid(SUBGRID))
    train, test = ctx.ds.split(seed=0)
    figures = {"images": len(ctx.ds.grid), "train": len(train), "test": len(test)}
    return {"figures": figures | {"render s": time.perf_counter() - start}}


SECTIONS: dict[str, tuple[Callable[[Context], dict[str, Any]], float]] = {
    # name -> (section, seconds of budget it needs to start; 0: always runs)
    "environment": (environment, 0),
    "data": (data, 0),
    "cuda_vs_cpu": (cuda_vs_cpu, 0),
    "pack_vs_solo": (pack_vs_solo, 0),
    "nan_window": (nan_window, 0),
    "checkpoint": (checkpoint, 0),
    "peaks": (peaks, 0),
    "speed": (speed, 0),
    "paper_mix": (paper_mix, 5),
    "bound": (bound, 5),
    "metrics": (metrics, 5),
    "projection": (projection, 0),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for device_check.json / .md")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    ap.add_argument("--smoke", action="store_true", help="CPU-test sizes (same code)")
    ap.add_argument("--budget-s", type=float, help="wall-clock budget (default 330; smoke 60)")
    ap.add_argument("--packs", type=int, nargs="+", help="speed pack sizes (default 4 10 30)")
    ap.add_argument("--threads", type=int, help="torch threads (default torch's; smoke 1)")
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run these sections")
    ap.add_argument("--data-dir", help="RAYWAE_DATA_DIR (default $RAYWAE_DATA_DIR, else /tmp)")
    args = ap.parse_args(argv)
    s = SMOKE if args.smoke else Settings()
    s = replace(s, budget_s=args.budget_s or s.budget_s, packs=tuple(args.packs or s.packs))
    if args.threads or args.smoke:
        torch.set_num_threads(args.threads or 1)
    if args.data_dir or "RAYWAE_DATA_DIR" not in os.environ:
        os.environ["RAYWAE_DATA_DIR"] = args.data_dir or "/tmp/raywae-device-check-data"
    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("device_check: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    meta = {
        "command": " ".join(["bench/device_check.py", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": commit(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "smoke": args.smoke,
        "budget_s": s.budget_s,
        "complete": False,
    }
    report = Report(args.out, s.budget_s, meta)
    ctx = Context(s, device, report)
    report.log(f"device check on {meta['device_name']} ({device}), budget {s.budget_s:.0f} s")
    try:
        for name, (section, needs_s) in SECTIONS.items():
            if args.only and name not in args.only and name not in ("environment", "data"):
                continue
            report.run(name, lambda f=section: f(ctx), needs_s)
        report.meta["complete"] = True
    finally:
        report.write()
    for name, sec in report.sections.items():
        print(f"  {name:14s} {sec['status']}")
    for key, value in report.sections.get("projection", {}).get("figures", {}).items():
        print(f"  {key}: {value if not isinstance(value, float) else f'{value:.3g}'}")
    print(f"report: {args.out / 'device_check.md'}  ({report.elapsed():.0f} s)", flush=True)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
