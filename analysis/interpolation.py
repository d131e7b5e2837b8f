"""The interpolation track (PROTOCOL §9): a table of the lines metrics per arm beside the
ACAI paper's, and a figure of each arm's interpolation strips.

    python -m analysis.interpolation -e acai_lines                 # a sweep in MLflow
    python -m analysis.interpolation --folders runs/single/acai_lines-*  # experiment --out dirs

Per arm: Mean Distance, Smoothness (the paper's convention and the strict one) and test
recon as mean ± std (ddof 0, as the paper's notebook) over its finished seeds, beside the
paper's Table 1 row for the arms it has (baseline AE, ACAI); the strip is the
interpolation.png of the arm's run with the lowest Mean Distance.
Curves: each arm's Mean Distance and strict Smoothness over the training images seen
(every report window's figures: MLflow's metric history, or an --out folder's
progress.jsonl), mean ± std over seeds. Writes interpolation_table.md/.csv,
interpolation_strips.png and interpolation_curves.png; with a store, logs them under
`interpolation/` of the analysis run.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import cli
from analysis.figures import blank, pixels, save

DISTANCE, SMOOTHNESS = "metric/interp_mean_distance", "metric/interp_smoothness"
STRICT, RECON = "metric/interp_smoothness_strict", "test/recon"
# Berthelot et al. (2019), Table 1 (lines, 64-dim codes): Mean Distance and Smoothness, each
# mean ± std over their runs; ACAI as PROTOCOL §9 quotes it.
PAPER = {"baseline": ((6.88e-3, 0.21e-3), (0.44, 0.04)), "acai": ((0.24e-3, 0.01e-3), (0.10, 0.01))}
STRIP_INCHES, LABEL_INCHES, ROW_INCHES = 9.0, 2.6, 2.5


def paper_row(row: pd.Series) -> str | None:
    """The ACAI paper's model a run is: "acai" (a plain auto-encoder with the ACAI term),
    "baseline" (without it), or None."""
    if row.get("objective.name") != "ae":
        return None
    return "acai" if float(row.get("objective.acai") or 0) > 0 else "baseline"


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """runs: one row per run with arm, objective.name, objective.acai and the metric keys
    -> one row per arm: n, distance / smoothness / strict smoothness / recon mean and std,
    the paper's figures (mean and std; NaN for an arm the paper does not have)."""
    rows = []
    keys = ((DISTANCE, "distance"), (SMOOTHNESS, "smoothness"), (STRICT, "strict"))
    for arm, group in runs.groupby("arm", sort=False):
        done = group.dropna(subset=[DISTANCE])
        first = group.iloc[0]
        paper = PAPER.get(paper_row(first) or "", ((np.nan, np.nan), (np.nan, np.nan)))
        row = {
            "arm": arm,
            "objective": first.get("objective.name"),
            "acai": first.get("objective.acai"),
            "n": len(done),
        }
        for key, name in (*keys, (RECON, "recon")):
            values = done[key].astype(float) if key in done else pd.Series(dtype=float)
            row[f"{name}_mean"], row[f"{name}_std"] = values.mean(), values.std(ddof=0)
        (row["paper_distance"], row["paper_distance_std"]), paper_smooth = paper
        row["paper_smoothness"], row["paper_smoothness_std"] = paper_smooth
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(t: pd.DataFrame, caption: str) -> str:
    """The table as GitHub markdown (Mean Distance in units of 10⁻³, as the paper prints it)."""
    lines = [
        "| arm | objective | ACAI λ | n | Mean Distance (10⁻³) | Smoothness (paper's) "
        "| Smoothness (strict) | test recon | paper: Mean Distance (10⁻³) / Smoothness |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in t.itertuples():
        paper = "—"
        if not np.isnan(r.paper_distance):
            paper = (
                f"{1e3 * r.paper_distance:.2f} ± {1e3 * r.paper_distance_std:.2f} / "
                f"{r.paper_smoothness:.2f} ± {r.paper_smoothness_std:.2f}"
            )
        lines.append(
            f"| {r.arm} | {r.objective} | {r.acai:g} | {r.n} "
            f"| {1e3 * r.distance_mean:.2f} ± {1e3 * r.distance_std:.2f} "
            f"| {r.smoothness_mean:.3f} ± {r.smoothness_std:.3f} "
            f"| {r.strict_mean:.3f} ± {r.strict_std:.3f} "
            f"| {r.recon_mean:.1f} ± {r.recon_std:.1f} | {paper} |"
        )
    return "\n".join([*lines, "", caption, ""])


def strips_figure(rows: list[tuple[str, np.ndarray]]) -> Any:
    """rows: (label, strip image (H, W) uint8) -> one Figure, a strip per arm."""
    fig = blank(pixels(LABEL_INCHES + STRIP_INCHES, 0.4 + len(rows) * ROW_INCHES))
    width, height = fig.get_size_inches()
    for i, (label, image) in enumerate(rows):
        y = 0.1 + (len(rows) - 1 - i) * ROW_INCHES
        fig.text(0.1 / width, (y + ROW_INCHES / 2) / height, label, va="center", fontsize=8)
        ax = fig.add_axes(
            (LABEL_INCHES / width, y / height, STRIP_INCHES / width, (ROW_INCHES - 0.1) / height)
        )
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
    fig.text(
        0.5,
        1 - 0.2 / height,
        "Interpolations between test lines (4 pairs × 16 frames)",
        ha="center",
    )
    return fig


def curves_figure(history: pd.DataFrame) -> Any:
    """history: arm, run_id, images, and the DISTANCE / STRICT keys per report -> a Figure
    of both over the training images, one line per arm (mean ± std over its runs)."""
    import seaborn as sns

    fig = blank(pixels(11.0, 4.2))
    for k, (key, name, log) in enumerate(
        ((DISTANCE, "Mean Distance", True), (STRICT, "Smoothness (strict)", False))
    ):
        ax = fig.add_axes((0.1 + 0.5 * k, 0.13, 0.37, 0.78))
        sns.lineplot(history, x="images", y=key, hue="arm", errorbar="sd", ax=ax, legend=k == 1)
        ax.set_xlabel("training images"), ax.set_ylabel(name)
        if log:
            ax.set_yscale("log")
    return fig


def folder_history(folders: list[Path]) -> pd.DataFrame:
    """Every report of `raywae.experiment --out` folders (progress.jsonl) -> arm (the folder
    name), run_id, images (step × batch size) and the metric keys."""
    rows = []
    for folder in folders:
        cfg = json.loads((folder / "config.json").read_text())
        batch = cfg["train"]["batch_size"]
        for line in (folder / "progress.jsonl").read_text().splitlines():
            logs = json.loads(line)
            if DISTANCE in logs:
                rows.append({"arm": folder.name, "run_id": folder.name,
                             "images": logs["step"] * batch, **logs})  # fmt: skip
    return pd.DataFrame(rows)


def store_history(runs: pd.DataFrame, mlflow_client: Any) -> pd.DataFrame:
    """MLflow's metric history of DISTANCE and STRICT for every run -> the folder_history
    table (images: step × the run's train.batch_size)."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for _, run in runs.iterrows():
        batch, run_id = int(run.get("train.batch_size", 1)), run["run_id"]
        for key in (DISTANCE, STRICT):
            for m in mlflow_client.get_metric_history(run_id, key):
                first = {"arm": run["arm"], "run_id": run_id, "images": m.step * batch}
                rows.setdefault((run_id, m.step), first)[key] = m.value
    return pd.DataFrame(list(rows.values()))


def folder_runs(folders: list[Path]) -> tuple[pd.DataFrame, dict[str, Path]]:
    """`raywae.experiment --out` folders (config.json, metrics.json) -> a runs table (arm:
    the folder name) and each run's interpolation.png."""
    from raywae.config import compose, flatten

    records, strips = [], {}
    for folder in folders:
        if not (folder / "metrics.json").is_file():
            continue  # unfinished
        cfg = compose(json.loads((folder / "config.json").read_text()), {}, str(folder))
        records.append(
            {
                "arm": folder.name,
                "run_id": folder.name,
                **flatten(cfg),
                **json.loads((folder / "metrics.json").read_text()),
            }
        )
        strips[folder.name] = folder / "interpolation.png"
    return pd.DataFrame(records), strips


def label(row: pd.Series) -> str:
    figures = f"Mean Distance {1e3 * row[DISTANCE]:.2f}e-3\nSmoothness {row[SMOOTHNESS]:.3f}"
    figures += f" (strict {row.get(STRICT, np.nan):.3f})"
    return f"{row['arm']}\n{figures}\nrecon {row[RECON]:.1f}"


@cli.command
def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    p = cli.parser("python -m analysis.interpolation", __doc__, table=True)
    p.add_argument(
        "--folders", type=Path, nargs="+", help="raywae.experiment --out folders instead of a store"
    )
    args = p.parse_args(argv)
    if args.folders:
        runs, strips = folder_runs(args.folders)
        out, target = (args.out or Path("interpolation")).resolve(), None
        out.mkdir(parents=True, exist_ok=True)
        caption = "ours: raywae.experiment runs " + ", ".join(sorted(runs["arm"]))
    else:
        from analysis.collect import runs_for
        from analysis.store import client, resolve

        target = resolve(args)
        runs, out, strips = runs_for(target, args.table), target.out, {}
        runs = runs[runs["status"] == "FINISHED"]
        caption = f"ours ({', '.join(target.experiments)})"
    if runs.empty or DISTANCE not in runs:
        from analysis.store import AnalysisError

        raise AnalysisError(f"no finished run reports {DISTANCE} (a lines sweep?)")
    t = table(runs)
    steps = sorted({int(s) for s in runs.get("train.steps", pd.Series(dtype=int)).dropna()})
    caption += f"; training steps {steps}; paper: Berthelot et al. (2019), lines, ACAI"
    files = [
        out / "interpolation_table.md",
        out / "interpolation_table.csv",
        out / "interpolation_strips.png",
        out / "interpolation_curves.png",
    ]
    files[0].write_text(markdown(t, caption))
    t.to_csv(files[1], index=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arm in t["arm"]:
            best = runs[runs["arm"] == arm].sort_values(DISTANCE).iloc[0]
            path = strips.get(best["run_id"])
            if path is None:
                path = Path(
                    client(target.tracking_uri).download_artifacts(
                        best["run_id"], "interpolation.png", tmp
                    )
                )
            rows.append((label(best), np.asarray(Image.open(path).convert("L"))))
        save(strips_figure(rows), files[2:3])
    if args.folders:
        history = folder_history([f for f in args.folders if f.name in set(runs["run_id"])])
    else:
        history = store_history(runs, client(target.tracking_uri))
    if history.empty:
        files.pop()
    else:
        save(curves_figure(history), files[3:])
    print(files[0].read_text())
    if target is not None:
        cli.wrote(target, files, "interpolation")
    else:
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
