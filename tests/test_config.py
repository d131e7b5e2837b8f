"""The strict config loader: types, values, key paths in errors, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from raywae.config import (
    Config,
    ConfigError,
    ModelConfig,
    from_dict,
    load,
    override,
    to_dict,
)
from raywae.config import (
    flatten as flatten_cfg,
)


def test_defaults_round_trip():
    cfg = Config()
    assert from_dict(to_dict(cfg)) == cfg
    assert from_dict({}) == cfg
    assert cfg.model == ModelConfig("fc", 16, "gaussian", "gaussian", 1200, "glorot", "centre")
    assert cfg.train.batch_size == 100 and cfg.train.lr == 1e-3 and cfg.train.steps == 60_000
    assert cfg.objective.name == "beta_vae" and cfg.objective.family.beta == 1.0


def test_numbers_are_coerced_where_safe():
    cfg = from_dict(
        {"train": {"lr": "1e-4", "steps": "6e3"}, "objective": {"name": "wwae", "lam": "1e2"}}
    )
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 6000 and isinstance(cfg.train.steps, int)
    assert cfg.objective.family.lam == 100.0 and isinstance(cfg.objective.family.lam, float)
    # Tune / Optuna may hand over numpy scalars.
    cfg = from_dict({"seed": np.int64(4), "objective": {"beta": np.float32(2.5)}})
    assert cfg.seed == 4 and type(cfg.seed) is int and type(cfg.objective.family.beta) is float


@pytest.mark.parametrize(
    "d, key",
    [
        ({"objective": {"bta": 1}}, "objective.bta"),
        ({"modle": {}}, "modle"),
        ({"train": {"steps": "many"}}, "train.steps"),
        ({"train": {"steps": 1.5}}, "train.steps"),
        ({"train": {"steps": True}}, "train.steps"),
        ({"objective": {"beta": "nan"}}, "objective.beta"),
        ({"objective": {"beta": [1]}}, "objective.beta"),
        ({"model": {"arch": 3}}, "model.arch"),
        ({"model": "fc"}, "model"),
        ({"data": {"subgrid": {"posX": "two"}}}, "data.subgrid.posX"),
        ({"metrics": {"extra": "mig"}}, "metrics.extra"),
        ({"seed": 0.5}, "seed"),
    ],
)
def test_wrong_keys_and_types_name_the_key(d, key):
    with pytest.raises(ConfigError) as err:
        from_dict(d, source="exp.yaml")
    assert err.value.key == key
    assert str(err.value).startswith(f"exp.yaml: {key}:")


@pytest.mark.parametrize(
    "d, key",
    [
        ({"objective": {"beta": -1}}, "objective.beta"),
        ({"objective": {"name": "wae_mmd", "lam": -400}}, "objective.lam"),
        ({"objective": {"p": 0}}, "objective.p"),
        ({"objective": {"name": "vae"}}, "objective.name"),
        ({"model": {"posterior": "laplace"}}, "model.posterior"),
        ({"model": {"init": "xavier"}}, "model.init"),
        ({"model": {"box_anchor": "center"}}, "model.box_anchor"),
        ({"model": {"latent_dim": 0}}, "model.latent_dim"),
        ({"train": {"batch_size": 1}}, "train.batch_size"),
        ({"train": {"lr_milestones": [0.5, 0.25], "lr_decay": [1, 1]}}, "train.lr_milestones"),
        ({"train": {"lr_decay": [0.5]}}, "train.lr_decay"),
        ({"train": {"device": "gpu"}}, "train.device"),
        ({"metrics": {"extra": ["mig", "bogus"]}}, "metrics.extra[1]"),
        ({"metrics": {"extra": ["mig", "mig"]}}, "metrics.extra"),
        ({"data": {"subgrid": {"posZ": 2}}}, "data.subgrid.posZ"),
        ({"data": {"subgrid": {"posX": 0}}}, "data.subgrid.posX"),
        ({"objective": {"name": "beta_vae"}, "model": {"prior": "uniform"}}, "model.prior"),
        ({"objective": {"name": "wwae"}, "model": {"prior": "uniform"}}, "model.prior"),
    ],
)
def test_bad_values_name_the_key(d, key):
    with pytest.raises(ConfigError) as err:
        from_dict(d)
    assert err.value.key == key


def test_load_yaml_names_the_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("objective: {name: wae_mmd, lam: 400}\ntrain: {lr: 1e-4}\nseed: 3\n")
    cfg = load(good)
    assert cfg.objective.name == "wae_mmd" and cfg.train.lr == 1e-4 and cfg.seed == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nmodel:\n  hidden: 8\n  latent_dims: 10\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:4: model\.latent_dims: unknown key"):
        load(bad)


def test_flatten_gives_dotted_scalars():
    cfg = from_dict({"data": {"subgrid": {"posY": 4, "posX": 2}}, "metrics": {"extra": ["mig"]}})
    flat = flatten_cfg(cfg)
    assert flat["objective.beta"] == 1.0 and flat["seed"] == 0
    assert flat["data.subgrid"] == "posX=2,posY=4"
    assert flat["train.lr_milestones"] == "0.25,0.5,0.75"
    assert flat["metrics.extra"] == "mig"
    assert flat["data.path"] is None
    assert all(isinstance(v, str | int | float | type(None)) for v in flat.values())


def test_override_is_strict():
    cfg = override(Config(), {"objective.beta": 10, "data.subgrid.posX": 4, "seed": 2})
    assert cfg.objective.family.beta == 10.0 and cfg.data.subgrid == {"posX": 4} and cfg.seed == 2
    with pytest.raises(ConfigError) as err:
        override(cfg, {"objective.gamma": 1})
    assert err.value.key == "objective.gamma"
    with pytest.raises(ConfigError) as err:
        override(cfg, {"seed.x": 1})
    assert err.value.key == "seed"


def test_a_run_reads_only_its_objectives_keys():
    # another family's key is an error naming who reads it and what this one reads
    with pytest.raises(
        ConfigError,
        match=r"objective\.lam: beta_vae does not read it \(a key of "
        r"\['wae_mmd', 'wae_gan', 'wwae'\]\); allowed for beta_vae",
    ) as err:
        from_dict({"objective": {"name": "beta_vae", "lam": 400}})
    assert err.value.key == "objective.lam"
    with pytest.raises(ConfigError, match="objective.critic_lr: an ACAI key: read only with"):
        from_dict({"objective": {"name": "ae", "critic_lr": 1e-3}})
    conv32 = {"arch": "conv32", "latent_dim": 16}
    acai = from_dict({"data": {"dataset": "lines"}, "model": conv32,
                      "objective": {"name": "ae", "acai": 2, "critic_lr": 1e-3}})  # fmt: skip
    assert acai.objective.acai_keys.critic_lr == 1e-3
    # a run logs its own keys only; the flat YAML layout round-trips
    flat = flatten_cfg(from_dict({"objective": {"name": "wae_gan", "lam": 3}}))
    assert {k for k in flat if k.startswith("objective.")} == {
        "objective.name", "objective.lp_lambda", "objective.p", "objective.acai",
        "objective.lam", "objective.adv_lr",
    }  # fmt: skip
    assert to_dict(acai)["objective"] == {
        "name": "ae", "lp_lambda": 0.0, "p": 1.0, "acai": 2.0, "acai_gamma": 0.2,
        "critic_lr": 1e-3,
    }  # fmt: skip
    assert from_dict(to_dict(acai)) == acai


def test_compose_keeps_each_families_keys_from_a_shared_base():
    from raywae.config import compose

    base = {"objective": {"lam": 400, "adv_lr": 1e-3}, "train": {"steps": 10}}
    vae = compose(base, {"objective.name": "beta_vae", "objective.beta": 4})
    assert vae.objective.family.beta == 4 and not hasattr(vae.objective.family, "lam")
    gan = compose(base, {"objective.name": "wae_gan"})
    assert (gan.objective.family.lam, gan.objective.family.adv_lr) == (400, 1e-3)
    # a key set for this run must be read; a key nobody reads still fails
    with pytest.raises(ConfigError, match="objective.lam: beta_vae does not read it"):
        compose(base, {"objective.name": "beta_vae", "objective.lam": 1})
    with pytest.raises(ConfigError, match="objective.lamda: unknown key; allowed for beta_vae"):
        compose({"objective": {"lamda": 1}}, {})
    # switching family on a config starts from the new family's defaults
    wae = override(vae, {"objective.name": "wae_mmd"})
    assert wae.objective.family.lam == 400.0 and not hasattr(wae.objective.family, "beta")


def test_a_preset_fills_what_the_file_leaves_out():
    cfg = from_dict({"preset": "locatello2019", "train": {"steps": 10}})
    assert (cfg.model.arch, cfg.model.latent_dim) == ("conv64", 10)
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.lr_milestones) == (64, 1e-4, ())
    assert cfg.train.steps == 10  # the file's own key wins
    assert from_dict(to_dict(cfg)) == cfg
    late = override(Config(), {"preset": "locatello2019"})  # set later, it wins over the old
    assert (late.model.arch, late.train.steps) == ("conv64", 300_000)
    with pytest.raises(ConfigError, match="preset: must be one of"):
        from_dict({"preset": "locatelo2019"})
