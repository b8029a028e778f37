"""VGGT's alternating-attention aggregator with PAGE-4D's spatial mask head and masked global attention."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from page4d_ros.model.dino import DinoVisionTransformer
from page4d_ros.model.layers import Block, RopeTables, RotaryPositionEmbedding2D, patch_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SpatialMaskHead(nn.Module):
    """PAGE-4D's per-patch dynamics estimator (``aggregator.spatial_mask_head``).

    Reads the patch tokens after one frame block, standardises each channel per image (unbiased std), runs a
    depthwise 3x3 -> GELU -> 1x1 -> GELU -> 1x1 convolution stack and returns
    ``m = sigmoid(conv(h) + mean_c(h)) - 0.5`` in (-0.5, 0.5) per patch.

    Args:
        dim: token width.
        hidden: width of the middle 1x1 convolution (256 in the released model).
    """

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.head0 = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, hidden, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(hidden, 1, kernel_size=1),
        )

    def forward(
        self, tokens: torch.Tensor, patch_start_idx: int, rows: int, cols: int, alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the attention-bias factors from tokens [B, S, P, C] (upstream return convention).

        Returns:
            cam_row_mask: [B, S*P] per-query factor, ``alpha`` on each frame's special tokens, 0 on patches.
            key_vis: [B, 1, S*P] per-key factor, ``m`` on patch tokens, 0 on special tokens.
        """
        batch, frames, num_tokens, channels = tokens.shape
        patches = tokens.reshape(batch * frames, num_tokens, channels)[:, patch_start_idx:]
        grid = patches.transpose(1, 2).reshape(batch * frames, channels, rows, cols)
        mean = grid.mean(dim=(2, 3), keepdim=True)
        std = grid.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        normalised = (grid - mean) / std
        logits = self.head0(normalised) + normalised.mean(dim=1, keepdim=True)
        dynamics = torch.sigmoid(logits) - 0.5
        key_vis = tokens.new_zeros(batch, frames, num_tokens)
        key_vis[:, :, patch_start_idx:] = dynamics.reshape(batch, frames, rows * cols)
        cam_row_mask = tokens.new_zeros(batch, frames, num_tokens)
        cam_row_mask[:, :, :patch_start_idx] = alpha
        return cam_row_mask.reshape(batch, frames * num_tokens), key_vis.reshape(
            batch, 1, frames * num_tokens
        )


@dataclass
class AggregatorOutput:
    """What the heads need from the aggregator.

    Attributes:
        tokens: requested layer index -> cat(frame-block output, global-block output) [B, S, P, 2C].
        patch_start_idx: index of the first patch token (1 camera token + registers before it).
        patch_grid: (rows, cols) of the patch grid.
        dynamics_map: mask-head value per patch [B, S, rows, cols], or None without a mask head.
    """

    tokens: dict[int, torch.Tensor]
    patch_start_idx: int
    patch_grid: tuple[int, int]
    dynamics_map: torch.Tensor | None


@dataclass
class _FrameEntry:
    """What one frame yields on its own: its encoder tokens and frame block 0's output per position kind."""

    image: torch.Tensor
    patch_tokens: torch.Tensor
    first_block: dict[bool, torch.Tensor] = field(default_factory=dict)


class FrameTokenCache:
    """Bounded cache of the per-frame part of the aggregator, for overlapping windows of one stream.

    Before the first global block a frame's tokens depend on nothing but its own image and on whether it is
    the window's first frame (the reference frame takes index 0 of the camera and register tokens, the others
    index 1). So the DINOv2 patch tokens of a frame are reused as they are, and the output of frame block 0 is
    reused per kind ("reference" / "other"). Everything after global block 0 depends on the whole window and
    is always recomputed.

    An entry is found by the caller's frame key (a stamp or frame id) and used only when the stored input
    image equals the new one exactly, so a reused key can never bring another frame's tokens. The cache
    empties itself when the device, dtype, autocast setting or image size changes; call :meth:`clear` at a
    stream reset and after changing the weights. Only the ``max_frames`` most recently used frames are kept.

    Args:
        max_frames: frames kept (at least the window overlap; the node's default of 16 is two windows of 8).
    """

    def __init__(self, max_frames: int = 16) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.max_frames = int(max_frames)
        self._entries: OrderedDict[Hashable, _FrameEntry] = OrderedDict()
        self._signature: tuple[Any, ...] | None = None
        self.encoder_hits = 0
        self.encoder_misses = 0
        self.block_hits = 0
        self.block_misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every frame (the hit counters are kept)."""
        self._entries.clear()
        self._signature = None

    def _check_signature(self, signature: tuple[Any, ...]) -> None:
        if signature != self._signature:
            self._entries.clear()
            self._signature = signature

    def _lookup(self, key: Hashable, image: torch.Tensor) -> _FrameEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.image.shape != image.shape or not torch.equal(entry.image, image):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _store(self, key: Hashable, entry: _FrameEntry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_frames:
            self._entries.popitem(last=False)


def _frame_specific_tokens(parameter: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Index 0 of ``parameter`` [1, 2, T, C] for the first frame, index 1 for the others -> [B*S, T, C]."""
    first = parameter[:, :1].expand(batch, 1, *parameter.shape[2:])
    others = parameter[:, 1:].expand(batch, frames - 1, *parameter.shape[2:])
    return torch.cat([first, others], dim=1).reshape(batch * frames, *parameter.shape[2:])


class Aggregator(nn.Module):
    """DINOv2 patch tokens + camera/register tokens through ``depth`` frame/global block pairs.

    Frame blocks attend within each frame, global blocks across all frames of a sequence. With a mask
    head, the head runs on the output of frame block ``mask_block``; global blocks in ``mask_global_blocks``
    then add ``mask_alpha * m_j`` to the logits of every special-token query for every patch key j (PAGE-4D).

    Args:
        config: a resolved configuration (see :mod:`page4d_ros.model.config`).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        dim = config["embed_dim"]
        self.patch_size = config["patch_size"]
        self.depth = config["depth"]
        self.num_register_tokens = config["num_register_tokens"]
        self.patch_start_idx = 1 + self.num_register_tokens
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, self.num_register_tokens, dim))
        self.patch_embed = DinoVisionTransformer(
            img_size=config["img_size"],
            patch_size=self.patch_size,
            embed_dim=dim,
            depth=config["dino_depth"],
            num_heads=config["dino_num_heads"],
            num_register_tokens=self.num_register_tokens,
        )
        self.rope = RotaryPositionEmbedding2D(config["rope_freq"]) if config["rope_freq"] > 0 else None

        def make_block() -> Block:
            return Block(
                dim,
                config["num_heads"],
                mlp_ratio=config["mlp_ratio"],
                init_values=config["init_values"],
                qk_norm=config["qk_norm"],
            )

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(self.depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(self.depth))
        self.head_dim = dim // config["num_heads"]
        if config["mask_head"]:
            self.spatial_mask_head = SpatialMaskHead(dim, config["mask_head_hidden"])
        else:
            self.spatial_mask_head = None
        self.mask_alpha = float(config["mask_alpha"])
        self.mask_block = config["mask_block"]
        self.mask_global_blocks = range(*config["mask_global_blocks"])
        self.gradient_checkpointing = False

    def _run_block(self, block: Block, x: torch.Tensor, *args: Any) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, *args, use_reentrant=False)
        return block(x, *args)

    def _special_tokens(self, reference: bool) -> torch.Tensor:
        """Camera + register tokens [1, 1 + R, C] of a reference (first) frame or of any other frame."""
        index = 0 if reference else 1
        return torch.cat([self.camera_token[:, index], self.register_token[:, index]], dim=1)

    def _frame_stage_batched(
        self, normalised: torch.Tensor, batch: int, frames: int, frame_rope: RopeTables | None
    ) -> torch.Tensor:
        """Encoder and frame block 0 of all B*S frames at once (training): tokens [B*S, P, C]."""
        patch_tokens = self.patch_embed(normalised)
        tokens = torch.cat(
            [
                _frame_specific_tokens(self.camera_token, batch, frames),
                _frame_specific_tokens(self.register_token, batch, frames),
                patch_tokens,
            ],
            dim=1,
        )
        return self._run_block(self.frame_blocks[0], tokens, frame_rope)

    def _frame_stage_per_frame(
        self,
        images: torch.Tensor,
        normalised: torch.Tensor,
        frame_rope: RopeTables | None,
        frame_keys: Sequence[Hashable] | None,
        cache: FrameTokenCache | None,
    ) -> torch.Tensor:
        """Encoder and frame block 0 one frame at a time (inference), reusing ``cache`` entries.

        Each frame is computed alone, so its result does not depend on which other frames share the window
        (the kernels see the same shapes), which makes reused and recomputed tokens bitwise equal.
        """
        batch, frames = images.shape[:2]
        outputs = []
        for b in range(batch):
            for s in range(frames):
                reference = s == 0
                entry = cache._lookup(frame_keys[s], images[b, s]) if cache is not None else None
                if entry is None:
                    n = b * frames + s
                    image = images[b, s].clone() if cache is not None else images[b, s]
                    entry = _FrameEntry(image, self.patch_embed(normalised[n : n + 1]))
                    if cache is not None:
                        cache.encoder_misses += 1
                elif cache is not None:
                    cache.encoder_hits += 1
                block_out = entry.first_block.get(reference)
                if block_out is None:
                    tokens = torch.cat([self._special_tokens(reference), entry.patch_tokens], dim=1)
                    block_out = self.frame_blocks[0](tokens, frame_rope)
                    entry.first_block[reference] = block_out
                    if cache is not None:
                        cache.block_misses += 1
                elif cache is not None:
                    cache.block_hits += 1
                if cache is not None:
                    cache._store(frame_keys[s], entry)
                outputs.append(block_out)
        return torch.cat(outputs, dim=0)

    def forward(
        self,
        images: torch.Tensor,
        keep_layers: Collection[int],
        frame_keys: Sequence[Hashable] | None = None,
        cache: FrameTokenCache | None = None,
    ) -> AggregatorOutput:
        """Run the aggregator on images [B, S, 3, H, W] in [0, 1]; keep the tokens of ``keep_layers`` only.

        In eval mode the per-frame part (encoder, frame block 0) runs frame by frame and, with ``cache`` and
        one hashable ``frame_keys`` entry per frame (B = 1), is reused across calls (see
        :class:`FrameTokenCache`); the outputs are bitwise equal with and without the cache. In training mode
        all frames go through the encoder together and nothing is cached.

        Raises:
            ValueError: ``cache`` in training mode or with gradients enabled, with B > 1, or with a wrong
                number of ``frame_keys``.
        """
        batch, frames, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        if cache is not None:
            if self.training or torch.is_grad_enabled():
                raise ValueError(
                    "the frame token cache is for inference: use eval() and torch.inference_mode()"
                )
            if batch != 1:
                raise ValueError(f"the frame token cache needs batch size 1 (one stream), got {batch}")
            if frame_keys is None or len(frame_keys) != frames:
                count = None if frame_keys is None else len(frame_keys)
                raise ValueError(f"frame_keys must give one key per frame ({frames}), got {count}")
            autocast = torch.is_autocast_enabled(images.device.type)
            cache._check_signature(
                (
                    images.device,
                    images.dtype,
                    autocast,
                    torch.get_autocast_dtype(images.device.type) if autocast else None,
                    height,
                    width,
                )
            )
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 1, 3, 1, 1).to(images.dtype)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 1, 3, 1, 1).to(images.dtype)
        normalised = ((images - mean) / std).reshape(batch * frames, 3, height, width)

        frame_rope: RopeTables | None = None
        global_rope: RopeTables | None = None
        if self.rope is not None:
            positions = patch_positions(rows, cols, self.patch_start_idx, device=images.device)
            frame_rope = self.rope.tables(positions, self.head_dim, normalised.dtype)
            global_rope = frame_rope.repeat(frames)

        if self.training:
            tokens = self._frame_stage_batched(normalised, batch, frames, frame_rope)
        else:
            tokens = self._frame_stage_per_frame(images, normalised, frame_rope, frame_keys, cache)
        num_tokens, channels = tokens.shape[1], tokens.shape[2]

        kept: dict[int, torch.Tensor] = {}
        dynamics_map = None
        query_bias = key_bias = query_rows = None
        for index in range(self.depth):
            if index > 0:
                tokens = self._run_block(
                    self.frame_blocks[index], tokens.reshape(batch * frames, num_tokens, channels), frame_rope
                )
            frame_out = tokens
            if self.spatial_mask_head is not None and index == self.mask_block:
                cam_row_mask, key_vis = self.spatial_mask_head(
                    tokens.detach().reshape(batch, frames, num_tokens, channels),
                    self.patch_start_idx,
                    rows,
                    cols,
                    self.mask_alpha,
                )
                dynamics_map = key_vis.reshape(batch, frames, num_tokens)[:, :, self.patch_start_idx :]
                dynamics_map = dynamics_map.reshape(batch, frames, rows, cols)
                if self.mask_alpha != 0.0:
                    query_bias, key_bias = cam_row_mask, key_vis[:, 0]
                    special = torch.arange(self.patch_start_idx, device=images.device)
                    first = torch.arange(frames, device=images.device)[:, None] * num_tokens
                    query_rows = (first + special).reshape(-1)
            masked = query_bias is not None and index in self.mask_global_blocks
            tokens = self._run_block(
                self.global_blocks[index],
                tokens.reshape(batch, frames * num_tokens, channels),
                global_rope,
                query_bias if masked else None,
                key_bias if masked else None,
                query_rows if masked else None,
            )
            if index in keep_layers:
                kept[index] = torch.cat(
                    [
                        frame_out.reshape(batch, frames, num_tokens, channels),
                        tokens.reshape(batch, frames, num_tokens, channels),
                    ],
                    dim=-1,
                )
        return AggregatorOutput(kept, self.patch_start_idx, (rows, cols), dynamics_map)
