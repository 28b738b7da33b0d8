"""Start-up of the command line: what `--help` and an argument error cost, in wall time.

Each figure is the median wall time of several runs of a fresh process (``python -m
proofcritic ...``, and the ``proofcritic`` console script), beside floors that proofcritic
cannot go below: the interpreter alone (``python -c pass``) and a bare typer app drawing its
plain help (``rich_markup_mode=None``, as proofcritic does: click's formatter, no rich import);
for comparison, the same app drawing typer's rich help (rich, markdown-it and pygments, about
0.1 s more: what proofcritic's help cost before). Target: ``proofcritic --help`` under 0.2 s,
both ways; every command's ``--help`` and an argument error about as fast.

    python perf/cli_startup.py [--runs 7] [--importtime 15]

``--importtime N`` also prints the N slowest imports (cumulative, ``python -X importtime``) of
``python -m proofcritic --help``, to see what start-up is made of.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.2
_TYPER_FLOOR = """
import sys
import typer
app = typer.Typer(add_completion=False, rich_markup_mode=None if sys.argv[1:2] == ["plain"] else "rich")
@app.command()
def a(x: int = 1):
    "One command."
@app.command()
def b(y: int = 2):
    "Another."
app(sys.argv[2:])
"""


def _env() -> dict[str, str]:
    """The environment of the timed runs: Python writes and reads its bytecode cache as an
    installed proofcritic does (``PYTHONDONTWRITEBYTECODE`` would add compiling every module)."""
    env = dict(os.environ, COLUMNS="100")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def wall(argv: list[str], runs: int, ok_codes: tuple[int, ...] = (0,)) -> float:
    """The median wall time of ``runs`` fresh runs of ``argv`` (output discarded), after one
    untimed run that fills the bytecode cache."""
    env = _env()
    times = []
    subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
        times.append(time.perf_counter() - start)
        if done.returncode not in ok_codes:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}")
    return statistics.median(times)


def subcommands() -> list[list[str]]:
    """Every command and subcommand of the CLI, as argument lists (``["eval", "grade"]``)."""
    import typer.main

    from proofcritic.cli import app

    found: list[list[str]] = []

    def walk(command, path: list[str]) -> None:
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found.append(path + [name])
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return found


def slowest_imports(count: int) -> list[tuple[float, str]]:
    """The ``count`` imports of ``python -m proofcritic --help`` with the most cumulative time."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "proofcritic", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (the median is shown)")
    parser.add_argument("--importtime", type=int, default=0, metavar="N", help="also print the N slowest imports")
    args = parser.parse_args()
    python = [sys.executable]
    script = Path(sys.executable).with_name("proofcritic")

    rows: list[tuple[str, float, bool | None]] = []

    def figure(label: str, argv: list[str], target: bool = False, ok_codes: tuple[int, ...] = (0,)) -> None:
        seconds = wall(argv, args.runs, ok_codes)
        rows.append((label, seconds, seconds < TARGET if target else None))
        print(
            f"{label:<52} {seconds:6.3f} s"
            + (f"  (target < {TARGET} s: {'met' if seconds < TARGET else 'NOT met'})" if target else ""),
            flush=True,
        )

    print(f"median wall time of {args.runs} runs each (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    figure("floor: python -c pass", python + ["-c", "pass"])
    figure("floor: a bare typer app's plain --help", python + ["-c", _TYPER_FLOOR, "plain", "--help"])
    figure("(a bare typer app's rich --help)", python + ["-c", _TYPER_FLOOR, "rich", "--help"])
    figure("python -m proofcritic --help", python + ["-m", "proofcritic", "--help"], target=True)
    if script.exists():
        figure("proofcritic --help (console script)", [str(script), "--help"], target=True)
    figure(
        "argument error: grade --no-such-option",
        python + ["-m", "proofcritic", "grade", "--no-such-option"],
        ok_codes=(2,),
    )
    figure(
        "bad value: grade --temperature 9", python + ["-m", "proofcritic", "grade", "--temperature", "9"], ok_codes=(2,)
    )
    for command in subcommands():
        figure(f"{' '.join(command)} --help", python + ["-m", "proofcritic", *command, "--help"])
    if args.importtime:
        print("\nslowest imports of `python -m proofcritic --help` (cumulative, one run):")
        for seconds, name in slowest_imports(args.importtime):
            print(
                f"  {seconds * 1000:7.1f} ms  {name.strip()}  {'(depth ' + str((len(name) - len(name.lstrip())) // 2) + ')'}"
            )


if __name__ == "__main__":
    main()
