"""The interpolation track (PROTOCOL §9): lines images and metrics, MNIST IDX files, the
conv32 auto-encoder, ACAI composed with every objective."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raywae.config import ConfigError, compose, from_dict, to_dict
from raywae.data import DataError
from raywae.data.imageset import ImageSet, fresh_lines, lines_set, mnist_set
from raywae.data.lines import LINE_SIDE, line_labels, lines_split, render_lines
from raywae.data.mnist import MNIST_DOWNLOAD, MNIST_FILES, load_mnist, read_idx, write_idx
from raywae.experiment import Experiment
from raywae.families import CRITIC
from raywae.logkeys import reported
from raywae.metrics.interpolation import interpolation_metrics, reference_lines
from raywae.models.networks import Critic
from raywae.models.objectives import AcaiCritic, acai_alpha
from raywae.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
FRAMES = 16


# --- lines ----------------------------------------------------------------------------------
PAPER_ANGLES = {"0": 0.0, "π/2": math.pi / 2, "π": math.pi, "3π/2": 3 * math.pi / 2}
PAPER_ANGLES |= {"π/4": math.pi / 4, "3π/4": 3 * math.pi / 4, "5π/7": 5 * math.pi / 7}
PAPER_PIXELS = {  # angle -> its pixels above −1: (row, col, value), from the paper's draw_line
    "0": [
        (15, 16, 1.0),
        (15, 17, 1.0),
        (15, 18, 1.0),
        (15, 19, 1.0),
        (15, 20, 1.0),
        (15, 21, 1.0),
        (15, 22, 1.0),
        (15, 23, 1.0),
        (15, 24, 1.0),
        (15, 25, 1.0),
        (15, 26, 1.0),
        (15, 27, 1.0),
        (15, 28, 1.0),
        (15, 29, 1.0),
        (15, 30, 1.0),
        (16, 16, 1.0),
        (16, 17, 1.0),
        (16, 18, 1.0),
        (16, 19, 1.0),
        (16, 20, 1.0),
        (16, 21, 1.0),
        (16, 22, 1.0),
        (16, 23, 1.0),
        (16, 24, 1.0),
        (16, 25, 1.0),
        (16, 26, 1.0),
        (16, 27, 1.0),
        (16, 28, 1.0),
        (16, 29, 1.0),
        (16, 30, 1.0),
    ],
    "π/2": [
        (1, 15, 1.0),
        (1, 16, 1.0),
        (2, 15, 1.0),
        (2, 16, 1.0),
        (3, 15, 1.0),
        (3, 16, 1.0),
        (4, 15, 1.0),
        (4, 16, 1.0),
        (5, 15, 1.0),
        (5, 16, 1.0),
        (6, 15, 1.0),
        (6, 16, 1.0),
        (7, 15, 1.0),
        (7, 16, 1.0),
        (8, 15, 1.0),
        (8, 16, 1.0),
        (9, 15, 1.0),
        (9, 16, 1.0),
        (10, 15, 1.0),
        (10, 16, 1.0),
        (11, 15, 1.0),
        (11, 16, 1.0),
        (12, 15, 1.0),
        (12, 16, 1.0),
        (13, 15, 1.0),
        (13, 16, 1.0),
        (14, 15, 1.0),
        (14, 16, 1.0),
        (15, 15, 1.0),
        (15, 16, 1.0),
    ],
    "π": [
        (14, 1, -1.0),
        (14, 2, -1.0),
        (14, 3, -1.0),
        (14, 4, -1.0),
        (14, 5, -1.0),
        (14, 6, -1.0),
        (14, 7, -1.0),
        (14, 8, -1.0),
        (15, 1, 1.0),
        (15, 2, 1.0),
        (15, 3, 1.0),
        (15, 4, 1.0),
        (15, 5, 1.0),
        (15, 6, 1.0),
        (15, 7, 1.0),
        (15, 8, 1.0),
        (15, 9, 1.0),
        (15, 10, 1.0),
        (15, 11, 1.0),
        (15, 12, 1.0),
        (15, 13, 1.0),
        (15, 14, 1.0),
        (15, 15, 1.0),
        (16, 1, 1.0),
        (16, 2, 1.0),
        (16, 3, 1.0),
        (16, 4, 1.0),
        (16, 5, 1.0),
        (16, 6, 1.0),
        (16, 7, 1.0),
        (16, 8, 1.0),
        (16, 9, 1.0),
        (16, 10, 1.0),
        (16, 11, 1.0),
        (16, 12, 1.0),
        (16, 13, 1.0),
        (16, 14, 1.0),
        (16, 15, 1.0),
    ],
    "3π/2": [
        (16, 15, 1.0),
        (16, 16, 1.0),
        (17, 15, 1.0),
        (17, 16, 1.0),
        (18, 15, 1.0),
        (18, 16, 1.0),
        (19, 15, 1.0),
        (19, 16, 1.0),
        (20, 15, 1.0),
        (20, 16, 1.0),
        (21, 14, -1.0),
        (21, 15, 1.0),
        (21, 16, 1.0),
        (22, 14, -1.0),
        (22, 15, 1.0),
        (22, 16, 1.0),
        (23, 14, -1.0),
        (23, 15, 1.0),
        (23, 16, 1.0),
        (24, 14, -1.0),
        (24, 15, 1.0),
        (24, 16, 1.0),
        (25, 14, -1.0),
        (25, 15, 1.0),
        (25, 16, 1.0),
        (26, 14, -1.0),
        (26, 15, 1.0),
        (26, 16, 1.0),
        (27, 14, -1.0),
        (27, 15, 1.0),
        (27, 16, 1.0),
        (28, 14, -1.0),
        (28, 15, 1.0),
        (28, 16, 1.0),
        (29, 14, -1.0),
        (29, 15, 1.0),
        (29, 16, 1.0),
        (30, 14, -1.0),
        (30, 15, 1.0),
        (30, 16, 1.0),
    ],
    "π/4": [
        (5, 26, -0.0),
        (6, 25, -0.0),
        (6, 26, 1.0),
        (7, 24, -0.0),
        (7, 25, 1.0),
        (7, 26, 0.0),
        (8, 23, -0.0),
        (8, 24, 1.0),
        (8, 25, 0.0),
        (9, 22, 0.0),
        (9, 23, 1.0),
        (9, 24, 0.0),
        (10, 21, 0.0),
        (10, 22, 1.0),
        (10, 23, 0.0),
        (11, 20, 0.0),
        (11, 21, 1.0),
        (11, 22, 0.0),
        (12, 19, 0.0),
        (12, 20, 1.0),
        (12, 21, 0.0),
        (13, 18, 0.0),
        (13, 19, 1.0),
        (13, 20, 0.0),
        (14, 17, 0.0),
        (14, 18, 1.0),
        (14, 19, 0.0),
        (15, 16, 0.0),
        (15, 17, 1.0),
        (15, 18, 0.0),
        (16, 16, 1.0),
        (16, 17, 0.0),
        (17, 16, 0.0),
    ],
    "3π/4": [
        (5, 3, -0.393398282202),
        (5, 4, 0.213203435596),
        (5, 5, -0.393398282202),
        (6, 4, -0.0),
        (6, 5, 1.0),
        (6, 6, 0.0),
        (7, 5, -0.0),
        (7, 6, 1.0),
        (7, 7, 0.0),
        (8, 6, -0.0),
        (8, 7, 1.0),
        (8, 8, 0.0),
        (9, 7, -0.0),
        (9, 8, 1.0),
        (9, 9, 0.0),
        (10, 8, 0.0),
        (10, 9, 1.0),
        (10, 10, 0.0),
        (11, 9, 0.0),
        (11, 10, 1.0),
        (11, 11, 0.0),
        (12, 10, 0.0),
        (12, 11, 1.0),
        (12, 12, 0.0),
        (13, 11, 0.0),
        (13, 12, 1.0),
        (13, 13, 0.0),
        (14, 12, 0.0),
        (14, 13, 1.0),
        (14, 14, 0.0),
        (15, 13, 0.0),
        (15, 14, 1.0),
        (15, 15, 0.0),
    ],
    "5π/7": [
        (4, 5, 0.408993487996),
        (4, 6, 0.454944474041),
        (4, 7, -0.954049013955),
        (5, 5, -0.658112055705),
        (5, 6, 1.0),
        (5, 7, 0.658112055705),
        (6, 6, -0.25305883347),
        (6, 7, 1.0),
        (6, 8, 0.25305883347),
        (7, 7, 0.151994388766),
        (7, 8, 1.0),
        (7, 9, -0.151994388766),
        (8, 8, 0.557047611001),
        (8, 9, 1.0),
        (8, 10, -0.557047611001),
        (9, 9, 0.962100833236),
        (9, 10, 1.0),
        (9, 11, -0.962100833236),
        (10, 9, -0.632845944529),
        (10, 10, 1.0),
        (10, 11, 0.632845944529),
        (11, 10, -0.227792722294),
        (11, 11, 1.0),
        (11, 12, 0.227792722294),
        (12, 11, 0.177260499942),
        (12, 12, 1.0),
        (12, 13, -0.177260499942),
        (13, 12, 0.582313722177),
        (13, 13, 1.0),
        (13, 14, -0.582313722177),
        (14, 13, 0.987366944412),
        (14, 14, 1.0),
        (14, 15, -0.987366944412),
        (15, 13, -0.607579833353),
        (15, 14, 1.0),
        (15, 15, 0.607579833353),
    ],
}


@pytest.mark.parametrize("name", list(PAPER_PIXELS))
def test_lines_are_the_papers_pixels(name: str):
    """The four axis directions, both diagonals and one other angle, against pixel values
    computed with the paper's own draw_line (brain-research/acai lib/data.py): every pixel
    not listed is the background −1."""
    (image,) = render_lines(np.array([PAPER_ANGLES[name]]))
    assert image.shape == (LINE_SIDE, LINE_SIDE) and image.dtype == np.float64
    expected = np.full((LINE_SIDE, LINE_SIDE), -1.0)
    for row, col, value in PAPER_PIXELS[name]:
        expected[row, col] = value
    assert np.allclose(image, expected, rtol=0, atol=1e-9)


def test_lines_at_any_angle_stay_in_range_with_the_papers_ink():
    angles = np.random.default_rng(0).uniform(0, 2 * np.pi, 2000)
    images = render_lines(angles)
    assert images.min() == -1.0 and images.max() == 1.0
    ink = ((images + 1) / 2).sum((1, 2))
    # about width 2 × length 15, less what the paper's scan drops at the ends (its far end
    # is never partial): 21.2 to 30.0 px over these angles
    assert 20 < ink.min() and ink.max() <= 32
    lit = images > -1
    rows, cols = np.nonzero(lit.any(0))
    assert rows.min() >= 0 and cols.max() <= LINE_SIDE - 1 and lit[:, 0, 0].sum() == 0


def test_lines_split_keeps_its_test_lines_whatever_the_train_size():
    train, test = lines_split(100, 50)
    train2, test2 = lines_split(200, 50)
    assert np.array_equal(test, test2) and np.array_equal(train, train2[:100])
    assert len(train2) == 200 and 0 <= test.min() and test.max() < 2 * np.pi
    assert np.array_equal(line_labels(np.array([0.0, 0.7, 2 * np.pi - 1e-3])), [0, 1, 9])


def _on_reference(start: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """Interpolations whose frames are reference lines start + i·stride (i < FRAMES)."""
    angles, _ = reference_lines()
    index = (start[:, None] + stride[:, None] * np.arange(FRAMES)) % len(angles)
    return render_lines(angles[index].ravel()).reshape(len(start), FRAMES, LINE_SIDE, LINE_SIDE)


def test_both_smoothness_conventions_on_perfect_crossfaded_and_collapsed():
    rng = np.random.default_rng(0)
    start = rng.integers(0, 10_000, 8)
    stride = rng.integers(20, 300, 8) * rng.choice([-1, 1], 8)
    perfect = _on_reference(start, stride)
    good = interpolation_metrics(perfect)
    assert good["interp_mean_distance"] < 1e-12
    assert abs(good["interp_smoothness"]) < 1e-9 and abs(good["interp_smoothness_strict"]) < 1e-9

    t = np.linspace(0, 1, FRAMES)[None, :, None, None]
    fade = perfect[:, :1] * (1 - t) + perfect[:, -1:] * t
    bad = interpolation_metrics(fade)
    assert bad["interp_mean_distance"] > 1e-3  # 7.1e-3 here, the ends included
    # a cross-fade's nearest line jumps once from one end to the other: 1 − 1/15 at worst
    assert (
        bad["interp_smoothness"] > 0.5
        and bad["interp_smoothness"] == bad["interp_smoothness_strict"]
    )

    collapsed = np.repeat(perfect[:, :1], FRAMES, axis=1)  # every frame the same line
    worst = 1 - 1 / (FRAMES - 1)
    alone = interpolation_metrics(collapsed)
    assert alone["interp_mean_distance"] < 1e-12
    assert np.isnan(alone["interp_smoothness"])  # the paper's code: no interpolation scores
    assert alone["interp_smoothness_strict"] == pytest.approx(worst)
    # half collapsed, half cross-faded: the paper divides the faded half's sum by all 16
    mixed = interpolation_metrics(np.concatenate([collapsed, fade]))
    assert mixed["interp_smoothness"] == pytest.approx(bad["interp_smoothness"] / 2)
    assert mixed["interp_smoothness_strict"] == pytest.approx(
        (worst + bad["interp_smoothness"]) / 2
    )
    # half collapsed, half perfect: the paper's convention scores it perfect, strict does not
    half = interpolation_metrics(np.concatenate([collapsed, perfect]))
    assert abs(half["interp_smoothness"]) < 1e-9
    assert half["interp_smoothness_strict"] == pytest.approx(worst / 2)


# --- MNIST ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = tmp_path / f"images-idx3-ubyte{suffix}"
    write_idx(array, path)
    assert np.array_equal(read_idx(path), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_mnist_from_tiny_idx_files(tmp_path: Path):
    with pytest.raises(DataError, match=MNIST_DOWNLOAD):
        load_mnist(tmp_path)
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 4)):
        write_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), tmp_path / "x")
        (tmp_path / "x").rename(tmp_path / MNIST_FILES[f"{split}_images"][0].removesuffix(".gz"))
        write_idx(rng.integers(0, 10, n, dtype=np.uint8), tmp_path / "y")
        (tmp_path / "y").rename(tmp_path / MNIST_FILES[f"{split}_labels"][0].removesuffix(".gz"))
    arrays = load_mnist(tmp_path)
    ds = mnist_set(tmp_path)
    assert ds.train.shape == (6, 32 * 32) and ds.test.shape == (4, 32 * 32)
    digits = ds.test.reshape(4, 32, 32)
    assert np.allclose(digits[:, 2:30, 2:30] * 255, arrays["test_images"], atol=1e-3)
    assert digits[:, :2].max() == 0 and 0 <= ds.train.min() and ds.train.max() <= 1


@pytest.fixture(scope="module")
def lines() -> ImageSet:
    """A small lines set (the full table is 136 MB): 2,048 train and 64 test lines."""
    return lines_set(2048, 64)


def test_mnist_run_writes_interpolation_strips(tmp_path: Path):
    """An MNIST config end to end on tiny IDX files: train, final figures (no lines metrics),
    and interpolation.png among the outputs."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        images, labels = (f"{split}_images", f"{split}_labels")
        write_idx(rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), tmp_path / "x")
        (tmp_path / "x").rename(tmp_path / MNIST_FILES[images][0].removesuffix(".gz"))
        write_idx(rng.integers(0, 10, 40, dtype=np.uint8), tmp_path / "y")
        (tmp_path / "y").rename(tmp_path / MNIST_FILES[labels][0].removesuffix(".gz"))
    cfg = lines_cfg("wwae", steps=2, report_every=2)
    cfg = from_dict({**to_dict(cfg), "data": {"dataset": "mnist", "path": str(tmp_path)}})
    exp = Experiment(cfg, progress=False)
    results = {**exp.trainer.run()[0], **exp.final()[0]}
    # no lines metrics on MNIST; the probe on its digit labels
    assert {k for k in results if k.startswith("metric/")} == {"metric/probe_accuracy"}
    assert {k for k in results if "/" in k} == reported(cfg) - {
        "proxy/recon",
        "proxy/recon_mean",
    }
    paths = exp.write_outputs(0, tmp_path / "out", results, weights=False)
    assert tmp_path / "out" / "interpolation.png" in paths


# --- ACAI -----------------------------------------------------------------------------------
def test_alpha_is_the_fold_of_uniform():
    alpha = acai_alpha(20_000, torch.Generator().manual_seed(0))
    assert alpha.min() >= 0 and alpha.max() <= 0.5
    assert alpha.mean().item() == pytest.approx(0.25, abs=0.01)


def test_critic_targets_alpha_for_mixes_and_zero_for_blends():
    """The critic's loss pins its targets: α on the mixes, 0 on γ·x + (1−γ)·x̂ (γ = 0.2)."""
    torch.manual_seed(0)
    critic = Critic(latent_dim=16, depth=4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy((render_lines(rng.uniform(0, 6.3, 16)) + 1) / 2).float().flatten(1)
    x_hat = torch.from_numpy((render_lines(rng.uniform(0, 6.3, 16)) + 1) / 2).float().flatten(1)
    alpha = torch.linspace(0, 0.5, 16)
    x_mix = alpha[:, None] * x + (1 - alpha[:, None]) * x.flip(0)
    batch = {"x": x, "x_hat": x_hat, "x_mix": x_mix, "alpha": alpha}
    side = AcaiCritic(CRITIC, 1e-4, critic, gamma=0.2)
    with torch.no_grad():
        mixes, blends = critic(x_mix), critic(0.2 * x + 0.8 * x_hat)
        expected = (mixes - alpha).pow(2).mean() + blends.pow(2).mean()
        assert side.loss(batch, {}) == pytest.approx(expected.item(), rel=1e-5)
        # the blend is γ·x + (1−γ)·x̂, not the other way round
        assert side.loss({**batch, "x": x_hat, "x_hat": x}, {}) != side.loss(batch, {})


def test_objective_mixes_codes_with_the_alpha_it_reports(lines: ImageSet):
    """x̂_mix = sigmoid(decode(α·z + (1−α)·z reversed)) with the α handed to the critic, and
    the auto-encoder's ACAI term is mean d(x̂_mix)²."""
    trainer = Trainer(lines_cfg("ae"), lines)
    x = trainer.rows(trainer.train_index[:16])
    out = trainer.objective(trainer.model, x, torch.Generator().manual_seed(0))
    batch = out.side[CRITIC.name]
    a = batch["alpha"][:, None]
    with torch.no_grad():
        mix = torch.sigmoid(trainer.model.decode(a * out.z + (1 - a) * out.z.flip(0)))
        assert torch.allclose(batch["x_mix"], mix, atol=1e-6)
        term = trainer.objective.acai.critic.net(mix).pow(2).mean()
    assert out.terms["acai"].item() == pytest.approx(term.item(), rel=1e-5)
    assert batch["alpha"].min() >= 0 and batch["alpha"].max() <= 0.5


def lines_cfg(name: str, acai: float = 512.0, **train) -> object:
    lam = {"wae_mmd": 100.0, "wae_gan": 1.0, "wwae": 10.0}.get(name, 0.0)
    return compose(
        {
            "data": {"dataset": "lines"},
            "model": {
                "arch": "conv32",
                "depth": 4,
                "latent_dim": 16,
                "posterior": "deterministic",
                "mean_head": "linear",
                "init": "torch",
            },
            "objective": {"name": name, "lam": lam, "acai": acai, "critic_lr": 1e-3},
            "train": {
                "steps": 40,
                "batch_size": 16,
                "lr": 1e-3,
                "lr_milestones": [],
                "lr_decay": [],
                "report_every": 10,
                "device": "cpu",
                **train,
            },
            "seed": 3,
        },
        {},
    )


@pytest.mark.parametrize("name", ["ae", "wae_mmd", "wae_gan", "wwae"])
def test_composed_objective_trains(lines: ImageSet, name: str):
    trainer = Trainer(lines_cfg(name), lines)
    windows = []
    trainer.run(callback=lambda t, logs: windows.append(logs[0]))
    first, last = windows[0], windows[-1]
    assert {"train/acai", "train/acai_critic"} <= set(last)
    assert last["train/recon"] < 0.8 * first["train/recon"]
    assert last["train/loss"] < first["train/loss"]


def test_acai_resume_is_exact(lines: ImageSet):
    cfg = lines_cfg("wae_gan", steps=6, report_every=3)
    whole = Trainer(cfg, lines)
    whole.run()
    first = Trainer(cfg, lines)
    first.run(steps=3)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = Trainer(cfg, lines)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    resumed.run()
    # Exact: a resume in the same process replays the same kernels on the same inputs.
    for a, b in zip(
        resumed.state_dict()["objective"].values(), whole.state_dict()["objective"].values()
    ):
        assert torch.equal(a, b)
    for a, b in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.state_dict()["critic_optimizer"]["state"]


def test_lines_run_reports_its_keys(lines: ImageSet, tmp_path: Path):
    cfg = lines_cfg("ae", steps=2, report_every=2)
    exp = Experiment(cfg, lines, progress=False)
    logs = exp.trainer.run()[0]
    results = {**logs, **exp.final()[0]}
    results |= exp.progress_figures(0)
    keys = {k for k in results if "/" in k}
    assert keys == reported(cfg)
    assert 0 <= results["metric/interp_mean_distance"] <= 2
    paths = exp.write_outputs(0, tmp_path, results, weights=False)
    assert (tmp_path / "interpolation.png") in paths


def test_training_lines_are_drawn_fresh_or_from_the_fixed_set(lines: ImageSet):
    """lines_train fresh (the paper, the default): each batch is rendered from the model's
    own data generator's U[0, 1) draws; fixed: rows of the fixed train set."""
    fresh = Trainer(lines_cfg("ae"), lines)
    batch = fresh.data.batch(16, torch.Generator().manual_seed(5))
    u = torch.rand(16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(batch, torch.from_numpy(fresh_lines(u.numpy())))
    table = torch.from_numpy(lines.train)

    def in_table(x: torch.Tensor) -> torch.Tensor:
        return (x[:, None] == table[None]).all(-1).any(1)

    assert not in_table(batch).any()  # none is a row of the fixed set
    cfg = lines_cfg("ae")
    cfg = from_dict({**to_dict(cfg), "data": {"dataset": "lines", "lines_train": "fixed"}})
    fixed = Trainer(cfg, lines_set(2048, 64, fresh=False))
    rows = fixed.data.batch(16, torch.Generator().manual_seed(5))
    assert in_table(rows).all()
    with pytest.raises(ConfigError, match="data.lines_train: only for dataset lines"):
        from_dict({"data": {"lines_train": "fixed"}})


def test_config_rejects_mismatched_arch_and_acai():
    with pytest.raises(ConfigError, match="model.arch: lines needs conv32"):
        from_dict({"data": {"dataset": "lines"}})
    with pytest.raises(ConfigError, match="model.arch: lines needs conv32"):
        from_dict({"data": {"dataset": "lines"}, "model": {"arch": "conv64"}})
    for arch in ("fc", "conv", "conv64"):  # dSprites' 64×64 networks
        assert from_dict({"model": {"arch": arch}}).model.arch == arch
    with pytest.raises(ConfigError, match=r"dsprites needs fc, conv or conv64 \(64×64"):
        from_dict({"model": {"arch": "conv32", "latent_dim": 16}})
    with pytest.raises(ConfigError, match=r"objective.acai: acai needs model.arch in \['conv32'\]"):
        from_dict({"objective": {"acai": 0.5}})


def test_analysis_table_has_both_conventions_and_the_papers_rows():
    from analysis.interpolation import PAPER, markdown, table

    runs = pd.DataFrame(
        {
            "arm": ["ae", "ae", "acai", "acai", "wwae"],
            "objective.name": ["ae", "ae", "ae", "ae", "wwae"],
            "objective.acai": [0.0, 0.0, 512.0, 512.0, 0.0],
            "metric/interp_mean_distance": [4e-3, 6e-3, 1e-3, 3e-3, 2e-3],
            "metric/interp_smoothness": [0.2, 0.4, 0.1, np.nan, 0.3],  # acai seed 1: collapsed
            "metric/interp_smoothness_strict": [0.2, 0.4, 0.1, 14 / 15, 0.3],
            "test/recon": [20.0, 22.0, 19.0, 21.0, 25.0],
        }
    )
    t = table(runs).set_index("arm")
    assert t.loc["ae", "n"] == 2 and t.loc["ae", "distance_mean"] == pytest.approx(5e-3)
    assert t.loc["ae", "distance_std"] == pytest.approx(1e-3)  # ddof 0, as the paper's
    assert t.loc["acai", "strict_mean"] == pytest.approx((0.1 + 14 / 15) / 2)
    assert t.loc["acai", "paper_distance"] == PAPER["acai"][0][0]
    assert t.loc["ae", "paper_smoothness"] == PAPER["baseline"][1][0]
    assert np.isnan(t.loc["wwae", "paper_distance"])
    text = markdown(t.reset_index(), "caption")
    assert "| ae | ae | 0 | 2 | 5.00 ± 1.00 | 0.300 ± 0.100 | 0.300 ± 0.100 | 21.0 ± 1.0 |" in text


def test_analysis_curves_from_progress_files(tmp_path: Path):
    from analysis.interpolation import curves_figure, folder_history

    for arm, scale in (("ae", 1.0), ("acai", 0.5)):
        folder = tmp_path / arm
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"train": {"batch_size": 64}}))
        keys = ("metric/interp_mean_distance", "metric/interp_smoothness_strict")
        reports = [{"step": s, keys[0]: scale / s, keys[1]: 0.5} for s in (100, 200, 300)]
        reports.append({"step": 300, "done": True, "test/recon": 1.0})  # no lines metric: skipped
        (folder / "progress.jsonl").write_text("\n".join(json.dumps(r) for r in reports))
    history = folder_history([tmp_path / "ae", tmp_path / "acai"])
    assert len(history) == 6 and set(history["arm"]) == {"ae", "acai"}
    acai = history[history["arm"] == "acai"]
    assert list(acai["images"]) == [6400, 12800, 19200]
    assert acai["metric/interp_mean_distance"].iloc[-1] == pytest.approx(0.5 / 300)
    fig = curves_figure(history)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
