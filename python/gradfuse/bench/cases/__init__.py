"""Benchmark cases: one module per gradfuse op, each with a ``CASES`` list.

A new op plugs into ``gradfuse bench`` and ``gradfuse check`` by adding one module here (the
registry imports every module of this package); its cases name the gradfuse symbol they need,
so they show up as "not available in this build" until that symbol exists.

``MIN_ACCESSES`` is the one table of minimal memory traffic: for each op, how many times each
element must cross the memory bus at least (reads + writes, in units of the tensor's element
size). Achieved GB/s = accesses x itemsize x elements / median time. float32 bytes per
element are 4x the count (SGD 12 B/param, with momentum 20, Adam 28, amsgrad 36, ...).
"""

from __future__ import annotations

MIN_ACCESSES: dict[str, tuple[int, str]] = {
    # Optimizers, per parameter element.
    "sgd": (3, "param read+write, grad read"),
    "sgd_momentum": (5, "param r+w, grad r, momentum_buffer r+w"),
    "adam": (7, "param r+w, grad r, exp_avg r+w, exp_avg_sq r+w"),
    "adam_amsgrad": (9, "adam + max_exp_avg_sq r+w"),
    "adam_clip": (8, "adam + one extra grad read for the global norm"),
    "adamax": (7, "param r+w, grad r, exp_avg r+w, exp_inf r+w"),
    "adagrad": (5, "param r+w, grad r, sum r+w"),
    "rmsprop": (5, "param r+w, grad r, square_avg r+w"),
    "rmsprop_momentum": (7, "rmsprop + momentum_buffer r+w"),
    "rmsprop_centered_momentum": (9, "rmsprop + grad_avg r+w + momentum_buffer r+w"),
    "lion": (5, "param r+w, grad r, exp_avg r+w"),
    "clip_grad_norm": (3, "grad read (norm), grad read+write (scale)"),
    "schedule_free_adamw": (7, "y (param) r+w, grad r, z r+w, exp_avg_sq r+w"),
    "schedule_free_sgd": (5, "y (param) r+w, grad r, z r+w"),
    # Muon's elementwise passes only: the Newton-Schulz matmuls between them are compute-bound,
    # so a Muon step's % of this ceiling says little (the matmuls dominate).
    "muon": (6, "param r+w, grad r, momentum_buffer r+w, update r (+ Newton-Schulz matmuls)"),
    # Optimizers whose per-tensor reduction must finish before the param is written.
    "lamb": (
        10,
        (
            "pass 1: param r, grad r, exp_avg r+w, exp_avg_sq r+w (moments, both norms);"
            " pass 2: param r+w, exp_avg r, exp_avg_sq r (trust-ratio step)"
        ),
    ),
    "adafactor": (
        5,
        (
            "rank >= 2: pass A param r, grad r (RMS, row/col means of g^2, the update's RMS"
            " from row-weighted column sums); pass C param r+w, grad r (row/col state"
            " negligible). A pass B (grad r again) runs only where the eps1 clamp may apply:"
            " 6 accesses there"
        ),
    ),
    # Losses with their input gradient (forward + backward), per input element.
    "elementwise_loss": (3, "input read, target read, grad written"),
    "cross_entropy": (2, "logit read, grad written (targets: one index per row, not counted)"),
    "nll_loss": (1, "grad written (one input read per row, not counted)"),
    # Issue 18's optimizers, per parameter element.
    "adopt": (7, "param r+w, grad r, exp_avg r+w, exp_avg_sq r+w"),
    "ademamix": (9, "param r+w, grad r, exp_avg, exp_avg_slow, exp_avg_sq r+w"),
}
