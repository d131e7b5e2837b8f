"""What a run writes and reads back: its checkpoint (atomic save, weights-only load,
CheckpointError), the names of a finished run's files, `load_run` (a trained model and its
Config from a run folder or an MLflow run) and `load_member` (one model of a trial's
checkpoint, solo or pack)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch

from raywae.config import Config, compose
from raywae.models import AutoEncoder, build_model

STATE_FILE = "state.pt"  # checkpoint: weights, optimizers, step, RNG states
CONFIG_FILE, METRICS_FILE, MODEL_FILE = "config.json", "metrics.json", "model.pt"


def artifact_folder(model: int, size: int) -> str:
    """Where a trial of `size` models keeps model `model`'s files in its final checkpoint:
    `artifacts/`, or `artifacts/<model>/` in a pack."""
    return "artifacts" if size == 1 else f"artifacts/{model}"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back; the message names the file."""


class Stateful(Protocol):
    def load_state_dict(self, sd: dict[str, Any]) -> None: ...


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file: a kill mid-write leaves the old file intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(target: Stateful, path: Path, name: str | None = None) -> None:
    """target.load_state_dict of the checkpoint at `path` (weights only: no pickled objects).
    An unreadable one is a CheckpointError naming it (`name`, else `path`)."""
    try:
        target.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{name or path}: unreadable checkpoint: {err}") from None


def member_states(state: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """A checkpoint's state dict (Trainer.state_dict) -> model index -> that model's state
    (Trainer.member_state: weights, optimizers, step, RNG states, config): a solo run's is
    model 0; a pack's are its members still training (a failed member has none)."""
    members = state["members"] if "members" in state else {0: state}
    return {int(i): member for i, member in members.items()}


def weights_digest(state: dict[str, Any]) -> str:
    """sha256 of the auto-encoder weights in a checkpoint's state dict (a solo run's, or each
    member's of a pack, in member order): two checkpoints hold the same models iff equal."""
    digest = hashlib.sha256()
    members = member_states(state)
    for i in sorted(members):
        for name, tensor in sorted(members[i]["model"].items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


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


def newest_state(trial: Path) -> Path | None:
    """The newest state.pt of a Tune trial folder (Tune keeps the last two, or all under a
    population scheduler), or None."""
    found = sorted(trial.glob(f"checkpoint_*/{STATE_FILE}"))
    return found[-1] if found else None


def load_member(path: Path, member: int = 0) -> tuple[AutoEncoder, Config]:
    """Model `member` (CPU, eval mode) and its Config from a trial's checkpoint `path` (a
    state.pt: a solo run's is member 0; a pack's holds each member's weights and config,
    member k being the model of the run tagged raywae.pack_member k). A CheckpointError
    when the checkpoint is unreadable or has no such member (one that failed)."""
    try:
        members = member_states(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint: {err}") from None
    if member not in members:
        raise CheckpointError(f"{path}: no model {member} (failed?); it holds {sorted(members)}")
    cfg = compose(members[member]["config"], {}, f"{path} model {member}")
    model = build_model(cfg.model)
    model.load_state_dict(members[member]["model"])
    return model.eval(), cfg


def _load_folder(folder: Path) -> tuple[AutoEncoder, Config]:
    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {MODEL_FILE} (run with weights saved?)")
    cfg = compose(json.loads((folder / CONFIG_FILE).read_text()), {}, str(folder / CONFIG_FILE))
    model = build_model(cfg.model)
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    return model.eval(), cfg
