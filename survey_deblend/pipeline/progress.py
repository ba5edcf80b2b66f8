"""A small terminal progress line and the closing summary of a run (no dependency beyond the standard library)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO


class ProgressLine:
    """``partitions 12/40  galaxies 23,000/80,000  1,234 gal/s``; redrawn in place on a terminal, else every 10 %."""

    def __init__(self, n_partitions: int, n_galaxies: int, stream: TextIO | None = None, enabled: bool = True):
        self.n_partitions = n_partitions
        self.n_galaxies = n_galaxies
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done_partitions = 0
        self.done_galaxies = 0
        self.start = time.perf_counter()
        self._last_decile = -1

    def update(self, partitions: int = 1, galaxies: int = 0) -> None:
        self.done_partitions += partitions
        self.done_galaxies += galaxies
        if not self.enabled:
            return
        decile = int(10 * self.done_partitions / max(1, self.n_partitions))
        if self.tty:
            self.stream.write("\r" + self.line())
        elif decile != self._last_decile:
            self.stream.write(self.line() + "\n")
        self._last_decile = decile
        self.stream.flush()

    def reset(self) -> None:
        """Back to nothing planned and nothing done (a staging stream that starts over)."""
        self.n_partitions = self.n_galaxies = self.done_partitions = self.done_galaxies = 0

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done_galaxies / elapsed
        return (
            f"partitions {self.done_partitions}/{self.n_partitions}  "
            f"galaxies {self.done_galaxies:,}/{self.n_galaxies:,}  {rate:,.0f} gal/s"
        )


def format_summary(counts: Mapping[str, int], n_selected: int, seconds: float, out: str, skipped: int) -> str:
    """The closing summary: galaxies per status, galaxies per second, where the output is."""
    width = max([len(s) for s in counts] + [6])
    lines = ["status".ljust(width) + "  galaxies"]
    for status, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{status.ljust(width)}  {n:>8,}")
    lines.append(f"{'total'.ljust(width)}  {sum(counts.values()):>8,}  (selected {n_selected:,})")
    rate = n_selected / seconds if seconds > 0 else float("inf")
    lines.append(f"{n_selected:,} galaxies in {seconds:.1f} s ({rate:,.0f} galaxies/s); {skipped} partitions resumed")
    lines.append(f"output: {out}  (pandas.read_parquet('{out}'))")
    return "\n".join(lines)
