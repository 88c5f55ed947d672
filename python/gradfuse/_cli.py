"""The `gradfuse` command: `info`, `check`, `bench`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gradfuse",
        description="Fused optimizer updates and loss gradients: build facts, checks, benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="print version, CPU ISA, threads, CUDA build and GPUs")
    check = sub.add_parser(
        "check", help="validate every kernel on this machine against torch (see --help)"
    )
    bench = sub.add_parser(
        "bench", help="measure gradfuse against torch on this machine (see --help)"
    )
    from gradfuse.bench import add_arguments
    from gradfuse.bench._check import add_arguments as add_check_arguments

    add_arguments(bench)
    add_check_arguments(check)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "info":
        from gradfuse import show_config

        show_config()
        return 0
    if args.command == "check":
        from gradfuse.bench._check import run as run_check

        return run_check(args)
    if args.command == "bench":
        from gradfuse.bench import run

        return run(args)
    parser.print_help(sys.stderr)
    return 2
