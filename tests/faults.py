"""A deterministic training fault for sweep tests, installed in every Ray worker of a test's
local Ray by `runtime_env`'s worker_process_setup_hook (nothing in raywae knows of it).

Whether a huge learning rate overflows within a few steps depends on the CPU's GEMM kernels
(at lr 1e11 some machines go NaN at step 7 and others never); a NaN noise draw does not:
z = μ + σ·NaN is NaN, so the decoder's logits and the `recon` term are NaN on any machine,
while the KL term (a function of μ, σ only) stays finite.
"""

from __future__ import annotations

import os
from typing import Any

FAULT_ENV = "RAYWAE_TEST_NAN_NOISE"


def nan_noise_env(beta: float, seed: int, step: int) -> dict[str, str]:
    """The env var that makes the `step`-th training noise draw (1-based: the draw of step
    `step`) of every model with objective.beta == beta and config seed `seed` NaN."""
    return {FAULT_ENV: f"{beta}:{seed}:{step}"}


def install() -> None:
    """worker_process_setup_hook: wrap Objective.draws as FAULT_ENV says (no-op without it)."""
    if FAULT_ENV not in os.environ:
        return
    import torch

    from raywae.models.objectives import Objective
    from raywae.train import RunSeeds, _seeds

    beta, seed, step = os.environ[FAULT_ENV].split(":")
    target = RunSeeds(*_seeds(int(seed), 4)).noise  # the noise generator's seed of that run
    original = Objective.draws
    draws: dict[int, int] = {}  # id(generator) -> draws so far (one per training step)

    def noise(self: Objective, x: torch.Tensor, generator: torch.Generator) -> Any:
        out = original(self, x, generator)
        if (
            getattr(self.cfg.family, "beta", None) != float(beta)
            or generator.initial_seed() != target
        ):
            return out
        draws[id(generator)] = k = draws.get(id(generator), 0) + 1
        if k == int(step):
            out = {**out, "eps": torch.full_like(out["eps"], float("nan"))}
        return out

    Objective.draws = noise
