"""MNIST from the standard IDX files (LeCun et al.): parse, verify, download.

The four files (gzipped or not) live in the data directory (`python -m raywae.data
download --dataset mnist`); they are never fetched implicitly.
"""

from __future__ import annotations

import gzip
import os
import urllib.request
from pathlib import Path

import numpy as np
from filelock import FileLock

from raywae.data.dsprites import DataError, data_dir, file_digest

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/{name}"  # torchvision's mirror
# md5 of the gzipped files as published (and pinned by torchvision).
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MNIST_DOWNLOAD = "python -m raywae.data download --dataset mnist"
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped when its name ends in .gz) -> its array. Header: two zero bytes,
    a type byte, the number of dimensions, then each size as a big-endian uint32."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    if len(body) != dtype.itemsize * int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} of {dtype}, body has {len(body)} bytes")
    return np.frombuffer(body, dtype).reshape(shape)


def write_idx(array: np.ndarray, path: Path) -> None:
    """The inverse of read_idx (uint8 arrays; gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(header + array.tobytes())


def find_mnist_file(key: str, directory: Path) -> Path:
    """The file of `key` in MNIST_FILES, gzipped or not; a DataError naming the download
    command when neither is there."""
    name = MNIST_FILES[key][0]
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / name}: MNIST file missing; fetch it with `{MNIST_DOWNLOAD}`")


def load_mnist(directory: Path | None = None, checksum: bool = True) -> dict[str, np.ndarray]:
    """The four MNIST arrays: train_images (60000, 28, 28) uint8, train_labels (60000,), and
    the test pair (10000, ...). With checksum, a gzipped file must match its pinned md5
    (uncompressed files have no published digest)."""
    directory = directory or data_dir() / "mnist"
    out = {}
    for key, (_, md5) in MNIST_FILES.items():
        path = find_mnist_file(key, directory)
        if checksum and path.suffix == ".gz":
            digest = file_digest(path, "md5")
            if digest != md5:
                raise DataError(f"{path}: md5 {digest}, expected {md5}; delete it and re-fetch")
        out[key] = read_idx(path)
    for split in ("train", "test"):
        if len(out[f"{split}_images"]) != len(out[f"{split}_labels"]):
            raise DataError(f"{directory}: {split} images and labels differ in length")
    return out


def download_mnist(directory: Path | None = None) -> Path:
    """Fetch the four gzipped files into `directory` (default: <data dir>/mnist), verify their
    md5 and rename each into place under a file lock; returns the directory."""
    directory = directory or data_dir() / "mnist"
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / "mnist.lock")):
        for name, md5 in MNIST_FILES.values():
            target = directory / name
            if target.is_file() and file_digest(target, "md5") == md5:
                continue
            tmp = target.with_name(f".part-{os.getpid()}-{name}")
            try:
                urllib.request.urlretrieve(MNIST_URL.format(name=name), tmp)
                if (digest := file_digest(tmp, "md5")) != md5:
                    raise DataError(f"{name}: md5 {digest}, expected {md5}")
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    return directory
