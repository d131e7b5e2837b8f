"""The interpolation track (PROTOCOL §9): a table of the lines metrics per arm beside the
ACAI paper's, and a figure of each arm's interpolation strips.

    python -m analysis.interpolation -e acai_lines                 # a sweep in MLflow
    python -m analysis.interpolation --folders runs/single/acai_lines-*  # experiment --out dirs

Per arm: Mean Distance, Smoothness and test recon as mean ± std (ddof 0) over its finished
seeds; the strip is the interpolation.png of the arm's run with the lowest Mean Distance.
Writes interpolation_table.md/.csv and interpolation_strips.png; with a store, logs them
under `interpolation/` of the analysis run.
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
RECON = "test/recon"
# Berthelot et al. (2019), lines benchmark, as PROTOCOL §9 quotes it.
PAPER = {"acai": (0.24e-3, 0.10)}
STRIP_INCHES, LABEL_INCHES, ROW_INCHES = 9.0, 2.6, 2.5


def is_acai(row: pd.Series) -> bool:
    """The ACAI paper's model: a plain auto-encoder with the ACAI term."""
    return row.get("objective.name") == "ae" and float(row.get("objective.acai") or 0) > 0


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """runs: one row per run with arm, objective.name, objective.acai and the metric keys
    -> one row per arm: n, distance/smoothness/recon mean and std, the paper's figures."""
    rows = []
    for arm, group in runs.groupby("arm", sort=False):
        done = group.dropna(subset=[DISTANCE, SMOOTHNESS])
        first = group.iloc[0]
        paper = PAPER["acai"] if is_acai(first) else (np.nan, np.nan)
        row = {
            "arm": arm,
            "objective": first.get("objective.name"),
            "acai": first.get("objective.acai"),
            "n": len(done),
        }
        for key, name in ((DISTANCE, "distance"), (SMOOTHNESS, "smoothness"), (RECON, "recon")):
            values = done[key].astype(float) if key in done else pd.Series(dtype=float)
            row[f"{name}_mean"], row[f"{name}_std"] = values.mean(), values.std(ddof=0)
        row["paper_distance"], row["paper_smoothness"] = paper
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(t: pd.DataFrame, caption: str) -> str:
    """The table as GitHub markdown (Mean Distance in units of 10⁻³, as the paper prints it)."""
    lines = [
        "| arm | objective | ACAI λ | n | Mean Distance (10⁻³) | Smoothness | test recon "
        "| paper (10⁻³ / smoothness) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in t.itertuples():
        paper = (
            "—"
            if np.isnan(r.paper_distance)
            else f"{1e3 * r.paper_distance:.2f} / {r.paper_smoothness:.2f}"
        )
        lines.append(
            f"| {r.arm} | {r.objective} | {r.acai:g} | {r.n} "
            f"| {1e3 * r.distance_mean:.2f} ± {1e3 * r.distance_std:.2f} "
            f"| {r.smoothness_mean:.3f} ± {r.smoothness_std:.3f} | {r.recon_mean:.1f} | {paper} |"
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


def folder_runs(folders: list[Path]) -> tuple[pd.DataFrame, dict[str, Path]]:
    """`raywae.experiment --out` folders (config.json, metrics.json) -> a runs table (arm:
    the folder name) and each run's interpolation.png."""
    from raywae.config import flatten, from_dict

    records, strips = [], {}
    for folder in folders:
        if not (folder / "metrics.json").is_file():
            continue  # unfinished
        cfg = from_dict(json.loads((folder / "config.json").read_text()), str(folder))
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
        save(strips_figure(rows), files[2:])
    print(files[0].read_text())
    if target is not None:
        cli.wrote(target, files, "interpolation")
    else:
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
