"""The data layer: factor bookkeeping, real-file layouts, checksums, cache, sources."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from raywae.data import (
    ChecksumError,
    DataError,
    FactorGrid,
    ProceduralDataWarning,
    load_dsprites,
)
from raywae.data.__main__ import download

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared/reference/dsprites/latents.json"


# --- FactorGrid ---------------------------------------------------------------------------
def test_grid_matches_protocol() -> None:
    grid = FactorGrid.dsprites()
    assert grid.names == ("color", "shape", "scale", "orientation", "posX", "posY")
    assert grid.sizes == (1, 3, 6, 40, 32, 32)
    assert len(grid) == 737_280
    assert grid.bases == (737280, 245760, 40960, 1024, 32, 1)
    index = np.arange(len(grid))
    np.testing.assert_array_equal(grid.index(grid.classes(index)), index)
    # posY varies fastest, shape slowest among varying factors
    np.testing.assert_array_equal(
        grid.classes(np.array([1, 32, 1024])),
        [[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]],
    )
    assert grid.values[3][0] == 0.0 and grid.values[3][-1] == pytest.approx(2 * np.pi)


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"{REFERENCE} not present")
def test_grid_values_equal_reference_latents() -> None:
    spec = json.loads(REFERENCE.read_text())
    grid = FactorGrid.dsprites()
    assert list(grid.sizes) == spec["sizes"] and list(grid.bases) == spec["bases"]
    for name, values in zip(grid.names, grid.values):
        np.testing.assert_array_equal(values, spec["values"][name])


def test_grid_rejects_out_of_range() -> None:
    grid = FactorGrid.dsprites()
    with pytest.raises(ValueError, match="outside"):
        grid.index(np.array([[0, 3, 0, 0, 0, 0]]))
    with pytest.raises(IndexError):
        grid.classes(np.array([len(grid)]))
    with pytest.raises(KeyError, match="unknown factor 'size'"):
        grid.subgrid(size=2)


def test_samplers() -> None:
    grid = FactorGrid.dsprites()
    rng = np.random.default_rng(0)
    classes = grid.sample(20_000, rng)
    assert classes.shape == (20_000, 6)
    for k, size in enumerate(grid.sizes):
        counts = np.bincount(classes[:, k], minlength=size)
        assert len(counts) == size and counts.min() > 0.7 * 20_000 / size
    factors = rng.integers(1, 6, size=5000)
    first, second = grid.sample_pairs(5000, factors, rng)
    rows = np.arange(5000)
    np.testing.assert_array_equal(first[rows, factors], second[rows, factors])
    other = (factors % 5) + 1  # a different varying factor: must differ often
    assert (first[rows, other] != second[rows, other]).mean() > 0.5
    # the shared value is fresh per pair, not one value for all
    assert len(np.unique(first[factors == 3, 3])) > 30


def test_subgrid_maps_to_full_classes() -> None:
    full = FactorGrid.dsprites()
    sub = full.subgrid(orientation=4, posX=2)
    assert sub.sizes == (1, 3, 6, 10, 16, 32)
    own = sub.classes(np.arange(len(sub)))
    mapped = sub.to_full_classes(own)
    np.testing.assert_array_equal(sub.latent_values(own), full.latent_values(mapped))
    assert sub != full and sub == full.subgrid({"orientation": 4, "posX": 2})


# --- real layouts written from rendered images -----------------------------------------------
def write_real(path: Path, ds, layout: str, classes=None, imgs=None) -> str:
    """Write `ds` in the published layout; returns the file's md5 (npz) or sha256 (hdf5)."""
    grid = ds.grid
    own = grid.to_full_classes(grid.classes(np.arange(len(grid))))
    classes = own if classes is None else classes
    values = FactorGrid.dsprites().latent_values(own)
    imgs = ds.images(np.arange(len(grid))) if imgs is None else imgs
    if layout == "npz":
        np.savez_compressed(
            path,
            imgs=imgs,
            latents_classes=classes,
            latents_values=values,
            metadata=np.array([{"pickled": True}], dtype=object),
        )
        return hashlib.md5(path.read_bytes()).hexdigest()
    with h5py.File(path, "w") as f:
        f["imgs"] = imgs
        f["latents/classes"] = classes
        f["latents/values"] = values
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_npz_and_hdf5_load_identically(small_ds, tmp_path: Path) -> None:
    npz, hdf5 = tmp_path / "d.npz", tmp_path / "d.hdf5"
    a = load_dsprites("real", npz, small_ds.grid, write_real(npz, small_ds, "npz"))
    b = load_dsprites("real", hdf5, small_ds.grid, write_real(hdf5, small_ds, "hdf5"))
    index = np.arange(len(small_ds))
    assert a.source == b.source == "real"
    np.testing.assert_array_equal(a.images(index), b.images(index))
    np.testing.assert_array_equal(a.images(index), small_ds.images(index))
    assert a.fingerprint == b.fingerprint == small_ds.fingerprint
    assert a.grid == b.grid == small_ds.grid


def test_auto_prefers_a_given_real_file_and_warns_without_one(small_ds, tmp_path: Path) -> None:
    npz = tmp_path / "d.npz"
    digest = write_real(npz, small_ds, "npz")
    assert load_dsprites("auto", npz, small_ds.grid, digest).source == "real"
    with pytest.warns(ProceduralDataWarning, match="python -m raywae.data download"):
        assert load_dsprites("auto", grid=small_ds.grid).source == "procedural"


def test_split_is_the_protocol_split(small_ds) -> None:
    train, test = small_ds.split(seed=0)
    assert len(train) == round(0.9 * len(small_ds)) and len(train) + len(test) == len(small_ds)
    assert len(np.intersect1d(train, test)) == 0
    order = np.random.default_rng(0).permutation(len(small_ds))
    np.testing.assert_array_equal(np.concatenate([train, test]), order)
    np.testing.assert_array_equal(small_ds.split(0)[0], train)
    assert not np.array_equal(small_ds.split(1)[0], train)


# --- bad input ----------------------------------------------------------------------------
def test_missing_real_file_names_the_download_command(small_grid, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"python -m raywae\.data download"):
        load_dsprites("real", grid=small_grid)
    with pytest.raises(DataError, match="not found"):
        load_dsprites("real", tmp_path / "nope.npz", small_grid)


def test_corrupted_file_names_file_and_checksums(small_ds, tmp_path: Path) -> None:
    npz = tmp_path / "d.npz"
    digest = write_real(npz, small_ds, "npz")
    npz.write_bytes(npz.read_bytes()[:-1000])  # truncate
    actual = hashlib.md5(npz.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as err:
        load_dsprites("real", npz, small_ds.grid, digest)
    for part in (str(npz), digest, actual):
        assert part in str(err.value)
    # the pinned checksum of the published file applies by default
    with pytest.raises(ChecksumError, match="7da33b31b13a06f4b04a70402ce90c2e"):
        load_dsprites("real", npz, small_ds.grid)
    # an unverified truncated archive is still refused cleanly
    with pytest.raises(DataError, match="cannot read"):
        load_dsprites("real", npz, small_ds.grid, checksum=None)


@pytest.mark.parametrize("layout", ["npz", "hdf5"])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop_key", "missing key"),
        ("shape", r"imgs is uint8\(\d+, 32, 32\), expected uint8"),
        ("dtype", r"latents_classes is int32.*expected int64"),
        ("order", "not in dSprites order"),
        ("nonbinary", "must be binary"),
        ("count", "expected 737280"),
    ],
)
def test_bad_layouts_say_what_is_wrong(
    small_ds, tmp_path: Path, layout: str, change: str, message: str
) -> None:
    n = len(small_ds)
    imgs = small_ds.images(np.arange(n))
    own = small_ds.grid.to_full_classes(small_ds.grid.classes(np.arange(n)))
    path = tmp_path / f"bad.{layout}"
    classes = own
    if change == "shape":
        imgs = imgs[:, :32, :32]
    elif change == "dtype":
        classes = own.astype(np.int32)
    elif change == "order":
        classes = own[::-1].copy()
    elif change == "nonbinary":
        imgs = imgs * 255
    elif change == "count":
        imgs, classes = imgs[:-1], own[:-1]
    if change == "drop_key":
        if layout == "npz":
            np.savez(path, imgs=imgs, latents_classes=classes)
        else:
            with h5py.File(path, "w") as f:
                f["imgs"] = imgs
    elif change == "count":
        values = FactorGrid.dsprites().latent_values(classes)
        if layout == "npz":
            np.savez(path, imgs=imgs, latents_classes=classes, latents_values=values)
        else:
            with h5py.File(path, "w") as f:
                f["imgs"], f["latents/classes"], f["latents/values"] = imgs, classes, values
    else:
        write_real(path, small_ds, layout, classes=classes, imgs=imgs)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=message) as err:
        load_dsprites("real", path, small_ds.grid, checksum=None, cache_dir=cache)
    assert str(path) in str(err.value)
    # nothing half-written is left behind
    assert not [p for p in cache.glob("*") if not p.name.endswith(".lock")]


def test_unknown_source_and_layout(small_grid, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="source must be"):
        load_dsprites("mnist", grid=small_grid)
    other = tmp_path / "d.pkl"
    other.write_bytes(b"x")
    with pytest.raises(DataError, match="unknown dSprites layout"):
        load_dsprites("real", other, small_grid)


# --- download (a file:// URL stands in for GitHub: no network at test time) ------------------
def test_download_verifies_and_renames_atomically(small_ds, tmp_path: Path) -> None:
    source = tmp_path / "mirror.npz"
    digest = write_real(source, small_ds, "npz")
    dest = tmp_path / "data"
    with pytest.raises(ChecksumError, match="7da33b31b13a06f4b04a70402ce90c2e"):
        download("npz", source.as_uri(), dest)
    assert [p.name for p in dest.iterdir() if not p.name.endswith(".lock")] == []
    target = download("npz", source.as_uri(), dest, checksum=digest)
    assert target.read_bytes() == source.read_bytes()
    assert target.name == "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


def test_cli_errors_exit_2(tmp_path: Path) -> None:
    env = {"RAYWAE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "raywae.data", "cache", "--source", "real"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 2 and "python -m raywae.data download" in run.stderr
