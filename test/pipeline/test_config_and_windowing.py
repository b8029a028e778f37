"""PipelineConfig validation, the bounded input queue, the keyframe gate and the image-motion estimate."""

from __future__ import annotations

import numpy as np
import pytest

from page4d_ros.pipeline import Frame, PipelineConfig
from page4d_ros.pipeline.windowing import FrameQueue, KeyframeGate, grey_thumbnail, image_shift_px


def test_defaults_follow_the_node_parameters():
    config = PipelineConfig()
    config.validate()
    assert (config.window_size, config.window_stride, config.model_long_side) == (8, 4, 518)
    assert (config.min_depth_m, config.max_depth_m, config.points_stride) == (0.1, 20.0, 2)
    assert PipelineConfig.from_dict(config.to_dict()) == config


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown pipeline config keys \['window_sise'\]"):
        PipelineConfig.from_dict({"window_sise": 4})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window_stride": 9}, "must not exceed window_size"),
        ({"model_long_side": 500}, "multiple of 14"),
        ({"resize_mode": "stretch"}, "resize_mode"),
        ({"scale_source": "camera_height"}, "camera_height_m > 0"),
        ({"scale_source": "gps"}, "scale_source"),
        ({"min_depth_m": 5.0, "max_depth_m": 1.0}, "below max_depth_m"),
        ({"buffer_max_frames": 4}, "must hold a window"),
        ({"window_size": 40}, "window_size"),
        ({"conf_percentile": 120.0}, "conf_percentile"),
        ({"mask_dilate_px": 1.5}, "integer"),
        ({"mask_geometric": "yes"}, "true or false"),
        ({"scale_factor": 0.0}, "scale_factor"),
    ],
)
def test_validation_messages(changes, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**changes).validate()


def test_runtime_tunables_are_a_known_subset():
    fields = set(PipelineConfig().to_dict())
    tunables = PipelineConfig.runtime_tunable_fields()
    assert tunables <= fields
    assert "window_size" not in tunables and "scale_source" not in tunables
    assert "conf_threshold" in tunables and "mask_threshold" in tunables


def _frame(stamp_ns, rgb=None):
    return Frame(rgb if rgb is not None else np.zeros((8, 8, 3), np.uint8), stamp_ns, "cam")


def test_queue_drops_oldest_and_counts():
    queue = FrameQueue(3)
    dropped = [queue.put(_frame(i)) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert queue.dropped == 2
    assert [queue.pop().stamp_ns for _ in range(3)] == [2, 3, 4]
    assert queue.pop() is None
    for i in range(3):
        queue.put(_frame(i))
    queue.resize(1)
    assert len(queue) == 1 and queue.dropped == 4


def _textured(shift_x=0, shift_y=0):
    rng = np.random.default_rng(0)
    base = (rng.uniform(0, 255, (40, 50)) > 128).astype(np.uint8) * 200
    base = np.kron(base, np.ones((4, 4), np.uint8))  # 160 x 200 blocks of 4 px
    shifted = np.roll(np.roll(base, shift_y, axis=0), shift_x, axis=1)
    return np.repeat(shifted[..., None], 3, axis=2)


def test_image_shift_matches_a_known_translation():
    cell = 200 / grey_thumbnail(_textured()).shape[1]
    shift = image_shift_px(grey_thumbnail(_textured()), grey_thumbnail(_textured(12, -9)), cell)
    assert shift == pytest.approx(np.hypot(12, 9), abs=cell)
    assert image_shift_px(grey_thumbnail(_textured()), grey_thumbnail(_textured()), cell) == 0.0


def test_keyframe_gate_interval_and_motion():
    gate = KeyframeGate()
    assert gate.accept(_frame(0), 0.1, 0.0)
    assert not gate.accept(_frame(50_000_000), 0.1, 0.0)
    assert gate.accept(_frame(100_000_000), 0.1, 0.0)
    gate.reset()
    assert gate.accept(_frame(0, _textured()), 0.0, 10.0)
    assert not gate.accept(_frame(1, _textured(2, 0)), 0.0, 10.0)
    assert gate.accept(_frame(2, _textured(24, 0)), 0.0, 10.0)
