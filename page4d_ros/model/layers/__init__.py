"""Transformer building blocks shared by the network families (encoders, aggregators, heads), and their input
check."""

from page4d_ros.model.layers.attention import Attention, LinearKMaskedBias, attention_with_query_key_bias
from page4d_ros.model.layers.block import Block, LayerScale
from page4d_ros.model.layers.inputs import check_image_batch
from page4d_ros.model.layers.mlp import Mlp
from page4d_ros.model.layers.rope import RopeTables, RotaryPositionEmbedding2D, patch_positions

__all__ = [
    "Attention",
    "Block",
    "LayerScale",
    "LinearKMaskedBias",
    "Mlp",
    "RopeTables",
    "RotaryPositionEmbedding2D",
    "attention_with_query_key_bias",
    "check_image_batch",
    "patch_positions",
]
