"""The paper's Figure 2: a row of real test images, then, per family, the reconstructions
(z = encoder mean) of the models its caption names: the best test recon among models scoring
above 98 % on 4 factors (if none does, the best 4-factor model, and the row says so) and
the best 5-factor model (each the mean of its metric runs).

    python -m analysis.reconstructions -e NAME [--storage runs] [--threshold 0.98]

Weights come from each run's MLflow `model.pt` (raywae.checkpoint.load_run), else its model
in the newest Tune checkpoint `<storage>/<NAME>/<trial id>/checkpoint_*` (in a pack, the
member the run is: raywae.checkpoint.load_member), else the run's `reconstructions.png`
artifact (same 8 test images); the data from the run's `config.json`.
Writes figure2.png, figure2.svg and figure2_models.csv; logs them under `figure2/`.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import cli
from analysis.aggregate import RECON, SCORES, THRESHOLD, budget
from analysis.figures import blank, family_key, pixels, save
from analysis.store import AnalysisError

CELL, LABEL, TOP, BOTTOM = 0.8, 3.4, 0.7, 0.2  # inches: pixel size = rows·80 + 90 high
ARTIFACT_IMAGES = 8  # raywae.experiment.SHOWN_IMAGES: the test images of reconstructions.png


def choose(
    runs: pd.DataFrame,
    threshold: float = THRESHOLD,
    four: str = SCORES[0],
    five: str = SCORES[1],
    recon: str = RECON,
) -> pd.DataFrame:
    """The models of Figure 2, two rows per family (finished runs with finite figures only):
    `criterion` says why each was chosen and `fallback` is True when no model of the family
    scored above `threshold` on 4 factors. Ties go to the first run in table order."""
    done = runs[runs["status"] == "FINISHED"] if "status" in runs else runs
    done = done[np.isfinite(done[recon].astype(float))]
    rows = []
    for family in sorted(done["family"].unique(), key=family_key):
        models = done[done["family"] == family]
        scored4 = models[np.isfinite(models[four].astype(float))]
        passing = scored4[scored4[four] > threshold]
        if len(passing):
            pick = passing.loc[passing[recon].idxmin()]
            rows.append((family, f"best recon, 4-factor > {100 * threshold:g} %", False, pick))
        elif len(scored4):
            pick = scored4.loc[scored4[four].idxmax()]
            rows.append((family, f"best 4-factor (none > {100 * threshold:g} %)", True, pick))
        scored5 = models[np.isfinite(models[five].astype(float))]
        if len(scored5):
            rows.append((family, "best 5-factor", False, scored5.loc[scored5[five].idxmax()]))
    keys = ["experiment", "run_id", "trial_id", "member", "setting", "seed", recon, four, five]
    return pd.DataFrame(
        [
            {"family": f, "criterion": c, "fallback": fb, **{k: r.get(k) for k in keys}}
            for f, c, fb, r in rows
        ]
    )


def figure2_pixels(n_rows: int, n_images: int) -> tuple[int, int]:
    """(width, height) in pixels of a Figure 2 with n_rows rows (real row included)."""
    return pixels(LABEL + n_images * CELL, TOP + BOTTOM + n_rows * CELL)


# --- models and images ----------------------------------------------------------------------
def trained_model(target: Any, row: Mapping[str, Any]) -> tuple[Any | None, str]:
    """A chosen run's model and where its weights came from: the run's MLflow `model.pt`
    (raywae.checkpoint.load_run), else its model (`member`, 0 for a solo run) in its trial's
    newest Tune checkpoint, else (None, the reconstructions.png artifact: a run logged with
    tracking.log_model false whose checkpoints are gone or elsewhere)."""
    from raywae.checkpoint import load_member, load_run, newest_state

    try:
        return load_run(row["run_id"], target.tracking_uri)[0], "MLflow model.pt"
    except FileNotFoundError:
        pass
    path = newest_state(target.storage / row["experiment"] / str(row["trial_id"]))
    if path is None:
        return None, "artifact reconstructions.png"
    member = int(row.get("member") or 0)
    return load_member(path, member)[0], str(path) if member == 0 else f"{path} model {member}"


def run_config(mlflow_client: Any, run_id: str) -> Any:
    """The Config a run was trained with, from its `config.json` artifact."""
    import json

    from raywae.checkpoint import CONFIG_FILE
    from raywae.config import compose

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow_client.download_artifacts(run_id, CONFIG_FILE, folder)
        except Exception as err:  # MLflow raises several types for a missing artifact
            raise AnalysisError(f"run {run_id} has no {CONFIG_FILE} artifact: {err}") from None
        return compose(json.loads(Path(path).read_text()), {}, f"run {run_id}/{CONFIG_FILE}")


def real_images(cfg: Any, k: int) -> tuple[np.ndarray, Any]:
    """The first k test images of a run's data ((k, 64, 64) {0,1}, its Dataset's
    shown_images: for k = 8 those of every run's reconstructions.png) and the dataset."""
    from raywae.data import open_dataset

    ds = open_dataset(cfg.data)
    return ds.shown_images(k), ds


def from_artifact(mlflow_client: Any, run_id: str) -> np.ndarray:
    """The reconstruction row of a run's reconstructions.png ((8, 64, 64) in [0, 1]); the
    layout is raywae.images.tile: 2-pixel padding, shapes dark on white."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        path = mlflow_client.download_artifacts(run_id, "reconstructions.png", folder)
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    pad, side = 2, 64
    top = pad + (side + pad)  # the second row
    cols = [pad + j * (side + pad) for j in range(ARTIFACT_IMAGES)]
    return np.stack([1 - pixels[top : top + side, c : c + side] / 255 for c in cols])


def figure2(rows: list[tuple[str, np.ndarray]], title: str, subtitle: str) -> Any:
    """rows: (label, (k, 64, 64) images in [0, 1]) -> a Figure of figure2_pixels()."""
    k = max(len(images) for _, images in rows)
    fig = blank(figure2_pixels(len(rows), k))
    width, height = fig.get_size_inches()
    for i, (label, images) in enumerate(rows):
        y = BOTTOM + (len(rows) - 1 - i) * CELL
        fig.text(0.1 / width, (y + CELL / 2) / height, label, va="center", fontsize=7)
        for j, img in enumerate(images):
            ax = fig.add_axes(
                ((LABEL + j * CELL + 0.04) / width, (y + 0.04) / height,
                 (CELL - 0.08) / width, (CELL - 0.08) / height)
            )  # fmt: skip
            ax.imshow(img, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
    fig.text(0.5, 1 - 0.22 / height, title, ha="center", fontsize=10)
    fig.text(0.5, 1 - 0.36 / height, subtitle, ha="center", va="top", fontsize=6, wrap=True)
    return fig


def _label(row: pd.Series, recon: str, four: str, five: str) -> str:
    figures = f"recon {row[recon]:.1f} · 4f {100 * row[four]:.1f} % · 5f {100 * row[five]:.1f} %"
    return f"{row['setting']} (seed {row['seed']})\n{row['criterion']}\n{figures}"


@cli.command
def main(argv: list[str] | None = None) -> int:
    from analysis.collect import runs_for
    from analysis.store import client
    from raywae.images import reconstruct

    p = cli.parser("python -m analysis.reconstructions", __doc__, storage=True, table=True)
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="4-factor bar (0.98)")
    p.add_argument("--images", type=int, default=ARTIFACT_IMAGES, help="test images (8)")
    args, target = cli.parse(p, argv)
    runs = runs_for(target, args.table)
    chosen = choose(runs, args.threshold)
    if chosen.empty:
        raise AnalysisError("no finished run with test/recon and Higgins scores")
    models = [trained_model(target, r) for r in chosen.to_dict("records")]
    if args.images != ARTIFACT_IMAGES and any(m is None for m, _ in models):
        missing = [str(r.trial_id) for r, (m, _) in zip(chosen.itertuples(), models) if m is None]
        raise AnalysisError(f"no weights of {missing} (model.pt or under {target.storage})")
    first = chosen.iloc[0]
    images, ds = real_images(run_config(client(target.tracking_uri), first["run_id"]), args.images)
    notes = []
    seen = runs[runs["run_id"] == first["run_id"]].iloc[0].get("data_fingerprint", ds.fingerprint)
    if ds.fingerprint != seen:
        notes.append(f"real row from {ds.source} data, not the data the models saw")
    rows = [(f"real test images\n({ds.source} dSprites)", images.astype(np.float32))]
    for r, (model, _) in zip(chosen.to_dict("records"), models):
        if model is not None:
            recon = reconstruct(model, images)
        else:
            recon = from_artifact(client(target.tracking_uri), r["run_id"])
        rows.append((_label(pd.Series(r), RECON, *SCORES), recon))
    chosen["weights"] = [source for _, source in models]
    fallback = sorted(set(chosen.loc[chosen["fallback"], "family"]))
    if fallback:
        notes.append(
            f"no model above {100 * args.threshold:g} % on 4 factors in {', '.join(fallback)}: "
            "the best 4-factor model is shown instead"
        )
    title = "Real test images (top) and reconstructions (z = encoder mean)"
    fig = figure2(rows, title, "\n".join([budget(runs), " · ".join(notes)]).strip())
    out = target.out
    files = [out / "figure2.png", out / "figure2.svg", out / "figure2_models.csv"]
    save(fig, files[:2])
    chosen.to_csv(files[2], index=False)
    cols = ["family", "criterion", "setting", "seed", RECON, *SCORES]
    print(chosen[cols].to_string(index=False))
    tags = {"raywae.analysis.figure2.fallback": ",".join(fallback) or "none"}
    cli.wrote(target, files, "figure2", tags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
