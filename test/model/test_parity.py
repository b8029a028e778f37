"""Numerical parity with the upstream code on the small reference fixtures (vggt_spec.md section 12)."""

from __future__ import annotations

import pytest
import torch

from page4d_ros.model import pose_encoding_to_extri_intri

FP64_TOLERANCE = 1e-6
TOKEN_LAYERS = (4, 9, 11, 17, 19, 23)
DENSE_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
# fp32-vs-fp64 of the upstream code itself (spec section 12): up to 2e-7 pose_enc, 1.2e-5 depth, 2.7e-5
# points. Ours must be within the same bounds (pose_enc with headroom for other BLAS roundings).
FP32_TOLERANCE = {
    "pose_enc": 1e-6,
    "depth": 1.2e-5,
    "depth_conf": 1.2e-5,
    "world_points": 2.7e-5,
    "world_points_conf": 2.7e-5,
}


def _run_with_dino_capture(model, images, **kwargs):
    captured = []  # the encoder runs once per frame in eval mode
    handle = model.aggregator.patch_embed.register_forward_hook(
        lambda module, inputs, output: captured.append(output)
    )
    try:
        with torch.inference_mode():
            outputs = model(images, **kwargs)
    finally:
        handle.remove()
    return outputs, torch.cat(captured, dim=0)


def test_vggt_fp64_matches_upstream(vggt_ref, small_vggt, rel_err):
    model = small_vggt(torch.float64)
    outputs, dino_tokens = _run_with_dino_capture(
        model, vggt_ref["images"].double(), keep_token_layers=TOKEN_LAYERS
    )
    reference = vggt_ref["outputs_fp64"]
    for key in DENSE_KEYS:
        assert outputs[key].shape == reference[key].shape, key
        assert rel_err(outputs[key], reference[key]) <= FP64_TOLERANCE, key
    assert len(outputs["pose_enc_list"]) == len(reference["pose_enc_list"]) == 4
    for mine, theirs in zip(outputs["pose_enc_list"], reference["pose_enc_list"]):
        assert rel_err(mine, theirs) <= FP64_TOLERANCE
    assert rel_err(dino_tokens, reference["dino_x_norm_patchtokens"]) <= FP64_TOLERANCE
    for layer in TOKEN_LAYERS:
        assert rel_err(outputs["aggregated_tokens"][layer], reference["aggregated_tokens"][layer]) <= (
            FP64_TOLERANCE
        ), layer
    extrinsics, intrinsics = pose_encoding_to_extri_intri(outputs["pose_enc"], vggt_ref["images"].shape[-2:])
    assert rel_err(extrinsics, reference["extrinsic"]) <= FP64_TOLERANCE
    # The upstream intrinsics tensor is float32 (allocated with the default dtype), hence ~3e-8 here.
    assert rel_err(intrinsics, reference["intrinsic"]) <= FP64_TOLERANCE
    assert torch.equal(outputs["images"], vggt_ref["images"].double())
    assert "dynamics_map" not in outputs


def test_vggt_single_frame_fp64_matches_upstream(vggt_ref, small_vggt, rel_err):
    model = small_vggt(torch.float64)
    images = vggt_ref["images"][:, :1].double()
    outputs, dino_tokens = _run_with_dino_capture(model, images, keep_token_layers=TOKEN_LAYERS)
    reference = vggt_ref["outputs_fp64_single_frame"]
    for key in DENSE_KEYS:
        assert outputs[key].shape[1] == 1
        assert rel_err(outputs[key], reference[key]) <= FP64_TOLERANCE, key
    assert rel_err(dino_tokens, reference["dino_x_norm_patchtokens"]) <= FP64_TOLERANCE
    for layer in TOKEN_LAYERS:
        assert rel_err(outputs["aggregated_tokens"][layer], reference["aggregated_tokens"][layer]) <= (
            FP64_TOLERANCE
        )


def test_vggt_fp32_within_upstream_precision(vggt_ref, small_vggt, rel_err):
    model = small_vggt(torch.float32)
    with torch.inference_mode():
        outputs = model(vggt_ref["images"])
    reference = vggt_ref["outputs_fp64"]
    for key, tolerance in FP32_TOLERANCE.items():
        assert outputs[key].dtype == torch.float32
        assert rel_err(outputs[key], reference[key]) <= tolerance, key


@pytest.mark.parametrize("alpha", [0, 64])
def test_page4d_fp64_matches_upstream(alpha, page4d_ref, small_page4d, rel_err):
    model = small_page4d(float(alpha), torch.float64)
    captured = {}
    model.aggregator.spatial_mask_head.register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("mask", output)
    )
    with torch.inference_mode():
        outputs = model(page4d_ref["images"].double())
    reference = page4d_ref["outputs_fp64"][f"alpha{alpha}"]
    for key in DENSE_KEYS:
        assert rel_err(outputs[key], reference[key]) <= FP64_TOLERANCE, key
    for mine, theirs in zip(outputs["pose_enc_list"], reference["pose_enc_list"]):
        assert rel_err(mine, theirs) <= FP64_TOLERANCE
    cam_row_mask, key_vis = captured["mask"]
    assert torch.equal(cam_row_mask, reference["cam_row_mask"].to(cam_row_mask.dtype))
    assert rel_err(key_vis, reference["key_vis"]) <= FP64_TOLERANCE
    # dynamics_map is key_vis on the patch tokens, reshaped to the patch grid.
    batch, frames, _, height, width = page4d_ref["images"].shape
    rows, cols = height // 14, width // 14
    patch_values = reference["key_vis"].reshape(batch, frames, -1)[:, :, -rows * cols :]
    assert outputs["dynamics_map"].shape == (batch, frames, rows, cols)
    assert rel_err(outputs["dynamics_map"].reshape(batch, frames, -1), patch_values) <= FP64_TOLERANCE


def test_page4d_alpha0_equals_plain_vggt_and_alpha64_differs(page4d_ref, vggt_ref, rel_err):
    nomask = page4d_ref["outputs_fp64"]["alpha0"]
    mask = page4d_ref["outputs_fp64"]["alpha64"]
    plain = vggt_ref["outputs_fp64"]
    # Guards the fixture semantics the two parity tests above rely on.
    assert rel_err(nomask["depth"], plain["depth"]) <= FP64_TOLERANCE
    assert rel_err(mask["pose_enc"], plain["pose_enc"]) > 1e-3


def test_page4d_mask_strength_can_be_changed_after_building(page4d_ref, small_page4d, rel_err):
    model = small_page4d(0.0, torch.float64)
    model.mask_alpha = 64
    with torch.inference_mode():
        outputs = model(page4d_ref["images"].double(), compute_depth=False, compute_points=False)
    reference = page4d_ref["outputs_fp64"]["alpha64"]
    assert rel_err(outputs["pose_enc"], reference["pose_enc"]) <= FP64_TOLERANCE
    with pytest.raises(ValueError, match="mask_alpha"):
        model.mask_alpha = -1.0


def test_page4d_mask_variant_fp32_within_upstream_precision(page4d_ref, small_page4d, rel_err):
    model = small_page4d(64.0, torch.float32)
    with torch.inference_mode():
        outputs = model(page4d_ref["images"])
    reference = page4d_ref["outputs_fp64"]["alpha64"]
    for key, tolerance in FP32_TOLERANCE.items():
        assert rel_err(outputs[key], reference[key]) <= tolerance, key
    batch, frames = outputs["dynamics_map"].shape[:2]
    patch_values = reference["key_vis"].reshape(batch, frames, -1)[
        :, :, -outputs["dynamics_map"][0, 0].numel() :
    ]
    assert rel_err(outputs["dynamics_map"].reshape(batch, frames, -1), patch_values) <= 1e-5
