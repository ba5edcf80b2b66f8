"""The cut flow of a selection: rows in, rows left after each cut, matched, unmatched, duplicates.

The CLI prints it (``format``) and stores it as JSON beside the selection (``write_json``); the run stores it
in its manifest. Counts only: building it never needs the rows themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from survey_deblend.errors import SurveyDeblendError


@dataclass
class CutFlow:
    """Ordered ``(cut, rows left)`` steps, starting with ``("rows in", N)``, plus match bookkeeping.

    ``unmatched``: selected shear rows with no position match (None before the match step).
    ``gold_duplicate_ids``: gold rows whose COADD_OBJECTS_ID repeats an earlier matched gold row; the first
    is kept, so they never double a galaxy. ``notes`` holds the inputs and the match mode, for the record.
    """

    steps: list[tuple[str, int]] = field(default_factory=list)
    unmatched: int | None = None
    gold_duplicate_ids: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, cut: str, rows_left: int) -> None:
        self.steps.append((cut, int(rows_left)))

    @property
    def rows_in(self) -> int:
        return self.steps[0][1] if self.steps else 0

    @property
    def rows_out(self) -> int:
        return self.steps[-1][1] if self.steps else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [{"cut": cut, "rows": rows} for cut, rows in self.steps],
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "unmatched": self.unmatched,
            "gold_duplicate_ids": self.gold_duplicate_ids,
            "notes": {k: str(v) if isinstance(v, Path) else v for k, v in self.notes.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CutFlow:
        return cls(
            steps=[(s["cut"], int(s["rows"])) for s in data["steps"]],
            unmatched=data.get("unmatched"),
            gold_duplicate_ids=int(data.get("gold_duplicate_ids", 0)),
            notes=dict(data.get("notes", {})),
        )

    def format(self) -> str:
        """A printable table: each cut, rows left, rows removed by it, and the fraction of the input kept."""
        width = max([len(cut) for cut, _ in self.steps] + [24])
        lines = [f"{'cut':<{width}}  {'rows':>12}  {'removed':>12}  {'kept':>7}"]
        previous = None
        for cut, rows in self.steps:
            removed = "" if previous is None else f"{previous - rows:,}"
            kept = f"{100.0 * rows / self.rows_in:6.2f}%" if self.rows_in else "    n/a"
            lines.append(f"{cut:<{width}}  {rows:>12,}  {removed:>12}  {kept:>7}")
            previous = rows
        if self.unmatched is not None:
            lines.append(f"{'unmatched (no position)':<{width}}  {self.unmatched:>12,}")
        lines.append(f"{'duplicate gold IDs (ignored)':<{width}}  {self.gold_duplicate_ids:>12,}")
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


class EmptySelectionError(SurveyDeblendError):
    """Every row was cut: nothing for the later stages. Carries the cut flow so the CLI can still show it."""

    exit_code = 1

    def __init__(self, message: str, cut_flow: CutFlow) -> None:
        super().__init__(message)
        self.cut_flow = cut_flow
