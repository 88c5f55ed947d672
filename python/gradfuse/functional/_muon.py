"""Muon (momentum orthogonalised by Newton-Schulz; Jordan et al. 2024), fused and batched.

One step per weight, as ``torch.optim.Muon`` (torch/optim/_muon.py) does it::

    buf = buf.lerp(g, 1 - momentum)
    u   = g.lerp(buf, momentum) if nesterov else buf
    O   = newton_schulz(u)                 # 2-D; a tall matrix is transposed first
    p   = p * (1 - lr * weight_decay) - adjusted_lr(lr, shape) * O

The elementwise work is two native passes through the optimizer engine (``MUON_PREPARE``: the
buffer and the Newton-Schulz input, written straight into a stacked batch per shape, in
bfloat16 when the iteration runs in bfloat16; ``MUON_APPLY``: weight decay and the update), and
the Newton-Schulz iteration in between is one chain of batched matmuls per (device, dtype,
matrix shape) group, with the framework's matmul (the native core needs no BLAS).

bfloat16 Newton-Schulz (the default, as torch's): every tensor torch rounds to bfloat16 (the
input, the normalised input, each product) is rounded to bfloat16 here too, while the products
themselves are float32 matmuls of those bfloat16 values. torch's CPU bfloat16 matmul also
accumulates in float32 and rounds once, so the results agree with torch's up to the float32
summation order (a rare last-bit difference in a bfloat16 value); on CPUs without bfloat16
matrix units this is also much faster than a bfloat16 matmul.

Precision policies (as every gradfuse update takes them): the apply pass writes the param, so
``master_params``, ``kahan_comps`` and ``rounding="stochastic"`` act there, in the native
pass. The momentum buffers may be kept in another dtype than the params (bfloat16 for float32
params, float32 for float16/bfloat16 ones) or as block-wise 8-bit codes (``state_absmax``).
The native prepare pass holds the buffer in the param's slot (its storage type is the
gradient's), so such buffers go through a float32 working copy: dequantized (or widened),
the prepare pass, then requantized (new absmax, nearest codes) or rounded to nearest. Per
element that is the same sequence a fused pass runs (the same primitives,
``src/cpu/quant8.h``), so the results are too; it costs two more passes over the buffers and
a transient float32 copy of them (and of 16-bit gradients).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Unpack

from gradfuse import _buffers
from gradfuse._compile import traceable
from gradfuse._options import check_options, option_names
from gradfuse.functional import _engine, _muon_sharded, _steps
from gradfuse.functional._engine import (
    NUMBER_OR_TENSOR,
    Call,
    Hyper,
    Spec,
    State,
    StepOptions,
    unchanged,
)
from gradfuse.functional._multi_tensor import LowPrecision, mix_seed

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


# The buffer sits in the param's slot (slot 0: read and written), the gradient in slot 1 (AMP and
# max_grad_norm scale it), the Newton-Schulz input is a state slot (its own dtype allowed).
MUON_PREPARE = Spec(
    op="muon_",
    kernel="muon_prepare",
    hyper=("momentum",),
    state=(State("ns_inputs", "ns_input"),),
    scalars=unchanged("momentum"),
    modes=lambda h: {"nesterov": bool(h.nesterov)},
    flags=("nesterov",),
)


def _apply_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    # torch: param.mul_(1 - lr * weight_decay); param.add_(update, alpha=-adjusted_lr)
    return {"lr_decay": 1 - h.lr * h.weight_decay, "neg_lr": -h.adjusted_lr}


MUON_APPLY = Spec(
    op="muon_",
    kernel="muon_apply",
    hyper=(("lr", NUMBER_OR_TENSOR), "weight_decay", ("adjusted_lr", NUMBER_OR_TENSOR)),
    state=(State("updates", "update", written=False),),
    scalars=_apply_scalars,
    modes=lambda h: {"weight_decay": h.weight_decay != 0.0},
    flags=(),
)


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The matrix a weight is orthogonalised as: its first dimension by the product of the
    others (a conv kernel ``(out, in, kh, kw)`` as ``(out, in * kh * kw)``, as the original
    implementation flattens it)."""
    rows = int(shape[0])
    cols = 1
    for d in shape[1:]:
        cols *= int(d)
    return rows, cols


def adjust_lr(lr: Any, adjust_lr_fn: str | None, shape: Sequence[int]) -> Any:
    """torch's ``_adjust_lr`` on the matrix shape: ``"original"`` (the default) scales by
    ``sqrt(max(1, rows / cols))``, ``"match_rms_adamw"`` by ``0.2 * sqrt(max(rows, cols))``."""
    a, b = matrix_shape(shape)
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, a / b))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(a, b))
    else:
        raise ValueError(
            f"muon_: adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got "
            f"{adjust_lr_fn!r}"
        )
    return lr * ratio


def _ns_dtype(ns_dtype: Any) -> Any:
    import torch

    if ns_dtype not in (torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(
            f"muon_: ns_dtype must be torch.bfloat16 (torch's), torch.float32 or torch.float64, "
            f"got {ns_dtype!r}"
        )
    return ns_dtype


# The state dtypes the engine stores for a param dtype (besides the param's own):
# bfloat16 for float32 params, float32 for float16/bfloat16 params.
def _stored_dtype(wanted: Any, param_dtype: Any) -> Any:
    import torch

    if wanted == param_dtype:
        return wanted
    if param_dtype == torch.float32 and wanted == torch.bfloat16:
        return wanted
    if param_dtype in (torch.float16, torch.bfloat16) and wanted == torch.float32:
        return wanted
    return param_dtype


def newton_schulz_(
    x: Any, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float, ns_dtype: Any
) -> Any:
    """torch's ``_zeropower_via_newtonschulz`` over a batch ``x`` of shape ``(B, rows, cols)``
    (already in ``ns_dtype``; consumed). Returns ``(B, rows, cols)``, contiguous, in
    ``ns_dtype``. bfloat16 runs as float32 matmuls of bfloat16 values, rounded to bfloat16
    wherever torch's bfloat16 tensors are (see the module docstring)."""
    import torch

    a, b, c = ns_coefficients
    emulate = ns_dtype == torch.bfloat16
    if emulate:

        def rnd(t: Any) -> Any:
            return t.to(torch.bfloat16).to(torch.float32)

        norm = x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # bfloat16, as torch's
        y = x.to(torch.float32)
        norm32 = norm.to(torch.float32)
    else:

        def rnd(t: Any) -> Any:
            return t

        y = x
        norm32 = x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    tall = y.size(-2) > y.size(-1)
    if tall:
        y = y.mT
    y = rnd(y / norm32)
    for _ in range(ns_steps):
        gram = rnd(torch.bmm(y, y.mT))
        gram_update = rnd(torch.baddbmm(gram, gram, gram, beta=b, alpha=c))
        y = torch.baddbmm(y, gram_update, y, beta=a)
        if _ + 1 < ns_steps:
            y = rnd(y)
    if tall:
        y = y.mT
    return y.to(ns_dtype, memory_format=torch.contiguous_format)


def _check(
    params: Sequence[Any],
    grads: Sequence[Any],
    momentum_buffers: Sequence[Any],
    ns_coefficients: Any,
    ns_steps: Any,
) -> None:
    import torch

    n = len(params)
    for name, values in (("grads", grads), ("momentum_buffers", momentum_buffers)):
        if len(values) != n:
            raise ValueError(
                f"muon_: expected one entry of {name} per param, got {len(values)} {name} for "
                f"{n} params"
            )
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 0:
        raise ValueError(f"muon_: ns_steps must be a non-negative int, got {ns_steps!r}")
    if ns_steps >= 100:  # torch's message
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(ns_coefficients) != 3:  # torch's message
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    for i, (p, g, buf) in enumerate(zip(params, grads, momentum_buffers, strict=True)):
        for name, t in (("params", p), ("grads", g), ("momentum_buffers", buf)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"muon_: {name}[{i}] must be a torch.Tensor, got {type(t).__name__}"
                )
            if t.is_complex():
                raise ValueError(
                    f"muon_: {name}[{i}] is complex ({t.dtype}); Muon does not support complex "
                    f"parameters"
                )
            if t.is_sparse:
                raise RuntimeError("Muon does not support sparse gradients")
        if p.ndim < 2:
            raise ValueError(
                f"muon_: params[{i}] has shape {tuple(p.shape)}; Muon orthogonalises matrices "
                f"and needs params with 2 or more dimensions (send biases, norms and other "
                f"1-D params to AdamW: a param group with use_muon=False)"
            )
        for name, t in (("grads", g), ("momentum_buffers", buf)):
            if t.shape != p.shape:
                raise ValueError(
                    f"muon_: {name}[{i}] has shape {tuple(t.shape)}, params[{i}] has "
                    f"{tuple(p.shape)}; expected the same shape"
                )


# Under torch.compile the whole update (both native passes and the Newton-Schulz iteration
# between them) is one call of gradfuse's custom op, run eagerly: inductor would fuse the
# iteration's bfloat16 round trips away (its float32 values kept), and the compiled step would
# no longer give eager's bits.
@traceable(written=("master_params", "kahan_comps", "params", "momentum_buffers"))
@_engine.with_options
def muon_(
    params: Sequence[Any],
    grads: Sequence[Any],
    momentum_buffers: Sequence[Any],
    *,
    lr: float | Any = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    ns_dtype: Any = None,
    **options: Unpack[StepOptions],
) -> None:
    """One Muon step in place (``torch.optim.Muon``'s functional ``muon``), for torch tensors.

    ``params`` of any rank >= 2 (a matrix per param: the first dimension by the rest),
    ``momentum_buffers`` one per param (zeros before the first step, as torch creates them).
    ``ns_dtype``: the Newton-Schulz precision, ``torch.bfloat16`` (None: torch's) or
    ``torch.float32`` / ``torch.float64``. Params of one device, dtype and matrix shape are
    orthogonalised together (one chain of batched matmuls). ``grad_scale`` / ``found_inf`` /
    ``clip_coef``: AMP and ``max_grad_norm`` as for every gradfuse update (a nonzero
    ``found_inf`` changes nothing). DTensor params, grads and buffers (alike distributed:
    FSDP2, HSDP, row or column tensor parallelism) are updated through their local shards, the
    sharded matrices exchanged between the ranks for the iteration (every rank of the process
    group must make the same call; see :mod:`gradfuse.functional._muon_sharded`). Everything
    is checked before anything is written.

    Precision (as every gradfuse update, :class:`~gradfuse.functional._multi_tensor.
    LowPrecision`; not for DTensor params yet): ``master_params`` (float32 copies of
    float16/bfloat16 params), ``kahan_comps`` or ``rounding="stochastic"`` with ``seed``
    (bfloat16 params) for the param update; momentum buffers in bfloat16 for float32 params,
    float32 for 16-bit params, or uint8 codes with ``state_absmax=[absmax per param]``
    (block-wise 8-bit, signed map; CPU). See the module docstring for how such buffers are
    updated.
    """
    import torch

    check_options("muon_", options, option_names(StepOptions))
    ns_dtype = _ns_dtype(torch.bfloat16 if ns_dtype is None else ns_dtype)
    if adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(
            f"muon_: adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got "
            f"{adjust_lr_fn!r}"
        )
    _check(params, grads, momentum_buffers, ns_coefficients, ns_steps)
    h_prep = _engine.hyper_of(MUON_PREPARE, locals())
    h_apply = _engine.check_hyper(
        MUON_APPLY,
        {"lr": lr, "weight_decay": weight_decay, "adjusted_lr": 0.0},
        capturable=False,
    )
    eps = _engine.to_float(eps, "eps")
    coefficients = tuple(_engine.to_float(v, "ns_coefficients") for v in ns_coefficients)
    if not params:
        return
    policy = _engine.lowprec_of(options)
    master_params, kahan_comps = policy.master_params, policy.kahan_comps
    rounding, seed, state_absmax = policy.rounding, policy.seed, policy.state_absmax
    grad_scale, found_inf = options.get("grad_scale"), options.get("found_inf")
    lowprec = (
        master_params is not None
        or kahan_comps is not None
        or rounding != "nearest"
        or state_absmax is not None
        or any(b.dtype != p.dtype for p, b in zip(params, momentum_buffers, strict=True))
    )
    # DTensors (FSDP2 and other sharded params) run on their local shards; the matrices sharded
    # across ranks are put together for the Newton-Schulz iteration (_muon_sharded).
    params, grads, momentum_buffers, layouts = _muon_sharded.unwrap(params, grads, momentum_buffers)
    if lowprec and any(lay is not None for lay in layouts):
        raise NotImplementedError(
            "muon_: master_params, kahan_comps, rounding='stochastic' and momentum buffers in "
            "another dtype than the params' (state_dtype) are not supported for DTensor params "
            "yet"
        )
    if lowprec:
        _check_precision(params, grads, momentum_buffers, policy)
    if lowprec and _steps.found_inf_is_set(found_inf):
        return  # AMP: nothing changes (8-bit buffers must not be requantized)
    # Buffers in another dtype than their gradient's: the prepare pass runs on float32 working
    # copies (see the module docstring); `finish` stores them back afterwards.
    work_bufs, work_grads, finish = (
        _working_copies(grads, momentum_buffers, state_absmax)
        if lowprec
        else (momentum_buffers, grads, None)
    )
    # Groups of one device, dtype (the param's and the prepare pass's) and matrix shape: one
    # stacked batch each, which the prepare pass writes into directly (the views are the
    # engine's ns_inputs).
    groups: dict[tuple[Any, Any, Any, tuple[int, int]], list[int]] = {}
    for i, p in enumerate(params):
        if layouts[i] is None:
            key = (p.device, p.dtype, work_bufs[i].dtype, matrix_shape(p.shape))
            groups.setdefault(key, []).append(i)
    ns_inputs: list[Any] = [None] * len(params)
    batches = []
    # A buffer in another memory layout than the batch's rows (a transposed or channels-last
    # weight; the prepare pass writes in memory order): its input is written in the buffer's
    # layout, then copied into the batch.
    relaid: list[tuple[Any, Any]] = []
    for (device, dtype, work_dtype, (rows, cols)), idx in groups.items():
        stored = _stored_dtype(ns_dtype, work_dtype)
        batch = torch.empty((len(idx), rows, cols), dtype=stored, device=device)
        for j, i in enumerate(idx):
            ns_inputs[i] = batch[j].view(params[i].shape)
            if ns_inputs[i].stride() != work_bufs[i].stride():
                relaid.append((ns_inputs[i], torch.empty_like(work_bufs[i], dtype=stored)))
                ns_inputs[i] = relaid[-1][1]
        batches.append((_stored_dtype(ns_dtype, dtype), (rows, cols), idx, batch))
    # Sharded weights: the prepare pass writes their local shards into the exchange's buffer.
    exchanges = _muon_sharded.plan(layouts, params)
    for ex in exchanges:
        ref = params[ex.items[0].index]
        _muon_sharded.allocate_inputs(ex, _stored_dtype(ns_dtype, ref.dtype), ref.device, ns_inputs)
    _engine.run(
        MUON_PREPARE,
        Call(
            {"params": work_bufs, "grads": work_grads, "ns_inputs": ns_inputs},
            {},
            grad_scale,
            found_inf,
            options.get("clip_coef"),
            False,
            LowPrecision(),
        ),
        h_prep,
    )
    if finish is not None:
        finish()
    for rows_view, written_input in relaid:
        rows_view.copy_(written_input)
    if (
        not exchanges  # sharded weights: every rank must join the exchanges all the same
        and found_inf is not None
        and found_inf.device.type == "cpu"
        and float(found_inf) != 0.0
    ):
        return  # skipped by the prepare pass; the apply pass would skip too

    def orthogonalise(batch: Any, out_dtype: Any = None) -> Any:
        out_dtype = batch.dtype if out_dtype is None else out_dtype
        x = batch if batch.dtype == ns_dtype else batch.to(ns_dtype)
        ortho = newton_schulz_(x, coefficients, ns_steps, eps, ns_dtype)  # type: ignore[arg-type]
        return ortho if ortho.dtype == out_dtype else ortho.to(out_dtype)

    calls = 0

    def apply(shape: tuple[int, int], idx: list[int], updates: list[Any]) -> None:
        nonlocal calls
        h = Hyper({**h_apply.__dict__, "adjusted_lr": adjust_lr(h_apply.lr, adjust_lr_fn, shape)})
        store = LowPrecision()
        if lowprec:  # the param update's policy, for this batch's params
            store = LowPrecision(
                None if master_params is None else [master_params[i] for i in idx],
                None if kahan_comps is None else [kahan_comps[i] for i in idx],
                rounding,
                None if seed is None or rounding != "stochastic" else mix_seed(seed, calls),
            )
        calls += 1
        _engine.run(
            MUON_APPLY,
            Call(
                {
                    "params": [params[i] for i in idx],
                    "grads": [grads[i] for i in idx],
                    "updates": updates,
                },
                {},
                None,
                found_inf,
                None,
                False,
                store,
            ),
            h,
        )

    for apply_dtype, shape, idx, batch in batches:
        ortho = orthogonalise(batch, apply_dtype)
        apply(shape, idx, [ortho[j].view(params[i].shape) for j, i in enumerate(idx)])
    for ex in exchanges:
        local = _muon_sharded.orthogonalise(ex, orthogonalise)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for lay in ex.items:
            by_shape.setdefault(matrix_shape(lay.shape), []).append(lay.index)
        for shape, idx in by_shape.items():
            apply(shape, idx, [local[i] for i in idx])


def _check_precision(
    params: Sequence[Any],
    grads: Sequence[Any],
    momentum_buffers: Sequence[Any],
    policy: LowPrecision,
) -> None:
    """The precision options and the buffers' dtypes, checked as the engine checks every
    update's (the same messages), before anything is written: the params, their gradients,
    the buffers as the state list (bfloat16 for float32 params, float32 for 16-bit ones, or
    uint8 codes with their absmax), master copies and Kahan compensations."""
    import torch

    for i, buf in enumerate(momentum_buffers):
        if buf.dtype == torch.uint8 and not _buffers._is_dense(buf.shape, buf.stride()):
            raise ValueError(
                f"muon_: momentum_buffers[{i}] holds uint8 codes (shape {tuple(buf.shape)}, "
                f"strides {buf.stride()}); 8-bit codes must fill one block of memory (their "
                f"blocks of 256 are counted in its order)"
            )
    policy.signed = [True]  # the momentum buffer: the signed map
    policy.prepare_buffers(
        "muon_",
        [("params", list(params)), ("grads", list(grads)), ("momentum_buffers", momentum_buffers)],
        ("params", "momentum_buffers"),
    )


def _working_copies(
    grads: Sequence[Any],
    momentum_buffers: Sequence[Any],
    state_absmax: Sequence[Sequence[Any]] | None,
) -> tuple[list[Any], list[Any], Any]:
    """float32 working copies of the buffers stored in another dtype than their gradient's
    (8-bit codes dequantized, bfloat16 widened; float32 buffers of 16-bit params are used as
    they are, with a float32 copy of the gradient), and a function that stores them back
    (requantized: new absmax, nearest codes; or rounded to nearest)."""
    import torch

    from gradfuse.optim import _quant8

    bufs = list(momentum_buffers)
    work_grads = list(grads)
    back: list[tuple[Any, Any, Any]] = []  # (buffer, working copy, absmax or None)
    for i, (g, buf) in enumerate(zip(grads, momentum_buffers, strict=True)):
        if buf.dtype == g.dtype:
            continue
        if buf.dtype == torch.uint8:
            assert state_absmax is not None  # _check_precision
            absmax = state_absmax[0][i]
            work = torch.empty_like(buf, dtype=torch.float32)  # the codes' memory order
            _quant8._blockwise8(False, work, buf, absmax, True)
            back.append((buf, work, absmax))
        elif buf.dtype != torch.float32:  # bfloat16 buffers of float32 params
            work = buf.to(torch.float32, memory_format=torch.preserve_format)
            back.append((buf, work, None))
        else:
            work = buf
        bufs[i] = work
        if g.dtype != torch.float32:
            work_grads[i] = g.to(torch.float32, memory_format=torch.preserve_format)

    def finish() -> None:
        for buf, work, absmax in back:
            if absmax is None:
                buf.copy_(work)
            else:
                _quant8._blockwise8(True, work, buf, absmax, True)

    return bufs, work_grads, finish
