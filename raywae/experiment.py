"""One run end to end, without Ray or MLflow: its dataset, the Trainer, progress evaluation,
the final figures (PROTOCOL §6-§8), its pictures, config / metrics / weights files and a
resumable checkpoint. The Tune trainable, the benches and analysis/ all call this module.

    python -m raywae.experiment FILE.yaml [--arm NAME | --trial N] [--set key=value ...]
                                [--seed N] [--out DIR] [--resume] [--threads N]

FILE is an experiment config (the `base:` section format of a sweep YAML) or a whole sweep
YAML, of which one arm (`--arm`, its first grid values) or one planned trial (`--trial N`,
the row of `python -m raywae.sweep FILE --dry-run`) is run: rerun a trial of a sweep alone.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from raywae.config import (
    Config,
    ConfigError,
    DataConfig,
    from_dict,
    override,
    parse_sets,
    read_yaml,
    to_dict,
)
from raywae.config import load as load_config
from raywae.data import DataError, DSprites, FactorGrid, ProceduralDataWarning, load_dsprites
from raywae.data.imageset import ImageSet, lines_set, mnist_set
from raywae.images import interpolate, write_pictures
from raywae.metrics import encode_grid, report
from raywae.metrics.interpolation import interpolation_metrics
from raywae.models import AutoEncoder, build_model
from raywae.progress import Bar
from raywae.train import NonFiniteLossError, Trainer

if TYPE_CHECKING:
    from raywae.pack import Member

PROGRESS_EVAL_IMAGES = 5000  # test/recon_5k during training: the first 5,000 test images
SHOWN_IMAGES = 8  # the test images of reconstructions.png and of Figure 2
INTERPOLATIONS = 16  # lines metrics: 16 interpolations × 16 frames between test images
STRIPS = 4  # interpolation.png: the first 4 of those pairs
STATE_FILE = "state.pt"  # checkpoint: weights, optimizers, step, RNG states
CONFIG_FILE, METRICS_FILE, MODEL_FILE = "config.json", "metrics.json", "model.pt"
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
FAILED = "raywae_failed"  # final-report key of a trial ended by a deterministic failure


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back; the message names the file."""


def open_dataset(data: DataConfig, quiet: bool = False) -> DSprites | ImageSet:
    """The dSprites table a config trains on (opened from the shared per-node cache), or the
    lines / MNIST ImageSet. quiet: no ProceduralDataWarning (a sweep's driver has already
    warned, once)."""
    if data.dataset == "lines":
        return lines_set()
    if data.dataset == "mnist":
        return mnist_set(Path(data.path) if data.path else None)
    grid = FactorGrid.dsprites()
    if data.subgrid:
        grid = grid.subgrid(data.subgrid)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", ProceduralDataWarning)
        return load_dsprites(data.source, data.path, grid)


def shown_images(ds: DSprites | ImageSet, k: int = SHOWN_IMAGES) -> np.ndarray:
    """The test images every run shows: the first k of the test split in index order,
    (k, 64, 64) uint8 in {0, 1} (reconstructions.png, Figure 2); (k, 32, 32) float32 for an
    ImageSet."""
    if isinstance(ds, ImageSet):
        return ds.images(np.arange(k))
    _, test = ds.split(seed=0)
    return ds.images(np.sort(test[:k]))


def interpolation_pairs(ds: ImageSet, k: int = INTERPOLATIONS) -> np.ndarray:
    """(2, k, side, side): test images 0..k−1 paired with k..2k−1 (fixed for every run; k
    shrinks to half the test split when that is smaller)."""
    k = min(k, len(ds.test) // 2)
    return ds.images(np.arange(2 * k)).reshape(2, k, ds.side, ds.side)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file: a kill mid-write leaves the old file intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(trainer: Any, path: Path, name: str | None = None) -> None:
    """trainer.load_state_dict of the checkpoint at `path` (weights only: no pickled objects).
    An unreadable one is a CheckpointError naming it (`name`, else `path`)."""
    try:
        trainer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{name or path}: unreadable checkpoint: {err}") from None


class Experiment:
    """One run: its config, dataset and Trainer (every seed from cfg.seed).

    progress: tqdm bars (True: training steps too, for a terminal), none (False), or a
    tqdm-like factory for evaluation bars only (Ray's tqdm_ray inside a trial)."""

    def __init__(
        self,
        cfg: Config,
        ds: DSprites | ImageSet | None = None,
        progress: bool | Bar = True,
        trainer: Trainer | Member | None = None,
    ) -> None:
        self.cfg, self.progress = cfg, progress
        self.ds = ds if ds is not None else open_dataset(cfg.data)
        # trainer: cfg's run trained elsewhere (a pack member's view, raywae.pack.Member)
        self.trainer = trainer if trainer is not None else Trainer(cfg, self.ds)

    @property
    def model(self) -> AutoEncoder:
        return self.trainer.model

    @property
    def done(self) -> bool:
        return self.trainer.step >= self.cfg.train.steps

    def train(self, report: Callable[[dict[str, float]], None]) -> dict[str, float]:
        """Train to cfg.train.steps. Every train.report_every steps but the last, report(logs)
        gets the window's train/ and time/ logs, `step`, and test/recon_5k, test/recon_mean_5k
        (the first 5,000 test images). Returns the last window's logs (the final report is
        the caller's, with `final()`). Raises NonFiniteLossError."""

        def window(trainer: Trainer, logs: dict[str, float]) -> None:
            if not self.done:
                report({**logs, **self.progress_figures()})

        logs = self.trainer.run(callback=window, progress=self.progress is True)
        return logs or {"step": self.trainer.step}

    def progress_figures(self) -> dict[str, float]:
        """test/recon on the first PROGRESS_EVAL_IMAGES test images, under their own keys."""
        figures = self.trainer.evaluate(PROGRESS_EVAL_IMAGES, progress=False)
        return {f"{k}_5k": v for k, v in figures.items()}

    def final(self, scores: dict[str, float] | None = None) -> dict[str, float]:
        """PROTOCOL §6-§8: test/recon and test/recon_mean over the whole test split, then one
        code table of encoder means (over the grid, or its metrics.grid_subsample subgrid)
        -> Higgins on 4 and 5 factors and the extra metrics; time/final_eval_s.
        scores: those metrics when already computed (a pack scores its members at once)."""
        start, m = time.perf_counter(), self.cfg.metrics
        out = self.trainer.evaluate(progress=self.progress)
        if not isinstance(self.ds, ImageSet):
            if scores is None:
                device = self.trainer.device
                codes, grid = self.code_table(), self.metric_grid()
                scores = report(codes, grid, self.cfg.seed, m.extra, m.runs, m.preset, None, device)
            out |= scores
        elif self.ds.name == "lines":  # PROTOCOL §9, on [−1, 1] frames as the benchmark's
            frames = 2.0 * interpolate(self.model, *interpolation_pairs(self.ds)) - 1.0
            out |= {f"metric/{k}": v for k, v in interpolation_metrics(frames).items()}
        out["time/final_eval_s"] = time.perf_counter() - start
        return out

    def metric_grid(self) -> FactorGrid:
        """The grid the metrics use: the data's grid, or its subgrid metrics.grid_subsample
        (every k-th value of the named factors)."""
        steps = self.cfg.metrics.grid_subsample
        return self.ds.grid.subgrid(steps) if steps else self.ds.grid

    def code_table(self) -> np.ndarray:
        """Encoder means (len(metric_grid()), d)."""
        return encode_grid(self.model, self.ds, grid=self.metric_grid(), progress=self.progress)

    def save(self, path: Path) -> None:
        """The checkpoint (Trainer.state_dict) at `path`, written atomically."""
        save_atomic(self.trainer.state_dict(), path)

    def restore(self, path: Path, name: str | None = None) -> None:
        """Continue from a checkpoint written by save() for the same config. An unreadable
        one (truncated, corrupted) is a CheckpointError naming it (`name`, else `path`):
        never a silent restart from step 0."""
        load_checkpoint(self.trainer, path, name)

    def write_outputs(
        self, folder: Path, results: dict[str, Any], weights: bool = True
    ) -> list[Path]:
        """A finished run's files in `folder`: reconstructions.png, traversal.png,
        config.json (the full config), metrics.json (the final figures) and, with weights,
        model.pt (the model's state_dict, what load_run reads back)."""
        folder.mkdir(parents=True, exist_ok=True)
        pairs = None
        if isinstance(self.ds, ImageSet):
            pairs = interpolation_pairs(self.ds)[:, :STRIPS]
        paths = write_pictures(self.model, shown_images(self.ds), folder, pairs)
        figures = {k: v for k, v in results.items() if isinstance(v, int | float)}
        for name, content in ((CONFIG_FILE, to_dict(self.cfg)), (METRICS_FILE, figures)):
            (folder / name).write_text(json.dumps(content, indent=1))
            paths.append(folder / name)
        if weights:
            save_atomic(self.model.state_dict(), folder / MODEL_FILE)
            paths.append(folder / MODEL_FILE)
        return paths


def load_run(ref: str | Path, tracking_uri: str | None = None) -> tuple[AutoEncoder, Config]:
    """A trained model (CPU, eval mode) and its Config from a finished run: a folder with
    config.json and model.pt (an `--out` folder, a trial's artifacts), or an MLflow run id or
    `runs:/<id>` URI (its artifacts are downloaded; MLflow is imported only then)."""
    folder = Path(ref)
    if (folder / CONFIG_FILE).is_file():
        return _load_folder(folder)
    import mlflow

    uri = str(ref) if str(ref).startswith("runs:/") else f"runs:/{ref}"
    with tempfile.TemporaryDirectory(prefix="raywae-run-") as tmp:
        for name in (CONFIG_FILE, MODEL_FILE):
            try:
                mlflow.artifacts.download_artifacts(
                    f"{uri}/{name}", dst_path=tmp, tracking_uri=tracking_uri
                )
            except Exception as err:  # MLflow raises several types for a missing artifact
                raise FileNotFoundError(
                    f"{uri}: no {name} artifact (was the run logged with tracking.log_model: "
                    f"false, or not finished?): {err}"
                ) from None
        return _load_folder(Path(tmp))


def _load_folder(folder: Path) -> tuple[AutoEncoder, Config]:
    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {MODEL_FILE} (run with weights saved?)")
    cfg = from_dict(json.loads((folder / CONFIG_FILE).read_text()), str(folder / CONFIG_FILE))
    model = build_model(cfg.model)
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    return model.eval(), cfg


# --- the CLI ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m raywae.experiment",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="experiment config or sweep YAML")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--arm", help="a sweep's arm (default: its only arm)")
    pick.add_argument("--trial", type=int, help="a grid sweep's planned trial (--dry-run's #)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config entry, e.g. --set train.steps=200 (repeatable)",
    )
    p.add_argument("--seed", type=int, help="the run's seed (default: the config's)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/single/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> tuple[Config, str]:
    """The run's Config and a short name for its folder (file stem, arm or trial, seed)."""
    doc, _ = read_yaml(args.file)
    name = args.file.stem
    if {"name", "base", "arms"} & set(doc):  # a sweep YAML: one of its trials
        from raywae.search_space import load as load_sweep

        spec = load_sweep(args.file)
        if args.trial is not None:
            trials = spec.trials() if spec.algorithm == "grid" else []
            if not 0 <= args.trial < len(trials):
                raise ConfigError("--trial", f"a grid sweep's trial 0..{len(trials) - 1}")
            trial = trials[args.trial].as_config()
        else:
            if args.arm is None and len(spec.arms) > 1:
                raise ConfigError("--arm", f"the sweep has several arms: {list(spec.arms)}")
            if args.arm is not None and args.arm not in spec.arms:
                raise ConfigError("--arm", f"no arm {args.arm!r}; arms: {list(spec.arms)}")
            trial = spec.example(args.arm)
        cfg = spec.config(trial)
        values = "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in trial.items() if k != "seed")
        name = f"{name}-{values}"
    elif args.arm is not None or args.trial is not None:
        raise ConfigError("--arm", f"{args.file} is an experiment config, not a sweep")
    else:
        cfg = load_config(args.file)
    overrides = parse_sets(args.set) | ({"seed": args.seed} if args.seed is not None else {})
    cfg = override(cfg, overrides, "--set")
    return cfg, f"{name}-seed{cfg.seed}"


def run(cfg: Config, out: Path, resume: bool = False) -> dict[str, float]:
    """Train one config on this machine, writing into `out`: state.pt at every report
    (what --resume continues), progress.jsonl (one line of logs per report), then the
    final figures and files (Experiment.write_outputs). Returns the final results."""
    exp = Experiment(cfg)
    state, log = out / STATE_FILE, out / "progress.jsonl"
    if resume:
        exp.restore(state)
        print(f"resumed from {state} at step {exp.trainer.step}")
    out.mkdir(parents=True, exist_ok=True)

    def report(logs: dict[str, float]) -> None:
        exp.save(state)
        with log.open("a") as f:
            f.write(json.dumps(logs) + "\n")
        tqdm.write(_line(logs))

    results = {**exp.train(report), **exp.final()}
    exp.save(state)
    exp.write_outputs(out, results)
    with log.open("a") as f:
        f.write(json.dumps({**results, "done": True}) + "\n")
    return results


def _line(logs: dict[str, Any]) -> str:
    keys = ("train/loss", "test/recon_5k", "test/recon", "metric/beta_vae_4", "metric/beta_vae_5")
    keys += ("metric/interp_mean_distance", "metric/interp_smoothness")
    figures = ", ".join(f"{k} {logs[k]:.4g}" for k in keys if k in logs)
    return f"step {int(logs.get('step', 0))}: {figures}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, name = resolve_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = args.out or Path("runs") / "single" / name
    if args.resume and not (out / STATE_FILE).is_file():
        print(f"error: nothing to resume: no {out / STATE_FILE}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.resume and (out / STATE_FILE).is_file():
        print(f"error: {out} holds a run: pass --resume, or --out DIR", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.threads:
        torch.set_num_threads(args.threads)
    # SIGTERM (a scheduler's kill) stops like Ctrl+C; the checkpoint of the last report stays.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    # A shell's background job (`cmd &` in a script) starts with SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: SIGTERM would be dropped. Restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        results = run(cfg, out, args.resume)
    except (DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as err:
        print(f"failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the last report's checkpoint is {out / STATE_FILE}; continue "
            f"with the same command plus --out {out} --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(_line(results))
    extra = {k: v for k, v in results.items() if k.startswith("metric/") and "/run" not in k}
    for key, value in sorted(extra.items()):
        print(f"  {key}: {value:.4f}")
    print(f"  time/final_eval_s: {results['time/final_eval_s']:.1f}")
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
