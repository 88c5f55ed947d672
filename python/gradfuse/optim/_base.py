"""What every gradfuse optimizer shares: torch.optim.Optimizer semantics around a fused step.

Subclasses keep torch's constructor signature, defaults, validation messages, state names and
``state_dict`` layout, so a checkpoint moves between torch and gradfuse in both directions; their
``step`` collects each param group's tensors and hands them to one function of
:mod:`gradfuse.functional`, which groups them by (device, dtype) into native calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast, overload

import torch
from torch import Tensor


def scalar_dtype(is_fused: bool | None = None) -> Any:
    """torch's dtype for ``step`` counters (torch.optim.optimizer._get_scalar_dtype)."""
    from torch.optim.optimizer import _get_scalar_dtype

    return _get_scalar_dtype(is_fused)  # type: ignore[no-untyped-call]


def refuse_differentiable(name: str, differentiable: bool) -> None:
    if differentiable:
        raise NotImplementedError(
            f"gradfuse.optim.{name}: differentiable=True is not supported; the fused update "
            f"runs outside autograd. Use torch.optim.{name}(..., differentiable=True) to "
            f"differentiate through the optimizer step."
        )


def params_with_grad(group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], bool]:
    """The params of a group that have a gradient, their gradients, and whether any is sparse."""
    params: list[Tensor] = []
    grads: list[Tensor] = []
    sparse = False
    for p in group["params"]:
        grad = p.grad
        if grad is None:
            continue
        params.append(p)
        grads.append(grad)
        sparse = sparse or grad.is_sparse
    return params, grads, sparse


def check_fused_foreach(fused: bool | None, foreach: bool | None, differentiable: bool) -> None:
    """The errors torch raises for contradictory fused/foreach/differentiable flags."""
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def grad_scaling(optimizer: Any) -> dict[str, Any]:
    """The GradScaling keyword arguments of one ``step()``, for the functional call.

    torch.amp.GradScaler sees ``_step_supports_amp_scaling = True`` on every gradfuse optimizer
    and, instead of unscaling the gradients itself, sets ``optimizer.grad_scale`` (None when the
    user already called ``scaler.unscale_``) and ``optimizer.found_inf`` for the duration of
    ``step()``. The kernels then divide the gradients by ``grad_scale`` inside the update pass,
    and a nonzero ``found_inf`` makes the step change nothing (params, state and ``step``).
    """
    return {
        "grad_scale": getattr(optimizer, "grad_scale", None),
        "found_inf": getattr(optimizer, "found_inf", None),
    }


def real_view(t: Tensor) -> Tensor:
    """Complex tensors are updated through their real view, as torch's for-loop does."""
    if t.is_complex():  # the method, not torch.is_complex: called for every tensor of a step
        import torch

        return torch.view_as_real(t)
    return t


def check_capturable(
    capturable: bool, params: list[Tensor], *counters: list[Tensor], what: str = "state_steps"
) -> None:
    """torch's check (and message) for capturable=True: params and their step tensors must live
    on a device that supports graph capture (not the CPU). Checked before anything changes."""
    import torch

    # As torch: under torch.compile the compiler handles the cudagraph checks (dynamo may set
    # capturable=True on the groups of an optimizer it compiles).
    if not capturable or torch.compiler.is_compiling():
        return
    from torch.optim.optimizer import _get_capturable_supported_devices

    supported = _get_capturable_supported_devices()
    for i, p in enumerate(params):
        devices = {p.device.type, *(c[i].device.type for c in counters)}
        if len(devices) != 1 or p.device.type not in supported:
            raise AssertionError(
                f"If capturable=True, {what} must be on supported devices: {supported}."
            )


def capturable_step(group: dict[str, Any], params: list[Tensor]) -> bool:
    """Whether this group's step takes the functional ``capturable=True`` path (step counters
    and scalars on the device, no host reads).

    torch.compile (dynamo) sets ``capturable=True`` on the groups of an optimizer it traces,
    for its CUDA graphs; on the CPU there are none, and the host path keeps a compiled step
    bitwise equal to the eager one (tests/integrations/test_compile.py).
    """
    import torch

    if not group["capturable"]:
        return False
    if torch.compiler.is_compiling():
        return any(not p.is_cpu for p in params)
    return True


def scalar_state(
    value: float, device: Any, on_device: bool, *, fused: bool | None = None
) -> Tensor:
    """A 0-dim state scalar (``step``, ``mu_product``) placed and typed exactly as torch does:
    on the param's device when capturable (or fused), else on the CPU."""
    import torch

    # torch.optim.optimizer._get_scalar_dtype: float32 when fused, else float64 only under a
    # float64 default dtype.
    default = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    if on_device:
        return torch.full((), value, dtype=torch.float32 if fused else default, device=device)
    return torch.tensor(value, dtype=default)


def upgrade_scalar_state(
    optimizer: Any, key: str, on_device: Any, *, fused_key: str | None = None
) -> None:
    """torch's ``__setstate__`` conversion of a Python-number state scalar to a tensor."""
    import torch

    for group in optimizer.param_groups:
        fused = group.get(fused_key) if fused_key else None
        for p in group["params"]:
            p_state = optimizer.state.get(p, [])
            if len(p_state) != 0 and not torch.is_tensor(p_state[key]):
                p_state[key] = scalar_state(
                    float(p_state[key]), p.device, bool(on_device(group)), fused=fused
                )


class MaxGradNormMixin:
    """The keyword-only ``max_grad_norm`` extension, shared by every gradfuse optimizer.

    With ``max_grad_norm`` set, each step first computes the global 2-norm of all the
    optimizer's gradients in one fused pass (of the unscaled gradients under AMP), then passes
    ``clip_coef = min(max_grad_norm / (norm + 1e-6), 1)`` to the update, which multiplies each
    gradient by it as it reads it: no pass rewrites the gradients, and on CUDA the coefficient
    stays on the device (no host synchronisation). The result equals
    ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` followed by the step, except that
    ``p.grad`` is left unclipped.

    The setting is an attribute of the optimizer, not a param-group option, so ``state_dict()``
    keeps torch's layout exactly and loads into the torch class of the same name; it survives
    pickling (``__getstate__``) but not ``state_dict()`` (pass it to the constructor again).

    Use: call ``_init_max_grad_norm`` in ``__init__`` and pass ``clip_coef=self._clip_coef()``
    to the functional update of every group.
    """

    max_grad_norm: float | None

    def _init_max_grad_norm(self, max_grad_norm: float | None) -> None:
        if max_grad_norm is not None:
            value = float(max_grad_norm)
            if not value >= 0.0:
                raise ValueError(f"Invalid max_grad_norm value: {max_grad_norm}")
            max_grad_norm = value
        self.max_grad_norm = max_grad_norm

    def _clip_coef(self, grad_scale: Tensor | None = None) -> Tensor | None:
        """The clipping coefficient for this step (1-element float32 tensor), or None.

        ``grad_scale``: GradScaler's scale when the gradients arrive scaled (in-kernel AMP
        unscaling); the norm is then of the unscaled gradients.
        """
        if self.max_grad_norm is None:
            return None
        import torch

        from gradfuse import _clip

        param_groups: list[dict[str, Any]] = self.param_groups  # type: ignore[attr-defined]
        grads = [p.grad for g in param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        norm = _clip.total_norm("max_grad_norm", grads, 2.0)
        if grad_scale is not None:
            norm = norm / grad_scale.to(norm.device, norm.dtype).reshape(())
        coef = torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0)
        return coef.to(torch.float32).reshape(1)

    def __getstate__(self) -> dict[str, Any]:
        state = cast("dict[str, Any]", super().__getstate__())
        state["max_grad_norm"] = getattr(self, "max_grad_norm", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        self.__dict__.setdefault("max_grad_norm", None)


def amp_scaling(optimizer: object) -> tuple[Tensor | None, Tensor | None]:
    """:func:`grad_scaling` as a (grad_scale, found_inf) pair."""
    scaling = grad_scaling(optimizer)
    return scaling["grad_scale"], scaling["found_inf"]


_LOWPREC_KEY = "gradfuse_low_precision"  # the state_dict entry of the rounding seed and counter
_NO_CAST_KEYS = ("step", "mu_product")


class LowPrecisionMixin:
    """The keyword-only low-precision options, shared by every gradfuse optimizer (issue 8).

    All are off by default, so the optimizer is a drop-in for torch's:

    - ``master_weights=True``: each float16/bfloat16 param gets a float32 copy in its state
      (``state[p]["master_param"]``, saved in and restored from ``state_dict``). The update
      reads and writes the copy in float32 and rounds it into the param in the same pass.
      float32/float64 params are updated as usual (a documented no-op for them). A state
      without the copy (a torch checkpoint) starts it from the param. The param must not be
      changed outside the optimizer while master weights are on (the copy would not see it).
    - ``state_dtype=None | torch.float32 | torch.bfloat16``: the dtype the state tensors
      (``exp_avg``, ``momentum_buffer``, ...) are kept in; None is torch's rule (the param's
      dtype). float32 state needs float16/bfloat16 params, bfloat16 state float32 params (or
      bfloat16 ones, where it is the default). Computed in float32 either way.
    - ``rounding="stochastic"`` (bfloat16 params, no master weights): the new param is rounded
      up or down at random, with probability given by its distance to each neighbour, so tiny
      updates survive on average. The bits come from a counter-based hash of (seed, call,
      tensor, element): the same on CPU and CUDA and for any thread count. The seed is drawn
      from torch's default generator when the optimizer is built (``torch.manual_seed`` makes
      runs reproducible) and travels in ``state_dict()["gradfuse_low_precision"]`` with the
      call counter.
    - ``kahan=True`` (bfloat16 params, no master weights, nearest rounding): a bfloat16
      compensation buffer per param (``state[p]["kahan_comp"]``) keeps what rounding dropped.

    Use: call ``_init_low_precision`` in ``__init__``; create state with
    ``_state_zeros``/``_state_full``; call ``_low_precision_state(p, state)`` for every param
    gathered; pass ``**self._low_precision_kwargs(group, params)`` to the functional update.
    """

    master_weights: bool
    state_dtype: Any
    rounding: str
    kahan: bool

    def _init_low_precision(
        self, master_weights: bool, state_dtype: Any, rounding: str, kahan: bool
    ) -> None:
        import torch

        name = type(self).__name__
        if state_dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(
                f"{name}: state_dtype must be None, torch.float32 or torch.bfloat16, got "
                f"{state_dtype!r}"
            )
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(
                f"{name}: rounding must be 'nearest' or 'stochastic', got {rounding!r}"
            )
        master_weights, kahan = bool(master_weights), bool(kahan)
        chosen = [
            n
            for n, on in (
                ("master_weights=True", master_weights),
                ("kahan=True", kahan),
                ("rounding='stochastic'", rounding == "stochastic"),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"{name}: {' and '.join(chosen)} cannot be combined; pick one (master weights, "
                f"Kahan compensation or stochastic rounding)"
            )
        self.master_weights, self.state_dtype, self.rounding, self.kahan = (
            master_weights,
            state_dtype,
            rounding,
            kahan,
        )
        for group in self.param_groups:  # type: ignore[attr-defined]
            for i, p in enumerate(group["params"]):
                self._check_low_precision_param(p, i)
        self._rounding_seed = 0
        self._rounding_calls = 0
        if rounding == "stochastic":
            self._rounding_seed = int(torch.randint(0, 2**62, ()).item())

    def _check_low_precision_param(self, p: Tensor, i: int) -> None:
        import torch

        name = type(self).__name__
        what = f"{name}: param {i} (shape {tuple(p.shape)}, dtype {p.dtype}, device {p.device})"
        if (self.kahan or self.rounding == "stochastic") and p.dtype != torch.bfloat16:
            option = "kahan=True" if self.kahan else "rounding='stochastic'"
            raise ValueError(f"{what}: {option} needs bfloat16 params")
        sd = self.state_dtype
        if sd is not None and sd != p.dtype:
            ok = (p.dtype in (torch.float16, torch.bfloat16) and sd == torch.float32) or (
                p.dtype == torch.float32 and sd == torch.bfloat16
            )
            if not ok:
                raise ValueError(
                    f"{what}: state_dtype={sd} is not available for it (float32 state for "
                    f"float16/bfloat16 params, bfloat16 state for float32 params)"
                )

    def _state_dtype_for(self, p: Tensor) -> Any:
        return p.dtype if self.state_dtype is None else self.state_dtype

    def _state_zeros(self, p: Tensor) -> Tensor:
        """A zero state tensor for ``p``: its layout, the state dtype."""
        import torch

        return torch.zeros_like(
            p, dtype=self._state_dtype_for(p), memory_format=torch.preserve_format
        )

    def _state_full(self, p: Tensor, value: complex) -> Tensor:
        import torch

        return torch.full_like(
            p, value, dtype=self._state_dtype_for(p), memory_format=torch.preserve_format
        )

    def _low_precision_state(self, p: Tensor, state: dict[str, Any]) -> None:
        """Bring one param's state to the policy: master copy / compensation present, state
        tensors in the state dtype (a torch checkpoint keeps them in the param's)."""
        import torch

        if (
            self.master_weights
            and p.dtype in (torch.float16, torch.bfloat16)
            and "master_param" not in state
        ):
            master = torch.empty_like(p, dtype=torch.float32)
            master.copy_(p.detach())
            state["master_param"] = master
        if self.kahan and "kahan_comp" not in state:
            state["kahan_comp"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if self.state_dtype is not None:
            for key, value in state.items():
                if (
                    key in _NO_CAST_KEYS
                    or key in ("master_param", "kahan_comp")
                    or not torch.is_tensor(value)
                    or value.shape != p.shape
                    or not value.is_floating_point()
                    or value.dtype == self.state_dtype
                ):
                    continue
                state[key] = value.to(self.state_dtype)

    def _low_precision_kwargs(self, params: list[Tensor]) -> dict[str, Any]:
        """The functional's low-precision keyword arguments for one group's ``params``."""
        import torch

        kwargs: dict[str, Any] = {}
        on = self.master_weights or self.kahan or self.rounding != "nearest"
        if (on or self.state_dtype is not None) and torch.compiler.is_compiling():
            raise NotImplementedError(
                f"{type(self).__name__}: master_weights, state_dtype, rounding and kahan are not "
                f"supported under torch.compile yet; step this optimizer eagerly"
            )
        state = self.state  # type: ignore[attr-defined]
        if self.master_weights:
            kwargs["master_params"] = [
                state[p]["master_param"] if p.dtype in (torch.float16, torch.bfloat16) else None
                for p in params
            ]
        if self.kahan:
            kwargs["kahan_comps"] = [state[p]["kahan_comp"] for p in params]
        if self.rounding == "stochastic":
            from gradfuse.functional._multi_tensor import mix_seed

            kwargs["rounding"] = "stochastic"
            kwargs["seed"] = mix_seed(self._rounding_seed, self._rounding_calls)
            self._rounding_calls += 1
        return kwargs

    def state_dict(self) -> dict[str, Any]:
        sd = cast("dict[str, Any]", super().state_dict())  # type: ignore[misc]
        if getattr(self, "rounding", "nearest") == "stochastic":
            sd[_LOWPREC_KEY] = {"seed": self._rounding_seed, "calls": self._rounding_calls}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import torch

        super().load_state_dict(state_dict)  # type: ignore[misc]
        # torch casts every floating state tensor to its param's dtype on load: put back the
        # saved precision of the master copies and of state kept in another dtype.
        saved_groups = state_dict["param_groups"]
        ids = [i for g in saved_groups for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]  # type: ignore[attr-defined]
        for pid, p in zip(ids, params, strict=True):
            saved = state_dict["state"].get(pid)
            if saved is None:
                continue
            current = self.state[p]  # type: ignore[attr-defined]
            for key, value in saved.items():
                if key in _NO_CAST_KEYS or not torch.is_tensor(value):
                    continue
                if not value.is_floating_point() or value.dtype == current[key].dtype:
                    continue
                if key == "master_param" or (
                    self.state_dtype is not None and value.dtype == self.state_dtype
                ):
                    current[key] = value.to(device=p.device, copy=True)
        extra = state_dict.get(_LOWPREC_KEY)
        if extra is not None and self.rounding == "stochastic":
            self._rounding_seed = int(extra["seed"])
            self._rounding_calls = int(extra["calls"])

    def __getstate__(self) -> dict[str, Any]:
        state = cast("dict[str, Any]", super().__getstate__())
        for key in ("master_weights", "state_dtype", "rounding", "kahan"):
            state[key] = getattr(self, key, None)
        state["_rounding_seed"] = getattr(self, "_rounding_seed", 0)
        state["_rounding_calls"] = getattr(self, "_rounding_calls", 0)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        for key, default in (
            ("master_weights", False),
            ("state_dtype", None),
            ("rounding", "nearest"),
            ("kahan", False),
            ("_rounding_seed", 0),
            ("_rounding_calls", 0),
        ):
            if self.__dict__.get(key) is None:
                self.__dict__[key] = default


def real_views(tensors: list[Tensor]) -> list[Tensor]:
    """:func:`real_view` of every tensor of a list."""
    return [real_view(t) for t in tensors]


def real_views_of(params: list[Tensor]) -> Callable[[list[Tensor]], list[Tensor]]:
    """:func:`real_views` when some param is complex (its grads and state are complex with
    it), otherwise the lists as they are: one ``is_complex()`` per param rather than one per
    tensor of every list (an Adam step over a model passes ~600 tensors)."""
    if any(p.is_complex() for p in params):
        return real_views
    return _same_list


def _same_list(tensors: list[Tensor]) -> list[Tensor]:
    return tensors


def check_adam_hparams(
    lr: float | Tensor, eps: float, betas: tuple[Any, Any], weight_decay: float
) -> None:
    """The lr/eps/betas/weight_decay checks (order and messages) torch's Adam family shares."""
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not eps >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


class FusedStepMixin:
    """The ``step()`` every gradfuse optimizer shares, and the state gathering of a group.

    ``step()`` evaluates the closure, reads GradScaler's scaling and the ``max_grad_norm``
    clipping coefficient once, then calls the subclass's ``_update(group, amp)`` for every
    param group; ``amp`` holds the functional's ``grad_scale``, ``found_inf`` and ``clip_coef``
    keyword arguments. The optimizer's own math and options stay in its ``_update``.
    """

    # torch's Adam family runs the accelerator graph-capture health check first; the others
    # (SGD, Adagrad, RMSprop, Lion) do not.
    _graph_capture_health_check = False

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        raise NotImplementedError

    # Not named _init_group: torch.compile (dynamo) intercepts that name on optimizers and
    # expects torch's signature.
    def _gather_state(
        self,
        group: dict[str, Any],
        keys: tuple[str, ...],
        init: Callable[[Tensor, dict[str, Any]], None],
        *,
        sparse_error: str | None,
        check: Callable[[], None] | None = None,
    ) -> tuple[list[Tensor], list[Tensor], dict[str, list[Tensor]]]:
        """The params of ``group`` that have a gradient, their gradients, and ``state[p][key]``
        of each of them for every key of ``keys``.

        ``init(p, state)`` creates the state of a param that has none (first step, or a param
        group added later); every state is then brought to the low-precision policy.
        ``sparse_error``: the RuntimeError message for a sparse gradient (None: allowed).
        ``check``: run for every param once its state exists, where torch raises from its loop.
        """
        params: list[Tensor] = []
        grads: list[Tensor] = []
        slots: dict[str, list[Tensor]] = {key: [] for key in keys}
        state_of = self.state  # type: ignore[attr-defined]
        low_precision = (
            self.master_weights or self.kahan or self.state_dtype is not None  # type: ignore[attr-defined]
        )
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if sparse_error is not None and grad.is_sparse:
                raise RuntimeError(sparse_error)
            params.append(p)
            grads.append(grad)
            state = state_of[p]
            if len(state) == 0:
                init(p, state)
            if low_precision:
                self._low_precision_state(p, state)  # type: ignore[attr-defined]
            for key, slot in slots.items():
                slot.append(state[key])
            if check is not None:
                check()
        return params, grads, slots

    def _adam_family_update(
        self,
        update: Callable[..., None],
        group: dict[str, Any],
        amp: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        moments: list[list[Tensor] | None],
        *counters: list[Tensor],
        steps: list[Tensor],
        **options: Any,
    ) -> None:
        """The functional call that ends every Adam-family step (Adam, AdamW, Adamax, NAdam,
        RAdam): ``update(params, grads, *moments, *counters, state_steps=steps, ...)`` with the
        group's lr, betas, eps, weight_decay and maximize, the optimizer-specific ``options``,
        AMP scaling, capturable and the low-precision policy. Complex params (and their grads
        and moments) go through their real views; ``counters`` (NAdam's mu_product) as they are.
        """
        view = real_views_of(params)
        beta1, beta2 = group["betas"]
        update(
            view(params),
            view(grads),
            *(None if m is None else view(m) for m in moments),
            *counters,
            state_steps=steps,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            **options,
            **amp,
            capturable=capturable_step(group, params),
            **self._low_precision_kwargs(params),  # type: ignore[attr-defined]
        )

    # torch.optim.Optimizer.step's overloads, so the mixin's step types as torch's.
    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step.

        Args:
            closure: a closure that reevaluates the model and returns the loss (optional).
        """
        if self._graph_capture_health_check:
            self._accelerator_graph_capture_health_check()  # type: ignore[attr-defined]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        scaling = grad_scaling(self)
        amp = {**scaling, "clip_coef": self._clip_coef(scaling["grad_scale"])}  # type: ignore[attr-defined]
        for group in self.param_groups:  # type: ignore[attr-defined]
            self._update(group, amp)
        return loss
