"""A stand-in ``torchvision`` that lets timm's optimizer factory import beside the CPU torch.

Why: timm imports torchvision unconditionally (``import timm`` loads ``timm.layers``,
``timm.models`` and ``timm.data``, which import torchvision's transforms, datasets and
``FrozenBatchNorm2d``), but torchvision's PyPI wheels are CUDA builds that do not load next to
the CPU build of torch that the test environment has. ``timm.optim``, all that
``gradfuse.integrations.timm`` uses, never calls torchvision, so the tests put these modules in
``sys.modules`` while they import and use timm, and take them out again afterwards.

Only what timm 1.0.31's import path touches is here (found by importing ``timm.optim`` through a
recording finder); what timm imports inside ``try: ... except ImportError`` is left out, as if
the installed torchvision lacked it. ``InterpolationMode`` is torchvision's enum (timm keys
dicts by its members at import); every other name is a class (timm subclasses ``ToTensor`` and
uses ``FrozenBatchNorm2d`` in ``isinstance``) that refuses to be instantiated: a test that
reached real torchvision code fails with that reason instead of running against a stub.
"""

from __future__ import annotations

import enum
import importlib.machinery
import sys
import types
from typing import Any, NoReturn

# module -> the names timm's import path takes from it
_NAMES: dict[str, tuple[str, ...]] = {
    "torchvision": (),
    "torchvision.datasets": (
        "CIFAR10",
        "CIFAR100",
        "FashionMNIST",
        "ImageFolder",
        "KMNIST",
        "MNIST",
    ),
    "torchvision.ops": (),
    "torchvision.ops.misc": ("FrozenBatchNorm2d",),
    "torchvision.transforms": ("ToTensor",),
    "torchvision.transforms.functional": ("InterpolationMode",),
}


class InterpolationMode(enum.Enum):
    """torchvision.transforms.functional.InterpolationMode's members and values."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class _Unavailable:
    def __init__(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(
            f"torchvision.{type(self).__qualname__} is a test stub (tests/integrations/"
            f"_torchvision_stub.py): the real torchvision does not load here"
        )


def install() -> list[str]:
    """Put the stub modules in ``sys.modules`` (none may be there); returns their names."""
    assert not any(m == "torchvision" or m.startswith("torchvision.") for m in sys.modules)
    for name, attrs in _NAMES.items():
        module = types.ModuleType(name)
        # A spec and a path, as an imported package has: importlib.util.find_spec reads a
        # module's __spec__ from sys.modules, and raises ValueError where it is None.
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        for attr in attrs:
            if attr == "InterpolationMode":
                setattr(module, attr, InterpolationMode)
            else:
                setattr(module, attr, type(attr, (_Unavailable,), {"__module__": name}))
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        sys.modules[name] = module
    return list(_NAMES)
