"""Command-line glue every stage shares: logging, progress bars, and a stage's item summary to an exit code.

(The shared options themselves, --shard, --overwrite, --quiet and --device, are config fields made in
``spatialctl.config``.)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import typer
from tqdm import tqdm

from spatialctl.jobs import Summary


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING if quiet else logging.INFO, format="%(name)s: %(message)s", force=True
    )


def progress(quiet: bool, desc: str, unit: str = "item"):
    """A tqdm wrapper on stderr, or the identity when quiet; a stage may name each loop (``wrap(items, desc)``)."""

    def wrap(items: Iterable, name: str | None = None) -> Iterable:
        return items if quiet else tqdm(items, desc=name or desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    return wrap


def finish(summary: Summary, quiet: bool = False) -> None:
    """Report a stage's summary on stderr and exit with 0 (all done) or 1 (some item failed)."""
    if not quiet:
        typer.echo(
            f"done {len(summary.done)}, skipped {len(summary.skipped)} (already complete), failed {len(summary.failed)}",
            err=True,
        )
    # Each failure was already logged, one line, as it happened.
    raise typer.Exit(summary.exit_code)
