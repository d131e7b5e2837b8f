"""Driver-side repair of a resumed sweep's Tune state: `ResumeFromNewestCheckpoint` points a
resumed trial whose checkpoint, as Tune's saved state names it, is gone at the newest intact
checkpoint left in its folder (Tune Ray 2.60 internals; see its docstring)."""

from __future__ import annotations

import json
import posixpath
import re
import zipfile
from typing import Any

import pyarrow.fs
import ray
from ray import tune
from ray.tune.experiment import Trial

from raywae.checkpoint import STATE_FILE

CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")  # a Tune checkpoint in a trial's folder


class ResumeError(RuntimeError):
    """This Ray keeps a trial's checkpoints otherwise than the repair expects (exit 2)."""


class ResumeFromNewestCheckpoint(tune.Callback):
    """On a resumed sweep, before any trial restarts: a trial whose latest checkpoint, as
    Tune's saved state names it, is gone continues from the newest intact checkpoint left in
    its folder (issue 17).

    Tune saves its state every ~10 s; a trial reports (each report with a checkpoint) more
    often, and `CheckpointConfig(num_to_keep=2)` deletes older checkpoints as new ones come.
    After a SIGKILL the state can name a checkpoint deleted since, and Ray's Trainable.restore
    (on the worker, before the trainable runs) fails the trial with "Could not recover from
    checkpoint as it does not exist on storage anymore". So the repair is on the driver, in
    the trial's bookkeeping that Tune hands to the worker.
    """

    def __init__(self) -> None:
        self._checked = False

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._checked = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._checked:  # the first step of a (re)start: Tune has restored its trials and
            return  # started none of them yet
        self._checked = True
        for trial in trials:
            named = trial.checkpoint
            if trial.status == Trial.PENDING and named is not None:
                fs = named.filesystem
                state = fs.get_file_info(f"{named.path}/{STATE_FILE}")
                if state.type == pyarrow.fs.FileType.NotFound:
                    _continue_from_newest(trial, fs, posixpath.dirname(named.path))


def _intact(fs: pyarrow.fs.FileSystem, folder: str) -> bool:
    """`folder` holds a whole raywae state file. torch.save writes a zip, whose directory is
    at its end: a checkpoint copy cut short by the kill has none."""
    try:
        with fs.open_input_file(f"{folder}/{STATE_FILE}") as f:
            return zipfile.is_zipfile(f)
    except OSError:  # FileNotFoundError, or an unreadable file
        return False


def _continue_from_newest(trial: Any, fs: pyarrow.fs.FileSystem, folder: str) -> None:
    """Point `trial` at the newest intact checkpoint_NNNNNN in `folder` (its trial folder),
    or at none (it starts again) if none is left.

    Relies on Ray 2.60's private trial bookkeeping (as Tune's own PBT scheduler does): the
    checkpoint manager's `_latest_checkpoint_result` (what Tune restores the trial from) and
    `_checkpoint_results` (what `num_to_keep` deletes from), the `_TrainingResult` they hold,
    and the trial's `storage.current_checkpoint_index` (where its next checkpoint goes: past
    the chosen one, never into a folder that exists). A Ray without them, or whose trial
    then names another checkpoint, is a ResumeError, not a trial left to fail."""
    gone = trial.checkpoint.path
    unknown = ResumeError(
        f"trial {trial.trial_id}: its checkpoint {gone} is gone, and this Ray "
        f"({ray.__version__}) keeps a trial's checkpoints unlike Ray 2.60, for which raywae "
        "points the trial at the newest checkpoint left in its folder: update "
        "raywae.resume.ResumeFromNewestCheckpoint for it"
    )
    try:
        from ray.train._internal.session import _TrainingResult
    except ImportError:
        raise unknown from None
    manager = getattr(trial.run_metadata, "checkpoint_manager", None)
    if not (
        hasattr(manager, "_latest_checkpoint_result")
        and isinstance(getattr(manager, "_checkpoint_results", None), list)
        and isinstance(getattr(trial.storage, "current_checkpoint_index", None), int)
    ):
        raise unknown
    found = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    kept = sorted(
        (int(m.group(1)), info.path)
        for info in found
        if info.type == pyarrow.fs.FileType.Directory
        and (m := CHECKPOINT_DIR.fullmatch(info.base_name))
        and _intact(fs, info.path)
    )
    # Tune's counters (training_iteration, time_total_s) restart with the checkpoint's result
    # as result.json has it (it may not yet: it is saved with Tune's state); raywae's own
    # step is in the state file.
    metrics = _results_by_checkpoint(fs, folder)
    results = [
        _TrainingResult(
            checkpoint=tune.Checkpoint(path=path, filesystem=fs),
            metrics=metrics.get(posixpath.basename(path), {}),
        )
        for _, path in kept
    ]
    manager._checkpoint_results = results  # older ones go as new ones come (num_to_keep)
    manager._latest_checkpoint_result = results[-1] if results else None
    trial.storage.current_checkpoint_index = kept[-1][0] if kept else -1
    trial.invalidate_json_state()  # Tune saves its state from these caches
    trial.run_metadata.invalidate_cache()
    if trial.latest_checkpoint_result is not (results[-1] if results else None):
        raise unknown  # Tune would restore the trial from something else
    print(
        f"resume: trial {trial.trial_id}: {posixpath.basename(gone)}, its checkpoint in "
        "Tune's state, is gone; "
        + (
            f"continuing from {posixpath.basename(kept[-1][1])}, the newest left"
            if kept
            else "no checkpoint is left in its folder, so it starts again"
        )
    )


def _results_by_checkpoint(fs: pyarrow.fs.FileSystem, folder: str) -> dict[str, dict]:
    """The trial's results in its result.json, by the checkpoint folder they came with."""
    try:
        with fs.open_input_stream(f"{folder}/result.json") as f:
            lines = f.read().decode().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        try:
            result = json.loads(line)
        except ValueError:  # a line cut short by the kill
            continue
        if result.get("checkpoint_dir_name"):
            out[result["checkpoint_dir_name"]] = result
    return out
