"""`python -m raywae.sweep FILE`: run a search-space YAML as a Ray Tune experiment logged to
MLflow. `--dry-run` prints the planned trials without starting Ray; `--resume` continues a
killed sweep (finished trials are kept, interrupted ones continue from their checkpoints).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from raywae.config import ConfigError, parse_sets
from raywae.data import DataError
from raywae.errors import EXIT_BAD_INPUT
from raywae.search_space import SweepSpec, load
from raywae.tune.preflight import SweepError, prepare_data, resolve_paths
from raywae.tune.tuner import run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m raywae.sweep", description=__doc__)
    p.add_argument("file", type=Path, help="search-space YAML (see search_spaces/)")
    p.add_argument("--dry-run", action="store_true", help="print the trial table and exit")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --storage")
    p.add_argument("--storage", help="Tune storage folder or URI (default: the YAML's, ./runs)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in ./mlruns)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a YAML entry, e.g. --set base.train.steps=200 (repeatable)",
    )
    return p.parse_args(argv)


def trial_table(spec: SweepSpec) -> str:
    """The planned trials (grid) or the searched space (optuna / random), as text."""
    lines = [f"sweep {spec.name!r} from {spec.source}: {spec.algorithm} search"]
    for arm in spec.arms.values():
        settings = ", ".join(f"{k}={v}" for k, v in arm.settings.items())
        lines.append(f"  arm {arm.name}: {settings or '(base settings)'}")
    if spec.algorithm == "grid":
        trials = spec.trials()
        keys = sorted({k for t in trials for k in t.params})
        per_arm = Counter(t.arm for t in trials)
        lines.append(f"{len(trials)} trials: " + ", ".join(f"{a} {n}" for a, n in per_arm.items()))
        lines.append("  ".join(["#".rjust(4), "arm".ljust(14), *keys, "seed"]))
        for i, t in enumerate(trials):
            cells = [str(t.params.get(k, "-")).ljust(len(k)) for k in keys]
            lines.append("  ".join([str(i).rjust(4), t.arm.ljust(14), *cells, str(t.seed)]))
    else:
        lines.append(
            f"{spec.num_samples} trials, sampler {spec.sampler}, "
            f"objectives {list(zip(spec.metric, spec.mode))}, seed {spec.seeds[0]}"
        )
        for arm in spec.arms.values():
            space = ", ".join(f"{k} ~ {d.kind}{list(d.args)}" for k, d in arm.space.items())
            lines.append(f"  {arm.name}: {space or '(fixed)'}")
    if spec.algorithm == "grid" and spec.pack > 1:
        packs = spec.packs()
        lines.append(
            f"packing: pack {spec.pack} -> {len(packs)} Tune trials of up to {spec.pack} "
            "models (the seeds of one setting; resources below are per pack)"
        )
        for k, members in enumerate(packs):
            run = members == list(range(members[0], members[-1] + 1)) and len(members) > 2
            which = f"{members[0]}-{members[-1]}" if run else ", ".join(str(i) for i in members)
            lines.append(f"  pack {k}: trials {which}")
    else:
        lines.append("packing: one model per Tune trial (pack 1)")
    train = spec.config(spec.example()).train
    lines.append(
        f"resources per trial: {spec.cpu} CPU, {spec.gpu} GPU; steps per trial: {train.steps}, "
        f"a report every {train.report_every}, a checkpoint every "
        f"{train.checkpoint_every or train.report_every}"
    )
    lines.append(spec.scheduler.describe())
    pick = "--trial N" if spec.algorithm == "grid" else "--arm NAME --set key=value ..."
    lines.append(f"one trial alone: python -m raywae.experiment {spec.source} {pick}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load(args.file, parse_sets(args.set))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.dry_run:
        print(trial_table(spec))
        return 0
    spec = resolve_paths(spec, args.storage)
    try:
        data = prepare_data(spec)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Ray, MLflow and torch load only past this point, when a sweep really runs.
    # SIGTERM (a scheduler's kill) stops the sweep like Ctrl+C: Tune saves its state first.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    from raywae.resume import ResumeError

    try:
        return run(spec, data, args.tracking_uri, args.address, args.resume)
    except (SweepError, ResumeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
