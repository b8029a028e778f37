"""The ``page4d-synth`` command line."""

from __future__ import annotations

import numpy as np
import pytest

from page4d_ros.synthetic import generate_sequence, load_sequence
from page4d_ros.tools import synth


@pytest.mark.parametrize("fmt", ["mcap", "tum", "npz"])
def test_writes_each_format_loadable_and_equal_to_the_generator(fmt, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "--seed",
        "9",
        "--frames",
        "3",
        "--out",
        str(out),
        "--format",
        fmt,
        "--width",
        "40",
        "--height",
        "30",
    ]
    assert synth.main([*args, "--motion", "handheld", "--scene", "outdoor", "--movers", "2"]) == 0
    assert "wrote 3 frames 40x30" in capsys.readouterr().out
    loaded = load_sequence(out / "sequence.npz" if fmt == "npz" else out)
    expected = generate_sequence(9, 3, 40, 30, camera_motion="handheld", scene="outdoor", num_movers=2)
    np.testing.assert_array_equal(loaded.rgb, expected.rgb)
    np.testing.assert_array_equal(loaded.stamps_ns, expected.stamps_ns)
    np.testing.assert_allclose(loaded.T_world_cam, expected.T_world_cam, atol=1e-8)
    assert loaded.camera_motion == "handheld" and loaded.scene == "outdoor" and loaded.seed == 9


def test_chunked_output_matches_one_render(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "CHUNK_FRAMES", 2)
    out = tmp_path / "bag"
    assert (
        synth.main(["--seed", "4", "--frames", "5", "--out", str(out), "--width", "32", "--height", "24"])
        == 0
    )
    loaded = load_sequence(out)
    expected = generate_sequence(4, 5, 32, 24)
    np.testing.assert_array_equal(loaded.rgb, expected.rgb)
    np.testing.assert_array_equal(loaded.depth, expected.depth)
    assert loaded.metadata["num_movers"] == 3


def test_bad_arguments_exit_with_code_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "bag"
    with pytest.raises(SystemExit) as exit_info:
        synth.main(["--seed", "1", "--frames", "2", "--out", str(out), "--movers", "99"])
    assert exit_info.value.code == 2
    assert "num_movers" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    with pytest.raises(SystemExit):
        synth.main(["--seed", "1", "--frames", "2", "--out", str(out)])
    with pytest.raises(SystemExit):
        synth.main(["--seed", "1", "--frames", "2", "--out", str(tmp_path / "x"), "--motion", "teleport"])


def test_runs_as_a_module(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "seq.npz"
    args = [
        "--seed",
        "1",
        "--frames",
        "1",
        "--format",
        "npz",
        "--width",
        "16",
        "--height",
        "12",
        "--out",
        str(out),
    ]
    completed = subprocess.run(
        [sys.executable, "-m", "page4d_ros.tools.synth", *args], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert load_sequence(out).rgb.shape == (1, 12, 16, 3)
