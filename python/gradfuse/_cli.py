"""The `gradfuse` command: `info`, `bench`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gradfuse",
        description="Fused optimizer updates and loss gradients: build facts and benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="print version, CPU ISA, threads, CUDA build and GPUs")
    bench = sub.add_parser(
        "bench", help="measure gradfuse against torch on this machine (see --help)"
    )
    from gradfuse.bench import add_arguments

    add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command == "info":
        from gradfuse import show_config

        show_config()
        return 0
    if args.command == "bench":
        from gradfuse.bench import run

        return run(args)
    parser.print_help(sys.stderr)
    return 2
