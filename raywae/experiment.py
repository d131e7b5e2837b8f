"""R >= 1 runs of one setting end to end, without Ray or MLflow: the dataset, one Trainer,
progress evaluation, the final figures (PROTOCOL §6-§9) from one encoding pass for all
models, each model's pictures, config / metrics / weights files, and a resumable checkpoint.
A solo run is R = 1. The Tune trainable, the benches and analysis/ all call this module.

    python -m raywae.experiment FILE.yaml [--arm NAME | --trial N] [--set key=value ...]
                                [--seed N] [--out DIR] [--resume] [--threads N]

FILE is an experiment config (the `base:` section format of a sweep YAML) or a whole sweep
YAML, of which one arm (`--arm`, its first grid values) or one planned trial (`--trial N`,
the row of `python -m raywae.sweep FILE --dry-run`) is run: rerun a trial of a sweep alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from raywae.checkpoint import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    load_checkpoint,
    save_atomic,
)
from raywae.config import (
    Config,
    ConfigError,
    override,
    parse_sets,
    read_yaml,
    to_dict,
)
from raywae.config import load as load_config
from raywae.data import DataError, Dataset, FactorGrid, open_dataset
from raywae.errors import EXIT_BAD_INPUT
from raywae.images import interpolate, write_pictures
from raywae.logkeys import FAILED, INTERPOLATION
from raywae.metrics import report_many
from raywae.metrics.codes import rows_in
from raywae.metrics.gt_interpolation import FRAMES, GridImages, choose_pairs, gt_interpolation
from raywae.metrics.interpolation import LINES_FRAMES, LINES_INTERPOLATIONS, interpolation_metrics
from raywae.metrics.probe import probe_accuracy, probe_rows
from raywae.metrics.proxy import higgins_proxy, proxy_grid
from raywae.progress import Bar
from raywae.train import Logs, NonFiniteLossError, Trainer

PROGRESS_EVAL_IMAGES = 5000  # proxy/recon during training: the first 5,000 test images
SHOWN_IMAGES = 8  # the test images of reconstructions.png and of Figure 2
STRIPS = 4  # interpolation.png: the first 4 interpolation pairs
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


_SEARCH: dict[tuple[str, str, str], tuple[GridImages, list[tuple[int, int, int]]]] = {}


def search_tables(
    ds: Dataset, grid: FactorGrid, rows: np.ndarray, test: np.ndarray
) -> tuple[GridImages, list[tuple[int, int, int]]]:
    """The nearest-image search over `grid`'s images (rows: their ds rows) and the pairs of
    metric/gt_interp_* (test: (len(grid),) bool), built once per process for the latest
    (data fingerprint, data grid, metric grid): a process that runs several experiments (a
    bench) builds it once (~4 s and ~120 MB on the full grid; a sweep's trial runs in its own
    worker). The full grid searches ds's packed table itself."""
    key = (ds.provenance()["data/fingerprint"], ds.grid.describe(), grid.describe())
    if key not in _SEARCH:
        _SEARCH.clear()
        full = len(rows) == len(ds.grid) and np.array_equal(rows, np.arange(len(rows)))
        images = GridImages.build(ds.packed_all() if full else ds.packed(rows))
        _SEARCH[key] = images, choose_pairs(grid, test)
    return _SEARCH[key]


class Experiment:
    """R = len(cfgs) runs of one setting (cfgs: equal but for the seed; one Config is a solo
    run), their dataset and one Trainer; model i is cfgs[i]'s run, with every figure and file
    of a solo run of cfgs[i] (float tolerance when R > 1).

    progress: tqdm bars (True: training steps too, for a terminal), none (False), or a
    tqdm-like factory for evaluation bars only (Ray's tqdm_ray inside a trial)."""

    def __init__(
        self,
        cfgs: Config | Sequence[Config],
        ds: Dataset | None = None,
        progress: bool | Bar = True,
    ) -> None:
        self.cfgs = [cfgs] if isinstance(cfgs, Config) else list(cfgs)
        self.cfg, self.progress = self.cfgs[0], progress
        self.ds = ds if ds is not None else open_dataset(self.cfg.data)
        self.trainer = Trainer(self.cfgs, self.ds)

    @property
    def model(self) -> Any:
        """Model 0 (a solo run's model)."""
        return self.trainer.model

    @property
    def done(self) -> bool:
        return self.trainer.step >= self.cfg.train.steps or not self.trainer.active

    def train(self, report: Callable[[Logs], None]) -> Logs:
        """Train to cfg.train.steps. Every train.report_every steps but the last, report(logs)
        gets each active model's window logs (train/ and time/ logs, `step`) with
        proxy/recon and proxy/recon_mean (its first 5,000 test images), on lines the
        interpolation metrics (progress_figures), and every metrics.every steps the Higgins
        proxies (`proxies`). Returns each active model's last window logs (the final report
        is the caller's, with `final()`). Raises NonFiniteLossError when every model has
        failed."""
        every = self.cfg.metrics.every

        def window(trainer: Trainer, logs: Logs) -> None:
            if not self.done:
                due = every > 0 and trainer.step % every == 0
                proxies = self.proxies() if due else {}
                report(
                    {
                        i: {**v, **self.progress_figures(i), **proxies.get(i, {})}
                        for i, v in logs.items()
                    }
                )

        logs = self.trainer.run(callback=window, progress=self.progress is True)
        return logs or {i: {"step": self.trainer.step} for i in self.trainer.active}

    def progress_figures(self, i: int = 0) -> dict[str, float]:
        """Model i's test/recon and test/recon_mean on the first PROGRESS_EVAL_IMAGES test
        images as proxy/recon and proxy/recon_mean and, on lines, the interpolation metrics
        (their curve, as the paper logs them)."""
        figures = self.trainer.evaluate(PROGRESS_EVAL_IMAGES, progress=False, member=i)
        out = {k.replace("test/", "proxy/"): v for k, v in figures.items()}
        return out | self.lines_metrics(i) if self.ds.name == "lines" else out

    def proxies(self) -> dict[int, dict[str, float]]:
        """proxy/beta_vae_4 and proxy/beta_vae_5 of each active model (raywae.metrics.proxy:
        one encoding pass over the proxy grid for all of them, every classifier in one fit),
        and time/proxy_s, the pass's seconds per model; {} without a factor grid."""
        if self.ds.grid is None:
            return {}
        start, active = time.perf_counter(), self.trainer.active
        grid = proxy_grid(self.metric_grid(), self.cfg.metrics)
        codes = self.trainer.code_tables(grid)
        seeds = [self.cfgs[i].seed for i in active]
        scores = higgins_proxy(list(codes), grid, seeds, self.cfg.metrics, self.trainer.device)
        cost = (time.perf_counter() - start) / len(active)
        return {i: {**s, "time/proxy_s": cost} for i, s in zip(active, scores)}

    def lines_metrics(self, i: int) -> dict[str, float]:
        """PROTOCOL §9 for model i: the paper's 256 interpolations × 16 frames between test
        lines k and 256 + k, z = μ, scored on [−1, 1] frames as the benchmark's."""
        pairs = self.ds.interpolation_pairs(LINES_INTERPOLATIONS)
        frames = 2.0 * interpolate(self.trainer.member_model(i), *pairs, LINES_FRAMES) - 1.0
        return {f"metric/{k}": v for k, v in interpolation_metrics(frames).items()}

    def failures(self) -> dict[int, dict[str, Any]]:
        """Each diverged model's final logs: its step and the FAILED reason."""
        return {
            i: {"step": e.step, FAILED: f"{type(e).__name__}: {e}"}
            for i, e in self.trainer.failed.items()
        }

    def final(self) -> dict[int, dict[str, float]]:
        """PROTOCOL §6-§9 for each active model: test/recon and test/recon_mean over the whole
        test split, then (with a factor grid) one code table per model from one encoding pass
        over the grid (or its metrics.grid_subsample subgrid) -> Higgins on 4 and 5 factors
        and the extra metrics in one batched fit (report_many), the ground-truth
        interpolation score and the shape probe (grid_figures); or (lines) the interpolation
        metrics; the probe on a dataset with labels (MNIST, lines); time/final_eval_s (the
        shared passes split evenly)."""
        start, m, active = time.perf_counter(), self.cfg.metrics, self.trainer.active
        out = {i: self.trainer.evaluate(progress=self.progress, member=i) for i in active}
        if self.ds.grid is not None:
            grid = self.metric_grid()
            codes = self.trainer.code_tables(grid, progress=self.progress)
            seeds = [self.cfgs[i].seed for i in active]
            device = self.trainer.device
            scores = report_many(list(codes), grid, seeds, m.extra, m.runs, m.preset, device=device)
            for i, figures in zip(active, scores):
                out[i] |= figures
            for i, figures in zip(active, self.grid_figures(grid, codes)):
                out[i] |= figures
        elif self.ds.name == "lines":
            for i in active:
                out[i] |= self.lines_metrics(i)
        if self.ds.train_labels is not None:
            for i in active:
                out[i]["metric/probe_accuracy"] = self.probe(self.trainer.member_model(i))
        if m.every > 0:  # the proxies' last point, beside the scores they estimate
            proxies = self.proxies()
            for i in active:
                out[i] |= self.progress_figures(i) | proxies.get(i, {})
                out[i].pop("time/proxy_s", None)
        shared = (time.perf_counter() - start) / max(len(active), 1)
        return {i: {**figures, "time/final_eval_s": shared} for i, figures in out.items()}

    def grid_figures(self, grid: FactorGrid, codes: np.ndarray) -> list[dict[str, float]]:
        """Per active model (codes: (R_active, len(grid), d), its code tables over `grid`):
        metric/gt_interp_distance and metric/gt_interp_monotone (raywae.metrics.
        gt_interpolation, the nearest search over `grid`'s images, the pairs test images
        of `grid`) and metric/probe_accuracy (shape from μ: PROBE_TRAIN train and
        PROBE_TEST test images of `grid`, fixed seed)."""
        rows = rows_in(grid, self.ds.grid)  # grid index -> ds.grid index (= table row)
        test = np.isin(rows, self.ds.training_table().test)
        images, pairs = search_tables(self.ds, grid, rows, test)
        train_at, test_at = np.flatnonzero(~test), np.flatnonzero(test)
        tr, te = probe_rows(len(train_at), len(test_at))
        tr, te = train_at[tr], test_at[te]
        shape = grid.classes(np.arange(len(grid)))[:, grid.factor("shape")]
        out = []
        for r, i in enumerate(self.trainer.active):
            model = self.trainer.member_model(i)
            decode = functools.partial(interpolate, model, frames=FRAMES)
            figures = gt_interpolation(decode, images, grid, pairs)
            figures = {f"metric/{k}": v for k, v in figures.items()}
            c = codes[r]
            figures["metric/probe_accuracy"] = probe_accuracy(c[tr], shape[tr], c[te], shape[te])
            out.append(figures)
        return out

    @torch.no_grad()
    def probe(self, model: torch.nn.Module) -> float:
        """metric/probe_accuracy of a dataset with labels: μ of PROBE_TRAIN train and
        PROBE_TEST test images (fixed seed), then raywae.metrics.probe."""
        trainer = self.trainer  # its table on the device: trainer.rows(train_index[...])
        tr, te = probe_rows(len(trainer.train_index), len(trainer.test_index))
        was_training = model.training
        model.eval()

        def codes(index: torch.Tensor, at: np.ndarray) -> np.ndarray:
            rows = index[torch.from_numpy(at).to(index.device)]
            batches = (trainer.rows(rows[s : s + 2048]) for s in range(0, len(rows), 2048))
            return torch.cat([model.encode(x)[0].float().cpu() for x in batches]).numpy()

        try:
            train_codes = codes(trainer.train_index, tr)
            test_codes = codes(trainer.test_index, te)
        finally:
            model.train(was_training)
        labels = self.ds.train_labels[tr], self.ds.test_labels[te]
        return probe_accuracy(train_codes, labels[0], test_codes, labels[1])

    def metric_grid(self) -> FactorGrid:
        """The grid the metrics use: the data's grid, or its subgrid metrics.grid_subsample
        (every k-th value of the named factors)."""
        steps = self.cfg.metrics.grid_subsample
        return self.ds.grid.subgrid(steps) if steps else self.ds.grid

    def code_table(self, i: int = 0) -> np.ndarray:
        """Model i's encoder means (len(metric_grid()), d)."""
        tables = self.trainer.code_tables(self.metric_grid(), progress=self.progress)
        return tables[self.trainer.active.index(i)]

    def save(self, path: Path) -> None:
        """The checkpoint (Trainer.state_dict) at `path`, written atomically."""
        save_atomic(self.trainer.state_dict(), path)

    def restore(self, path: Path, name: str | None = None) -> None:
        """Continue from a checkpoint written by save() for the same configs. An unreadable
        one (truncated, corrupted) is a CheckpointError naming it (`name`, else `path`):
        never a silent restart from step 0."""
        load_checkpoint(self.trainer, path, name)

    def write_outputs(
        self, i: int, folder: Path, results: dict[str, Any], weights: bool = True
    ) -> list[Path]:
        """Model i's files in `folder`: reconstructions.png, traversal.png (interpolation.png
        where the data has interpolation pairs), config.json (the full config),
        metrics.json (its final figures) and, with weights, model.pt (the model's
        state_dict, what load_run reads back)."""
        folder.mkdir(parents=True, exist_ok=True)
        model = self.trainer.member_model(i)
        pairs = self.ds.interpolation_pairs(STRIPS)
        paths = write_pictures(model, self.ds.shown_images(SHOWN_IMAGES), folder, pairs)
        figures = {k: v for k, v in results.items() if isinstance(v, int | float)}
        for name, content in ((CONFIG_FILE, to_dict(self.cfgs[i])), (METRICS_FILE, figures)):
            (folder / name).write_text(json.dumps(content, indent=1))
            paths.append(folder / name)
        if weights:
            save_atomic(model.state_dict(), folder / MODEL_FILE)
            paths.append(folder / MODEL_FILE)
        return paths


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

    def report(logs: Logs) -> None:
        exp.save(state)
        with log.open("a") as f:
            f.write(json.dumps(logs[0]) + "\n")
        tqdm.write(_line(logs[0]))

    results = {**exp.train(report)[0], **exp.final()[0]}
    exp.save(state)
    exp.write_outputs(0, out, results)
    with log.open("a") as f:
        f.write(json.dumps({**results, "done": True}) + "\n")
    return results


def _line(logs: dict[str, Any]) -> str:
    keys = ("train/loss", "proxy/recon", "test/recon", "metric/beta_vae_4", "metric/beta_vae_5")
    keys += tuple(f"metric/{k}" for k in INTERPOLATION)
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
