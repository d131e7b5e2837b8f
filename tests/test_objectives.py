"""Closed forms of posteriors, priors and objectives; finite gradients (PROTOCOL §3–4, §9)."""

from __future__ import annotations

import dataclasses
import importlib
import math
import typing
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from raywae.config import Config, ModelConfig, from_dict
from raywae.families import ACAI, REGULARISERS
from raywae.models import ARCHS, build_model, build_objective, mmd2_imq
from raywae.models.objectives import batch_gaussian, logscale_penalty, w2_squared_to_std_normal
from raywae.models.posteriors import BoxPosterior, GaussianPosterior, GaussianPrior, UniformPrior
from raywae.steps import _Pair

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def log_std_normal(z: torch.Tensor) -> torch.Tensor:
    return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_gaussian_kl_matches_monte_carlo():
    g = gen()
    mu, s = torch.rand(4, 3, generator=g) * 2 - 1, torch.randn(4, 3, generator=g)
    post = GaussianPosterior()
    z = post.sample(mu.expand(200_000, 4, 3), s.expand(200_000, 4, 3), g)
    log_q = torch.distributions.Normal(mu, (0.5 * s).exp()).log_prob(z).sum(-1)
    mc = (log_q - log_std_normal(z)).mean(0)
    torch.testing.assert_close(post.kl_std_normal(mu, s), mc, atol=0.03, rtol=0.01)


@pytest.mark.parametrize("anchor", ["centre", "corner"])
def test_box_kl_matches_monte_carlo(anchor):
    g = gen(1)
    mu, s = torch.rand(4, 3, generator=g) * 2 - 1, torch.randn(4, 3, generator=g) * 0.5
    post = BoxPosterior(anchor)
    z = post.sample(mu.expand(200_000, 4, 3), s.expand(200_000, 4, 3), g)
    mc = (-s.sum(-1) - log_std_normal(z)).mean(0)  # log q = −Σ ℓ inside the box
    torch.testing.assert_close(post.kl_std_normal(mu, s), mc, atol=0.03, rtol=0.01)


def test_kl_of_prior_to_itself_is_zero():
    zero = torch.zeros(5, 16)
    assert GaussianPosterior().kl_std_normal(zero, zero).abs().max() == 0


def test_gaussian_logvar_is_clipped():
    s = GaussianPosterior().clip(torch.tensor([-100.0, 0.0, 100.0]))
    assert s.tolist() == [-16.0, 0.0, 10.0]


@pytest.mark.parametrize("anchor, low", [("centre", -0.5), ("corner", 0.0)])
def test_box_samples_stay_in_their_box(anchor, low):
    g = gen(2)
    mu, s = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    z = BoxPosterior(anchor).sample(mu.expand(100_000, 8), s.expand(100_000, 8), g)
    side = s.exp()
    lo = mu + low * side  # centre: [μ − side/2, μ + side/2]; corner: [μ, μ + side]
    assert ((z >= lo) & (z <= lo + side)).all()
    se = side / math.sqrt(12 * 100_000)  # standard error of the mean of U(side)
    assert ((z.mean(0) - (lo + side / 2)[0]).abs() < 5 * se).all()
    if anchor == "corner":  # the mean is off μ by half a side: the test can tell them apart
        assert ((z.mean(0) - mu[0]).abs() > 50 * se).all()


def test_box_anchor_is_validated_and_wired():
    with pytest.raises(ValueError, match="anchor"):
        BoxPosterior("middle")
    cfg = ModelConfig(latent_dim=2, posterior="box", prior="uniform", hidden=4)
    assert build_model(cfg).posterior.anchor == "centre"
    corner = build_model(dataclasses.replace(cfg, box_anchor="corner")).posterior
    assert isinstance(corner, BoxPosterior) and corner.anchor == "corner"


def test_priors():
    zg, zu = GaussianPrior().sample(100_000, 4, gen()), UniformPrior().sample(100_000, 4, gen())
    assert zg.shape == zu.shape == (100_000, 4)
    assert zg.mean().abs() < 0.01 and (zg.var(0) - 1).abs().max() < 0.02
    assert zu.min() >= -1 and zu.max() <= 1 and (zu.var(0) - 1 / 3).abs().max() < 0.01


def test_unbiased_mmd_is_zero_for_same_distribution_and_positive_for_shifted():
    g, n, d, draws = gen(3), 100, 16, 300

    def draw(shift: float) -> torch.Tensor:
        zq, zp = torch.randn(n, d, generator=g) + shift, torch.randn(n, d, generator=g)
        return mmd2_imq(zq, zp)

    same = torch.stack([draw(0.0) for _ in range(draws)])
    shifted = torch.stack([draw(0.5) for _ in range(draws)])
    stderr = same.std() / math.sqrt(draws)
    assert same.mean().abs() < 4 * stderr  # unbiased: E = 0 exactly
    assert shifted.mean() > 20 * same.std()


def test_mmd_matches_a_direct_double_loop():
    g = gen(4)
    zq, zp = (
        torch.randn(6, 3, generator=g, dtype=torch.float64),
        torch.randn(6, 3, generator=g, dtype=torch.float64),
    )
    scales = [c * 3 for c in (0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 1, 2)]

    def k(a, b):
        return sum(c / (c + float(((a - b) ** 2).sum())) for c in scales)

    n = 6
    qq = sum(k(zq[i], zq[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pp = sum(k(zp[i], zp[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    qp = sum(k(zq[i], zp[j]) for i in range(n) for j in range(n)) / n**2
    assert float(mmd2_imq(zq, zp)) == pytest.approx(qq + pp - 2 * qp, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_w2_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    d = 16
    a = rng.normal(size=(d, d)) * rng.uniform(0.1, 2)
    cov = a @ a.T / d + np.diag(rng.uniform(0, 0.1, d))
    if seed == 0:  # a singular covariance: eigenvalues at 0
        cov[:, :4] = cov[:4, :] = 0
    mean = rng.normal(size=d)
    with warnings.catch_warnings():  # scipy warns on the singular case; its root is still fine
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(cov)
    assert np.allclose(root @ root, cov, atol=1e-8)
    expected = mean @ mean + np.trace(cov) + d - 2 * np.trace(root).real
    got = w2_squared_to_std_normal(torch.tensor(mean), torch.tensor(cov))
    assert float(got) == pytest.approx(expected, rel=1e-6, abs=1e-5)


def test_w2_of_batch_codes_and_the_prior_itself():
    z = torch.randn(500, 4, generator=gen(5), dtype=torch.float64)
    mean, cov = batch_gaussian(z)
    np.testing.assert_allclose(cov.numpy(), np.cov(z.numpy(), rowvar=False), rtol=1e-12)
    zero = w2_squared_to_std_normal(torch.zeros(4), torch.eye(4))
    assert float(zero) == pytest.approx(0, abs=1e-5)


def test_logscale_penalty():
    s = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert float(logscale_penalty(s, 1.0)) == pytest.approx((3 + 0.5) / 2)
    assert float(logscale_penalty(s, 2.0)) == pytest.approx((5 + 0.25) / 2)


def test_every_row_names_a_regulariser_class():
    from raywae.models.objectives import Term

    for row in (*REGULARISERS.values(), ACAI):
        module, _, name = row.impl.partition(":")
        assert issubclass(getattr(importlib.import_module(module), name), Term), row.name


def test_conv_arch_shapes():
    model = build_model(ModelConfig(arch="conv", latent_dim=5))
    mu, s = model.encode(torch.rand(3, 4096))
    assert mu.shape == s.shape == (3, 5) and mu.abs().max() < 1
    assert model.decode(mu).shape == (3, 4096)


def test_every_arch_name_has_a_network():
    assert set(typing.get_args(typing.get_type_hints(ModelConfig)["arch"])) == set(ARCHS)


# disentanglement_lib's conv_encoder / deconv_decoder (methods/shared/architectures.py) as TF
# builds them: (layer, kernel, filters) in order; conv / deconv are padding="same", stride 2.
TF_ENCODER = [("conv", 4, 32), ("conv", 4, 32), ("conv", 2, 64), ("conv", 2, 64), ("dense", 0, 256)]
TF_DECODER = [("dense", 0, 256), ("dense", 0, 1024)] + [("deconv", 4, c) for c in (64, 32, 32, 1)]


def tf_layers(
    layers, side: int, channels: int
) -> tuple[list[tuple[tuple[int, ...], int]], list[int]]:
    """Each layer's TF kernel shape and bias length (conv: k·k·in·out, deconv: k·k·out·in,
    dense: in·out; bias: out), and the spatial side after each conv / deconv by TF's rules
    for padding="same", stride 2 (a conv's output side is ceil(side / 2), a transposed
    conv's 2·side), from an input side × side × channels (side 0: a vector of `channels`).
    A dense layer after convs flattens their output."""
    params, sides = [], []
    for kind, k, out in layers:
        if kind == "dense":
            params.append(((side * side * channels if side else channels, out), out))
            side = 0
        else:
            params.append(((k, k, channels, out) if kind == "conv" else (k, k, out, channels), out))
            side = -(-side // 2) if kind == "conv" else 2 * side
            sides.append(side)
        channels = out
    return params, sides


def as_tf(layer: torch.nn.Module) -> tuple[tuple[int, ...], int]:
    """A torch layer's weight shape in TF's layout, and its bias length: Linear (out, in) ->
    (in, out); Conv2d (out, in, k, k) -> (k, k, in, out); ConvTranspose2d (in, out, k, k) ->
    (k, k, out, in)."""
    w = layer.weight
    shape = w.T.shape if isinstance(layer, torch.nn.Linear) else w.permute(2, 3, 1, 0).shape
    return tuple(shape), layer.bias.numel()


def weighted(module: torch.nn.Module) -> list[torch.nn.Module]:
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    return [m for m in module.modules() if isinstance(m, kinds)]


def test_conv64_is_disentanglement_libs_network_layer_for_layer():
    d = 10
    encoder, enc_sides = tf_layers(TF_ENCODER, 64, 1)
    encoder += [((256, d), d)] * 2  # the heads `means` and `log_var`
    decoder, _ = tf_layers(TF_DECODER[:2], 0, d)
    deconvs, dec_sides = tf_layers(TF_DECODER[2:], 4, 64)  # 1024 units reshaped to 4×4×64
    decoder += deconvs
    assert enc_sides == [32, 16, 8, 4] and dec_sides == [8, 16, 32, 64]
    model = build_model(ModelConfig(arch="conv64", latent_dim=d))
    assert [as_tf(m) for m in weighted(model.encoder)] == encoder
    assert [as_tf(m) for m in weighted(model.decoder)] == decoder
    per_layer = [[math.prod(k) + b for k, b in part] for part in (encoder, decoder)]
    assert per_layer == [
        [544, 16_416, 8_256, 16_448, 262_400, 2_570, 2_570],
        [2_816, 263_168, 65_600, 32_800, 16_416, 513],
    ]
    n_enc, n_dec = map(sum, per_layer)
    assert (n_enc, n_dec) == (309_204, 381_313)
    assert sum(p.numel() for p in model.encoder.parameters()) == n_enc
    assert sum(p.numel() for p in model.decoder.parameters()) == n_dec
    assert sum(p.numel() for p in model.parameters()) == 690_517


def test_conv64_shapes_and_linear_mean_head_whatever_mean_head_says():
    x = torch.rand(3, 4096, generator=gen(1))
    outs = []
    for head in ("tanh", "linear"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch="conv64", latent_dim=10, mean_head=head))
        sides = [t.shape[-1] for t in _conv_outputs(model.encoder.body, x.view(-1, 1, 64, 64))]
        assert sides == [32, 16, 8, 4]
        z = torch.randn(3, 10, generator=gen(2))
        h = model.decoder.fc(z).view(-1, 64, 4, 4)
        assert [t.shape[-1] for t in _conv_outputs(model.decoder.deconv, h)] == [8, 16, 32, 64]
        mu, s = model.encode(x)
        assert mu.shape == s.shape == (3, 10) and model.decode(z).shape == (3, 4096)
        with torch.no_grad():  # a constant mean head: μ is its bias, not squashed
            model.encoder.mean.weight.zero_()
            model.encoder.mean.bias.fill_(3.0)
        outs.append((model.encode(x)[0], model.decode(z)))
    assert torch.equal(outs[0][0], torch.full((3, 10), 3.0))
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))


def _conv_outputs(seq: torch.nn.Sequential, h: torch.Tensor) -> list[torch.Tensor]:
    """The output of every conv / transposed conv of `seq` on h."""
    outs = []
    for layer in seq:
        h = layer(h)
        if isinstance(layer, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            outs.append(h)
    return outs


def linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_glorot_init_statistics_of_the_paper_network():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=1200, latent_dim=16))
    layers = linears(model)
    assert len(layers) == 8  # encoder 2 + 2 heads, decoder 4
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        w = layer.weight.detach()
        assert w.abs().max() <= bound, layer
        assert w.abs().max() > 0.98 * bound, layer
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02), layer
        assert torch.count_nonzero(layer.bias) == 0, layer


def test_torch_init_is_larger_in_the_decoder_and_same_seed_same_weights():
    cfg = ModelConfig(hidden=1200, latent_dim=16)
    stds, biases = {}, {}
    for init in ("glorot", "torch"):
        torch.manual_seed(0)
        first = build_model(dataclasses.replace(cfg, init=init)).decoder.net[0]
        stds[init], biases[init] = float(first.weight.detach().std()), first.bias.detach()
    # torch: U(±1/√16) -> std 0.144; glorot: U(±√(6/1216)) -> std 0.0406; ratio 3.56
    assert stds["torch"] / stds["glorot"] == pytest.approx(3.56, rel=0.05)
    assert torch.count_nonzero(biases["torch"]) == 1200
    small = ModelConfig(hidden=8, latent_dim=3)
    weights = []
    for _ in range(2):
        torch.manual_seed(5)
        weights.append([p.detach().clone() for p in build_model(small).parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


@pytest.mark.parametrize("arch", ["conv", "conv64"])
def test_glorot_init_covers_the_conv_layers(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, latent_dim=5))
    layers = weighted(model)
    assert len(layers) == 4 + 3 + 2 + 4  # convs, encoder dense, decoder dense, deconvs
    for layer in layers:
        w = layer.weight.detach()
        k = w[0, 0].numel()  # receptive field (1 for a Linear)
        a, b = w.shape[:2]
        bound = math.sqrt(6 / ((a + b) * k))
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound, layer
        assert torch.count_nonzero(layer.bias) == 0, layer


def contract_config(name: str) -> Config:
    """A tiny config of regulariser `name` ("acai": ACAI on a plain auto-encoder, conv32)."""
    if name == "acai":
        model = {"arch": "conv32", "depth": 4, "latent_dim": 16, "posterior": "deterministic"}
        return from_dict({"data": {"dataset": "lines"}, "model": model,
                          "objective": {"name": "ae", "acai": 2.0, "lp_lambda": 1.0}})  # fmt: skip
    row = REGULARISERS[name]
    posterior = (row.posteriors or ("gaussian",))[0]
    model = {"latent_dim": 8, "hidden": 32, "posterior": posterior}
    return from_dict({"model": model, "objective": {"name": name, "lp_lambda": 1.0}})


def grads(params: list[torch.Tensor]) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]


@pytest.mark.parametrize("name", [*REGULARISERS, "acai"])
def test_each_regulariser_keeps_its_contract(name):
    """Milliseconds per row: a finite loss with the row's terms, gradients on the
    auto-encoder only, every side network's loss moving only its own weights, and the loss
    vmap-safe (two stacked copies give the solo loss)."""
    cfg = contract_config(name)
    row = ACAI if name == "acai" else REGULARISERS[name]
    torch.manual_seed(0)
    model = build_model(cfg.model)
    objective = build_objective(cfg, model)
    pixels = 1024 if cfg.model.arch == "conv32" else 4096
    x = (torch.rand(16, pixels, generator=gen(7)) < 0.3).float()
    draws = objective.draws(x, gen(6)) | {"step": torch.tensor(5.0)}
    out = objective.loss(model, x, draws)
    assert torch.isfinite(out.total) and all(torch.isfinite(t) for t in out.terms.values())
    side_terms = {s.term for s in row.sides}
    assert set(row.terms) - side_terms <= set(out.terms) and {"recon", "logscale_lp"} <= set(
        out.terms
    )
    out.total.backward()
    assert all(grads(list(model.parameters())))  # every AE weight learns (λ_p > 0: the s head)
    assert not any(grads(list(objective.parameters())))  # the AE's loss leaves side nets alone
    sides = objective.sides()
    assert [s.row for s in sides] == list(row.sides)
    for side in sides:
        model.zero_grad(set_to_none=True)
        inputs = out.side[side.row.name]
        assert all(not t.requires_grad for t in inputs.values())  # detached from the AE
        before = [p.detach().clone() for p in side.parameters()]
        optimizer = torch.optim.Adam(side.parameters(), **side.adam())
        loss = side.loss(inputs, side.draws(inputs, gen(8)))
        assert torch.isfinite(loss)
        loss.backward()
        assert not any(grads(list(model.parameters())))
        optimizer.step()
        assert all(not torch.equal(a, b) for a, b in zip(before, side.parameters()))
    # vmap-safe: the loss of two stacked copies (as a pack runs it), each the solo loss
    pair = _Pair(model, objective)
    params = {n: torch.stack([p.detach()] * 2) for n, p in pair.named_parameters()}
    two = {k: torch.stack([v, v]) for k, v in draws.items()}
    total = torch.func.vmap(lambda p, x, d: torch.func.functional_call(pair, p, (x, d))[0])
    stacked = total(params, torch.stack([x, x]), two)
    solo = objective.loss(model, x, draws).total.detach()  # the side networks have stepped
    assert torch.allclose(stacked, solo.expand(2), rtol=1e-5)
