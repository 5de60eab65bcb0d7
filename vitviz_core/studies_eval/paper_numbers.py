"""Reference numbers of Ghiasi, Kazemi et al. 2022 that the chapters put beside ours.

Sources: the paper's Table 1 and Table 2, and the authors' released experiment logs in
github.com/hamidkazemi22/vit-visualization (commit 043b0b2): ``experiments/it17/Acc.txt``
(isolating-CLS sweep, rows ``ViT0_B_16_imagenet1k TEAR_34_L``), ``experiments/it16/Acc.txt``
(patch-drop sweep, same row names: blocks ``[0, L)`` run normally, then only CLS continues;
ViT-B/32 rows ``TEAR_35_L``) and ``experiments/it13/FBAcc.txt`` (foreground / background
masking, top-1 and top-5 per condition). The logs' columns are top-1 %, top-5 %, loss.
"""

from __future__ import annotations

from typing import Any

#: Table 1 of Ghiasi et al. (ViT-B/16, ImageNet val): (top-1, top-5) in percent.
PAPER_TABLE1: dict[str, Any] = {
    "model": "ViT-B/16",
    "natural": (84.20, 97.16),
    "isolate": (78.61, 94.18),  # CLS joins only at layer 11 (L = 11 of 12)
    "patch_mean": (75.75, 90.99),
    "patch_best": (80.16, 95.65),
}

#: Released logs of the isolating-CLS sweep (ViT-B/16, top-1 %), join layer L -> value
#: (None where the logs have no entry). experiments/it17/Acc.txt.
PAPER_CLS_SWEEP: dict[int, float | None] = {
    0: 84.20,
    1: 83.73,
    2: 82.98,
    3: None,
    4: 83.22,
    5: 83.03,
    6: 82.98,
    7: None,
    8: None,
    9: 81.10,
    10: 80.32,
    11: 78.61,
    12: 0.10,
}

#: Released logs of the patch-drop sweep (ViT-B/16, top-1 %): blocks [0, L) run with every
#: token, blocks [L, 12) with CLS alone; L = 12 is the normal pass. experiments/it16/Acc.txt,
#: rows ``ViT0_B_16_imagenet1k TEAR_34_L`` (values rounded to 2 decimals).
PAPER_DROP_SWEEP: dict[int, float | None] = {
    0: 0.10,
    1: 0.08,
    2: 0.16,
    3: 0.09,
    4: 0.14,
    5: 0.22,
    6: 1.66,
    7: 3.95,
    8: 8.99,
    9: 19.89,
    10: 36.85,
    11: 71.24,
    12: 84.20,
}

#: The same patch-drop sweep for ViT-B/32 (experiments/it16/Acc.txt, rows ``TEAR_35_L``).
PAPER_DROP_SWEEP_B32: dict[int, float | None] = {
    0: 0.10,
    1: 0.10,
    2: 0.10,
    3: 0.10,
    4: 0.10,
    5: 0.10,
    6: 0.10,
    7: 0.10,
    8: 11.64,
    9: 28.33,
    10: 52.09,
    11: 72.72,
    12: 81.73,
}

#: Released logs of the foreground/background experiment behind Table 2
#: (experiments/it13/FBAcc.txt): model -> condition -> (top-1 %, top-5 %) on the ImageNet
#: validation images with boxes. "full" is the paper's full-image column.
PAPER_MASKING_LOGS: dict[str, dict[str, tuple[float, float]]] = {
    "ViT-B/32": {"full": (89.25, 98.44), "foreground": (81.69, 92.44), "background": (13.43, 27.66)},
    "ViT-B/16": {"full": (92.37, 99.22), "foreground": (86.55, 94.89), "background": (15.69, 31.34)},
    "ResNet-50": {"full": (87.67, 98.00), "foreground": (75.04, 87.89), "background": (8.11, 18.32)},
    # the mobile CNN closest to EfficientNet-Lite0 among the paper's models
    "MobileNetV2": {"full": (82.92, 96.09), "foreground": (68.03, 83.44), "background": (6.83, 15.32)},
}

#: Unrounded top-5 values of the same log lines, used to derive the normalised column
#: exactly as the paper printed it: model -> (full, foreground, background) top-5 %.
_MASKING_TOP5_RAW: dict[str, tuple[float, float, float]] = {
    "ViT-B/32": (98.43669891357422, 92.44476318359375, 27.663724899291992),
    "ViT-B/16": (99.2203140258789, 94.89424133300781, 31.344791412353516),
    "ResNet-50": (97.99806213378906, 87.89408874511719, 18.315196990966797),
    "MobileNetV2": (96.08562469482422, 83.44017028808594, 15.316845893859863),
}


def _normalised_top5() -> dict[str, tuple[float, float]]:
    return {
        m: (round(100 * fg / full, 2), round(100 * bg / full, 2))
        for m, (full, fg, bg) in _MASKING_TOP5_RAW.items()
    }


#: Table 2 of Ghiasi et al.: normalised top-5 (%) = masked top-5 / full-image top-5, with the
#: foreground only / background only, derived from :data:`PAPER_MASKING_LOGS` (it reproduces
#: the printed ViT-B/32 93.91/28.10, ViT-B/16 95.64/31.59, ResNet-50 89.69/18.69 and the
#: MobileNetV2 background-only 15.94).
PAPER_TABLE2: dict[str, tuple[float, float]] = _normalised_top5()
