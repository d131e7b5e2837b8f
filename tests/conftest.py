"""Shared fixtures: a private data directory per test session, and a small dSprites subgrid."""

from __future__ import annotations

import pytest
import torch

from raywae.data import FactorGrid, load_dsprites

SMALL_STEPS = {"orientation": 4, "posX": 4, "posY": 4}  # 11,520 images


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Every test reads and writes data under its own directory, never the user's cache."""
    path = tmp_path_factory.mktemp("raywae-data")
    mp = pytest.MonkeyPatch()
    mp.setenv("RAYWAE_DATA_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def small_grid() -> FactorGrid:
    return FactorGrid.dsprites().subgrid(SMALL_STEPS)


@pytest.fixture(scope="session")
def small_ds(small_grid: FactorGrid, data_dir: object) -> object:
    """Procedural dSprites on the small subgrid (rendered once per session)."""
    return load_dsprites("procedural", grid=small_grid)


@pytest.fixture(scope="module")
def one_thread() -> object:
    """Small tensors: one torch thread avoids contention on a shared 2-core machine (up to
    30x faster here than two threads fighting); the old setting comes back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray() -> object:
    """A real local Ray for one test module (2 CPUs, no dashboard)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
