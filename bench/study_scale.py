"""The baselines' study at its real size on this machine: the whole search_spaces/locatello.yaml
(2,700 models in 54 packs of 50 seeds) at smoke scale, then what a researcher waits for at
that size.

    python bench/study_scale.py --out bench/results/study_scale          # ~2 h on 2 cores
    python bench/study_scale.py --out bench/results/study_scale --measure-only

Smoke scale (SMOKE below): 2 training steps, the dSprites subgrid of every 8th orientation /
posX / posY (1,440 images), the metric grid every 2nd scale of it (720), the study's Higgins
score (disentanglement_lib preset, 4 and 5 factors, one run) without its other metrics, no model
weights in MLflow. Everything else is the study's: conv64, latent 10, 50-model packs, every
family's objective, the sweep engine, the MLflow logging, the Tune checkpoints.

Figures (printed, and written to <out>/study_scale.json): the sweep's wall time and exit
status, the driver's peak resident memory and CPU seconds (sampled from /proc), the
MLflow store's size (database + artifacts) and the Tune folder's, the runs finished with a
score; then over the store: the seconds to read every run into the analysis table
(analysis.collect, in process and as its CLI), to build the paper table and Figure 2 (its
models' weights read from the packs' Tune checkpoints), and to open the
MLflow UI's experiment page in headless Chromium until its runs table shows a run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import mlflow_ui  # noqa: E402
from bench.metrics_speed import timed  # noqa: E402

SPACE = "search_spaces/locatello.yaml"
NAME = "locatello"
SMOKE = (
    "base.train.steps=2",
    "base.data.subgrid={orientation: 8, posX: 8, posY: 8}",
    "base.metrics.grid_subsample={scale: 2}",
    "base.metrics.extra=[]",
    "tracking={log_model: false}",
    "resources.gpu=0",
    "resources.cpu=2",
)
SCORE = "metric/beta_vae_5"


def du(path: Path) -> int:
    """Bytes under path (0 if absent)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def proc_sample(pid: int) -> tuple[int, float] | None:
    """(resident bytes, CPU seconds) of a live process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    rss = next(int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmRSS"))
    ticks = int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)
    return rss, ticks / 100  # USER_HZ


def run_sweep(out: Path) -> dict[str, float]:
    """The whole study at smoke scale; the driver sampled every 5 s."""
    cmd = [sys.executable, "-m", "raywae.sweep", SPACE, "--storage", str(out / "runs")]
    cmd += ["--tracking-uri", f"sqlite:///{out / 'mlflow.db'}"]
    for setting in SMOKE:
        cmd += ["--set", setting]
    print(" ".join(cmd), flush=True)
    start, peak, cpu = time.perf_counter(), 0, 0.0
    with (out / "sweep.log").open("w") as log:
        sweep = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        while sweep.poll() is None:
            if sample := proc_sample(sweep.pid):
                peak, cpu = max(peak, sample[0]), sample[1]
            time.sleep(5)
    wall = time.perf_counter() - start
    print(f"sweep: exit {sweep.returncode} after {wall / 60:.1f} min", flush=True)
    return {
        "sweep_exit": sweep.returncode,
        "sweep_wall_s": wall,
        "driver_peak_rss_mb": peak / 2**20,
        "driver_cpu_s": cpu,
    }


def driver_per_pack(client: Any, experiment_id: str) -> dict[str, float]:
    """Whether the driver slows as the store grows, from the runs' own times: per pack (in
    start order), the seconds from its first run's creation to its last's (the driver opening
    50 runs), from its first run's end to its last's (closing them: artifacts and status),
    and the gap from one pack's last end to the next pack's first start; first 5 packs
    against the last 5."""
    import pandas as pd

    runs = client.search_runs([experiment_id], max_results=50_000)
    df = pd.DataFrame(
        [
            (r.data.tags.get("raywae.trial_id"), r.info.start_time, r.info.end_time)
            for r in runs
            if "raywae.trial_id" in r.data.tags
        ],
        columns=["trial", "start", "end"],
    )
    packs = df.groupby("trial").agg(
        first_start=("start", "min"), last_start=("start", "max"),
        first_end=("end", "min"), last_end=("end", "max"),
    ).sort_values("first_start") / 1000  # fmt: skip
    packs["open_s"] = packs["last_start"] - packs["first_start"]
    packs["close_s"] = packs["last_end"] - packs["first_end"]
    packs["gap_s"] = packs["first_start"].shift(-1) - packs["last_end"]
    out = {}
    for column in ("open_s", "close_s", "gap_s"):
        values = packs[column].dropna()
        out[f"pack_{column}_first5"] = float(values.head(5).mean())
        out[f"pack_{column}_last5"] = float(values.tail(5).mean())
    return out


def measure(out: Path) -> dict[str, float]:
    """What a researcher waits for over the finished store."""
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.support.ui import WebDriverWait

    from analysis import collect, paper_table, reconstructions

    uri = f"sqlite:///{out / 'mlflow.db'}"
    eid = MlflowClient(uri).get_experiment_by_name(NAME).experiment_id
    figures: dict[str, float] = {
        "mlflow_db_mb": du(out / "mlflow.db") / 2**20,
        "mlflow_artifacts_mb": du(out / "artifacts") / 2**20,
        "tune_storage_mb": du(out / "runs") / 2**20,
    }
    records, figures["collect_read_s"] = timed(
        lambda: collect.mlflow_records(MlflowClient(uri), eid, NAME)
    )
    runs, figures["collect_tidy_s"] = timed(lambda: collect.tidy(records))
    figures["runs"] = len(runs)
    finished = runs[runs["status"] == "FINISHED"]
    figures["runs_finished"] = len(finished)
    figures["runs_with_score"] = int(finished[SCORE].notna().sum()) if SCORE in runs else 0
    figures |= driver_per_pack(MlflowClient(uri), eid)
    analysis = out / "analysis"
    common = ["-e", NAME, "--tracking-uri", uri, "--no-log", "--out", str(analysis)]
    for name, module, more in (
        ("collect_cli_s", collect, []),
        ("paper_table_cli_s", paper_table, []),
        ("figure2_cli_s", reconstructions, ["--storage", str(out / "runs")]),  # reads packs
    ):
        code, figures[name] = timed(lambda m=module, a=more: m.main(common + a))
        if code != 0:
            raise SystemExit(f"{module.__name__} exited {code}")
    if why := mlflow_ui.have_chromium():
        print(f"MLflow UI not timed: {why}")
        return figures
    first = runs.sort_values("run_name")["run_name"]
    with mlflow_ui.mlflow_server(uri, out / "server.log") as url:
        with mlflow_ui.chromium(out / "chromium") as driver:
            wait = WebDriverWait(driver, 600)

            def page() -> None:
                mlflow_ui.open_runs_table(driver, url, eid, wait)
                wait.until(lambda d: any(n in d.page_source for n in first))

            _, figures["ui_experiment_page_s"] = timed(page)  # a fresh server and browser
            driver.save_screenshot(str(out / "mlflow_ui.png"))
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "study_scale")
    p.add_argument("--measure-only", action="store_true", help="measure an existing --out")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = out / "study_scale.json"
    figures = json.loads(report.read_text()) if args.measure_only and report.is_file() else {}
    if not args.measure_only:
        figures = run_sweep(out)
    figures |= measure(out)
    report.write_text(json.dumps(figures, indent=1))
    for key, value in figures.items():
        print(f"{key:>24}: {value:,.1f}" if isinstance(value, float) else f"{key:>24}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
