"""Forward-pass behaviour: input handling, options, chunking, precision modes."""

from __future__ import annotations

import pytest
import torch

from page4d_ros.model import build_model


@pytest.fixture(scope="module")
def config(make_tiny_model_config):
    """The shared tiny network with four blocks, so that token layers 0 and 3 can be kept."""
    return make_tiny_model_config(depth=4)


@pytest.fixture(scope="module")
def tiny_model(config):
    torch.manual_seed(0)
    return build_model(config)


def test_output_shapes_and_values(tiny_model):
    images = torch.rand(2, 3, 3, 56, 70)
    with torch.inference_mode():
        outputs = tiny_model(images)
    assert outputs["pose_enc"].shape == (2, 3, 9)
    assert len(outputs["pose_enc_list"]) == 4
    assert outputs["depth"].shape == (2, 3, 56, 70, 1)
    assert outputs["depth_conf"].shape == (2, 3, 56, 70)
    assert outputs["world_points"].shape == (2, 3, 56, 70, 3)
    assert outputs["world_points_conf"].shape == (2, 3, 56, 70)
    assert outputs["dynamics_map"].shape == (2, 3, 4, 5)
    assert (outputs["depth"] > 0).all() and (outputs["depth_conf"] > 1).all()
    assert (outputs["dynamics_map"].abs() < 0.5).all()
    assert (outputs["pose_enc"][..., 7:] >= 0).all()  # FoV through ReLU
    assert "aggregated_tokens" not in outputs


def test_batch_items_are_independent_and_4d_input_is_one_sequence(tiny_model):
    images = torch.rand(2, 2, 3, 28, 42)
    with torch.inference_mode():
        batched = tiny_model(images)
        second = tiny_model(images[1])
    torch.testing.assert_close(second["depth"][0], batched["depth"][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second["pose_enc"][0], batched["pose_enc"][1], rtol=1e-5, atol=1e-5)


def test_frame_chunking_does_not_change_dense_outputs(tiny_model):
    images = torch.rand(1, 5, 3, 28, 28)
    with torch.inference_mode():
        whole = tiny_model(images, frames_chunk_size=8)
        chunked = tiny_model(images, frames_chunk_size=2)
    torch.testing.assert_close(chunked["depth"], whole["depth"])
    torch.testing.assert_close(chunked["world_points_conf"], whole["world_points_conf"])


def test_skipping_heads_and_keeping_tokens(tiny_model):
    images = torch.rand(1, 2, 3, 28, 28)
    with torch.inference_mode():
        full = tiny_model(images)
        camera_only = tiny_model(images, compute_depth=False, compute_points=False, keep_token_layers=[0, 3])
    assert set(camera_only) == {"pose_enc", "pose_enc_list", "dynamics_map", "aggregated_tokens", "images"}
    torch.testing.assert_close(camera_only["pose_enc"], full["pose_enc"])
    assert sorted(camera_only["aggregated_tokens"]) == [0, 3]
    # 1 camera + 4 register tokens + 2x2 patches, width 2 x 32.
    assert camera_only["aggregated_tokens"][3].shape == (1, 2, 9, 64)


def test_first_frame_is_the_reference_and_others_are_permutation_equivariant(config):
    torch.manual_seed(1)
    model = build_model(config)
    with torch.no_grad():
        model.aggregator.camera_token[:, 0] = 10.0  # make the reference-frame token clearly distinct
    images = torch.rand(1, 3, 3, 28, 28)
    with torch.inference_mode():
        original = model(images)
        swapped_others = model(images[:, [0, 2, 1]])
        new_reference = model(images[:, [1, 0, 2]])
    torch.testing.assert_close(
        swapped_others["pose_enc"][:, [0, 2, 1]], original["pose_enc"], rtol=1e-4, atol=1e-5
    )
    difference = (new_reference["pose_enc"][:, [1, 0, 2]] - original["pose_enc"]).abs().max()
    assert difference > 2e-4  # 2e-3 here, against the 1e-5 equivariance tolerance above


def test_inputs_are_cast_to_parameter_dtype(config, tiny_model):
    double_model = build_model(config, dtype=torch.float64)
    double_model.load_state_dict(tiny_model.state_dict())
    images = torch.rand(1, 2, 3, 28, 28)
    with torch.inference_mode():
        outputs = double_model(images)
        reference = tiny_model(images)
    assert outputs["depth"].dtype == torch.float64
    torch.testing.assert_close(outputs["depth"].float(), reference["depth"], rtol=1e-4, atol=1e-5)


def test_cpu_bfloat16_autocast_keeps_heads_in_float32(tiny_model):
    images = torch.rand(1, 2, 3, 28, 28)
    with torch.inference_mode():
        reference = tiny_model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = tiny_model(images, keep_token_layers=[3])
    assert outputs["aggregated_tokens"][3].dtype == torch.float32  # residual stream stays fp32
    assert outputs["depth"].dtype == torch.float32 and outputs["pose_enc"].dtype == torch.float32
    relative = (outputs["depth"] - reference["depth"]).abs().max() / reference["depth"].abs().max()
    assert relative < 0.05


def test_gradients_flow_in_training_mode_with_checkpointing(config):
    torch.manual_seed(0)
    model = build_model(config).train()
    model.aggregator.gradient_checkpointing = True
    outputs = model(torch.rand(1, 2, 3, 28, 28), compute_points=False)
    (outputs["depth"].mean() + outputs["pose_enc"].square().mean()).backward()
    assert model.aggregator.frame_blocks[0].attn.qkv.weight.grad is not None
    assert model.aggregator.spatial_mask_head.head0[0].weight.grad is not None
    assert model.aggregator.patch_embed.mask_token.grad is None


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([1, 2, 3], "torch.Tensor"),
        (torch.rand(1, 2, 1, 28, 28), "shape"),
        (torch.rand(2, 28, 28), "shape"),
        (torch.zeros(1, 2, 3, 28, 28, dtype=torch.uint8), "floating point"),
        (torch.rand(1, 2, 3, 30, 28), "multiples of the patch size"),
        (torch.rand(1, 0, 3, 28, 28), "at least one frame"),
        (torch.rand(1, 1, 3, 28, 28, device="meta"), "move one of them"),
    ],
)
def test_invalid_images_raise_value_error(tiny_model, images, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(images)


def test_invalid_keep_token_layers(tiny_model):
    with pytest.raises(ValueError, match="keep_token_layers"):
        tiny_model(torch.rand(1, 1, 3, 28, 28), keep_token_layers=[4])


def test_dense_dynamics_adds_one_per_pixel_channel_and_nothing_else(config):
    """``dense_dynamics`` only widens the depth head's last convolution by one output channel: every other
    parameter keeps its name and shape, so the released layouts (flag off) are untouched."""
    torch.manual_seed(0)
    plain = build_model(config)
    dense = build_model({**config, "dense_dynamics": True})
    plain_shapes = {key: tuple(value.shape) for key, value in plain.state_dict().items()}
    dense_shapes = {key: tuple(value.shape) for key, value in dense.state_dict().items()}
    assert plain_shapes.keys() == dense_shapes.keys()
    changed = {key for key in plain_shapes if plain_shapes[key] != dense_shapes[key]}
    last = "depth_head.scratch.output_conv2.2."
    assert changed == {last + "weight", last + "bias"}
    assert dense_shapes[last + "bias"][0] == plain_shapes[last + "bias"][0] + 1
    images = torch.rand(1, 5, 3, 28, 42)
    with torch.inference_mode():
        whole = dense(images, frames_chunk_size=8)
        chunked = dense(images, frames_chunk_size=2)
        plain_out = plain(images)
    assert whole["dynamic_logits"].shape == (1, 5, 28, 42)
    torch.testing.assert_close(chunked["dynamic_logits"], whole["dynamic_logits"])
    assert "dynamic_logits" not in plain_out


def test_dense_dynamics_channel_is_trainable_on_its_own(config):
    """Gradients of the dynamic logits reach the depth head's shared features and the backbone."""
    torch.manual_seed(0)
    dense = build_model({**config, "dense_dynamics": True}).train()
    outputs = dense(torch.rand(1, 2, 3, 28, 28), compute_camera=False, compute_points=False)
    outputs["dynamic_logits"].sum().backward()
    assert dense.depth_head.scratch.output_conv2[2].weight.grad.abs().sum() > 0
    assert dense.aggregator.frame_blocks[0].attn.qkv.weight.grad.abs().sum() > 0
