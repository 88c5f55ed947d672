"""Finds every case: each module of :mod:`gradfuse.bench.cases` contributes its ``CASES``."""

from __future__ import annotations

import importlib
import pkgutil

from gradfuse.bench._case import Case


def discover() -> list[Case]:
    from gradfuse.bench import cases as package

    found: list[Case] = []
    seen: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for case in getattr(module, "CASES", []):
            if case.name in seen:
                raise RuntimeError(
                    f"benchmark case {case.name!r} is defined in both cases/{seen[case.name]}.py "
                    f"and cases/{info.name}.py"
                )
            seen[case.name] = info.name
            case.module = info.name
            found.append(case)
    return found


def select(cases: list[Case], ops: str | None) -> list[Case]:
    """Cases named by ``--ops``: case names, case-file names, ``optimizers``, ``losses``, ``all``."""
    if not ops or ops == "all":
        return cases
    chosen: list[Case] = []
    for token in (t.strip() for t in ops.split(",")):
        if not token:
            continue
        if token in ("optimizers", "optimizer"):
            match = [c for c in cases if c.kind != "loss"]
        elif token in ("losses", "loss"):
            match = [c for c in cases if c.kind == "loss"]
        else:
            match = [c for c in cases if c.name == token] or [c for c in cases if c.module == token]
        if not match:
            names = ", ".join(c.name for c in cases)
            raise ValueError(
                f"--ops: unknown op {token!r}; expected one of: optimizers, losses, all, {names}"
            )
        chosen += [c for c in match if all(c is not x for x in chosen)]
    return chosen
