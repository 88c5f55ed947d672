"""The torch.optim contract of gradfuse's Adam family (and AMP for every gradfuse optimizer):
signatures, defaults, constructor errors, __setstate__, state_dict layout and round trips both
ways, GradScaler with an injected inf, capturable/differentiable/sparse behaviour."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _more_helpers import one_torch_thread

import gradfuse
import tolerances
from optim_testing import EXTENSIONS, make_params, random_grads

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

NAMES = ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"]


def _raised(fn: Callable[[], object]) -> tuple[type[BaseException], str] | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 (any error: compared with torch's)
        return type(e), str(e)
    return None


def _param() -> list[torch.Tensor]:
    return [torch.randn(3, requires_grad=True)]


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_torch(name: str) -> None:
    def shape(cls: type) -> list[tuple[str, Any, Any]]:
        sig = inspect.signature(cls.__init__)
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    ours = shape(getattr(gradfuse.optim, name))
    # gradfuse's extensions, last of all (optim_testing.EXTENSIONS).
    assert ours[-len(EXTENSIONS) :] == EXTENSIONS
    assert ours[: -len(EXTENSIONS)] == shape(getattr(torch.optim, name))


@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_torch(name: str) -> None:
    ours = getattr(gradfuse.optim, name)(_param())
    theirs = getattr(torch.optim, name)(_param())
    assert ours.defaults == theirs.defaults
    assert ours._step_supports_amp_scaling is True


BAD_KWARGS: list[dict[str, Any]] = [
    {"lr": -1.0},
    {"lr": torch.tensor([0.1, 0.2])},
    {"eps": -1e-8},
    {"betas": (1.0, 0.999)},
    {"betas": (-0.1, 0.999)},
    {"betas": (0.9, 1.0)},
    {"weight_decay": -0.1},
    {"lr": -1.0, "eps": -1.0},  # the first failing check wins, as in torch
    {"betas": (0.9, 1.5), "weight_decay": -1.0},
]
ADAM_BAD_KWARGS: list[dict[str, Any]] = [
    {"lr": torch.tensor(0.1), "foreach": True},
    {"betas": (torch.tensor(0.9), 0.999)},
    {"betas": (torch.tensor([0.9, 0.8]), torch.tensor(0.999))},
    {"betas": (torch.tensor(0.9), torch.tensor(0.999)), "foreach": True},
    {"fused": True, "foreach": True},
    {"fused": True, "differentiable": True},
]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(n, kw) for n in NAMES for kw in BAD_KWARGS]
    + [(n, kw) for n in ("Adam", "AdamW") for kw in ADAM_BAD_KWARGS]
    + [("NAdam", {"momentum_decay": -1.0})],
    ids=str,
)
def test_constructor_errors_match_torch(name: str, kwargs: dict[str, Any]) -> None:
    ours = _raised(lambda: getattr(gradfuse.optim, name)(_param(), **kwargs))
    theirs = _raised(lambda: getattr(torch.optim, name)(_param(), **kwargs))
    assert theirs is not None
    assert ours == theirs


@pytest.mark.parametrize("name", NAMES)
def test_empty_param_list_matches_torch(name: str) -> None:
    ours = _raised(lambda: getattr(gradfuse.optim, name)([]))
    theirs = _raised(lambda: getattr(torch.optim, name)([]))
    assert theirs is not None
    assert ours == theirs


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_is_refused_clearly(name: str) -> None:
    with pytest.raises(NotImplementedError, match=f"torch.optim.{name}.*differentiable"):
        getattr(gradfuse.optim, name)(_param(), differentiable=True)


@pytest.mark.parametrize("name", NAMES)
def test_foreach_and_fused_accepted(name: str) -> None:
    kw: dict[str, Any] = {"foreach": True}
    if name in ("Adam", "AdamW"):
        kw = {"fused": True}
    p = _param()
    opt = getattr(gradfuse.optim, name)(p, **kw)
    p[0].grad = torch.randn(3)
    opt.step()
    assert opt.state[p[0]]["step"].item() == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_capturable_on_cpu_fails_like_torch(name: str) -> None:
    # torch refuses capturable=True for CPU params at step time, before changing a param (it
    # leaves the state it made, step 0; gradfuse's failed step leaves no state at all).
    results = []
    for mod in (gradfuse.optim, torch.optim):
        p = _param()
        p[0].grad = torch.randn(3)
        before = p[0].detach().clone()
        opt = getattr(mod, name)(p, capturable=True)
        results.append(_raised(opt.step))
        assert torch.equal(p[0].detach(), before)
        if mod is torch.optim:
            assert opt.state[p[0]]["step"].item() == 0.0
        else:
            assert not opt.state.get(p[0])
    assert results[1] is not None
    assert results[0] == results[1]


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradients_refused_like_torch(name: str) -> None:
    results = []
    for mod in (gradfuse.optim, torch.optim):
        p = torch.zeros(4, 3, requires_grad=True)
        p.grad = torch.sparse_coo_tensor([[0, 2]], torch.ones(2, 3), (4, 3), check_invariants=True)
        results.append(_raised(getattr(mod, name)([p]).step))
    assert results[1] is not None
    assert results[0] == results[1]


def _train(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[Any]) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()


OPTS: dict[str, dict[str, Any]] = {
    "Adam": {"amsgrad": True, "weight_decay": 0.1},
    "AdamW": {"amsgrad": True},
    "Adamax": {"weight_decay": 0.1},
    "NAdam": {"decoupled_weight_decay": True, "weight_decay": 0.1},
    "RAdam": {"weight_decay": 0.1},
}


@pytest.mark.parametrize("direction", ["torch->gradfuse", "gradfuse->torch"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str, direction: str) -> None:
    # Train 50 steps with one implementation, checkpoint (through pickle), resume for 50 steps
    # with the other; compare with an uninterrupted torch run.
    params = make_params((1, 7, 33, 0), torch.float64)
    grads = random_grads(params, 100)
    torch_cls, ours_cls = getattr(torch.optim, name), getattr(gradfuse.optim, name)
    first, second = (
        (torch_cls, ours_cls) if direction == "torch->gradfuse" else (ours_cls, torch_cls)
    )
    kw = {"lr": 0.01, **OPTS[name]}

    ps_a = [p.clone().requires_grad_(True) for p in params]
    opt_a = first(ps_a, **kw)
    _train(opt_a, ps_a, grads[:50])
    saved = pickle.loads(pickle.dumps(opt_a.state_dict()))
    ps_b = [p.detach().clone().requires_grad_(True) for p in ps_a]
    opt_b = second(ps_b, **kw)
    opt_b.load_state_dict(saved)
    assert opt_b.state_dict()["param_groups"] == opt_a.state_dict()["param_groups"]
    _train(opt_b, ps_b, grads[50:])

    # The reference makes the same round trip torch -> torch (loading casts some state, e.g.
    # NAdam's mu_product, to the param dtype, whoever loads).
    ps_ref = [p.clone().requires_grad_(True) for p in params]
    opt_ref = torch_cls(ps_ref, foreach=False, **kw)
    _train(opt_ref, ps_ref, grads[:50])
    state = pickle.loads(pickle.dumps(opt_ref.state_dict()))
    opt_ref = torch_cls(ps_ref, foreach=False, **kw)
    opt_ref.load_state_dict(state)
    _train(opt_ref, ps_ref, grads[50:])
    for a, b in zip(ps_b, ps_ref, strict=True):
        tolerances.assert_close(a.detach(), b.detach(), tolerances.TRAJECTORY[torch.float64])
    for i in range(len(params)):
        sa, sr = opt_b.state_dict()["state"][i], opt_ref.state_dict()["state"][i]
        assert sa.keys() == sr.keys()
        for key in sa:
            tolerances.assert_close(sa[key], sr[key], tolerances.TRAJECTORY[torch.float64], key)


@pytest.mark.parametrize(
    ("name", "capturable_or_fused"),
    [(n, {}) for n in NAMES] + [("Adam", {"fused": True}), ("AdamW", {"fused": True})],
    ids=str,
)
def test_state_layout_matches_torch(name: str, capturable_or_fused: dict[str, Any]) -> None:
    # With fused=True torch keeps `step` as float32 on the param's device; gradfuse follows.
    sds = []
    for mod in (gradfuse.optim, torch.optim):
        params = [torch.randn(5, requires_grad=True), torch.randn(2, 3, requires_grad=True)]
        opt = getattr(mod, name)(params, **OPTS[name], **capturable_or_fused)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        sds.append(opt.state_dict())
    ours, theirs = sds
    assert ours["param_groups"] == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys()
    for i in ours["state"]:
        assert ours["state"][i].keys() == theirs["state"][i].keys()
        for key, value in ours["state"][i].items():
            other = theirs["state"][i][key]
            assert (value.dtype, value.device, value.shape) == (
                other.dtype,
                other.device,
                other.shape,
            )


@pytest.mark.parametrize("name", NAMES)
def test_setstate_upgrades_old_checkpoints_like_torch(name: str) -> None:
    # An old checkpoint: groups missing the newer flags, `step` (and mu_product) as numbers.
    results = []
    for mod in (gradfuse.optim, torch.optim):
        p = torch.randn(4, requires_grad=True)
        opt = getattr(mod, name)([p])
        p.grad = torch.randn(4)
        opt.step()
        state = opt.__getstate__()
        for group in state["param_groups"]:
            for key in ("maximize", "foreach", "differentiable", "capturable", "fused"):
                group.pop(key, None)
            group.pop("decoupled_weight_decay", None)
        for s in state["state"].values():
            s["step"] = float(s["step"])
            if "mu_product" in s:
                s["mu_product"] = float(s["mu_product"])
        opt.__setstate__(state)
        group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        steps = {
            k: (v.dtype, v.device, v.item())
            for k, v in opt.state[p].items()
            if k in ("step", "mu_product")
        }
        results.append((group, steps))
    assert results[0] == results[1]


# ---- AMP: every gradfuse optimizer unscales inside its update and skips on inf/NaN ----------

AMP_CASES: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("AdamW", {"lr": 0.01}),
    ("Adamax", {"lr": 0.01}),
    ("NAdam", {"lr": 0.01}),
    ("RAdam", {"lr": 0.01}),
]


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))


@pytest.mark.parametrize("inf_step", [0, 3])
@pytest.mark.parametrize(("name", "kw"), AMP_CASES, ids=str)
def test_grad_scaler_with_injected_inf(name: str, kw: dict[str, Any], inf_step: int) -> None:
    # The same training loop under torch.amp.GradScaler with gradfuse and with torch: gradfuse
    # receives scaled gradients and unscales them in its kernel; at inf_step one gradient is
    # inf, and that step must change nothing at all (params, state, step), exactly as torch's
    # GradScaler skips its optimizer. Both runs must agree throughout.
    torch.manual_seed(0)
    ours_model = _model()
    theirs_model = _model()
    theirs_model.load_state_dict(ours_model.state_dict())
    ours = getattr(gradfuse.optim, name)(ours_model.parameters(), **kw)
    theirs = getattr(torch.optim, name)(theirs_model.parameters(), foreach=False, **kw)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2) for _ in "ab"]
    assert type(ours)._step_supports_amp_scaling
    for step in range(8):
        x = torch.randn(16, 6)
        for model, opt, scaler in zip(
            (ours_model, theirs_model), (ours, theirs), scalers, strict=True
        ):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            scaler.scale(loss).backward()
            if step == inf_step:
                next(model.parameters()).grad[0, 0] = float("inf")
        before_params = [p.detach().clone() for p in ours_model.parameters()]
        before_state = pickle.dumps(ours.state_dict())
        # gradfuse must not unscale the gradients in a separate pass: they reach the kernel
        # still multiplied by the scale.
        scaled = [p.grad.clone() for p in ours_model.parameters()]
        for opt, scaler in zip((ours, theirs), scalers, strict=True):
            scaler.step(opt)
            scaler.update()
        assert all(
            torch.equal(p.grad, g) for p, g in zip(ours_model.parameters(), scaled, strict=True)
        )
        if step == inf_step:
            for p, b in zip(ours_model.parameters(), before_params, strict=True):
                assert torch.equal(p.detach(), b)
            after = ours.state_dict()
            if inf_step == 0:
                # A skipped first step keeps only freshly initialised state (as torch's fused
                # optimizers do): step 0, mu_product 1, zero moments; or none at all (SGD).
                for s in after["state"].values():
                    for key, v in s.items():
                        assert float(v.abs().max()) == (1.0 if key == "mu_product" else 0.0), key
            else:
                assert pickle.dumps(after) == before_state
        assert scalers[0].get_scale() == scalers[1].get_scale()
        for a, b in zip(ours_model.parameters(), theirs_model.parameters(), strict=True):
            tolerances.assert_close(
                a.detach(), b.detach(), tolerances.TRAJECTORY[torch.float32], f"step {step}"
            )
    steps_ours = [s.get("step") for s in ours.state.values()]
    steps_theirs = [s.get("step") for s in theirs.state.values()]
    assert [None if s is None else s.item() for s in steps_ours] == [
        None if s is None else s.item() for s in steps_theirs
    ]


@pytest.mark.parametrize("name", NAMES)
def test_params_without_grad_and_param_groups(name: str) -> None:
    # A param that never gets a gradient gets no state; a second group with its own lr.
    results = []
    for mod, extra in ((gradfuse.optim, {}), (torch.optim, {"foreach": False})):
        torch.manual_seed(1)
        a, b, c = (torch.randn(5, requires_grad=True) for _ in range(3))
        opt = getattr(mod, name)([{"params": [a, b]}, {"params": [c], "lr": 0.1}], lr=0.01, **extra)
        for _ in range(10):
            a.grad, c.grad = torch.randn(5), torch.randn(5)
            opt.step()
        assert len(opt.state[b]) == 0
        results.append([t.detach().clone() for t in (a, b, c)])
    for x, y in zip(*results, strict=True):
        tolerances.assert_close(x, y, tolerances.TRAJECTORY[torch.float32])


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler(name: str) -> None:
    results = []
    for mod, extra in ((gradfuse.optim, {}), (torch.optim, {"foreach": False})):
        torch.manual_seed(2)
        p = torch.randn(9, requires_grad=True)
        opt = getattr(mod, name)([p], lr=0.05, **extra)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        for _ in range(10):
            p.grad = torch.randn(9)
            opt.step()
            sched.step()
        results.append(p.detach().clone())
    tolerances.assert_close(results[0], results[1], tolerances.TRAJECTORY[torch.float32])
