"""The training loop: schedule, bit unpacking, determinism, resume, NaN stops, learning."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from raywae.config import Config, compose, from_dict, override
from raywae.train import NonFiniteLossError, Trainer, learning_rate, unpack_bits

pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(name: str = "beta_vae", **train) -> Config:
    """A tiny network on CPU: the loop's behaviour, not the paper's sizes."""
    lam = {"wae_mmd": 400.0, "wae_gan": 1.0, "wwae": 10.0}.get(name, 400.0)
    return compose(
        {
            "model": {"hidden": 32, "latent_dim": 4},
            "objective": {"name": name, "lam": lam, "lp_lambda": 0.1},  # lam where it is read
            "train": {"steps": 12, "batch_size": 16, "report_every": 4, "device": "cpu", **train},
            "seed": 1,
        },
        {},
    )


def params(trainer: Trainer) -> list[torch.Tensor]:
    return [
        p.detach().clone() for p in [*trainer.model.parameters(), *trainer.objective.parameters()]
    ]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """Bit-equal: only for two runs of the same arithmetic in one process (same kernels)."""
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_paper_schedule_and_its_scaling():
    cfg = Config().train
    lrs = [learning_rate(s, cfg) for s in (0, 14_999, 15_000, 29_999, 30_000, 45_000, 59_999)]
    assert lrs == pytest.approx([1e-3, 1e-3, 7e-4, 7e-4, 3e-4, 1e-4, 1e-4])
    short = from_dict({"train": {"steps": 6000}}).train
    assert learning_rate(1499, short) == 1e-3 and learning_rate(1500, short) == pytest.approx(7e-4)


def test_unpack_bits_matches_numpy():
    rng = np.random.default_rng(0)
    images = (rng.random((5, 4096)) < 0.3).astype(np.uint8)
    x = unpack_bits(torch.from_numpy(np.packbits(images, axis=1)))
    assert x.dtype == torch.float32 and x.shape == (5, 4096)
    assert np.array_equal(x.numpy(), images)


def test_same_seed_same_run_and_global_rng_untouched(small_ds):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = Trainer(small_cfg(), small_ds), Trainer(small_cfg(), small_ds)
    assert torch.equal(torch.get_rng_state(), before)
    a.run(steps=3)
    b.run(steps=3)
    assert same(params(a), params(b))
    other = Trainer(override(small_cfg(), {"seed": 2}), small_ds)
    assert not torch.equal(other.model.encoder.mean.weight, a.model.encoder.mean.weight)


@pytest.mark.parametrize("name", ["beta_vae", "wae_gan"])
def test_save_restore_continue_equals_uninterrupted(small_ds, name):
    whole = Trainer(small_cfg(name), small_ds)
    whole.run()
    first = Trainer(small_cfg(name), small_ds)
    first.run(steps=5)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    first.run(steps=2)  # training on must not leak into the saved bytes
    buf.seek(0)
    resumed = Trainer(small_cfg(name), small_ds)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.step == 5
    resumed.run()
    assert resumed.step == whole.step == 12
    assert same(params(resumed), params(whole))


def test_callback_cadence_and_keys(small_ds):
    seen = []
    trainer = Trainer(small_cfg("wae_gan", steps=10), small_ds)
    last = trainer.run(callback=lambda t, logs: seen.append(logs[0]))
    assert [s["step"] for s in seen] == [4, 8, 10] and last[0] is seen[-1]
    keys = {"train/loss", "train/recon", "train/adv", "train/adv_d", "train/logscale_lp"}
    assert keys | {"train/lr", "time/imgs_per_s", "step"} == set(seen[0])
    assert all(np.isfinite(v) for v in seen[0].values())


def test_evaluate_is_repeatable_and_leaves_training_rng_alone(small_ds):
    a, b = Trainer(small_cfg(), small_ds), Trainer(small_cfg(), small_ds)
    first = a.evaluate(max_images=200)
    assert a.evaluate(max_images=200) == first
    assert set(first) == {"test/recon", "test/recon_mean"}
    a.run(steps=3)
    b.run(steps=3)
    assert same(params(a), params(b))


def test_non_finite_loss_names_term_and_step(small_ds, monkeypatch):
    trainer = Trainer(small_cfg(), small_ds)
    with torch.no_grad():
        trainer.model.decoder.net[-1].bias[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="'recon' is not finite at step 1") as err:
        trainer.run()
    assert (err.value.term, err.value.step) == ("recon", 1)

    trainer = Trainer(small_cfg("wae_mmd"), small_ds)
    original = trainer.objective.own.forward

    def poisoned(step):  # MMD goes inf at the 3rd step
        reg, terms, side = original(step)
        if int(step.draws["step"]) == 2:
            terms = {"mmd": terms["mmd"] * float("inf")}
        return reg, terms, side

    monkeypatch.setattr(trainer.objective.own, "forward", poisoned)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.run()
    assert (err.value.term, err.value.step, trainer.step) == ("mmd", 3, 2)


# A few hundred steps with a reduced width: learning happens for every objective. The figures
# (recon before -> after) are printed with -s and quoted in the issue note. The WAEs carry the
# paper's L1 log-scale penalty: without it WAE-GAN's adversary drives the tanh means into
# saturation at ±1 within ~100 steps (Adam follows its gradient while the decoder still
# ignores z), and the run stays on the mean-image plateau.
LEARN = {
    "beta_vae": {"beta": 1.0},
    "wae_mmd": {"lam": 400.0, "lp_lambda": 1.0},
    "wae_gan": {"lam": 1.0, "lp_lambda": 1.0},
    "wwae": {"lam": 10.0, "lp_lambda": 1.0},
}


@pytest.mark.parametrize("name", list(LEARN))
def test_short_run_lowers_test_recon(small_ds, name, capsys):
    cfg = from_dict(
        {
            "model": {"hidden": 64},
            "objective": {"name": name, **LEARN[name]},
            "train": {"steps": 200, "batch_size": 64, "report_every": 100, "device": "cpu"},
        }
    )
    trainer = Trainer(cfg, small_ds)
    start = trainer.evaluate(max_images=500)["test/recon"]
    trainer.run()
    end = trainer.evaluate(max_images=500)["test/recon"]
    with capsys.disabled():
        print(f"\n{name}: test/recon {start:.1f} -> {end:.1f} after {trainer.step} steps")
    assert end < 0.3 * start


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LEARN))
def test_paper_network_learns(small_ds, name):
    """The full 1200-unit network and batch 100 past the mean-image plateau (~500 nats;
    minutes on a CPU). With PyTorch's init, under which the 300-nat bar was measured: the
    authors' Glorot init (the default) starts slower, e.g. WAE-GAN 2844.9 -> 419.6 and
    β-VAE -> 284.9 after these 1000 steps (issue 9's note), which says nothing about the
    loop and objectives this test is about."""
    cfg = from_dict(
        {
            "model": {"init": "torch"},
            "objective": {"name": name, **LEARN[name]},
            "train": {"steps": 1000, "report_every": 500},
        }
    )
    trainer = Trainer(cfg, small_ds)
    start = trainer.evaluate(max_images=1000)["test/recon"]
    trainer.run()
    end = trainer.evaluate(max_images=1000)["test/recon"]
    print(f"\n{name}: test/recon {start:.1f} -> {end:.1f} after {trainer.step} steps")
    assert end < 300 < start


@pytest.mark.slow
def test_wae_gan_without_penalty_learns_with_a_linear_mean_head(small_ds):
    """Issue 13's WAE-GAN finding. Without the log-scale penalty the recon term shrinks the
    encoder noise (log-variance to its −16 floor), so z ≈ tanh-bounded μ ∈ (−1, 1)^d, which
    a discriminator separates from N(0, I) at once; its gradient drives every μ into tanh
    saturation at ±1 (constant codes, the mean-image plateau). An unbounded (linear) mean
    head, as in the WAE paper's encoders, keeps the codes informative and the run learns."""
    runs = {}
    for head in ("tanh", "linear"):
        cfg = from_dict(
            {
                "model": {"mean_head": head},
                "objective": {"name": "wae_gan", "lam": 1.0, "lp_lambda": 0.0},
                "train": {"steps": 300, "report_every": 100, "device": "cpu"},
            }
        )
        trainer = Trainer(cfg, small_ds)
        trainer.run()
        x = trainer.rows(trainer.test_index[:500])
        with torch.no_grad():
            mu, _ = trainer.model.encode(x)
        runs[head] = (trainer.evaluate(max_images=1000)["test/recon"], mu)
        print(f"\nwae_gan {head}: test/recon {runs[head][0]:.1f}, code std {mu.std(0).mean():.3f}")
    recon_tanh, mu_tanh = runs["tanh"]
    recon_linear, mu_linear = runs["linear"]
    assert (mu_tanh.abs() > 0.99).float().mean() > 0.9 and mu_tanh.std(0).mean() < 0.01
    assert mu_linear.std(0).mean() > 0.3 and recon_linear < recon_tanh - 50
