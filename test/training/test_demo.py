"""``page4d-demo`` end to end: the real node over DDS with the shipped model; outputs recorded, evaluated."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(600)]

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "page4d_ros" / "models" / "page4d_small.safetensors"


def test_demo_runs_the_node_and_writes_report(spawn_process, tmp_path: Path) -> None:
    from PIL import Image

    from page4d_ros.evaluation.protocol import load_prediction_bag

    assert SHIPPED_MODEL.is_file(), "the package must ship page4d_ros/models/page4d_small.safetensors"
    out = tmp_path / "demo"
    process = spawn_process(
        "-m",
        "page4d_ros.tools.demo",
        "--out",
        str(out),
        "--frames",
        "12",
        "--width",
        "160",
        "--height",
        "120",
        "--window-size",
        "4",
        "--window-stride",
        "4",
        "--threads",
        "1",
        "--domain-id",
        os.environ["ROS_DOMAIN_ID"],
    )
    status = process.wait(timeout=540)
    log = (tmp_path / "proc0.log").read_text()
    assert status == 0, log[-4000:]
    prediction = load_prediction_bag(out / "output_bag")
    # 12 frames in windows of 4 with stride 4: every frame is published exactly once.
    assert len(prediction.depth) == 12
    assert len(prediction.poses) == 12
    assert len(prediction.dynamic_mask) == 12
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["result"]["frames"]["depth"] == 12
    assert 0.0 <= metrics["result"]["depth"]["delta_1"] <= 1.0
    assert metrics["timing"]["frames_output"] == 12
    with Image.open(out / "report.png") as report:
        width, height = report.size
    assert width > 4 * height  # five panels side by side
    assert (out / "input_bag" / "metadata.yaml").is_file()


def test_demo_refuses_to_overwrite_an_earlier_run(tmp_path: Path, capsys) -> None:
    from page4d_ros.tools.demo import main

    (tmp_path / "output_bag").mkdir()
    assert main(["--out", str(tmp_path)]) == 2
    assert "earlier run" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "fresh"), "--frames", "4", "--window-size", "8"]) == 2
