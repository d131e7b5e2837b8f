"""The Higgins et al. (2017) β-VAE disentanglement metric on 4 and 5 factors (PROTOCOL §7).

Presets `rubenstein2018` (linear softmax, full-batch Adagrad, 3 restarts on the same points)
and `disentanglement_lib` (L = 64, scikit-learn logistic regression, score = eval accuracy).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from raywae.data.grid import FactorGrid
from raywae.metrics.codes import check_table

FACTOR_SETS: dict[int, tuple[str, ...]] = {
    4: ("scale", "orientation", "posX", "posY"),  # shape varies freely (Rubenstein et al.)
    5: ("shape", "scale", "orientation", "posX", "posY"),
}


@dataclass(frozen=True)
class HigginsPreset:
    """pairs: L pairs averaged per point; score: which accuracy is the metric's value.
    classifier "softmax_adagrad": the runs restart it on one point set (steps, lr apply);
    "logistic": every run draws fresh points and fits scikit-learn's LogisticRegression."""

    pairs: int
    num_train: int
    num_eval: int
    classifier: str  # "softmax_adagrad" | "logistic"
    score: str  # "train_accuracy" | "eval_accuracy"
    steps: int = 100_000
    lr: float = 1e-2


PRESETS: dict[str, HigginsPreset] = {
    "rubenstein2018": HigginsPreset(30, 5000, 5000, "softmax_adagrad", "train_accuracy"),
    "disentanglement_lib": HigginsPreset(64, 10_000, 5000, "logistic", "eval_accuracy"),
}


def factor_ids(grid: FactorGrid, factors: int | Sequence[str]) -> tuple[int, ...]:
    """4 or 5 (PROTOCOL §7's sets) or explicit factor names -> positions in the grid."""
    if isinstance(factors, int):
        if factors not in FACTOR_SETS:
            raise ValueError(f"factors must be 4, 5 or a list of names, got {factors}")
        factors = FACTOR_SETS[factors]
    return grid.factors_named(factors)


def higgins_points(
    codes: np.ndarray,
    grid: FactorGrid,
    ids: Sequence[int],
    n: int,
    pairs: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """n labelled points of the Higgins metric.

    For each point: y ~ U{0..K-1}; L pairs of class vectors, every factor uniform, factor
    ids[y] copied from the first to the second of each pair (a fresh value per pair);
    z_diff = (1/L) Σ_l |μ(x_1^l) − μ(x_2^l)|  (Higgins et al. 2017, §4).
    Returns (z_diff (n, d) float32, y (n,) int64).
    """
    y = rng.integers(0, len(ids), size=n)
    first, second = grid.sample_pairs(n * pairs, np.repeat(np.asarray(ids)[y], pairs), rng)
    diff = np.abs(codes[grid.index(first)] - codes[grid.index(second)])
    return diff.reshape(n, pairs, -1).mean(axis=1, dtype=np.float64).astype(np.float32), y


def fit_softmax_adagrad(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    restarts: int = 1,
    steps: int = 100_000,
    lr: float = 1e-2,
    seed: int = 0,
    initial_accumulator: float = 0.1,
) -> np.ndarray:
    """Linear softmax classifiers trained by full-batch Adagrad, `restarts` inits at once.

    x: (n, d) features, y: (n,) int labels in [0, n_classes). Loss: mean cross-entropy of
    softmax(W x + b); Adagrad (Duchi et al. 2011): G += g², θ -= lr·g / (√G + 1e-10), with
    G starting at `initial_accumulator` (0.1, TensorFlow's default, the authors' framework;
    torch.optim.Adagrad's `initial_accumulator_value`). Init: Glorot-uniform W, b = 0.
    Returns weights (restarts, n_classes, d + 1) float32, the bias in the last column.
    """
    problem = Problem(x, y, n_classes, seed)
    return fit_softmax_adagrad_many([problem], restarts, steps, lr, initial_accumulator)[0]


@dataclass(frozen=True)
class Problem:
    """One classifier fit: features x (n, d), labels y (n,) in [0, n_classes), init seed."""

    x: np.ndarray
    y: np.ndarray
    n_classes: int
    seed: int


def fit_softmax_adagrad_many(
    problems: Sequence[Problem],
    restarts: int = 1,
    steps: int = 100_000,
    lr: float = 1e-2,
    initial_accumulator: float = 0.1,
    device: str | torch.device = "cpu",
    workers: int | None = None,
) -> list[np.ndarray]:
    """`fit_softmax_adagrad` for several problems of one shape (n, d) at once on `device`:
    one batched GEMM pair per step for all of them (a pack's models × both factor sets),
    instead of one small fit each. Fewer classes than the most are padded with classes of
    logit −inf (probability 0, gradient 0): each problem's arithmetic is its own fit's.
    workers: on CPU, the problems are split into that many groups of about equal work (one
    model's 5- and 4-factor fits: two groups, neither padded) fitted side by side in threads
    of one core each (each group's arithmetic is the one batched fit's); default
    torch.get_num_threads(), capped at the number of problems. Threads, not OpenMP: on shared
    cores OpenMP's spin-waiting made a 2-thread fit up to 5x slower than 1; a thread that
    loses its core only delays its own group.
    Returns each problem's weights (restarts, its n_classes, d + 1) float32."""
    n, d = problems[0].x.shape
    if any(pr.x.shape != (n, d) for pr in problems):
        raise ValueError("problems fitted together need features of one shape")
    device = torch.device(device)
    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    groups = _split(problems, workers)

    def fit(group: list[int]) -> list[np.ndarray]:
        chosen = [problems[i] for i in group]
        return _fit_group(chosen, restarts, steps, lr, initial_accumulator, device)

    with _threads(1):
        if len(groups) == 1:
            fitted = [fit(groups[0])]
        else:
            with ThreadPoolExecutor(len(groups)) as pool:  # fresh threads: they read _threads
                fitted = list(pool.map(fit, groups))
    out: list[Any] = [None] * len(problems)
    for group, weights in zip(groups, fitted):
        for i, w in zip(group, weights):
            out[i] = w
    return out


def _split(problems: Sequence[Problem], workers: int) -> list[list[int]]:
    """Problem indices in at most `workers` groups of about equal work (classes; one model's
    4- and 5-factor problems go to two groups, neither padded)."""
    k = max(1, min(workers, len(problems)))
    order = sorted(range(len(problems)), key=lambda i: -problems[i].n_classes)
    groups: list[list[int]] = [[] for _ in range(k)]
    load = [0] * k
    for i in order:  # largest first, each to the group that would finish first
        j = min(range(k), key=lambda g: (load[g], g))
        groups[j].append(i)
        load[j] += problems[i].n_classes
    return [sorted(g) for g in groups if g]


@torch.no_grad()  # grad mode is per thread: a worker thread sets its own
def _fit_group(
    problems: Sequence[Problem],
    restarts: int,
    steps: int,
    lr: float,
    initial_accumulator: float,
    device: torch.device,
) -> list[np.ndarray]:
    """The batched fit of fit_softmax_adagrad_many for one group of problems."""
    n, d = problems[0].x.shape
    k, r, c = len(problems), restarts, max(pr.n_classes for pr in problems)
    w = torch.zeros(k, r, c, d + 1)
    onehot = torch.zeros(k, c, n)
    for i, pr in enumerate(problems):
        # The init a fit of this problem alone draws: (restarts · its classes, d) Glorot.
        gen = torch.Generator().manual_seed(pr.seed)
        limit = float(np.sqrt(6.0 / (d + pr.n_classes)))
        init = (torch.rand(r * pr.n_classes, d, generator=gen) * 2 - 1) * limit
        w[i, :, : pr.n_classes, :d] = init.view(r, pr.n_classes, d)
        # A padded class: zero weights and bias −inf, so its logit w·x + (−inf)·1 is −inf
        # (the bias feature is 1) and stays so (its gradient is 0): no mask pass per step.
        w[i, :, pr.n_classes :, d] = -torch.inf
        onehot[i, torch.from_numpy(np.asarray(pr.y, np.int64)), torch.arange(n)] = 1.0
    # Row layout (restarts·classes, points): logits are one skinny GEMM and the softmax runs
    # over a strided middle axis, ~10x faster on CPU than softmax over a length-5 last axis.
    xs = torch.from_numpy(np.stack([np.asarray(pr.x, np.float32) for pr in problems]))
    xa = torch.cat([xs, torch.ones(k, n, 1)], 2).to(device)
    xt = xa.transpose(1, 2).contiguous()
    w = w.view(k, r * c, d + 1).to(device)
    onehot = onehot.repeat(1, r, 1).to(device)
    acc = torch.full_like(w, initial_accumulator)
    logits, g, root = torch.empty(k, r * c, n, device=device), torch.empty_like(w), acc.clone()
    for _ in range(steps):  # buffers reused: no allocation but the softmax's
        p = torch.bmm(w, xt, out=logits).view(k, r, c, n).softmax(2).view(k, r * c, n)
        torch.bmm(p.sub_(onehot), xa, out=g).div_(n)  # ∂/∂θ of the mean cross-entropy
        acc.addcmul_(g, g)
        w.addcdiv_(g, torch.sqrt(acc, out=root).add_(1e-10), value=-lr)
    out = w.view(k, r, c, d + 1).cpu().numpy()
    return [out[i, :, : pr.n_classes] for i, pr in enumerate(problems)]


def accuracy(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """weights (R, C, d + 1), x (n, d), y (n,) -> (R,) accuracy of argmax_c (W x + b)_c."""
    logits = np.einsum("rcd,nd->rnc", weights[:, :, :-1], x) + weights[:, None, :, -1]
    return (logits.argmax(-1) == np.asarray(y)[None]).mean(axis=1)


class _threads:
    """Run torch on k intra-op threads inside the block. The classifier's GEMMs are tiny;
    on shared cores OpenMP's spin-waiting made 2 threads up to 5x slower than 1."""

    def __init__(self, k: int) -> None:
        self.k, self.old = k, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.k)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def higgins_runs(
    codes: np.ndarray,
    grid: FactorGrid,
    factors: int | Sequence[str] = 5,
    preset: str = "rubenstein2018",
    runs: int = 3,
    seed: int = 0,
    steps: int | None = None,
    standardise: bool = False,
) -> dict[str, float]:
    """The Higgins score computed `runs` times (the paper reports the mean of 3).

    codes: (len(grid), d) code table (encoder means; any representation works).
    rubenstein2018: one set of 5,000 points (L = 30); a linear softmax classifier
    p(y|z) = softmax(W z + b), Glorot-uniform W, b = 0, trained `runs` times from fresh
    initialisations by full-batch Adagrad (lr 1e-2, 100,000 steps) on the mean
    cross-entropy; score = accuracy on those points; eval = accuracy on 5,000 fresh points.
    No feature standardisation (Higgins et al. use none). disentanglement_lib: each run draws
    10,000 / 5,000 new points (L = 64) and fits LogisticRegression; score = eval accuracy.
    Accuracies are fractions in [0, 1]; chance is 1/K (25 % for 4 factors, 20 % for 5).

    A linear classifier identifies a single factor the codes ignore by elimination: its
    points are the ones where no feature is near 0, so codes missing only shape still score
    ≈ 100 % on 5 factors; two missing factors are confused with each other (≈ 80 %).
    steps overrides the preset's Adagrad steps (tests); seed fixes points and inits.
    standardise: z-score each feature with the training points' mean / std (off in both
    presets). The Adagrad classifier is not scale-free: it moves each weight by about lr per
    step, so codes of tiny scale (an untrained encoder's means, std ≈ 0.01) score near chance
    with their information intact; standardising is the control for that (see bench/).

    Returns {"score", "train_accuracy", "eval_accuracy"} (means over runs) and the same
    three keys per run as "score/run{i}", "train_accuracy/run{i}", "eval_accuracy/run{i}".
    """
    return higgins_many([codes], grid, [factors], preset, runs, [seed], steps, standardise)[0][0]


def higgins_many(
    tables: Sequence[np.ndarray],
    grid: FactorGrid,
    factor_sets: Sequence[int | Sequence[str]] = (4, 5),
    preset: str | HigginsPreset = "rubenstein2018",
    runs: int = 3,
    seeds: Sequence[int] | None = None,
    steps: int | None = None,
    standardise: bool = False,
    device: str | torch.device = "cpu",
) -> list[list[dict[str, float]]]:
    """`higgins_runs` of every code table (seeds[i]: table i's seed, default 0) on every
    factor set: out[i][j] is table i on factor_sets[j], each drawn from its own seed's points
    as a call of higgins_runs would. With the rubenstein2018 preset every classifier (tables
    × factor sets × runs; one fit per code width) is trained in one batched fit on `device`.
    preset: a key of PRESETS or a HigginsPreset of its own (a proxy, a robustness grid)."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; presets are {sorted(PRESETS)}")
    p = PRESETS[preset] if isinstance(preset, str) else preset
    seeds = [0] * len(tables) if seeds is None else list(seeds)
    jobs = [  # (codes, factor ids, seed, its rng), table-major
        (check_table(codes, grid), factor_ids(grid, factors), seed, np.random.default_rng(seed))
        for codes, seed in zip(tables, seeds, strict=True)
        for factors in factor_sets
    ]

    def points(job: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        codes, ids, _, rng = job
        x_train, y_train = higgins_points(codes, grid, ids, p.num_train, p.pairs, rng)
        x_eval, y_eval = higgins_points(codes, grid, ids, p.num_eval, p.pairs, rng)
        if standardise:
            mean, std = x_train.mean(0), x_train.std(0)
            std[std == 0] = 1.0  # a constant feature stays 0
            x_train, x_eval = (x_train - mean) / std, (x_eval - mean) / std
        return x_train, y_train, x_eval, y_eval

    per_job: list[list[tuple[float, float]]] = []
    if p.classifier == "softmax_adagrad":
        sets = [points(job) for job in jobs]
        problems = [Problem(xt, yt, len(job[1]), job[2]) for job, (xt, yt, _, _) in zip(jobs, sets)]
        fitted: list[Any] = [None] * len(problems)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, pr in enumerate(problems):  # one batched fit per code width
            by_shape.setdefault(pr.x.shape, []).append(i)
        for group in by_shape.values():
            weights = fit_softmax_adagrad_many(
                [problems[i] for i in group],
                runs,
                p.steps if steps is None else steps,
                p.lr,
                device=device,
            )
            for i, w in zip(group, weights):
                fitted[i] = w
        for weights, (x_train, y_train, x_eval, y_eval) in zip(fitted, sets):
            train, ev = accuracy(weights, x_train, y_train), accuracy(weights, x_eval, y_eval)
            per_job.append(list(zip(train, ev)))
    else:
        for job in jobs:
            per_run = []
            for _ in range(runs):
                x_train, y_train, x_eval, y_eval = points(job)
                model = LogisticRegression(random_state=job[2])
                with warnings.catch_warnings():  # lbfgs' 100-iteration default is the preset
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(x_train, y_train)
                per_run.append((model.score(x_train, y_train), model.score(x_eval, y_eval)))
            per_job.append(per_run)
    results = [_summary(per_run, p.score) for per_run in per_job]
    k = len(factor_sets)
    return [results[i : i + k] for i in range(0, len(results), k)]


def _summary(per_run: list[tuple[float, float]], score: str) -> dict[str, float]:
    """Per-run (train, eval) accuracies -> the keys higgins_runs returns."""
    out: dict[str, float] = {}
    for i, (train, ev) in enumerate(per_run):
        out[f"train_accuracy/run{i}"], out[f"eval_accuracy/run{i}"] = float(train), float(ev)
        out[f"score/run{i}"] = out[f"{score}/run{i}"]
    for key in ("score", "train_accuracy", "eval_accuracy"):
        out[key] = float(np.mean([out[f"{key}/run{i}"] for i in range(len(per_run))]))
    return out


def beta_vae_score(
    codes: np.ndarray,
    grid: FactorGrid,
    factors: int | Sequence[str] = 5,
    preset: str = "rubenstein2018",
    seed: int = 0,
    steps: int | None = None,
    standardise: bool = False,
) -> dict[str, float]:
    """One Higgins score: {"score", "train_accuracy", "eval_accuracy"} (see `higgins_runs`).

    codes: (len(grid), d); factors: 4, 5 or factor names; preset: a key of PRESETS.
    """
    out = higgins_runs(codes, grid, factors, preset, 1, seed, steps, standardise)
    return {k: v for k, v in out.items() if "/run" not in k}
