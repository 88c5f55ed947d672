"""``gradfuse bench``: plan the cases, measure the ceiling, time every provider interleaved."""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradfuse.bench._case import (
    ALL_PROVIDERS,
    COMPILE_PROVIDER,
    Case,
    Runner,
    Size,
    Unavailable,
    clear_inputs,
    torch_dtype,
)
from gradfuse.bench._progress import Progress
from gradfuse.bench._timing import (
    Stream,
    cache_bytes,
    inner_count,
    peak_extra_memory,
    quiesce,
    sync,
)
from gradfuse.bench._timing import time_sample as _time_sample

DTYPES = ("float32", "float64", "float16", "bfloat16")
# /2: each case carries its own ceiling (ceiling_gbps, ceiling_samples_s) and its pct_ceiling
# is against it; /1 took every pct_ceiling against the one ceiling measured at the start.
SCHEMA = "gradfuse-bench/2"
MAX_COPIES = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Time gradfuse's fused optimizer steps and losses against torch's own implementations "
        "(for-loop, foreach, fused, and torch.compile with --compile) on this machine, and say "
        "how close each comes to the machine's memory-bandwidth ceiling."
    )
    parser.add_argument(
        "--ops",
        default="all",
        help="comma list of ops (e.g. sgd,adamw,cross_entropy), case-file names, "
        "'optimizers', 'losses' or 'all' (default); --list shows them",
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma list of sizes: named ones (16M, model, 4M, model-small, 4096x32000, ...), "
        "an element count (e.g. 1M, 4097) or NxC for class losses; default: each op's own",
    )
    parser.add_argument(
        "--dtype", default="float32", help=f"comma list of {', '.join(DTYPES)} or 'all'"
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument(
        "--providers",
        default=None,
        help="comma list of " + ", ".join(ALL_PROVIDERS) + " ('torch' = every torch one); "
        "default: all that apply",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, fewer repeats (about a minute)"
    )
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd torch code")
    parser.add_argument("--repeat", type=int, default=None, help="timed samples per provider")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per provider")
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="do not rotate inputs past the cache (in-cache speed; default: cold, rotated)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (gradfuse, torch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", default=None, help="write every figure as JSON")
    parser.add_argument(
        "--plot", metavar="PATH", default=None, help="write a PNG chart (needs matplotlib)"
    )
    parser.add_argument(
        "--markdown", metavar="PATH", default=None, help="write a markdown results page"
    )
    parser.add_argument("--list", action="store_true", help="list ops and sizes, then exit")


@dataclass
class Item:
    case: Case
    size: Size
    dtype: str
    device: str
    providers: list[str]
    result: dict[str, Any] = field(default_factory=dict)


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _check_output(option: str, path: str | None) -> None:
    """An output path that can be written once the run is over (checked before it starts, so
    that a typo does not lose a long run's results; missing folders are made when writing)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--{option} {path}: is a directory; give a file name")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--{option} {path}: {parent} is a file, not a folder")


def _devices(choice: str) -> list[str]:
    import gradfuse

    cuda_ok = gradfuse.cuda_available()
    if choice == "cuda" and not cuda_ok:
        why = "no CUDA kernels in this build" if not gradfuse.cuda_compiled() else "no GPU visible"
        raise ValueError(f"--device cuda: CUDA is not available ({why})")
    if choice == "all":
        return ["cpu", "cuda"] if cuda_ok else ["cpu"]
    return [choice]


def _dtypes(text: str) -> list[str]:
    out = list(DTYPES) if text == "all" else _csv(text)
    for d in out:
        if d not in DTYPES:
            raise ValueError(f"--dtype: unknown dtype {d!r}; expected {', '.join(DTYPES)} or all")
    return out


def _providers(text: str | None) -> list[str] | None:
    if not text:
        return None
    out: list[str] = []
    for p in _csv(text):
        names = [q for q in ALL_PROVIDERS if q.startswith("torch")] if p == "torch" else [p]
        for q in names:
            if q not in ALL_PROVIDERS:
                raise ValueError(
                    f"--providers: unknown provider {q!r}; expected {', '.join(ALL_PROVIDERS)} "
                    "or torch"
                )
            if q not in out:
                out.append(q)
    return out


def plan(args: argparse.Namespace, cases: list[Case], devices: list[str]) -> list[Item]:
    wanted = _providers(args.providers)
    items: list[Item] = []
    for device in devices:
        for dtype in _dtypes(args.dtype):
            for case in cases:
                if args.sizes:
                    sizes = []
                    for token in _csv(args.sizes):
                        s = case.parse_size(token)
                        if s is not None:
                            sizes.append(s)
                else:
                    sizes = case.sizes(args.quick)
                provs = [
                    p
                    for p in case.providers(args.compile)
                    if (wanted is None or p in wanted or p == "gradfuse")
                    and (p != COMPILE_PROVIDER or args.compile)
                ]
                items += [Item(case, s, dtype, device, provs) for s in sizes]
    return items


def _copies(min_bytes: int, cache: int) -> int:
    """Rotation copies so that the inputs of consecutive calls together exceed 3x the cache
    (a call never finds its data still cached from its previous turn)."""
    if min_bytes <= 0:
        return 1
    return max(1, min(MAX_COPIES, math.ceil(3 * cache / min_bytes)))


def _stats(samples: list[float], min_bytes: int, ceiling_gbps: float) -> dict[str, Any]:
    med = statistics.median(samples)
    gbps: float | None = None  # no bandwidth figure without minimal bytes (a training step)
    pct: float | None = None
    if min_bytes > 0:
        gbps = min_bytes / med / 1e9 if med > 0 else float("inf")
        pct = 100.0 * gbps / ceiling_gbps if ceiling_gbps > 0 else None
    return {
        "median_s": med,
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": samples,
        "gbps": gbps,
        "pct_ceiling": pct,
    }


def measure(
    item: Item,
    repeat: int,
    warmup: int,
    cache: int,
    ceiling_gbps: float,
    seed: int,
    bar: Progress,
    stream: Stream | None = None,
) -> None:
    """Time every provider of ``item``, interleaved. With ``stream``, the ceiling stream is
    timed once per round too, and the case's % of ceiling is against those samples (the
    machine's bandwidth at the time of this case); without, against ``ceiling_gbps``."""
    case, size = item.case, item.size
    itemsize = torch_dtype(item.dtype).itemsize
    min_bytes = case.min_bytes(size, itemsize)
    copies = _copies(min_bytes, cache)
    label = f"{case.name} {size.name} {item.dtype} {item.device}"
    res = item.result
    res.update(
        {
            "op": case.name,
            "kind": case.kind,
            "description": case.description,
            "size": size.name,
            "size_note": size.note,
            "tensors": size.tensors,
            "numel": size.numel,
            "dtype": item.dtype,
            "device": item.device,
            "min_bytes": min_bytes,
            "min_bytes_per_element": min_bytes // max(size.numel, 1),
            "rotation_copies": copies,
            "rotated_bytes": min_bytes * copies,
            "providers": {},
            "unavailable": {},
            "errors": {},
        }
    )
    runners: dict[str, Runner] = {}
    inner: dict[str, int] = {}
    for prov in item.providers:
        bar.set(f"{label}: {'compiling' if prov == COMPILE_PROVIDER else 'preparing'} {prov}")
        # torch.compile guards on the optimizer object: each rotation copy would be one more
        # compilation (and past torch's recompile limit, eager code). One copy for it.
        n_copies = 1 if prov == COMPILE_PROVIDER and case.kind != "loss" else copies
        try:
            runner = case.build(prov, size, item.dtype, item.device, n_copies, seed)
            # First call of each copy creates optimizer state (untimed), then warm-up.
            for c in range(n_copies):
                runner(c)
            t0 = time.perf_counter()
            for k in range(warmup):
                runner(k)
            sync(item.device)
            per_call = (time.perf_counter() - t0) / max(warmup, 1)
            inner[prov] = inner_count(per_call, case.sample_seconds()) if warmup else 1
            runners[prov] = runner
        except Unavailable as exc:
            res["unavailable"][prov] = str(exc)
        except Exception as exc:  # noqa: BLE001 - report it, keep benchmarking the rest
            res["errors"][prov] = f"{type(exc).__name__}: {exc}"
            if prov == "gradfuse":
                traceback.print_exc(file=sys.stderr)
        bar.update()
    samples: dict[str, list[float]] = {p: [] for p in runners}
    order = list(runners)
    pos = dict.fromkeys(order, warmup)
    bar.set(f"{label}: timing {len(order)} providers interleaved")
    stream_samples: list[float] = []
    for r in range(repeat if order else 0):  # no runner: every provider was unavailable
        # Interleave, rotating who goes first, so drift (other load, thermals) hits all alike.
        for prov in order[r % len(order) :] + order[: r % len(order)]:
            quiesce(item.device)
            samples[prov].append(_time_sample(runners[prov], pos[prov], inner[prov], item.device))
            pos[prov] += inner[prov]
            bar.update()
        if stream is not None:
            quiesce(item.device)  # as before every provider's sample
            stream_samples.append(stream.sample())
    bar.update((len(item.providers) - len(order)) * repeat)
    if stream_samples:
        assert stream is not None
        ceiling_gbps = stream.gbps(stream_samples)
    res["ceiling_gbps"] = ceiling_gbps
    res["ceiling_samples_s"] = stream_samples
    for prov in order:
        st = _stats(samples[prov], min_bytes, ceiling_gbps)
        st["calls_per_sample"] = inner[prov]
        st["rotation_copies"] = len(runners[prov].calls)
        st["peak_extra_bytes"] = peak_extra_memory(runners[prov], item.device)
        res["providers"][prov] = st
    ours = res["providers"].get("gradfuse")
    res["speedup"] = {
        p: v["median_s"] / ours["median_s"]
        for p, v in res["providers"].items()
        if ours is not None and p != "gradfuse"
    }
    runners.clear()
    clear_inputs()
    gc.collect()


def run(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError:
        print(
            "gradfuse bench needs torch (the providers it compares against): "
            "pip install 'gradfuse[bench]'",
            file=sys.stderr,
        )
        return 2
    import gradfuse
    from gradfuse.bench import _machine, _registry, _report

    try:
        all_cases = _registry.discover()
        if args.list:
            _report.print_list(all_cases, args.quick)
            return 0
        cases = _registry.select(all_cases, args.ops)
        devices = _devices(args.device)
        _dtypes(args.dtype)
        _providers(args.providers)
        for option in ("json", "markdown", "plot"):
            _check_output(option, getattr(args, option))
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads {args.threads}: expected a positive number")
            gradfuse.set_num_threads(args.threads)
    except ValueError as exc:
        print(f"gradfuse bench: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(gradfuse.get_num_threads())  # the same thread count for both sides
    repeat = args.repeat if args.repeat is not None else (5 if args.quick else 11)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if repeat < 1 or warmup < 0:
        print("gradfuse bench: --repeat must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2

    skipped = [{"op": c.name, "reason": r} for c in cases if (r := c.unavailable()) is not None]
    runnable = [c for c in cases if c.unavailable() is None]
    items = plan(args, runnable, devices)
    if args.sizes and not items and runnable:
        print(f"gradfuse bench: no selected op has a size in --sizes {args.sizes}", file=sys.stderr)
        return 2
    llc, _ = _machine.last_level_cache()
    machine_info = _machine.machine(devices)  # before the run: its load average is the others'
    started = datetime.datetime.now(datetime.timezone.utc)
    ceilings: dict[str, dict[str, Any]] = {}
    streams: dict[str, Stream] = {}
    total = len(devices) + sum(len(i.providers) * (repeat + 1) for i in items)
    with Progress(total, "gradfuse bench") as bar:
        for device in devices:
            bar.set(f"measuring the {device} bandwidth ceiling")
            streams[device] = Stream(device, llc, args.quick)
            first = [streams[device].sample() for _ in range(max(repeat, 5))]
            ceilings[device] = streams[device].summary(first)
            bar.update()
        if args.warm_cache:
            streams.clear()  # not timed again: free its buffer (16x the last-level cache)
        for item in items:
            measure(
                item,
                repeat,
                warmup,
                0 if args.warm_cache else cache_bytes(item.device, llc),
                ceilings[item.device]["gbps"],
                args.seed,
                bar,
                # --warm-cache keeps the inputs cached between samples: no stream in between.
                streams.get(item.device),
            )
        streams.clear()
    finished = datetime.datetime.now(datetime.timezone.utc)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "command": "gradfuse " + " ".join(getattr(args, "argv", ["bench"])),
        "settings": {
            "ops": [c.name for c in cases],
            "devices": devices,
            "dtypes": _dtypes(args.dtype),
            "quick": bool(args.quick),
            "compile": bool(args.compile),
            "repeat": repeat,
            "warmup": warmup,
            "warm_cache": bool(args.warm_cache),
            "seed": args.seed,
            "timing": "median of interleaved samples after warm-up; CPU perf_counter, "
            "CUDA events; losses: forward + torch.autograd.grad w.r.t. the input",
        },
        "machine": machine_info,
        "versions": _machine.versions(),
        "min_accesses": _report.min_access_table(),
        "ceiling": ceilings,
        "results": [i.result for i in items],
        "skipped": skipped,
    }
    _report.print_table(report)
    if args.json:
        _report.write_json(report, args.json)
        print(f"\nwrote {args.json}")
    if args.markdown:
        _report.write_markdown(report, args.markdown)
        print(f"wrote {args.markdown}")
    if args.plot:
        try:
            _report.plot(report, args.plot)
            print(f"wrote {args.plot}")
        except ImportError:
            print("--plot needs matplotlib: pip install 'gradfuse[bench]'", file=sys.stderr)
            return 2
    failed = [(r["op"], p) for r in report["results"] for p in r["errors"]]
    if failed:
        print(f"\n{len(failed)} provider run(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0
