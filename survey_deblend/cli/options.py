"""Options every configurable command shares: ``--config FILE`` and repeatable ``--set dotted.key=value``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_options(parser: argparse.ArgumentParser, config_help: str | None, example: str) -> None:
    """Add ``--config`` (unless ``config_help`` is None) and ``--set`` (into ``args.overrides``)."""
    if config_help is not None:
        parser.add_argument("--config", type=Path, default=None, help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a configuration key, e.g. {example} (repeatable)")
