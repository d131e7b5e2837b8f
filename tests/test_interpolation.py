"""The interpolation track (PROTOCOL §9): lines images and metrics, MNIST IDX files, the
conv32 auto-encoder, ACAI composed with every objective."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from raywae.config import ConfigError, from_dict, to_dict
from raywae.data import DataError
from raywae.data.imageset import ImageSet, lines_set, mnist_set
from raywae.data.lines import LINE_LENGTH, LINE_SIDE, render_lines
from raywae.data.mnist import MNIST_DOWNLOAD, MNIST_FILES, load_mnist, read_idx, write_idx
from raywae.experiment import Experiment
from raywae.logkeys import reported
from raywae.metrics.interpolation import interpolation_metrics, reference_lines
from raywae.models.networks import Critic
from raywae.models.objectives import AcaiBatch, acai_alpha, critic_loss
from raywae.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
FRAMES = 16


# --- lines ----------------------------------------------------------------------------------
def test_lines_match_the_definition():
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False) + 0.1
    images = render_lines(angles)
    assert images.shape == (24, LINE_SIDE, LINE_SIDE) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    ink = (images + 1) / 2
    # area ≈ length × width = 15 × 2 at every angle (anti-aliasing spreads, never adds, ink)
    assert np.allclose(ink.sum((1, 2)), 30.0, atol=0.6)
    c = np.arange(LINE_SIDE) + 0.5 - LINE_SIDE / 2
    px, py = np.meshgrid(c, -c)
    for theta, img in zip(angles, ink):
        along = px * np.cos(theta) + py * np.sin(theta)
        perp = np.abs(px * np.sin(theta) - py * np.cos(theta))
        lit = img > 0
        # from the centre outwards, 15 px long (half a pixel of anti-aliasing at the tip)
        assert along[lit].min() >= -0.5 and along[lit].max() <= LINE_LENGTH + 0.5
        assert along[img > 0.5].max() >= LINE_LENGTH - 1.0
        # width 2: fully lit pixels lie within 0.5 px of the axis, none lit beyond 1.5 px
        assert perp[img > 0.99].max() <= 0.5 + 1e-6 and perp[lit].max() < 1.5


def _pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 2 * np.pi, 16)
    return start, start + rng.uniform(0.5, 3.0, 16) * rng.choice([-1, 1], 16)


def test_metrics_perfect_interpolations_score_zero_crossfades_do_not():
    refs = reference_lines()
    a, b = _pairs()
    t = np.linspace(0, 1, FRAMES)
    perfect = render_lines((a[:, None] * (1 - t) + b[:, None] * t).ravel())
    perfect = perfect.reshape(16, FRAMES, LINE_SIDE, LINE_SIDE)
    good = interpolation_metrics(perfect, refs)
    assert good["interp_mean_distance"] < 1e-5 and abs(good["interp_smoothness"]) < 0.01
    ends = render_lines(np.concatenate([a, b])).reshape(2, 16, 1, LINE_SIDE, LINE_SIDE)
    fade = ends[0] * (1 - t)[:, None, None] + ends[1] * t[:, None, None]
    bad = interpolation_metrics(fade, refs)
    assert bad["interp_mean_distance"] > 100 * max(good["interp_mean_distance"], 1e-6)
    # a cross-fade jumps from one end's angle to the other's: 1 − 1/15 at worst
    assert bad["interp_smoothness"] > 0.5


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
    assert not any(k.startswith("metric/") for k in results)
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
    x = torch.from_numpy((render_lines(rng.uniform(0, 6.3, 16)) + 1) / 2).flatten(1)
    x_hat = torch.from_numpy((render_lines(rng.uniform(0, 6.3, 16)) + 1) / 2).flatten(1)
    alpha = torch.linspace(0, 0.5, 16)
    x_mix = alpha[:, None] * x + (1 - alpha[:, None]) * x.flip(0)
    batch = AcaiBatch(x, x_hat, x_mix, alpha)
    with torch.no_grad():
        mixes, blends = critic(x_mix), critic(0.2 * x + 0.8 * x_hat)
        expected = (mixes - alpha).pow(2).mean() + blends.pow(2).mean()
        assert critic_loss(critic, batch, 0.2) == pytest.approx(expected.item(), rel=1e-5)
    # the blend is γ·x + (1−γ)·x̂, not the other way round
    swapped = AcaiBatch(x_hat, x, x_mix, alpha)
    assert critic_loss(critic, swapped, 0.2) != critic_loss(critic, batch, 0.2)


def test_objective_mixes_codes_with_the_alpha_it_reports(lines: ImageSet):
    """x̂_mix = sigmoid(decode(α·z + (1−α)·z reversed)) with the α handed to the critic, and
    the auto-encoder's ACAI term is mean d(x̂_mix)²."""
    trainer = Trainer(lines_cfg("ae"), lines)
    x = trainer.rows(trainer.train_index[:16])
    out = trainer.objective(trainer.model, x, torch.Generator().manual_seed(0))
    a = out.acai.alpha[:, None]
    with torch.no_grad():
        mix = torch.sigmoid(trainer.model.decode(a * out.z + (1 - a) * out.z.flip(0)))
        assert torch.allclose(out.acai.x_mix, mix, atol=1e-6)
        term = trainer.objective.critic(mix).pow(2).mean()
    assert out.terms["acai"].item() == pytest.approx(term.item(), rel=1e-5)
    assert out.acai.alpha.min() >= 0 and out.acai.alpha.max() <= 0.5


def lines_cfg(name: str, acai: float = 512.0, **train) -> object:
    lam = {"wae_mmd": 100.0, "wae_gan": 1.0, "wwae": 10.0}.get(name, 0.0)
    return from_dict(
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
        }
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
    results |= {f"{k}_5k": v for k, v in exp.trainer.evaluate(64).items()}
    keys = {k for k in results if "/" in k}
    assert keys == reported(cfg)
    assert 0 <= results["metric/interp_mean_distance"] <= 2
    paths = exp.write_outputs(0, tmp_path, results, weights=False)
    assert (tmp_path / "interpolation.png") in paths


def test_config_rejects_mismatched_arch_and_acai():
    with pytest.raises(ConfigError, match="model.arch: lines needs conv32"):
        from_dict({"data": {"dataset": "lines"}})
    with pytest.raises(ConfigError, match="objective.acai: the ACAI critic needs conv32"):
        from_dict({"objective": {"acai": 0.5}})
