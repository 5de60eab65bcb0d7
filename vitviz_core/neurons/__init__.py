"""What neurons tell and how neurons behave (Nguyen et al. 2022) on any timm ViT.

- :mod:`~vitviz_core.neurons.level0`       patch-embedding filters: level-0 views, filter
  classes (colour / flat / edge / texture), responses to patch statistics, linear probes
- :mod:`~vitviz_core.neurons.propagation`  attention rollout and level-0 views carried up
  through the layers
- :mod:`~vitviz_core.neurons.clustering`   per-layer clustering of patch tokens scored
  against object masks (purity, ARI, silhouette), 2-D embeddings
- :mod:`~vitviz_core.neurons.robustness`   patch shuffling and occlusion sweeps, ViT vs CNN

The most used functions are re-exported here.
"""

from vitviz_core.neurons.clustering import (
    capture_patch_tokens,
    cluster_tokens,
    embed_2d,
    layer_cluster_scores,
    layer_hook_names,
    mask_to_patch_labels,
    purity,
    summarize_scores,
)
from vitviz_core.neurons.level0 import (
    classify_filters,
    extract_patches,
    filter_stats,
    level0_view_map,
    level0_views,
    linear_probe,
    neuron_responses,
    patch_embedding,
    pooled_token_features,
    stitch_patches,
)
from vitviz_core.neurons.propagation import (
    capture_attention,
    propagate_tokens,
    propagate_views,
    rollout,
    token_view_maps,
)
from vitviz_core.neurons.robustness import (
    cls_attention_saliency,
    foreground_saliency,
    occlude,
    occlusion_mask,
    robustness_sweep,
    shuffle_patches,
    summarize_sweep,
)

__all__ = [
    "capture_patch_tokens",
    "cluster_tokens",
    "embed_2d",
    "layer_cluster_scores",
    "layer_hook_names",
    "mask_to_patch_labels",
    "purity",
    "summarize_scores",
    "classify_filters",
    "extract_patches",
    "filter_stats",
    "level0_view_map",
    "level0_views",
    "linear_probe",
    "neuron_responses",
    "patch_embedding",
    "pooled_token_features",
    "stitch_patches",
    "capture_attention",
    "propagate_tokens",
    "propagate_views",
    "rollout",
    "token_view_maps",
    "cls_attention_saliency",
    "foreground_saliency",
    "occlude",
    "occlusion_mask",
    "robustness_sweep",
    "shuffle_patches",
    "summarize_sweep",
]
