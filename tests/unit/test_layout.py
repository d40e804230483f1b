"""The test tree's own rules, checked so CI's single pytest run can collect everything."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique() -> None:
    """pytest's default import mode keys modules by basename (the folders have no
    ``__init__.py``), so ``unit/test_x.py`` beside ``integration/test_x.py`` fails collection
    of the whole suite."""
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], names
