"""Test shim: a Python process started with this folder on ``PYTHONPATH`` cannot import the modules named in
``PAGE4D_TEST_HIDE_MODULES`` (comma-separated top-level names, e.g. ``tf2_ros,message_filters``).

The node imports tf2_ros and message_filters where a ROS install has them and falls back to its own code
where it does not (a venv of PyPI wheels). The CI venv has both, so the tests start one node process with
them hidden to run the fallbacks: Python imports ``sitecustomize`` at start-up, and this one puts a finder in
front of ``sys.meta_path`` that answers those names with ``ModuleNotFoundError``, exactly what a missing
package raises. Nothing in the package knows about it; it exists only under ``test/``.
"""

from __future__ import annotations

import importlib.abc
import os
import sys


class _HiddenModules(importlib.abc.MetaPathFinder):
    """Refuses to find the hidden top-level packages and everything below them."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        """Raise ``ModuleNotFoundError`` for a hidden module; None lets the other finders look."""
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(
                f"No module named '{fullname}' (hidden by the test shim)", name=fullname
            )
        return None


_names = frozenset(
    name.strip() for name in os.environ.get("PAGE4D_TEST_HIDE_MODULES", "").split(",") if name.strip()
)
if _names:
    sys.meta_path.insert(0, _HiddenModules(_names))
