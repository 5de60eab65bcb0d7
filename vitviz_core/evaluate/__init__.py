"""The paper's quantitative experiments as plain functions that return data (never figures).

All run in inference mode with small defaults; every accuracy is an
:class:`~vitviz_core.evaluate.stats.Estimate` with a 95 % bootstrap interval, and every result
carries a :class:`~vitviz_core.evaluate.records.ResultRecord` (model, weights, data, settings).

- :mod:`.stats`        bootstrap / Wilson intervals, top-k correctness
- :mod:`.common`       data loading and the variant-evaluation core: per-image
                       :class:`~.common.Correctness` (accuracies and CIs are views of it)
- :mod:`.fill`         what replaces hidden pixels (one meaning per fill name)
- :mod:`.records`      provenance records, dataset and weight fingerprints
- :mod:`.exemplars`    most-activating images (streaming top-k, cached), activation maps
- :mod:`.token_mixing` isolating CLS, per-patch classifier head, dropping patches (Sec. 4)
- :mod:`.masking`      foreground / background reliance (Sec. 5, Table 2)
- :mod:`.frequency`    low-/high-pass robustness (Fig. 16)
- :mod:`.probe`        linear probes for headless backbones (DINOv2)

Plots of these results live in :mod:`vitviz_core.plot.evaluation`.
"""

from vitviz_core.evaluate.common import Correctness, SweepResult, evaluate_variants, evaluate_variants_many
from vitviz_core.evaluate.exemplars import (
    ExemplarResult,
    FeatureTopK,
    TopKState,
    activation_maps,
    find_exemplars,
    score_maps,
)
from vitviz_core.evaluate.fill import FILLS, apply_fill, check_fill, fill_image, fill_name
from vitviz_core.evaluate.frequency import (
    DEFAULT_CUTOFFS,
    FrequencyResult,
    frequency_sweep,
    high_pass,
    low_pass,
    max_radius,
)
from vitviz_core.evaluate.masking import (
    BoxMaskDataset,
    ForegroundMasker,
    MaskingResult,
    apply_mask,
    mask_bbox,
    masking_experiment,
    masking_one,
    saliency_to_mask,
)
from vitviz_core.evaluate.probe import LinearProbe, evaluate_probe, extract_features, fit_linear_probe
from vitviz_core.evaluate.records import ResultRecord, dataset_fingerprint, weights_fingerprint
from vitviz_core.evaluate.stats import (
    Estimate,
    accuracy_with_ci,
    bootstrap_ci,
    ratio_with_ci,
    topk_correct,
    wilson_ci,
)
from vitviz_core.evaluate.token_mixing import (
    TokenMixingResult,
    drop_patches_logits,
    isolated_cls_logits,
    patch_head_logits,
    token_mixing_batch,
    token_mixing_experiment,
)

__all__ = [
    "Estimate",
    "bootstrap_ci",
    "wilson_ci",
    "accuracy_with_ci",
    "ratio_with_ci",
    "topk_correct",
    "ResultRecord",
    "dataset_fingerprint",
    "weights_fingerprint",
    "find_exemplars",
    "ExemplarResult",
    "FeatureTopK",
    "TopKState",
    "score_maps",
    "activation_maps",
    "token_mixing_experiment",
    "TokenMixingResult",
    "token_mixing_batch",
    "isolated_cls_logits",
    "drop_patches_logits",
    "patch_head_logits",
    "Correctness",
    "SweepResult",
    "evaluate_variants",
    "evaluate_variants_many",
    "FILLS",
    "fill_image",
    "apply_fill",
    "check_fill",
    "fill_name",
    "masking_experiment",
    "masking_one",
    "MaskingResult",
    "apply_mask",
    "mask_bbox",
    "saliency_to_mask",
    "ForegroundMasker",
    "BoxMaskDataset",
    "frequency_sweep",
    "FrequencyResult",
    "low_pass",
    "high_pass",
    "max_radius",
    "DEFAULT_CUTOFFS",
    "fit_linear_probe",
    "LinearProbe",
    "extract_features",
    "evaluate_probe",
]
