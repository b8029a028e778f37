"""Reuse of per-frame work across overlapping windows (``FrameTokenCache``): bitwise equal to a recompute."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from page4d_ros.model import FrameTokenCache, build_model, load_checkpoint

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "page4d_ros" / "models" / "page4d_small.safetensors"
WINDOW, STRIDE = 8, 4


def _assert_bitwise_equal(cached: dict, fresh: dict) -> None:
    """Every tensor output (and each refinement step of the camera head) is bitwise identical."""
    assert set(cached) == set(fresh)
    for key, value in fresh.items():
        if key == "pose_enc_list":
            assert len(cached[key]) == len(value)
            for step_cached, step_fresh in zip(cached[key], value):
                assert torch.equal(step_cached, step_fresh), key
        elif isinstance(value, torch.Tensor):
            assert cached[key].dtype == value.dtype, key
            assert torch.equal(cached[key], value), key


def _stream(model: torch.nn.Module, frames: torch.Tensor, **options) -> tuple[list[dict], FrameTokenCache]:
    """Run windows of 8 with stride 4 over ``frames`` [N, 3, H, W] with one cache; keys are frame indices."""
    cache = FrameTokenCache()
    outputs = []
    with torch.inference_mode():
        for start in range(0, frames.shape[0] - WINDOW + 1, STRIDE):
            keys = list(range(start, start + WINDOW))
            window = frames[start : start + WINDOW][None]
            outputs.append(model(window, frame_keys=keys, frame_cache=cache, **options))
    return outputs, cache


def _recompute(model: torch.nn.Module, frames: torch.Tensor, **options) -> list[dict]:
    with torch.inference_mode():
        return [
            model(frames[start : start + WINDOW][None], **options)
            for start in range(0, frames.shape[0] - WINDOW + 1, STRIDE)
        ]


@pytest.fixture(scope="module")
def random_model(make_tiny_model_config):
    """A random tiny PAGE-4D, mask bias on, its mask head reading frame block 0 (the cached one)."""
    torch.manual_seed(3)
    config = make_tiny_model_config(depth=3, mask_block=0, mask_global_blocks=[1, 3], dense_dynamics=True)
    return build_model(config)


def test_streaming_windows_equal_a_full_recompute_random_model(random_model):
    torch.manual_seed(4)
    frames = torch.rand(16, 3, 42, 56)
    streamed, cache = _stream(random_model, frames)
    for cached, fresh in zip(streamed, _recompute(random_model, frames)):
        _assert_bitwise_equal(cached, fresh)
    # 3 windows over 16 frames: every frame encoded once; each later window reuses 4 encodings and 3 frame
    # block 0 outputs (its first frame was a non-reference frame before, so that block runs again).
    assert (cache.encoder_misses, cache.encoder_hits) == (16, 8)
    assert (cache.block_misses, cache.block_hits) == (18, 6)


def test_streaming_windows_equal_a_full_recompute_shipped_model():
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"the shipped model {SHIPPED_MODEL} is absent")
    model, _ = load_checkpoint(SHIPPED_MODEL)
    torch.manual_seed(5)
    frames = torch.rand(12, 3, 84, 112)
    streamed, cache = _stream(model, frames, compute_points=False)
    for cached, fresh in zip(streamed, _recompute(model, frames, compute_points=False)):
        _assert_bitwise_equal(cached, fresh)
    assert cache.encoder_hits == 4 and cache.block_hits == 3


def test_a_reused_key_with_other_pixels_is_recomputed(random_model):
    torch.manual_seed(6)
    first, second = torch.rand(2, 1, 4, 3, 28, 42)
    cache = FrameTokenCache()
    with torch.inference_mode():
        random_model(first, frame_keys=[0, 1, 2, 3], frame_cache=cache)
        reused = random_model(second, frame_keys=[0, 1, 2, 3], frame_cache=cache)
        fresh = random_model(second)
    _assert_bitwise_equal(reused, fresh)
    assert cache.encoder_hits == 0 and cache.block_hits == 0


def test_cache_is_bounded_and_emptied_by_size_change_and_clear(random_model):
    torch.manual_seed(7)
    cache = FrameTokenCache(max_frames=3)
    with torch.inference_mode():
        random_model(torch.rand(1, 4, 3, 28, 42), frame_keys=["a", "b", "c", "d"], frame_cache=cache)
        assert len(cache) == 3
        random_model(torch.rand(1, 2, 3, 42, 42), frame_keys=["c", "d"], frame_cache=cache)
    assert cache.encoder_hits == 0 and len(cache) == 2
    cache.clear()
    assert len(cache) == 0


def test_cache_misuse_is_refused(random_model):
    cache = FrameTokenCache()
    images = torch.rand(1, 2, 3, 28, 42)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="one key per frame"):
            random_model(images, frame_keys=[0], frame_cache=cache)
        with pytest.raises(ValueError, match="batch size 1"):
            random_model(torch.rand(2, 2, 3, 28, 42), frame_keys=[0, 1], frame_cache=cache)
    with pytest.raises(ValueError, match="for inference"):
        random_model(images, frame_keys=[0, 1], frame_cache=cache)
    with pytest.raises(ValueError, match="max_frames"):
        FrameTokenCache(max_frames=0)


def test_training_mode_batches_frames_and_matches_eval(random_model):
    """The batched (training) encoder path computes the same function as the per-frame one."""
    torch.manual_seed(8)
    images = torch.rand(1, 4, 3, 28, 42)
    with torch.no_grad():
        per_frame = random_model(images)
        random_model.train()
        try:
            batched = random_model(images)
        finally:
            random_model.eval()
    for key in ("pose_enc", "depth", "dynamics_map"):
        torch.testing.assert_close(batched[key], per_frame[key], rtol=1e-4, atol=1e-5)
