"""Fuzz of bad inputs through the real CLI (issue 14, section 3): malformed catalogs, configurations, tile folders.

Every generated case runs ``survey-deblend select ...`` or ``survey-deblend run ...`` (in process through
``survey_deblend.cli.main`` with stdout/stderr captured; ``--subprocess`` runs each as ``python -m
survey_deblend``) and is classified:
- ``one_line_errors``: non-zero exit, exactly one ``survey-deblend CMD: error: ...`` line (argparse's usage line
  before it is allowed) that names the file, column or key the case broke;
- ``correct_runs``: exit 0 and the output equals an independent pandas oracle of the selection (every
  selected galaxy once, none more; the cut flow's ``rows in`` equals the rows written);
- ``tracebacks``: an exception escaped ``main`` (or "Traceback" on stderr);
- ``silent_drops``: exit 0 but rows missing, repeated or invented against the oracle, or exit 0 on an input
  that no correct run can come from;
- ``bad_messages``: non-zero exit whose message is several lines or does not name what was broken.
One JSON line per case class with its counts and the non-passing cases, then a final line with the totals
(``cases``, ``one_line_errors``, ``correct_runs``, ``tracebacks``, ``silent_drops``, ``bad_messages``).

    PYTHONPATH=. .venv/bin/python benchmarks/faults_inputs.py            # every case (a few minutes)
    PYTHONPATH=. .venv/bin/python benchmarks/faults_inputs.py --quick    # catalog and config cases only, no run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from faults_inputs_cases import catalog_cases, config_cases, pipeline_cases  # noqa: E402

OUTCOMES = ("one_line_errors", "correct_runs", "tracebacks", "silent_drops", "bad_messages")


@dataclass
class Case:
    """One CLI invocation and how to judge it.

    ``names``: fragments of which the error line must contain at least one (the file, column or key broken).
    ``check``: given the output path, None when a successful run is right, else what is wrong with it; None
    for ``check`` itself means no successful run can be right for this input.
    """

    cls: str
    name: str
    argv: list[str]
    names: tuple[str, ...]
    check: Callable[[], str | None] | None = None
    extra: dict = field(default_factory=dict)


def _error_lines(command: str, stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"survey-deblend {command}: error:")]


def classify(case: Case, code: int, stderr: str, escaped: str | None) -> tuple[str, str]:
    """(outcome, detail) of one finished case."""
    if escaped is not None or "Traceback (most recent call last)" in stderr:
        return "tracebacks", escaped or stderr.strip().splitlines()[-1]
    command = case.argv[0]
    if code == 0:
        if case.check is None:
            return "silent_drops", "exit 0 on an input no correct run can come from"
        problem = case.check()
        return ("silent_drops", problem) if problem else ("correct_runs", "")
    errors = _error_lines(command, stderr)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    argparse_usage = all(line.startswith(("usage:", " ")) for line in lines[:-1]) and last in errors
    informational = [line for line in lines[:-1] if not line.startswith("survey-deblend:")]
    if len(errors) != 1 or last not in errors or (informational and not argparse_usage and command == "select"):
        return "bad_messages", f"exit {code}: {stderr.strip()[-400:]}"
    if not any(fragment in errors[0] for fragment in case.names):
        return "bad_messages", f"exit {code}, names none of {case.names}: {errors[0]}"
    return "one_line_errors", errors[0]


def run_in_process(case: Case) -> tuple[int, str, str | None]:
    from survey_deblend.cli import main

    out, err = io.StringIO(), io.StringIO()
    escaped = None
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(case.argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except BaseException as exc:  # noqa: BLE001 - a traceback is what this fuzz is looking for
        escaped = f"{type(exc).__name__}: {exc}"[:400]
        err.write(traceback.format_exc())
    return code, err.getvalue(), escaped


def run_subprocess(case: Case, timeout_s: float = 300.0) -> tuple[int, str, str | None]:
    proc = subprocess.run(
        [sys.executable, "-m", "survey_deblend", *case.argv], capture_output=True, text=True, timeout=timeout_s
    )
    return proc.returncode, proc.stderr, None


def run_cases(
    cases: list[Case], subprocess_all: bool = False, report: Callable[[dict], None] | None = None
) -> list[dict]:
    """Run and classify every case; one dict per case (each also given to ``report`` as it finishes)."""
    results = []
    for case in cases:
        start = time.perf_counter()
        runner = run_subprocess if subprocess_all or case.extra.get("subprocess") else run_in_process
        code, stderr, escaped = runner(case)
        outcome, detail = classify(case, code, stderr, escaped)
        results.append(
            {"cls": case.cls, "case": case.name, "outcome": outcome, "exit": code, "detail": detail,
             "seconds": round(time.perf_counter() - start, 2)}
        )
        if report is not None:
            report(results[-1])
    return results


def summarize(results: list[dict]) -> tuple[list[dict], dict]:
    """Per class lines (counts and the cases that did not pass) and the totals line."""
    by_class: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        by_class[result["cls"]].append(result)
    lines = []
    for cls, items in by_class.items():
        counts = Counter(item["outcome"] for item in items)
        lines.append(
            {"class": cls, "cases": len(items), **{key: counts.get(key, 0) for key in OUTCOMES},
             "failing": [{k: item[k] for k in ("case", "outcome", "exit", "detail")}
                         for item in items if item["outcome"] not in ("one_line_errors", "correct_runs")]}
        )
    counts = Counter(result["outcome"] for result in results)
    total = {"cases": len(results), **{key: counts.get(key, 0) for key in OUTCOMES}}
    return lines, total


def build_cases(work: Path, quick: bool, cluster_address: str | None) -> list[Case]:
    cases = catalog_cases(work / "catalogs", Case) + config_cases(work / "configs", Case)
    if not quick:
        cases += pipeline_cases(work / "run", Case, cluster_address)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="catalog and configuration cases only (no run)")
    parser.add_argument("--subprocess", action="store_true", help="every case as its own python -m survey_deblend")
    parser.add_argument("--cases", action="store_true", help="also print one JSON line per case")
    parser.add_argument("--classes", help="only the case classes starting with this (e.g. run_)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="faults-inputs-") as tmp:
        cluster = client = None
        if not args.quick:
            from distributed import Client, LocalCluster

            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
            client = Client(cluster)
        try:
            cases = build_cases(Path(tmp), args.quick, cluster.scheduler_address if cluster else None)
            cases = [case for case in cases if case.cls.startswith(args.classes or "")]
            report = (lambda result: print(json.dumps(result), flush=True)) if args.cases else None
            results = run_cases(cases, subprocess_all=args.subprocess, report=report)
        finally:
            if client is not None:
                client.close()
                cluster.close()
    lines, total = summarize(results)
    for line in lines:
        print(json.dumps(line), flush=True)
    total["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(total), flush=True)


if __name__ == "__main__":
    main()
