"""What ``gradfuse bench`` shows: the terminal table, the JSON file and the PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gradfuse.bench._case import Case
from gradfuse.bench.cases import MIN_ACCESSES


def min_access_table() -> dict[str, dict[str, Any]]:
    return {
        k: {"accesses_per_element": n, "float32_bytes_per_element": 4 * n, "what": what}
        for k, (n, what) in MIN_ACCESSES.items()
    }


def _time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _gbps(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n:.0f} B"


def print_list(cases: list[Case], quick: bool) -> None:
    width = max(len(c.name) for c in cases)
    print(f"{'op':<{width}}  {'kind':<9}  {'B/elem f32':>10}  sizes{' (--quick)' if quick else ''}")
    for c in cases:
        why = c.unavailable()
        sizes = ", ".join(s.name for s in c.sizes(quick))
        per = 4 * MIN_ACCESSES[c.bytes_key][0]
        state = f"   [{why}]" if why else ""
        print(f"{c.name:<{width}}  {c.kind:<9}  {per:>10}  {sizes}{state}")


def _per_case(rows: list[dict[str, Any]]) -> bool:
    """Whether these cases timed the ceiling stream in their own rounds (not in --warm-cache
    runs, nor in reports written before schema /2)."""
    return any(r.get("ceiling_samples_s") for r in rows)


def _ceiling_range(rows: list[dict[str, Any]], start: dict[str, Any]) -> str:
    """The ceilings the cases of ``rows`` were measured against (each case times the stream in
    its own rounds), or the run's starting figure for cases that did not (--warm-cache)."""
    own = [r["ceiling_gbps"] for r in rows if r.get("ceiling_samples_s")]
    if not own:
        return f"{start['gbps']:.1f} GB/s"
    lo, hi = min(own), max(own)
    return f"{lo:.1f} GB/s" if round(lo, 1) == round(hi, 1) else f"{lo:.1f}-{hi:.1f} GB/s"


def not_measured(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (provider, reason) of the providers that could not run in ``rows`` (torch
    has no fused RAdam, ...), naming the ops it applies to, for a note under the table instead
    of a row in every case."""
    ops: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        for prov, why in r["unavailable"].items():
            names = ops.setdefault((prov, why), [])
            if r["op"] not in names:
                names.append(r["op"])
    return [
        f"{prov} not measured for {', '.join(names)}: {why}" for (prov, why), names in ops.items()
    ]


def print_table(report: dict[str, Any]) -> None:
    results = report["results"]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        family = {"loss": "losses", "train_step": "training steps"}.get(r["kind"], "optimizers")
        groups.setdefault((r["device"], r["dtype"], family), []).append(r)
    w = max([len("op"), *(len(r["op"]) for r in results)])
    head = (
        f"{'op':<{w}} {'size':<12} {'provider':<14} {'median':>10} {'min':>10} {'max':>10} "
        f"{'GB/s':>7} {'%ceil':>6} {'gradfuse is':>12}"
    )
    for (device, dtype, family), rows in groups.items():
        c = report["ceiling"][device]
        how = "; %ceil against the stream timed in the same rounds as each case"
        print(
            f"\n{family} on {device}, {dtype}: ceiling {_ceiling_range(rows, c)} "
            f"({c['kernel']}, {c['bytes_per_element']} B/elem over {_bytes(c['buffer_bytes'])}"
            f"{how if _per_case(rows) else ''})"
        )
        print(head)
        print("-" * len(head))
        for r in rows:
            first = True
            for prov, st in r["providers"].items():
                sp = r["speedup"].get(prov)
                rel = f"{sp:.2f}x faster" if sp is not None and sp >= 1 else ""
                if sp is not None and sp < 1:
                    rel = f"{1 / sp:.2f}x slower"
                mem = st.get("peak_extra_bytes")
                extra = f"  +{_bytes(mem)}" if mem else ""
                pct = st["pct_ceiling"]
                print(
                    f"{(r['op'] if first else ''):<{w}} {(r['size'] if first else ''):<12} "
                    f"{prov:<14} {_time(st['median_s']):>10} {_time(st['min_s']):>10} "
                    f"{_time(st['max_s']):>10} {_gbps(st['gbps']):>7} "
                    f"{(f'{pct:.0f}%' if pct is not None else '-'):>6} {rel:>12}{extra}"
                )
                first = False
            for prov, why in r["errors"].items():
                print(f"{'':<{w}} {'':<12} {prov:<14} FAILED: {why}")
        for line in not_measured(rows):
            print(f"  note: {line}")
    if results:
        r0 = results[0]
        print(
            f"\nGB/s counts each op's minimal traffic (e.g. {r0['op']}: "
            f"{r0['min_bytes_per_element']} B/elem in {r0['dtype']}); "
            "'gradfuse is' compares gradfuse's median with that provider's."
        )
    for s in report["skipped"]:
        print(f"skipped {s['op']}: {s['reason']}")


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def write_json(report: dict[str, Any], path: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_jsonable(report), indent=1) + "\n")


def plot(report: dict[str, Any], path: str) -> None:
    """Two panels: gradfuse's speedup over each torch provider (log scale), and each
    provider's % of the bandwidth ceiling, one group of bars per (op, size, dtype, device)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["providers"]]
    labels = [f"{r['op']}\n{r['size']} {r['dtype']} {r['device']}" for r in rows]
    providers: list[str] = []
    for r in rows:
        providers += [p for p in r["providers"] if p not in providers]
    torch_provs = [p for p in providers if p != "gradfuse"]
    n = max(len(rows), 1)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 1.1 * n + 3), 9), squeeze=True)
    colors = {p: f"C{i}" for i, p in enumerate(providers)}

    width = 0.8 / max(len(torch_provs), 1)
    for j, p in enumerate(torch_provs):
        xs = [i + (j - (len(torch_provs) - 1) / 2) * width for i in range(len(rows))]
        ys = [r["speedup"].get(p, float("nan")) for r in rows]
        bars = ax1.bar(xs, ys, width, label=f"vs {p}", color=colors[p])
        for b, y in zip(bars, ys, strict=True):
            if math.isfinite(y):
                ax1.annotate(
                    f"{y:.2g}x",
                    (b.get_x() + b.get_width() / 2, y),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax1.axhline(1.0, color="black", lw=0.8)
    ax1.set_yscale("log")
    ax1.set_ylabel("gradfuse speedup (median time ratio)")
    ax1.set_xticks(range(len(rows)), labels, fontsize=7)
    ax1.legend(fontsize=8)
    ax1.set_title("gradfuse speedup over torch (higher is better)")

    width = 0.8 / max(len(providers), 1)
    for j, p in enumerate(providers):
        xs = [i + (j - (len(providers) - 1) / 2) * width for i in range(len(rows))]
        ys = [
            r["providers"][p]["pct_ceiling"]
            if p in r["providers"] and r["providers"][p]["pct_ceiling"] is not None
            else float("nan")
            for r in rows
        ]
        ax2.bar(xs, ys, width, label=p, color=colors[p])
    ax2.axhline(100.0, color="black", lw=0.8, ls="--")
    ax2.set_ylabel("% of the in-place stream bandwidth")
    ax2.set_xticks(range(len(rows)), labels, fontsize=7)
    ax2.legend(fontsize=8)
    ceil = ", ".join(
        f"{d} {_ceiling_range([r for r in report['results'] if r['device'] == d], c)}"
        for d, c in report["ceiling"].items()
    )
    ax2.set_title(f"% of the ceiling timed with each case ({ceil}), from each op's minimal bytes")
    m = report["machine"]
    v = report["versions"]
    fig.suptitle(
        f"gradfuse {v['gradfuse']} vs torch {v['torch']} - {m['cpu_model']}, "
        f"{m['cpus_available']} CPUs, {v['gradfuse_threads']} threads ({report['started']})",
        fontsize=9,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    """A short results page: the command, machine, versions, ceiling and one table per
    (device, dtype), for committing beside the JSON under benchmarks/."""
    m, v = report["machine"], report["versions"]
    mem = f"{m['memory_bytes'] / (1 << 30):.0f} GiB" if m.get("memory_bytes") else "?"
    gpus = ", ".join(g["name"] for g in m["gpus"]) or "none"
    lines = [
        f"# gradfuse bench, {report['started'][:10]}",
        "",
        "```",
        report["command"],
        "```",
        "",
        (
            f"- machine: {m['cpu_model']}, {m['cpus_available']} CPUs available "
            f"({m['cpu_count']} online), {mem} memory, last-level cache {_bytes(m['llc_bytes'])}; "
            f"GPUs: {gpus}"
        ),
        (
            f"- versions: gradfuse {v['gradfuse']} ({v['compiler']}, {v['build_type']}, ISA "
            f"{v['cpu_isa']}), torch {v['torch']}, numpy {v['numpy']}, python {v['python']}"
        ),
        f"- threads: gradfuse {v['gradfuse_threads']}, torch {v['torch_threads']}",
        f"- load average when it started (1, 5, 15 min): {_load(m.get('load_average'))}",
        (
            f"- timing: {report['settings']['timing']}; {report['settings']['repeat']} samples "
            f"after {report['settings']['warmup']} warm-up calls per provider"
        ),
    ]
    for device, c in report["ceiling"].items():
        rows = [r for r in report["results"] if r["device"] == device]
        per_case = (
            "; timed again in every round of every case, each case's % ceiling is against its "
            f"own rounds ({_ceiling_range(rows, c)} over this run)"
            if _per_case(rows)
            else "; every % ceiling is against this figure"
        )
        lines.append(
            f"- ceiling ({device}): {c['gbps']:.1f} GB/s median at the start (best "
            f"{c['best_gbps']:.1f}), {c['kernel']}, {c['bytes_per_element']} B/element over "
            f"{_bytes(c['buffer_bytes'])}{per_case}"
        )
    lines += [
        "",
        (
            "GB/s counts each op's minimal traffic (cases/__init__.py: SGD 12 B/param, with "
            "momentum 20, Adam 28, elementwise loss+grad 12, cross-entropy 8 per logit, float32); "
            "'vs gradfuse' is that provider's median time over gradfuse's (> 1: gradfuse faster)."
        ),
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in report["results"]:
        groups.setdefault((r["device"], r["dtype"]), []).append(r)
    for (device, dtype), rows in groups.items():
        lines += [
            "",
            f"## {device}, {dtype}",
            "",
            (
                "| op | size | provider | median | min | max | GB/s | % ceiling | ceiling GB/s "
                "| vs gradfuse |"
            ),
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            for prov, st in r["providers"].items():
                sp = r["speedup"].get(prov)
                pct = st["pct_ceiling"]
                lines.append(
                    f"| {r['op']} | {r['size']} | {prov} | {_time(st['median_s'])} | "
                    f"{_time(st['min_s'])} | {_time(st['max_s'])} | {_gbps(st['gbps'])} | "
                    f"{(f'{pct:.0f}%' if pct is not None else '-')} | "
                    f"{r.get('ceiling_gbps', report['ceiling'][device]['gbps']):.1f} | "
                    f"{(f'{sp:.2f}x' if sp is not None else '-')} |"
                )
            for prov, why in r["errors"].items():
                lines.append(f"| {r['op']} | {r['size']} | {prov} | FAILED: {why} | | | | | | |")
        notes = not_measured(rows)
        if notes:
            lines += ["", *(f"- {line}" for line in notes)]
    if report["skipped"]:
        lines += [
            "",
            "Not available in this build: " + ", ".join(s["op"] for s in report["skipped"]),
        ]
    return "\n".join(lines) + "\n"


def _load(avg: list[float] | None) -> str:
    if not avg:
        return "unknown"
    return ", ".join(f"{x:.2f}" for x in avg)


def write_markdown(report: dict[str, Any], path: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(markdown(report))
