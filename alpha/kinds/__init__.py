"""Task kinds: everything that differs between classification and segmentation.

A kind module provides the Label Studio label config, the conversion between Label Studio
results and alpha's labels, and the model. The rest of alpha only talks to this interface.
"""

from __future__ import annotations

from types import ModuleType

from alpha.errors import ConfigError

KINDS = ("classification",)


def get_kind(name: str) -> ModuleType:
    """The module implementing task kind `name`."""
    if name == "classification":
        from alpha.kinds import classification

        return classification
    raise ConfigError(f"Unknown task kind {name!r}: choose one of {', '.join(KINDS)}.")
