"""The layers import only downwards: ros -> pipeline -> model; only ros/ touches rclpy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "page4d_ros"

# For each subpackage: module prefixes it must never import.
FORBIDDEN = {
    "model": (
        "rclpy",
        "page4d_ros.ros",
        "page4d_ros.pipeline",
        "page4d_ros.synthetic",
        "page4d_ros.tools",
        "page4d_ros.training",
    ),
    "pipeline": (
        "rclpy",
        "page4d_ros.ros",
        "page4d_ros.synthetic",
        "page4d_ros.tools",
        "page4d_ros.training",
    ),
    "synthetic": ("rclpy", "page4d_ros.ros", "page4d_ros.tools"),
    "evaluation": ("rclpy", "page4d_ros.ros", "page4d_ros.tools", "page4d_ros.training"),
    "training": ("rclpy", "page4d_ros.ros", "page4d_ros.tools"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                base = path.relative_to(PACKAGE.parent).with_suffix("").parts[: -node.level]
                names.add(".".join((*base, node.module)) if node.module else ".".join(base))
            elif node.module:
                names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_downwards(layer):
    """No file of the layer imports a forbidden module (rclpy, or a layer above it)."""
    violations = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer]):
                violations.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not violations, "\n".join(violations)
