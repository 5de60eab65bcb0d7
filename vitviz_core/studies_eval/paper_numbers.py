"""Reference numbers of Ghiasi, Kazemi et al. 2022 that the chapters put beside ours."""

from __future__ import annotations

from typing import Any

#: Table 1 of Ghiasi et al. (ViT-B/16, ImageNet val): (top-1, top-5) in percent.
PAPER_TABLE1: dict[str, Any] = {
    "model": "ViT-B/16",
    "natural": (84.20, 97.16),
    "isolate": (78.61, 94.18),       # CLS joins only at layer 11 (L = 11 of 12)
    "patch_mean": (75.75, 90.99),
    "patch_best": (80.16, 95.65),
}

#: Released logs of the isolating-CLS sweep (ViT-B/16, top-1 %), join layer L -> value
#: (None where the logs have no entry).
PAPER_CLS_SWEEP: dict[int, float | None] = {
    0: 84.20, 1: 83.73, 2: 82.98, 3: None, 4: 83.22, 5: 83.03, 6: 82.98, 7: None, 8: None,
    9: 81.10, 10: 80.32, 11: 78.61, 12: 0.10}

#: Table 2 of Ghiasi et al.: normalised top-5 (%) with foreground only / background only.
PAPER_TABLE2: dict[str, tuple[float, float]] = {
    "ViT-B/32": (93.91, 28.10),
    "ViT-B/16": (95.64, 31.59),
    "ResNet-50": (89.69, 18.69),
}
