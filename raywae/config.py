"""The experiment config: frozen, typed dataclasses and a strict loader.

`from_dict` / `load` reject unknown keys, wrong types and bad values with a `ConfigError`
that names the dotted key path and the source file.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np
import yaml

from raywae.data.grid import DSPRITES_NAMES
from raywae.errors import ConfigError, check
from raywae.families import ACAI, REGULARISERS, AcaiKeys, readers, rows

EXTRA_METRICS = ("mig", "dci", "dci_exact", "factor_vae", "sap")


def _check_steps(steps: Mapping[str, int], key: str) -> None:
    for name, step in steps.items():
        check(name in DSPRITES_NAMES, f"{key}.{name}", f"unknown factor; one of {DSPRITES_NAMES}")
        check(step >= 1, f"{key}.{name}", f"step must be >= 1, got {step}")


@dataclass(frozen=True)
class DataConfig:
    """What to train on. dataset: dSprites (PROTOCOL §2), or the interpolation track's
    `lines` (procedural) and `mnist` (IDX files under `path`, default <data dir>/mnist)
    (PROTOCOL §9). dSprites: source, path, subgrid (factor -> keep every k-th value).
    lines_train (lines): "fresh", every training batch drawn anew from the renderer (the
    paper), or "fixed", batches drawn from a fixed set of 32,768 lines."""

    dataset: Literal["dsprites", "lines", "mnist"] = "dsprites"
    source: Literal["auto", "real", "procedural"] = "auto"
    path: str | None = None
    subgrid: dict[str, int] = field(default_factory=dict)
    lines_train: Literal["fresh", "fixed"] = "fresh"

    def __post_init__(self) -> None:
        _check_steps(self.subgrid, "subgrid")
        check(
            self.dataset == "lines" or self.lines_train == "fresh",
            "lines_train",
            f"only for dataset lines (this is {self.dataset})",
        )


@dataclass(frozen=True)
class ModelConfig:
    """PROTOCOL §3. hidden: width of the FC layers (1200 in the paper; smaller for smoke tests).

    init: "glorot" (the authors' TensorFlow default: Glorot-uniform weights, zero biases, on
    every Linear / conv layer of encoder and decoder), "torch" (PyTorch's own defaults) or
    "he" (Kaiming-normal for leaky ReLU 0.2, zero biases: the ACAI network's kind of init,
    under which conv32's 2×2 codes still vary across images at step 0; with "torch" they
    vary by ~1e-6 and an unregularised auto-encoder starts on the mean-image plateau).
    box_anchor (posterior=box only): "centre", z = μ + e^ℓ ⊙ (u − ½), so μ is the box's mean;
    or "corner", the authors' code, z = μ + e^ℓ ⊙ u with μ the lower corner. The metrics read
    μ either way, as the authors' metric did.
    arch (64×64, dSprites): "fc" (the paper's, PROTOCOL §3; `hidden` wide), "conv64"
    (disentanglement_lib's conv_encoder / deconv_decoder exactly: linear mean head) or "conv"
    (its tanh variant with 4×4 kernels in every conv); arch "conv32": the ACAI paper's 32×32
    conv auto-encoder (lines, MNIST): `depth` channels in its first block, a
    2×2×(latent_dim/4) code. mean_head (fc, conv32 only): tanh (PROTOCOL §3) or linear (the
    WAE and ACAI papers' unbounded codes). posterior "deterministic": z = μ.
    """

    arch: Literal["fc", "conv", "conv64", "conv32"] = "fc"
    latent_dim: int = 16
    posterior: Literal["gaussian", "box", "deterministic"] = "gaussian"
    prior: Literal["gaussian", "uniform"] = "gaussian"
    hidden: int = 1200
    init: Literal["glorot", "torch", "he"] = "glorot"
    box_anchor: Literal["centre", "corner"] = "centre"
    depth: int = 16
    mean_head: Literal["tanh", "linear"] = "tanh"

    def __post_init__(self) -> None:
        check(self.latent_dim >= 1, "latent_dim", f"must be >= 1, got {self.latent_dim}")
        check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        check(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")
        if self.arch == "conv32":
            check(self.latent_dim % 4 == 0, "latent_dim", "conv32 needs a multiple of 4 (2×2×c)")


@dataclass(frozen=True)
class ObjectiveConfig:
    """PROTOCOL §4, §9-§10. name: an objective of raywae.families (REGULARISERS); lp_lambda,
    p: the λ_p·mean Σ|log-scale|^p penalty (every objective; logged even at 0); acai: the
    ACAI weight λ on d(x̂_mix)² (0 = off), composing with any objective. family: the keys of
    `name`'s regulariser (its dataclass: β-VAE's beta, WAE-MMD's lam, ...); acai_keys: ACAI's
    (acai_gamma, critic_lr), present exactly when acai > 0.

    In YAML every key stands flat under `objective:` (`objective.beta`, `objective.lam`): a
    run reads, validates and logs only the keys of its own regulariser (and ACAI's when on);
    another objective's key is an error naming who reads it (a sweep's `base:` may hold keys
    of several families: each arm keeps its own, see `compose`)."""

    name: str = "beta_vae"
    lp_lambda: float = 0.0
    p: float = 1.0
    acai: float = 0.0
    family: Any = None  # REGULARISERS[name].keys(); None: its defaults
    acai_keys: AcaiKeys | None = None  # acai > 0: AcaiKeys(); None: its defaults

    COMMON = ("name", "lp_lambda", "p", "acai")

    def __post_init__(self) -> None:
        names = list(REGULARISERS)
        check(self.name in REGULARISERS, "name", f"must be one of {names}, got {self.name!r}")
        for key in ("lp_lambda", "acai"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        check(self.p > 0, "p", f"must be > 0, got {self.p}")
        keys = REGULARISERS[self.name].keys
        if self.family is None:
            object.__setattr__(self, "family", keys())
        check(isinstance(self.family, keys), "family", f"{self.name} reads {keys.__name__}")
        if self.acai > 0 and self.acai_keys is None:
            object.__setattr__(self, "acai_keys", AcaiKeys())
        if self.acai == 0:
            check(self.acai_keys is None, "acai_keys", "ACAI's keys need objective.acai > 0")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], path: str) -> ObjectiveConfig:
        """The flat `objective:` mapping -> ObjectiveConfig; a key no part of this objective
        reads is a ConfigError naming the objectives that do read it."""
        prefix = f"{path}." if path else ""
        hints = get_type_hints(cls)
        common = {k: coerce(d[k], hints[k], f"{prefix}{k}") for k in cls.COMMON if k in d}
        name = common.get("name", "beta_vae")
        check(
            name in REGULARISERS,
            f"{prefix}name",
            f"must be one of {list(REGULARISERS)}, got {name!r}",
        )
        row, acai = REGULARISERS[name], common.get("acai", 0.0) > 0
        own = {k: v for k, v in d.items() if k in row.key_names()}
        extra = {k: v for k, v in d.items() if k in ACAI.key_names()}
        for key in d:
            if key in cls.COMMON or key in own or (acai and key in extra):
                continue
            if key in extra:
                raise ConfigError(
                    f"{prefix}{key}", "an ACAI key: read only with objective.acai > 0"
                )
            who = readers(key)
            allowed = [*cls.COMMON, *row.key_names(), *(ACAI.key_names() if acai else ())]
            why = f"{name} does not read it (a key of {who})" if who else "unknown key"
            raise ConfigError(f"{prefix}{key}", f"{why}; allowed for {name}: {allowed}")
        family = _build(row.keys, own, path)
        acai_keys = _build(AcaiKeys, extra, path) if acai else None
        try:
            return cls(**common, family=family, acai_keys=acai_keys)
        except ConfigError as err:
            raise ConfigError(f"{prefix}{err.key}", err.message) from None

    def as_mapping(self) -> dict[str, Any]:
        """The flat `objective:` mapping (from_mapping's inverse): the common keys, then the
        regulariser's, then ACAI's when on."""
        parts = [self.family, *([self.acai_keys] if self.acai_keys else [])]
        own = {f.name: getattr(p, f.name) for p in parts for f in dataclasses.fields(p)}
        return {k: getattr(self, k) for k in self.COMMON} | own


@dataclass(frozen=True)
class TrainConfig:
    """PROTOCOL §5. The learning rate is lr until step lr_milestones[i]·steps, then
    lr·lr_decay[i]: the paper's 1e-3 -> 7e-4 @15k, 3e-4 @30k, 1e-4 @45k of 60k steps."""

    steps: int = 60_000
    batch_size: int = 100
    lr: float = 1e-3
    lr_milestones: tuple[float, ...] = (0.25, 0.5, 0.75)
    lr_decay: tuple[float, ...] = (0.7, 0.3, 0.1)
    report_every: int = 1000
    # A Tune trial's checkpoint (weights and Adam state: ~170 MB for the paper network, R times
    # that for a pack) every this many steps, at a report; 0: at every report. Schedulers want
    # frequent cheap reports; PBT needs a checkpoint at its perturbation interval.
    checkpoint_every: int = 0
    eval_batch_size: int = 1000
    device: str = "auto"
    # The training losses in fp32, or under bf16 autocast (the GEMMs in bf16 where the device
    # has bf16 arithmetic; weights, Adam state, evaluation and metrics stay fp32).
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        # The unbiased MMD estimator divides by n(n-1).
        check(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        m, g = self.lr_milestones, self.lr_decay
        check(len(m) == len(g), "lr_decay", f"needs one factor per milestone ({len(m)})")
        check(all(0 < f <= 1 for f in m), "lr_milestones", "fractions must lie in (0, 1]")
        check(list(m) == sorted(m), "lr_milestones", "must be increasing")
        check(all(f > 0 for f in g), "lr_decay", "factors must be > 0")
        check(self.report_every >= 1, "report_every", "must be >= 1")
        check(
            self.checkpoint_every >= 0 and self.checkpoint_every % self.report_every == 0,
            "checkpoint_every",
            f"0 (every report) or a multiple of report_every ({self.report_every}), "
            f"got {self.checkpoint_every}",
        )
        check(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        dev = re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device)
        check(dev is not None, "device", f"auto, cpu, mps, cuda or cuda:N; got {self.device!r}")


@dataclass(frozen=True)
class ProxyConfig:
    """The Higgins score's cheap estimate during training (proxy/beta_vae_4, proxy/beta_vae_5):
    the same metric on the metric grid's subgrid `grid_subsample` (on top of
    metrics.grid_subsample), `points` labelled points of `pairs` pairs, one linear softmax
    classifier trained `steps` full-batch Adagrad steps; the points are fixed per model (its
    seed), so a model's curve moves with its codes, not with resampled points. Defaults and
    their measured cost and agreement with the final score: README, "Scores during training"."""

    grid_subsample: dict[str, int] = field(
        default_factory=lambda: {"orientation": 4, "posX": 4, "posY": 4}
    )
    points: int = 2000
    pairs: int = 30
    steps: int = 5000

    def __post_init__(self) -> None:
        _check_steps(self.grid_subsample, "grid_subsample")
        for key in ("points", "pairs", "steps"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class MetricsConfig:
    """Settings carried to raywae.metrics (PROTOCOL §7–8). grid_subsample: factor -> step of
    the grid the code table is encoded on, on top of data.subgrid ({} = every image).
    every: report the proxies (`proxy`) every this many training steps (0: never; a multiple
    of train.report_every), and at the last step."""

    preset: Literal["rubenstein2018", "disentanglement_lib"] = "rubenstein2018"
    runs: int = 3
    extra: tuple[str, ...] = ()
    grid_subsample: dict[str, int] = field(default_factory=dict)
    every: int = 0
    proxy: ProxyConfig = field(default_factory=ProxyConfig)

    def __post_init__(self) -> None:
        check(self.runs >= 1, "runs", f"must be >= 1, got {self.runs}")
        check(self.every >= 0, "every", f"must be >= 0, got {self.every}")
        for i, name in enumerate(self.extra):
            check(name in EXTRA_METRICS, f"extra[{i}]", f"{name!r} not in {EXTRA_METRICS}")
        check(len(set(self.extra)) == len(self.extra), "extra", "lists a metric twice")
        _check_steps(self.grid_subsample, "grid_subsample")


@dataclass(frozen=True)
class Config:
    """One experiment: every seed (model init, batches, noise) derives from `seed`. preset:
    settings a study trains with, under the file's own keys (`PRESETS`): "rubenstein2018"
    (the defaults: the 2018 paper's FC network and schedule) or "locatello2019"
    (disentanglement_lib's unsupervised study: conv64, latent 10, batch 64, Adam 1e-4
    constant, 300,000 steps)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    seed: int = 0
    preset: Literal["rubenstein2018", "locatello2019"] = "rubenstein2018"

    def __post_init__(self) -> None:
        obj, model = self.objective, self.model
        for row in rows(obj.name, obj.acai):  # what each regulariser is defined for
            for kind, allowed, value in (
                ("posterior", row.posteriors, model.posterior),
                ("prior", row.priors, model.prior),
                ("arch", row.arch and (row.arch,), model.arch),
            ):
                check(
                    allowed is None or value in allowed,
                    "objective.acai" if row is ACAI else f"model.{kind}",
                    f"{row.name} needs model.{kind} in {list(allowed or ())}, got {value!r}",
                )
        every, report = self.metrics.every, self.train.report_every
        check(
            every % report == 0,
            "metrics.every",
            f"proxies are computed at reports: a multiple of train.report_every ({report}), "
            f"got {every}",
        )
        small = self.data.dataset != "dsprites"
        check(
            small == (self.model.arch == "conv32"),
            "model.arch",
            f"{self.data.dataset} needs "
            + ("conv32" if small else "fc, conv or conv64 (64×64 inputs)"),
        )


# --- strict loading ---------------------------------------------------------------------------
def _number(value: Any, tp: type, key: str) -> int | float:
    """int / float field value. Accepted: integers (numpy's too) for both, reals for floats,
    and numeric strings for both (YAML 1.1 reads `1e-4` as a string); the result must be
    finite, and integral for an int field."""
    if isinstance(value, bool | np.bool_):
        raise ConfigError(key, f"expected {tp.__name__}, got bool {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(key, f"expected {tp.__name__}, got string {value!r}") from None
        if tp is int:
            if not value.is_integer():
                raise ConfigError(key, f"expected int, got {value!r}")
            value = int(value)
    kind = numbers.Integral if tp is int else numbers.Real
    if not isinstance(value, kind):
        raise ConfigError(key, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    if tp is int:
        return int(value)
    if not math.isfinite(value):
        raise ConfigError(key, f"must be finite, got {value!r}")
    return float(value)


def _union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    """A value of `A | B | None`: None, else the branch matching the value's shape (a list
    for a tuple type, a mapping for a dict or dataclass), else the first scalar that fits."""
    if value is None and type(None) in args:
        return None
    args = tuple(a for a in args if a is not type(None))
    shaped = [
        a
        for a in args
        if (get_origin(a) is tuple and isinstance(value, list | tuple))
        or ((get_origin(a) is dict or dataclasses.is_dataclass(a)) and isinstance(value, Mapping))
    ]
    if shaped or len(args) == 1:
        return coerce(value, (shaped or args)[0], key)
    for a in args:
        try:
            return coerce(value, a, key)
        except ConfigError:
            continue
    names = " or ".join(getattr(a, "__name__", "list") for a in args)
    raise ConfigError(key, f"expected {names}, got {type(value).__name__} {value!r}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the type hint `tp` (a dataclass, Literal, int, float, str, bool,
    tuple[X, ...], dict[K, V], a union, Any) and convert it; raise ConfigError naming `key`.
    The one validator of raywae: experiment configs and search-space files both use it."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
        if hasattr(tp, "from_mapping"):  # a section with its own layout (ObjectiveConfig)
            return tp.from_mapping(value, key)
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        return _union(value, args, key)
    if origin is Literal:
        if not isinstance(value, str) or value not in args:
            raise ConfigError(key, f"must be one of {list(args)}, got {value!r}")
        return value
    if tp in (int, float):
        return _number(value, tp, key)
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(key, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
        return {coerce(k, args[0], key): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"config field type {tp!r} has no loader")  # a bug in this module


def _build(cls: type, d: Mapping[str, Any], path: str) -> Any:
    prefix = f"{path}." if path else ""
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    for key in d:
        if key not in names:
            raise ConfigError(f"{prefix}{key}", f"unknown key; allowed: {names}")
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in d:
            raise ConfigError(f"{prefix}{f.name}", "missing: this key is required")
    kwargs = {k: coerce(v, hints[k], f"{prefix}{k}") for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:  # value checks name keys relative to their section
        raise ConfigError(f"{prefix}{err.key}", err.message) from None


# Each study's training settings (Config.preset); the Bernoulli loss and Adam's β1 0.9, β2
# 0.999, ε 1e-8 are every run's. locatello2019: disentanglement_lib's unsupervised_study_v1
# (model_configs/shared.gin).
PRESETS: dict[str, dict[str, Any]] = {
    "rubenstein2018": {},
    "locatello2019": {
        "model": {"arch": "conv64", "latent_dim": 10},
        "train": {"batch_size": 64, "lr": 1e-4, "lr_milestones": [], "lr_decay": [],
                  "steps": 300_000},
    },
}  # fmt: skip


def _merged(under: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings `over` laid over `under` (over wins, key by key)."""
    out = dict(under)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _merged(out[key], value) if both else value
    return out


def from_dict(d: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Strict nested dict -> Config; missing keys take their `preset`'s values, then their
    defaults."""
    name = d.get("preset")
    preset = PRESETS.get(name, {}) if isinstance(name, str) else {}  # a bad one fails in coerce
    try:
        return coerce(_merged(preset, d), Config, "")
    except ConfigError as err:
        raise ConfigError(err.key, err.message, source) from None


def _line_map(node: yaml.Node, path: str = "", out: dict[str, int] | None = None) -> dict:
    """Dotted key path -> 1-based line of the key in the YAML text (list items as `key[i]`)."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            sub = f"{path}.{key.value}" if path else str(key.value)
            line = key.start_mark.line + 1
            if sub in seen:  # yaml.safe_load would keep the last one without a word
                raise ConfigError(sub, f"duplicate key (also at line {seen[sub]})", line=line)
            seen[sub] = out[sub] = line
            _line_map(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out[f"{path}[{i}]"] = value.start_mark.line + 1
            _line_map(value, f"{path}[{i}]", out)
    return out


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A YAML file (`yaml.safe_load`) whose top is a mapping, and the line of every key
    (see _line_map). A missing file or bad YAML is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", "no such file", str(path))
    text = path.read_text()
    try:
        node, doc = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("", f"not valid YAML: {err}", str(path)) from None
    if doc is None:
        return {}, {}
    if not isinstance(doc, Mapping):
        raise ConfigError("", f"expected a mapping at the top, got {type(doc).__name__}", str(path))
    try:
        return dict(doc), _line_map(node)
    except ConfigError as err:
        raise ConfigError(err.key, err.message, str(path), err.line) from None


def load(path: str | Path) -> Config:
    """Read a YAML experiment config (the `base:` section format of a sweep) strictly."""
    doc, lines = read_yaml(path)
    try:
        return from_dict(doc)
    except ConfigError as err:
        raise err.located(str(path), lines) from None


def set_path(d: dict[str, Any], key: str, value: Any, source: str = "<overrides>") -> None:
    """d[a][b][c] = value for key "a.b.c" (the one dotted setter of --set and overrides);
    missing mappings are created, a parent that is not a mapping is a ConfigError."""
    *parents, last = key.split(".")
    node = d
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(parents[: i + 1]), f"setting {key}: not a mapping", source)
    node[last] = value


def to_dict(cfg: Config) -> dict[str, Any]:
    """Config -> nested plain dict (tuples as lists), so from_dict(to_dict(c)) == c."""

    def plain(v: Any) -> Any:
        if hasattr(v, "as_mapping"):
            return plain(v.as_mapping())
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """The CLIs' `--set KEY.PATH=VALUE` strings -> {dotted key: value}, each value read as
    YAML (`3` is an int, `1e-4` a string the number checks accept, `[a, b]` a list)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(pair, "expected KEY.PATH=VALUE", "--set")
        out[key] = yaml.safe_load(value)
    return out


def compose(base: Mapping[str, Any], flat: Mapping[str, Any], source: str = "<dict>") -> Config:
    """The Config of a nested dict `base` with the dotted keys `flat` set over it, checked as
    strictly as from_dict but for one thing: an `objective.*` key that comes from `base` and
    that the run's objective does not read, though another one does, is dropped. So a sweep's
    `base:` can hold keys for several families (`objective: {lam: 400}` beside a β-VAE arm)
    and switching `objective.name` leaves the old family's keys behind; a key in `flat`
    must be read, and a key nobody reads still fails."""
    d = copy.deepcopy(dict(base))
    name = flat.get("preset")
    if isinstance(name, str) and name in PRESETS:  # a preset set here wins over the base's
        d = _merged(d, PRESETS[name])
    for key, value in flat.items():
        set_path(d, key, value, source)
    obj = d.get("objective")
    if isinstance(obj, dict) and obj.get("name", "beta_vae") in REGULARISERS:
        try:
            acai = _number(obj.get("acai", 0.0), float, "objective.acai") > 0
        except ConfigError:
            acai = False  # from_dict names the bad value
        row = REGULARISERS[obj.get("name", "beta_vae")]
        read = {*ObjectiveConfig.COMMON, *row.key_names(), *(ACAI.key_names() if acai else ())}
        explicit = {k.partition(".")[2] for k in flat if k.startswith("objective.")}
        for key in [k for k in obj if k not in read and k not in explicit and readers(k)]:
            del obj[key]
    return from_dict(d, source)


def override(cfg: Config, flat: Mapping[str, Any], source: str = "<overrides>") -> Config:
    """A copy of cfg with dotted keys replaced, e.g. {"objective.beta": 3, "seed": 1};
    `data.subgrid.posX` adds or sets one factor. Checked as strictly as from_dict; a new
    `objective.name` starts from its own keys' defaults (see `compose`)."""
    return compose(to_dict(cfg), flat, source)


def flatten(cfg: Config) -> dict[str, Any]:
    """Dotted key -> scalar (for MLflow params), nested sections by their path
    (`metrics.proxy.points`): tuples become "a,b,c", dicts "k=v,k=v" (sorted by key, "" when
    empty); None stays None."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        items = obj.as_mapping() if hasattr(obj, "as_mapping") else vars(obj)
        for name, value in items.items():
            key = f"{prefix}{name}"
            if dataclasses.is_dataclass(value):
                walk(value, f"{key}.")
            elif isinstance(value, tuple):
                out[key] = ",".join(str(x) for x in value)
            elif isinstance(value, dict):
                out[key] = ",".join(f"{k}={value[k]}" for k in sorted(value))
            else:
                out[key] = value

    walk(cfg, "")
    return out
