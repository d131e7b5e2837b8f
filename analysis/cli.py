"""The frame every analysis CLI shares: its parser (the module docstring as help, the common
flags of store.add_common_args, --table where a saved table can replace the store), its
error handling (an AnalysisError is `error: ...` on stderr and exit status 2, never a
traceback) and its last lines ("wrote ...", then the files logged to the analysis run).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Protocol

from analysis.store import AnalysisError, Target, add_common_args, log_outputs, resolve

ERROR_STATUS = 2  # as argparse's usage errors: the command was asked something it cannot do


class Main(Protocol):
    """A CLI's entry point: command-line arguments (None: sys.argv[1:]) -> exit status."""

    def __call__(self, argv: list[str] | None = None) -> int: ...


def parser(
    prog: str, doc: str | None, storage: bool = False, table: bool = False
) -> argparse.ArgumentParser:
    """The parser of `python -m <prog>` with the common flags (--storage if `storage`) and,
    if `table`, --table: a runs.csv / runs.parquet to read instead of the store."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p, storage=storage)
    if table:
        p.add_argument("--table", type=Path, help="runs.csv / runs.parquet from analysis.collect")
    return p


def parse(
    p: argparse.ArgumentParser, argv: list[str] | None, smoke_kind: str = "grid"
) -> tuple[argparse.Namespace, Target]:
    """The parsed flags and their Target (with --smoke, after running the smoke sweep)."""
    args = p.parse_args(argv)
    return args, resolve(args, smoke_kind)


def command(main: Main) -> Main:
    """Decorate a CLI's `main(argv) -> exit status`: an AnalysisError raised anywhere below
    it becomes one line `error: <message>` on stderr and ERROR_STATUS."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except AnalysisError as err:
            print(f"error: {err}", file=sys.stderr)
            return ERROR_STATUS

    return wrapped


def wrote(
    target: Target,
    files: list[Path],
    folder: str,
    tags: dict[str, str] | None = None,
) -> str | None:
    """Print "wrote <files>" and log them under `folder` of the analysis run (see
    store.log_outputs); returns its run id (None with --no-log)."""
    print("wrote " + ", ".join(str(p) for p in files))
    return log_outputs(target, files, folder, tags)
