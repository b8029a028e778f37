"""Attention building blocks: the biased-rows attention of PAGE-4D, RoPE, and the mask head wiring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from page4d_ros.model.layers import RotaryPositionEmbedding2D, attention_with_query_key_bias, patch_positions


def _explicit_biased_attention(q, k, v, query_bias, key_bias):
    """Reference: softmax(q k^T / sqrt(D) + r c^T) v with the full N x N bias written out."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    logits = logits + (query_bias[:, None, :, None] * key_bias[:, None, None, :])
    return torch.softmax(logits, dim=-1) @ v


def _special_rows(frames: int, tokens_per_frame: int, special: int) -> torch.Tensor:
    """Indices of the first ``special`` tokens of every frame (where PAGE-4D's query bias lives)."""
    return (torch.arange(frames)[:, None] * tokens_per_frame + torch.arange(special)).reshape(-1)


def _page4d_like_biases(batch: int, frames: int, tokens_per_frame: int, special: int, alpha: float):
    generator = torch.Generator().manual_seed(3)
    query_bias = torch.zeros(batch, frames, tokens_per_frame, dtype=torch.float64)
    query_bias[:, :, :special] = alpha
    key_bias = torch.zeros(batch, frames, tokens_per_frame, dtype=torch.float64)
    key_bias[:, :, special:] = (
        torch.rand(batch, frames, tokens_per_frame - special, generator=generator) - 0.5
    )
    return query_bias.reshape(batch, -1), key_bias.reshape(batch, -1)


@pytest.mark.parametrize("head_dim", [16, 64, 24])
def test_biased_rows_equal_explicit_mask_fp64(head_dim):
    generator = torch.Generator().manual_seed(0)
    batch, heads, frames, per_frame = 2, 3, 3, 13
    shape = (batch, heads, frames * per_frame, head_dim)
    q, k, v = (torch.randn(shape, dtype=torch.float64, generator=generator) for _ in range(3))
    query_bias, key_bias = _page4d_like_biases(batch, frames, per_frame, 5, 64.0)
    expected = _explicit_biased_attention(q, k, v, query_bias, key_bias)
    actual = attention_with_query_key_bias(q, k, v, query_bias, key_bias, _special_rows(frames, per_frame, 5))
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    # The bias really changes the special-token rows and leaves patch-token rows alone.
    plain = F.scaled_dot_product_attention(q, k, v)
    rows = query_bias[0] != 0
    assert (actual - plain)[:, :, rows].abs().max() > 1e-2
    torch.testing.assert_close(actual[:, :, ~rows], plain[:, :, ~rows], rtol=1e-12, atol=1e-12)


def test_biased_rows_keep_bias_accurate_in_bfloat16():
    generator = torch.Generator().manual_seed(1)
    batch, heads, frames, per_frame, head_dim = 1, 2, 2, 21, 64
    shape = (batch, heads, frames * per_frame, head_dim)
    q, k, v = (torch.randn(shape, dtype=torch.float64, generator=generator) for _ in range(3))
    query_bias, key_bias = _page4d_like_biases(batch, frames, per_frame, 5, 64.0)
    expected = _explicit_biased_attention(q, k, v, query_bias, key_bias)
    q16, k16, v16 = (t.to(torch.bfloat16) for t in (q, k, v))
    rows = _special_rows(frames, per_frame, 5)
    actual = attention_with_query_key_bias(q16, k16, v16, query_bias.float(), key_bias.float(), rows)
    # Error budget of bf16 q/k/v themselves: the biased rows are computed in float32, so the bias adds
    # almost nothing (a bias rounded to bf16 would be ~5x worse on this input: 0.047 vs 0.0096).
    baseline = _explicit_biased_attention(q16.double(), k16.double(), v16.double(), query_bias, key_bias).to(
        torch.bfloat16
    )
    error = (actual.double() - expected).abs().max()
    baseline_error = (baseline.double() - expected).abs().max()
    assert error <= 1.5 * baseline_error


def test_rope_leaves_special_tokens_and_matches_rotation_formula():
    rope = RotaryPositionEmbedding2D(100.0)
    positions = patch_positions(2, 3, num_special=2)
    assert positions.tolist() == [[0, 0], [0, 0], [1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]
    head_dim = 8
    tables = rope.tables(positions, head_dim, torch.float64)
    tokens = torch.randn(1, 1, positions.shape[0], head_dim, dtype=torch.float64)
    rotated = tables.apply(tokens)
    torch.testing.assert_close(rotated[:, :, :2], tokens[:, :, :2])
    # Token (row 2, col 3): channels (0, 2) rotate by angle 2 * 100^0, channels (1, 3) by 2 * 100^-0.5;
    # channels (4, 6) by 3 * 100^0 and (5, 7) by 3 * 100^-0.5 (rotate-half pairs c with c + 2 within a half).
    token = tokens[0, 0, -1]
    expected = torch.empty(head_dim, dtype=torch.float64)
    for first, second, angle in [(0, 2, 2.0), (1, 3, 2.0 / 10), (4, 6, 3.0), (5, 7, 3.0 / 10)]:
        cos, sin = math.cos(angle), math.sin(angle)
        expected[first] = token[first] * cos - token[second] * sin
        expected[second] = token[second] * cos + token[first] * sin
    torch.testing.assert_close(rotated[0, 0, -1], expected, rtol=1e-6, atol=1e-6)


def test_rope_rejects_head_dim_not_multiple_of_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        RotaryPositionEmbedding2D().tables(patch_positions(1, 1, 1), 6, torch.float32)


def test_biased_rows_under_cpu_autocast_return_the_autocast_dtype():
    generator = torch.Generator().manual_seed(2)
    shape = (1, 2, 42, 64)
    q, k, v = (torch.randn(shape, dtype=torch.float64, generator=generator) for _ in range(3))
    query_bias, key_bias = _page4d_like_biases(1, 2, 21, 5, 64.0)
    expected = _explicit_biased_attention(q, k, v, query_bias, key_bias)
    q16, k16, v16 = (t.to(torch.bfloat16) for t in (q, k, v))
    baseline = _explicit_biased_attention(q16.double(), k16.double(), v16.double(), query_bias, key_bias)
    baseline_error = (baseline.to(torch.bfloat16).double() - expected).abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows = _special_rows(2, 21, 5)
        actual = attention_with_query_key_bias(q.float(), k.float(), v.float(), query_bias, key_bias, rows)
    assert actual.dtype == torch.bfloat16
    assert (actual.double() - expected).abs().max() <= 1.5 * baseline_error


def test_biased_rows_gradients_equal_explicit_mask_fp64():
    """Training goes through the same function: its gradients match the explicit N x N formulation."""
    generator = torch.Generator().manual_seed(4)
    shape = (1, 2, 3 * 11, 16)
    inputs = [torch.randn(shape, dtype=torch.float64, generator=generator) for _ in range(3)]
    query_bias, key_bias = _page4d_like_biases(1, 3, 11, 5, 64.0)
    ours = [t.clone().requires_grad_() for t in inputs]
    theirs = [t.clone().requires_grad_() for t in inputs]
    weights = torch.randn(shape, dtype=torch.float64, generator=generator)
    (
        attention_with_query_key_bias(*ours, query_bias, key_bias, _special_rows(3, 11, 5)) * weights
    ).sum().backward()
    (_explicit_biased_attention(*theirs, query_bias, key_bias) * weights).sum().backward()
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-10, atol=1e-10)
