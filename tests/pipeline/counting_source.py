"""A TileSource that logs every unpickling and every tile choice to a file, to count them across processes.

Worker processes import this module by the ``sys.path`` that multiprocessing hands to spawned children, so the
log shows where the source was rebuilt (once per worker when it travels as one task's result; once per task when
pickled into every task) and who chose tiles (the planner once; a worker choosing again would log from its own pid).
"""

from __future__ import annotations

import os
from pathlib import Path

from survey_deblend.cutouts.tiles import TileSource


class CountingTileSource(TileSource):
    """``TileSource`` appending ``unpickle <pid>`` and ``plan <pid> <rows>`` lines to ``log``."""

    def __init__(self, tiles_dir: str | Path, log: str | Path) -> None:
        super().__init__(tiles_dir)
        self.log = str(log)

    def _note(self, line: str) -> None:
        with open(self.log, "a") as handle:
            handle.write(f"{line} {os.getpid()}\n")

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._note("unpickle")

    def plan(self, ra, dec, size_pix=None):
        self._note("plan")
        return super().plan(ra, dec, size_pix)


def log_lines(log: str | Path) -> list[tuple[str, int]]:
    """The log as (event, pid) pairs."""
    path = Path(log)
    if not path.is_file():
        return []
    return [(event, int(pid)) for event, pid in (line.split() for line in path.read_text().splitlines())]
