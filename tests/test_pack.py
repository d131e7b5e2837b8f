"""Packed replicates: R models trained at once equal R solo runs of the same seeds (float
tolerance), a diverging member leaves the pack alone, a pack resumes bit-exactly on the same
machine."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from raywae import train
from raywae.checkpoint import CheckpointError
from raywae.config import Config, compose, from_dict, override
from raywae.experiment import Experiment
from raywae.families import FAMILIES, unpackable
from raywae.metrics import encode_grid
from raywae.train import Trainer, check_packable

pytestmark = pytest.mark.usefixtures("one_thread")
# Batched and plain kernels round differently (~1e-7); Adam divides a gradient by its own
# running scale, so a weight whose gradient is ~0 can move by a part of one step (lr = 1e-3)
# either way. Tolerance: a tenth of one Adam step, far below what training moves.
TOL = {"rtol": 1e-4, "atol": 1e-4}
# Each family's preset over one shared base; a family keeps the keys it reads (config.compose).
# AnnealedVAE's capacity reaches c_max within the test's 12 steps.
OBJECTIVE = {"lp_lambda": 1.0, "lam": 10.0, "beta": 4.0, "gamma": 10.0, "c_max": 5.0,
             "iteration_threshold": 6, "lambda_od": 2.0}  # fmt: skip
# FactorVAE's discriminator (6M weights, Adam at lr 1e-4): a weight whose gradient is at
# rounding level moves by ±lr either way, so after a few steps pack and solo discriminators
# differ by ~1e-3 in a few weights (measured: 1.2e-3 after 12 steps, the auto-encoders 1e-5
# apart) and the TC read off its logits (~1e-2 here) by ~1e-3.
FIGURE_ABS = {"factor_vae": 5e-3}
PACKING = [f for f, row in FAMILIES.items() if unpackable(row.regulariser, 0.0) is None]


def cfgs(family: str, seeds=(0, 1, 2), **train) -> list[Config]:
    base = {
        "model": {"hidden": 32, "latent_dim": 4},
        "objective": OBJECTIVE,
        "train": {"steps": 12, "batch_size": 16, "report_every": 4, "device": "cpu", **train},
    }
    return [compose(base, FAMILIES[family].preset | {"seed": s}) for s in seeds]


def solo(cfg: Config, ds) -> tuple[Trainer, list[dict]]:
    trainer, logs = Trainer(cfg, ds), []
    trainer.run(callback=lambda t, window: logs.append(window[0]))
    return trainer, logs


def figures(logs: dict) -> dict:
    return {k: v for k, v in logs.items() if not k.startswith("time/")}


@pytest.mark.parametrize("family", PACKING)
def test_pack_equals_solo_runs(small_ds, family):
    configs = cfgs(family)
    pack, windows = Trainer(configs, small_ds), []
    pack.run(callback=lambda p, logs: windows.append(logs))
    assert pack.active == [0, 1, 2] and not pack.failed
    for m, cfg in enumerate(configs):
        trainer, logs = solo(cfg, small_ds)
        ours = pack.member_state(m)
        torch.testing.assert_close(ours["model"], trainer.model.state_dict(), **TOL)
        for w, s in zip(windows, logs, strict=True):
            assert figures(w[m]) == pytest.approx(
                figures(s), rel=1e-4, abs=FIGURE_ABS.get(family, 1e-5)
            )
        assert pack.evaluate(max_images=300, member=m) == pytest.approx(
            trainer.evaluate(max_images=300), rel=1e-4
        )
    # the seeds differ: packing must not have tied the models together
    assert not torch.allclose(
        pack.params["model.encoder.mean.weight"][0], pack.params["model.encoder.mean.weight"][1]
    )


@pytest.mark.parametrize("family", PACKING)
def test_conv64_trains_every_family_solo_and_packed(small_ds, family):
    """disentanglement_lib's network (arch conv64, latent 10) under every family, the WAE arms
    included: 3 steps solo and as a pack of two seeds, finite losses, the pack's member 0
    equal to its solo run, the seeds apart."""
    configs = cfgs(family, seeds=(0, 1), steps=3, report_every=1)
    configs = [override(c, {"model.arch": "conv64", "model.latent_dim": 10}) for c in configs]
    trainer, logs = solo(configs[0], small_ds)
    assert len(logs) == 3 and all(np.isfinite(w["train/loss"]) for w in logs)
    pack, windows = Trainer(configs, small_ds), []
    pack.run(callback=lambda p, logs: windows.append(logs))
    assert pack.active == [0, 1] and not pack.failed and len(windows) == 3
    assert all(np.isfinite(w[m]["train/loss"]) for w in windows for m in (0, 1))
    # conv64's ReLU layers hold units whose gradient is ~0: there Adam's normalised step can
    # go either way between the batched and the plain kernels, moving a weight by up to one
    # step (lr 1e-3; seen: 1 of 262,144 weights of a DIP-VAE-II decoder layer after 3 steps).
    ours, theirs = pack.member_state(0)["model"], trainer.model.state_dict()
    for name in theirs:
        gap = (ours[name] - theirs[name]).abs()
        far = gap > TOL["atol"] + TOL["rtol"] * theirs[name].abs()
        assert far.float().mean() < 1e-4 and gap.max() <= 3 * 1e-3 * 1.01, name
    assert not torch.allclose(
        pack.params["model.encoder.mean.weight"][0], pack.params["model.encoder.mean.weight"][1]
    )


def test_diverging_member_leaves_the_others_training(small_ds):
    configs = cfgs("beta_vae")
    pack = Trainer(configs, small_ds)
    pack.run(steps=5)
    with torch.no_grad():  # member 1's decoder emits NaN logits from step 6 on
        pack.params["model.decoder.net.6.bias"][1, 0] = float("nan")
    windows = []
    pack.run(callback=lambda p, logs: windows.append(logs))
    assert pack.active == [0, 2] and pack.step == 12
    assert (pack.failed[1].term, pack.failed[1].step) == ("recon", 6)
    assert all(set(w) == {0, 2} for w in windows)
    for m in (0, 2):
        trainer, _ = solo(configs[m], small_ds)
        torch.testing.assert_close(pack.member_state(m)["model"], trainer.model.state_dict(), **TOL)


def test_pack_resumes_bit_exactly_and_slices_are_solo_checkpoints(small_ds):
    configs = cfgs("wae_box")
    whole = Trainer(configs, small_ds)
    whole.run()
    first = Trainer(configs, small_ds)
    first.run(steps=5)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    first.run(steps=2)  # training on must not leak into the saved bytes
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = Trainer(configs, small_ds)
    resumed.load_state_dict(saved)
    resumed.run()
    assert resumed.step == whole.step == 12
    # Exact: both runs replay the same inputs through the same kernels in one process.
    for name, p in whole.params.items():
        assert torch.equal(p, resumed.params[name]), name
    # a member's slice is a solo checkpoint: a solo Trainer continues it
    alone = Trainer(configs[2], small_ds)
    alone.load_state_dict(saved["members"][2])
    alone.run()
    torch.testing.assert_close(whole.member_state(2)["model"], alone.model.state_dict(), **TOL)


def test_only_seeds_of_one_setting_pack():
    a, b = cfgs("beta_vae", seeds=(0, 1))
    check_packable([a, b])
    with pytest.raises(ValueError, match=r"member 1 differs .*objective"):
        check_packable([a, override(b, {"objective.beta": 2.0})])
    gan = from_dict({"objective": {"name": "wae_gan"}})  # a side network packs too
    check_packable([gan, override(gan, {"seed": 1})])


@pytest.mark.parametrize("arch", ["fc", "conv64"])
def test_one_encoding_pass_gives_every_members_code_table(small_ds, arch, monkeypatch):
    pack = Trainer([override(c, {"model.arch": arch}) for c in cfgs("beta_vae")], small_ds)
    pack.run(steps=3)
    widest = train.widest_activation(pack.member_model(0).encoder, pack.rows(pack.test_index[:2]))
    assert widest == {"fc": 32, "conv64": 32 * 32 * 32}[arch]  # hidden 32; conv64's first conv
    # A batch holds at most ENCODE_FLOATS floats of the widest activation of all 3 models: force
    # batches of 7 images (the grid's 1,440 in 206 passes, the last one short).
    monkeypatch.setattr(train, "ENCODE_FLOATS", 3 * widest * 7)
    batches: list[int] = []
    monkeypatch.setattr(
        train, "encode_grid", lambda *a, **k: batches.append(a[2]) or encode_grid(*a, **k)
    )
    tables = pack.code_tables(small_ds.grid)
    assert batches == [7]
    assert tables.shape == (3, len(small_ds.grid), 4)
    for r, member in enumerate(pack.active):
        alone = encode_grid(pack.member_model(member), small_ds, progress=False)
        np.testing.assert_allclose(tables[r], alone, rtol=1e-5, atol=1e-6)


def test_pack_experiment_figures_and_files_equal_solo_experiments(small_ds, tmp_path):
    """Experiment of a pack: each member's progress reports, final figures (from the shared encoding
    pass) and files are its solo Experiment's; a checkpoint written mid-way resumes the pack."""
    tiny = {"metrics.runs": 1, "metrics.preset": "disentanglement_lib"}
    configs = [override(c, tiny) for c in cfgs("beta_vae", seeds=(3, 5))]
    packed = Experiment(configs, small_ds, progress=False)
    reports: list[dict] = []
    packed.train(reports.append)
    assert [sorted(r) for r in reports] == [[0, 1], [0, 1]]  # steps 4 and 8; 12 is the final
    finals = packed.final()
    for m, figures in finals.items():
        packed.write_outputs(m, tmp_path / "pack" / str(m), figures)
    for m, cfg in enumerate(configs):
        solo_exp, solo_reports = Experiment(cfg, small_ds, progress=False), []
        solo_exp.train(solo_reports.append)
        for mine, theirs in zip((r[m] for r in reports), (r[0] for r in solo_reports), strict=True):
            assert mine.keys() == theirs.keys()
            for key in ("train/loss", "proxy/recon", "step"):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-4), key
        (alone,) = solo_exp.final().values()
        assert finals[m].keys() == alone.keys()
        for key in ("test/recon", "test/recon_mean"):
            assert finals[m][key] == pytest.approx(alone[key], rel=1e-4), key
        for key in ("metric/beta_vae_4", "metric/beta_vae_5"):
            assert finals[m][key] == pytest.approx(alone[key], abs=0.02), key
        files = {p.name for p in (tmp_path / "pack" / str(m)).iterdir()}
        assert {"config.json", "metrics.json", "model.pt", "reconstructions.png"} <= files
        written = json.loads((tmp_path / "pack" / str(m) / "config.json").read_text())
        assert written["seed"] == cfg.seed
    # resume: a checkpoint at step 8 continues to the same weights as the whole run
    first = Experiment(configs, small_ds, progress=False)
    first.trainer.run(steps=8)
    first.save(tmp_path / "state.pt")
    resumed = Experiment(configs, small_ds, progress=False)
    resumed.restore(tmp_path / "state.pt")
    resumed.train(lambda logs: None)
    # Exact: the same inputs through the same kernels in one process.
    for name, p in packed.trainer.params.items():
        assert torch.equal(p, resumed.trainer.params[name]), name
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        resumed.restore(tmp_path / "bad.pt")
