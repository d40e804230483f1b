"""Task kinds: everything that differs between classification and segmentation.

Each kind is one module implementing `alpha.kinds.base.Kind` (label config, targets, model,
scores, pre-annotations, reading annotations), registered here by name. The rest of alpha
only talks to that interface, through `get_kind`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, cast

from alpha.errors import ConfigError

if TYPE_CHECKING:
    from alpha.kinds.base import Kind

KIND_MODULES: dict[str, str] = {
    "classification": "alpha.kinds.classification",
    "semantic": "alpha.kinds.semantic",
    "instance": "alpha.kinds.instance",
    "panoptic": "alpha.kinds.panoptic",
}
"""Kind name -> the module that implements it (imported on first use: torch is heavy)."""

KINDS: tuple[str, ...] = tuple(KIND_MODULES)


def get_kind(name: str) -> Kind:
    """The module implementing task kind `name`."""
    if name not in KIND_MODULES:
        raise ConfigError(f"Unknown task kind {name!r}: choose one of {', '.join(KINDS)}.")
    return cast("Kind", import_module(KIND_MODULES[name]))
