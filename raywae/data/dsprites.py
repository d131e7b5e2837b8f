"""dSprites datasets (PROTOCOL §2): the real file (npz / hdf5) or the procedural renderer,
both stored once per machine as a memory-mapped table of packed bits shared by all trials.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock
from tqdm import tqdm

from raywae.data import render
from raywae.data.dataset import Table
from raywae.data.grid import FactorGrid

Source = Literal["auto", "real", "procedural"]
IMAGE_SIDE = 64
PACKED_BYTES = IMAGE_SIDE * IMAGE_SIDE // 8  # 512 bytes per image
CHUNK = 32768  # images per render / pack step: ~130 MB unpacked

DSPRITES_COMMIT = "fa310c66517cfc1939d77fe17c725154efc97127"
DSPRITES_URL = "https://github.com/deepmind/dsprites-dataset/raw/{commit}/{name}"


@dataclass(frozen=True)
class RealFile:
    """One published layout of the real dataset and its pinned checksum."""

    name: str
    algorithm: str
    digest: str


REAL_FILES = {
    "npz": RealFile(
        "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", "md5", "7da33b31b13a06f4b04a70402ce90c2e"
    ),
    "hdf5": RealFile(
        "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5",
        "sha256",
        "729fa22e884c9c500e1f17415d580746b4c5894fbbb780a1319bbcfa39a745bb",
    ),
}
DOWNLOAD_HINT = "python -m raywae.data download"


class DataError(ValueError):
    """A dataset file or cache that cannot be used; the message names the file and the problem."""


class ChecksumError(DataError):
    pass


class ProceduralDataWarning(UserWarning):
    """source='auto' found no real file and falls back to the procedural renderer."""


DATA_ENV = "RAYWAE_DATA_DIR"


def data_dir() -> Path:
    """$RAYWAE_DATA_DIR, else the per-user cache directory (platformdirs': e.g. ~/.cache/raywae;
    without platformdirs, as on a bare GPU image: $XDG_CACHE_HOME/raywae or ~/.cache/raywae)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    try:
        import platformdirs
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "raywae"
    return Path(platformdirs.user_cache_dir("raywae"))


def file_digest(path: Path, algorithm: str) -> str:
    """Streaming hex digest of a file."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def layout_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".hdf5", ".h5"):
        return "hdf5"
    raise DataError(f"{path}: unknown dSprites layout (expected a .npz or .hdf5 file)")


def verify_checksum(path: Path, checksum: str | None = "pinned") -> str:
    """Check `path` against the pinned digest of its layout (or an explicit hex digest:
    md5 if 32 characters, else sha256). Returns the digest; None skips the check."""
    pinned = REAL_FILES[layout_of(path)]
    if checksum is None:
        return file_digest(path, pinned.algorithm)
    expected = pinned.digest if checksum == "pinned" else checksum.lower()
    algorithm = "md5" if len(expected) == 32 else "sha256"
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"{path}: {algorithm} checksum mismatch (expected {expected}, got {actual}); "
            f"the file is truncated or corrupted: delete it and run `{DOWNLOAD_HINT}`"
        )
    return actual


def find_real_file(directory: Path | None = None) -> Path | None:
    """The real file in the data directory (npz preferred), or None."""
    directory = directory or data_dir()
    for spec in REAL_FILES.values():
        if (directory / spec.name).is_file():
            return directory / spec.name
    return None


class DSprites:
    """A dSprites table over `grid`: row i is the image with flat index i.

    bits: (len(grid), 512) uint8, np.packbits of each flattened 64x64 image (memory-mapped).
    A raywae.data.Dataset: it trains on the packed bits, split by PROTOCOL §2.
    """

    name = "dsprites"
    train_labels = test_labels = None  # its labels are the grid's factors (metric grid)

    def __init__(
        self, grid: FactorGrid, bits: np.ndarray, source: str, fingerprint: str, origin: str
    ) -> None:
        if bits.shape != (len(grid), PACKED_BYTES):
            raise DataError(f"{origin}: packed table is {bits.shape}, expected ({len(grid)}, 512)")
        self.grid, self.bits, self.source = grid, bits, source
        self.fingerprint, self.origin = fingerprint, origin

    def __len__(self) -> int:
        return len(self.grid)

    def packed(self, index: np.ndarray) -> np.ndarray:
        """index: (n,) int -> (n, 512) uint8 packed rows."""
        return self.bits[np.asarray(index, dtype=np.int64)]

    def packed_all(self) -> np.ndarray:
        """The whole (len(grid), 512) uint8 table, memory-mapped (read-only)."""
        return self.bits

    def images(self, index: np.ndarray) -> np.ndarray:
        """index: (n,) int -> (n, 64, 64) uint8 in {0, 1}."""
        return np.unpackbits(self.packed(index), axis=1).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)

    def split(self, seed: int = 0, train_fraction: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """PROTOCOL §2: shuffle the flat indices with `seed`; first 90 % train, rest test."""
        order = np.random.default_rng(seed).permutation(len(self.grid))
        n_train = int(round(len(order) * train_fraction))
        return order[:n_train], order[n_train:]

    def training_table(self) -> Table:
        """The packed bits (the memory map, shared through the page cache) and split(seed=0)."""
        return Table(self.bits, *self.split(seed=0), packed=True)

    def shown_images(self, k: int) -> np.ndarray:
        """The first k test images in index order: (k, 64, 64) uint8 in {0, 1}."""
        return self.images(np.sort(self.split(seed=0)[1][:k]))

    def interpolation_pairs(self, k: int) -> None:
        """dSprites has no interpolation benchmark pairs (see ImageSet)."""
        return None

    def provenance(self) -> dict[str, str]:
        """What a run logs about its data: source, fingerprint of the image bits, origin."""
        return {
            "data/source": self.source,
            "data/fingerprint": self.fingerprint,
            "data/origin": self.origin,
            "data/grid": self.grid.describe(),
        }


# --- the packed cache ---------------------------------------------------------------------
def _grid_key(grid: FactorGrid) -> str:
    if grid == FactorGrid.dsprites():
        return "full"
    text = json.dumps([f.tolist() for f in grid.full_classes])
    return "sub-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _open_or_build(
    key: str,
    grid: FactorGrid,
    source: str,
    origin: str,
    chunks: Callable[[], Iterator[tuple[int, np.ndarray]]],
    cache_dir: Path,
) -> DSprites:
    """Open cache `key`, or build it once under a file lock from `chunks()`, which yields
    (start, images (n, 64, 64) uint8) in index order. A cache is complete when its .json
    exists; everything is written under temporary names and renamed, so nothing half-written
    is ever visible."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    table, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not meta.exists():
        with FileLock(str(cache_dir / f"{key}.lock")):
            if not meta.exists():
                _build(table, meta, grid, source, origin, chunks)
    info = json.loads(meta.read_text())
    bits = np.load(table, mmap_mode="r")
    return DSprites(grid, bits, info["source"], info["fingerprint"], info["origin"])


def _build(
    table: Path,
    meta: Path,
    grid: FactorGrid,
    source: str,
    origin: str,
    chunks: Callable[[], Iterator[tuple[int, np.ndarray]]],
) -> None:
    tmp = table.with_name(f"{table.name}.tmp-{os.getpid()}")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(grid), PACKED_BYTES))
    sha = hashlib.sha256()
    try:
        with tqdm(
            total=len(grid),
            desc=f"dSprites cache ({source})",
            unit="img",
            file=sys.stderr,
            disable=len(grid) < CHUNK,
        ) as bar:
            for start, imgs in chunks():
                packed = np.packbits(imgs.reshape(len(imgs), -1), axis=1)
                out[start : start + len(imgs)] = packed
                sha.update(packed.tobytes())
                bar.update(len(imgs))
        out.flush()
        del out
        os.replace(tmp, table)
    finally:
        tmp.unlink(missing_ok=True)
    info = {
        "source": source,
        "fingerprint": sha.hexdigest(),
        "origin": origin,
        "grid": grid.describe(),
    }
    tmp_meta = meta.with_name(f"{meta.name}.tmp-{os.getpid()}")
    tmp_meta.write_text(json.dumps(info, indent=1))
    os.replace(tmp_meta, meta)


# --- the two sources ----------------------------------------------------------------------
def _procedural(grid: FactorGrid, cache_dir: Path) -> DSprites:
    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(grid), CHUNK):
            yield start, render.render_images(grid, np.arange(start, min(start + CHUNK, len(grid))))

    key = f"procedural-{render.RENDER_VERSION}-{_grid_key(grid)}"
    return _open_or_build(
        key, grid, "procedural", f"raywae renderer {render.RENDER_VERSION}", chunks, cache_dir
    )


@contextmanager
def open_real(path: Path) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    """Yield (imgs (N, 64, 64) uint8 array-like, classes (N, 6) int64, values (N, 6) float64)
    from an npz or hdf5 in the published layout. `metadata` (a pickled dict) is never read."""
    import h5py

    layout = layout_of(path)
    with ExitStack() as stack:
        try:
            if layout == "npz":
                archive = stack.enter_context(np.load(path, allow_pickle=False))
                names = {
                    "imgs": "imgs",
                    "latents_classes": "latents_classes",
                    "latents_values": "latents_values",
                }
                found = set(archive.files)
            else:
                archive = stack.enter_context(h5py.File(path, "r"))
                names = {
                    "imgs": "imgs",
                    "latents_classes": "latents/classes",
                    "latents_values": "latents/values",
                }
                found = {k for k in names.values() if k in archive}
            if missing := sorted(set(names.values()) - found):
                raise DataError(f"{path}: missing key(s) {missing}")
            imgs = archive[names["imgs"]]
            classes = np.asarray(archive[names["latents_classes"]])
            values = np.asarray(archive[names["latents_values"]])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"{path}: cannot read as {layout}: {err}") from err
        n = len(classes)
        checks = [
            ("imgs", imgs, (n, IMAGE_SIDE, IMAGE_SIDE), np.uint8),
            ("latents_classes", classes, (n, 6), np.int64),
            ("latents_values", values, (n, 6), np.float64),
        ]
        for name, arr, shape, dtype in checks:
            if tuple(arr.shape) != shape or arr.dtype != dtype:
                raise DataError(
                    f"{path}: {name} is {arr.dtype}{tuple(arr.shape)}, "
                    f"expected {np.dtype(dtype)}{shape}"
                )
        yield imgs, classes, values


def _real(path: Path, grid: FactorGrid, checksum: str | None, cache_dir: Path) -> DSprites:
    digest = verify_checksum(path, checksum)
    key = f"real-{digest[:16]}-{_grid_key(grid)}"

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        with open_real(path) as (imgs, classes, values):
            rows = _rows_of(path, grid, classes, values)
            for start in range(0, len(grid), CHUNK):
                part = rows[start : start + CHUNK]
                contiguous = part[-1] - part[0] == len(part) - 1
                block = np.asarray(imgs[part[0] : part[-1] + 1] if contiguous else imgs[part])
                if block.max(initial=0) > 1:
                    raise DataError(f"{path}: imgs must be binary (0/1), found {block.max()}")
                yield start, block

    return _open_or_build(key, grid, "real", str(path), chunks, cache_dir)


def _rows_of(path: Path, grid: FactorGrid, classes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Rows of the file holding `grid`'s images, in grid order; checks the factor bookkeeping."""
    own = grid.to_full_classes(grid.classes(np.arange(len(grid))))
    full = FactorGrid.dsprites()
    if len(classes) == len(grid):
        rows = np.arange(len(grid))
    elif len(classes) == len(full):
        rows = full.index(own)
    else:
        raise DataError(
            f"{path}: {len(classes)} images; expected {len(full)} (full dSprites)"
            f" or {len(grid)} (the requested grid)"
        )
    if not np.array_equal(classes[rows], own):
        raise DataError(f"{path}: latents_classes are not in dSprites order (posY fastest)")
    if not np.allclose(values[rows], full.latent_values(own)):
        raise DataError(f"{path}: latents_values do not match the dSprites latent values")
    return rows


def load_dsprites(
    source: Source = "auto",
    path: str | Path | None = None,
    grid: FactorGrid | None = None,
    checksum: str | None = "pinned",
    cache_dir: Path | None = None,
) -> DSprites:
    """Open dSprites from the per-machine cache, building it on first use.

    source: "real" (the file at `path`, else in the data directory; error if absent),
    "procedural" (rendered), or "auto" (real if present, else procedural with a warning).
    grid: a subgrid of FactorGrid.dsprites() for small runs (default: the full grid).
    checksum: "pinned" (the published file), an explicit md5/sha256 hex digest, or None.
    """
    grid = grid or FactorGrid.dsprites()
    cache_dir = Path(cache_dir) if cache_dir else data_dir() / "cache"
    if source not in ("auto", "real", "procedural"):
        raise DataError(f"source must be 'auto', 'real' or 'procedural', got {source!r}")
    real = Path(path).expanduser().resolve() if path else find_real_file()
    if source == "real" or (source == "auto" and path):
        if real is None or not real.is_file():
            where = real or data_dir()
            raise DataError(
                f"real dSprites not found at {where}; fetch it with `{DOWNLOAD_HINT}`"
                " (or set RAYWAE_DATA_DIR / pass path=)"
            )
        return _real(real, grid, checksum, cache_dir)
    if source == "auto" and real is not None:
        return _real(real, grid, checksum, cache_dir)
    if source == "auto":
        warnings.warn(
            f"real dSprites not found in {data_dir()}: using procedurally rendered dSprites "
            f"(fetch the real file with `{DOWNLOAD_HINT}`)",
            ProceduralDataWarning,
            stacklevel=2,
        )
    return _procedural(grid, cache_dir)
