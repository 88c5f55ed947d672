"""Copy a Python tree with every multi-line function signature joined onto one line.

Issue 14 asks for at most 25 pairs from ``duplicates --repo python``. Most of the pairs left
are the public signatures that torch fixes (an optimizer's ``__init__``, a functional
update's keyword list, a loss's ``(input, target, size_average, reduce, reduction)``): they
are written one argument a line, so two of them share six lines of the same shape. Running
``duplicates`` on this copy shows what repeats once those are set aside::

    python benchmarks/code/collapse_signatures.py python /tmp/collapsed
    (cd /tmp/collapsed && duplicates --repo .)

``--spec`` also joins the module-level ``Spec(...)`` declarations of the optimizer engine.
Nothing in the copy is meant to run; it exists to be read by ``duplicates``.
"""

from __future__ import annotations

import argparse
import ast
import shutil
from pathlib import Path


def _spans(tree: ast.Module, spec: bool) -> list[tuple[int, int]]:
    """(first, end) 0-based line ranges to join: each signature, from ``def`` to the line
    before the body (decorators stay), and with ``spec`` each ``X = Spec(...)``."""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            spans.append((node.lineno - 1, node.body[0].lineno - 1))
        elif (
            spec
            and isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "Spec"
        ):
            spans.append((node.lineno - 1, node.end_lineno or node.lineno))
    return spans


def collapse(source: str, spec: bool) -> str:
    lines = source.split("\n")
    for first, end in sorted(_spans(ast.parse(source), spec), reverse=True):
        if end - first > 1:  # a one-line signature (a stub's "def f(x) -> int: ...") stays
            lines[first:end] = [" ".join(line.strip() for line in lines[first:end])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the tree to read (e.g. python)")
    parser.add_argument("dest", type=Path, help="where the copy goes (replaced if present)")
    parser.add_argument("--spec", action="store_true", help="join Spec(...) declarations too")
    args = parser.parse_args()
    shutil.rmtree(args.dest, ignore_errors=True)
    shutil.copytree(args.source, args.dest)
    for path in [*args.dest.rglob("*.py"), *args.dest.rglob("*.pyi")]:
        path.write_text(collapse(path.read_text(), args.spec))


if __name__ == "__main__":
    main()
