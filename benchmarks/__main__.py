"""`python -m benchmarks [--quick] [--only SECTION ...] [--out FILE]`

Prints a table and writes it as Markdown with the machine it ran on and the exact command. Every
figure is a median over repeats, and where it is a ratio, the baseline was measured in the same run.
Only a full run (no --quick, --only or --device) writes the committed BENCHMARKS.md; a partial
one writes benchmarks/out/BENCHMARKS.md unless --out says where (never BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import shlex
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, Row, machine

SECTIONS = ["loop", "startup", "large", "replicas", "replicas_cli", "sweep", "batched", "linsys", "override_check"]


PARTIAL_OUT = Path("benchmarks") / "out" / "BENCHMARKS.md"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="only this device's rows, in the sections that measure per device")
    parser.add_argument("--out", default=None,
                        help=f"Markdown file to write (default: BENCHMARKS.md on a full run, {PARTIAL_OUT} otherwise)")
    args = parser.parse_args(argv)
    partial = bool(args.quick or args.only or args.device)
    committed = REPO / "BENCHMARKS.md"
    out = Path(args.out) if args.out else (REPO / PARTIAL_OUT if partial else committed)
    if partial and out.resolve() == committed.resolve():
        print(f"Error: --out {args.out}: BENCHMARKS.md holds the full run's table; a run with --quick, --only or "
              "--device writes elsewhere (leave out --out, or name another file).", file=sys.stderr)
        return 2
    rows: list[Row] = []
    start = time.perf_counter()
    for name in args.only or SECTIONS:
        print(f"== {name}", flush=True)
        began = time.perf_counter()
        section = importlib.import_module(f"benchmarks.{name}")
        kwargs = {"only": args.device} if "only" in inspect.signature(section.run).parameters else {}
        section_rows = section.run(quick=args.quick, **kwargs)
        for row in section_rows:
            print(format_row(row), flush=True)
        print(f"   ({time.perf_counter() - began:.0f} s)", flush=True)
        rows += section_rows
    text = markdown(rows, time.perf_counter() - start, command(argv))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"\nwrote {out}")
    return 0


def command(argv: list[str]) -> str:
    """The command line as it was typed (quoted where the shell needs it)."""
    return shlex.join(["python", "-m", "benchmarks", *argv])


def format_row(r: Row) -> str:
    verdict = "" if r.met is None else ("  met" if r.met else "  NOT MET")
    target = f"  (target {r.target})" if r.target else ""
    return f"  {r.what}: {r.measure} = {r.value:.4g} {r.unit}{target}{verdict}  {r.detail}"


def markdown(rows: list[Row], seconds: float, command: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}.",
        f"Command: `{command}` ({seconds:.0f} s). Medians over repeats; ratios against baselines measured in the same run.",
        "",
        "| section | what | measure | value | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        value = f"{r.value:.3g} {r.unit}".strip()
        detail = f" ({r.detail})" if r.detail else ""
        lines.append(f"| {r.section} | {r.what}{detail} | {r.measure} | {value} | {r.target or ''} | {met} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
