"""The ``page4d-eval`` command line, end to end with ``page4d-synth`` outputs."""

from __future__ import annotations

import json

import pytest

from page4d_ros.synthetic import load_sequence, write_npz
from page4d_ros.tools import evaluate, synth


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory):
    """A 12-frame 96x72 ground-truth bag written by page4d-synth."""
    out = tmp_path_factory.mktemp("gt") / "walk"
    assert (
        synth.main(
            ["--seed", "5", "--frames", "12", "--out", str(out), "--width", "96", "--height", "72", "--quiet"]
        )
        == 0
    )
    return out


def test_ground_truth_against_itself(synthetic_bag, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code = evaluate.main(
        ["--pred", str(synthetic_bag), "--gt", str(synthetic_bag), "--json", str(report_path)]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "| walk" in table and "0.000" in table and "1.000" in table
    report = json.loads(report_path.read_text())
    (sequence,) = report["sequences"]
    assert sequence["frames"] == {"gt": 12, "pose": 12, "depth": 12, "mask": 12}
    assert sequence["pose"]["ate_rmse"] < 1e-9 and sequence["depth"]["abs_rel"] == 0.0
    assert sequence["mask"]["iou"] == 1.0 and report["mean"]["ATE"] < 1e-9


def test_known_depth_perturbation_and_several_sequences(synthetic_bag, tmp_path):
    perturbed = load_sequence(synthetic_bag)
    perturbed.depth = (perturbed.depth * 1.5).astype("float32")
    pred = write_npz(perturbed, tmp_path / "pred.npz")
    report_path = tmp_path / "report.json"
    args = [
        "--pred",
        str(pred),
        "--gt",
        str(synthetic_bag),
        "--pred",
        str(synthetic_bag),
        "--gt",
        str(synthetic_bag),
    ]
    assert evaluate.main([*args, "--depth-align", "none", "--align", "se3", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    first, second = report["sequences"]
    # |1.5 g - g| / g = 0.5 on every pixel; 1.5 > 1.25, so no pixel counts for delta < 1.25.
    assert first["depth"]["abs_rel"] == pytest.approx(0.5, rel=1e-6)
    assert first["depth"]["delta_1"] == 0.0
    assert second["depth"]["abs_rel"] == 0.0
    assert report["mean"]["AbsRel"] == pytest.approx(0.25, rel=1e-6)


def test_errors(synthetic_bag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--pred", str(synthetic_bag), "--gt", str(synthetic_bag), "--gt", str(synthetic_bag)])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--pred", str(tmp_path / "missing"), "--gt", str(synthetic_bag)])
    assert exit_info.value.code == 2
    assert "cannot evaluate" in capsys.readouterr().err
    # A prediction whose stamps match no ground-truth frame: nothing to score, exit code 1.
    shifted = load_sequence(synthetic_bag)
    shifted.stamps_ns = shifted.stamps_ns + 10**9 * 3600
    pred = write_npz(shifted, tmp_path / "late.npz")
    assert evaluate.main(["--pred", str(pred), "--gt", str(synthetic_bag)]) == 1


def test_ground_truth_frame_selection(synthetic_bag, tmp_path):
    report_path = tmp_path / "report.json"
    args = ["--pred", str(synthetic_bag), "--gt", str(synthetic_bag), "--json", str(report_path)]
    assert evaluate.main([*args, "--gt-start", "1", "--gt-stride", "3"]) == 0
    (sequence,) = json.loads(report_path.read_text())["sequences"]
    # Frames 1, 4, 7, 10 of 12.
    assert sequence["frames"] == {"gt": 4, "pose": 4, "depth": 4, "mask": 4}
    with pytest.raises(SystemExit):
        evaluate.main([*args, "--gt-start", "50"])
