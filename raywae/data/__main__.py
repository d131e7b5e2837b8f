"""`python -m raywae.data {download,cache,info}`: fetch the real file (or MNIST's IDX files),
build the cache, report."""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from raywae.data.dsprites import (
    DSPRITES_COMMIT,
    DSPRITES_URL,
    REAL_FILES,
    DataError,
    data_dir,
    find_real_file,
    load_dsprites,
    verify_checksum,
)
from raywae.data.mnist import download_mnist


def download(
    layout: str = "npz",
    url: str | None = None,
    directory: Path | None = None,
    checksum: str = "pinned",
) -> Path:
    """Fetch the real dSprites file pinned to its commit, verify it, and rename it into place
    under a file lock (concurrent callers download once; nothing half-written is left)."""
    spec = REAL_FILES[layout]
    directory = directory or data_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / spec.name
    url = url or DSPRITES_URL.format(commit=DSPRITES_COMMIT, name=spec.name)
    with FileLock(str(directory / f"{spec.name}.lock")):
        if target.is_file():
            verify_checksum(target, checksum)
            print(f"{target} is present and verified", file=sys.stderr)
            return target
        tmp = target.with_name(f".part-{os.getpid()}-{spec.name}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total, unit="B", unit_scale=True, desc=spec.name, file=sys.stderr
                ) as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
            verify_checksum(tmp, checksum)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    print(f"wrote {target}", file=sys.stderr)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raywae.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch and verify the real dSprites file (or MNIST)")
    dl.add_argument("--dataset", choices=["dsprites", "mnist"], default="dsprites")
    dl.add_argument("--format", choices=sorted(REAL_FILES), default="npz")
    dl.add_argument("--url", help="mirror URL (default: GitHub, pinned commit)")
    dl.add_argument("--data-dir", type=Path, help="default: $RAYWAE_DATA_DIR or the user cache")
    cache = sub.add_parser("cache", help="build (or open) the packed cache and time it")
    cache.add_argument("--source", choices=["auto", "real", "procedural"], default="auto")
    sub.add_parser("info", help="where the data lives and what is cached")
    args = parser.parse_args(argv)
    try:
        if args.command == "download" and args.dataset == "mnist":
            mnist_dir = args.data_dir / "mnist" if args.data_dir else None
            print(f"MNIST in {download_mnist(mnist_dir)} (md5 verified)", file=sys.stderr)
        elif args.command == "download":
            download(args.format, args.url, args.data_dir)
        elif args.command == "cache":
            start = time.perf_counter()
            ds = load_dsprites(args.source)
            print(
                f"{ds.source} dSprites, {len(ds)} images, fingerprint {ds.fingerprint}, "
                f"ready in {time.perf_counter() - start:.2f} s"
            )
        else:
            cache_dir = data_dir() / "cache"
            print(f"data directory: {data_dir()}")
            print(f"real file: {find_real_file() or 'absent'}")
            for meta in sorted(cache_dir.glob("*.json")):
                print(f"cache: {meta.with_suffix('.npy')} ({meta.read_text().strip()})")
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
