"""Ratio table from the JSON files omp_train_step.sh wrote: one row per case, size and run,
the OpenMP build ("omp") beside the old pool ("pool"). Usage: python omp_summarize.py DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> None:
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for js in sorted(out.glob("*.json")):
        build, tag = js.stem.split("-", 1)
        rep = json.loads(js.read_text())
        for r in rep["results"]:
            p = r["providers"]
            if "gradfuse" not in p:
                continue
            ours = p["gradfuse"]["median_s"]
            cell = f"{ours * 1e3:.2f} ms"
            for prov in ("torch-fused", "torch-foreach"):
                if prov in r["speedup"]:
                    cell += f", {r['speedup'][prov]:.2f}x vs {prov.split('-')[1]}"
            pct = p["gradfuse"].get("pct_ceiling")
            if pct is not None:
                cell += f", {pct:.0f}% of ceiling"
            rows.setdefault((r["op"], r["size"], tag), {})[build] = cell
    print("| case | size | run | OpenMP (this branch) | old pool (83b1a32) |")
    print("|---|---|---|---|---|")
    for (op, size, tag), cells in sorted(rows.items()):
        print(f"| {op} | {size} | {tag} | {cells.get('omp', '-')} | {cells.get('pool', '-')} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
