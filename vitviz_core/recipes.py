"""The two feature-visualization recipes: the paper's (Appendix B) and the released code's.

Ghiasi, Kazemi et al. (2022), Sec. 3 and Appendix B, describe the augmented optimizer; their
released code (github.com/hamidkazemi22/vit-visualization, ``experiments/it15/vis35.py``)
differs from the text in several places. Every constant of each variant lives in one frozen
dataclass, so a notebook can state exactly what produced a picture and an ablation can flip
one field at a time (``get_recipe("paper", noise="channel")``).

==========================  ==============================  ===================================
field                       ``paper`` (Appendix B)          ``released`` (vis35.py)
==========================  ==============================  ===================================
ensemble size n             8                               8 (``RepeatBatch(8)``)
jitter                      per copy, [-32, 32] px          one circular roll per batch
color shift                 ``sigma*x + mu``                ``(x - mu) / sigma``
Gaussian noise              per pixel ``N(0, s^2)``         per image per channel (B x 3 x 1 x 1)
noise std s                 0.5 -> 0 linearly               0.5 * ((T-2-t) mod T) / T, T = 400
augmentation order          GS(CS(Jitter(x)))               Jitter(GS(CS(x)))
objective                   mean over patch tokens          mean over patch tokens, extra 1/n
TV                          2 directions, on the image      4 directions incl. diagonals, on
                                                            the augmented batch
TV weight lambda            5e-5                            5e-4 (CLI default ``0.0005 * tv``)
Adam betas / eps            (0.5, 0.99) / 1e-8              (0.5, 0.99) / 1e-8
learning rate               0.1, cosine to 0                0.1 (1.0 for CLIP), cosine to 0
steps                       400                             401 (``range(steps + 1)``, T_max 400)
post step                   clamp to [0, 1]                 clamp to [0, 1]
init                        U(0, 1)                         U(0, 1) (``torch.rand``)
seed                        any                             the feature index
==========================  ==============================  ===================================

Where the paper's text is silent we follow the released code and say so in the field's
comment (TV is an L2 norm per direction and channel, averaged over channels; Adam eps 1e-8).

Two more recipes change the image parametrization (:mod:`vitviz_core.param`): ``fourier``
(1/f spectrum, decorrelated colour; Olah et al. 2017) and ``maco`` (fixed natural amplitude
spectrum, phase only; Fel et al. 2023). Both use lucid-style transformation robustness (jitter,
zoom, rotation: :class:`~vitviz_core.augment.RandomAffine`), no TV, a constant learning rate,
and maximize the FFN channel before its GELU (``objective_on="pre_activation"``), where the
gradient of a smooth grey start does not vanish. ``benchmarks/vis_quality.py`` compares all
recipes at equal compute.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from vitviz_core.errors import VitvizError

__all__ = ["Recipe", "PAPER", "RELEASED", "FOURIER", "MACO", "RECIPES", "RECIPE_SUMMARY", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """All constants of one augmented activation-maximization recipe."""

    name: str
    # --- ensemble of augmentations (drawn afresh every step) ---
    n_augment: int = 8  # copies per image per step
    jitter: int = 32  # max shift in px, both axes, [-j, j]
    jitter_mode: Literal["per_copy", "per_batch"] = "per_copy"  # circular roll per copy / one per batch
    color_mode: Literal["affine", "standardize", "none"] = "affine"  # sigma*x + mu / (x - mu) / sigma
    color_mu: float = 1.0  # mu ~ U(-color_mu, color_mu) per channel
    color_log_sigma: float = 1.0  # sigma = exp(U(-a, a)) per channel
    noise_mode: Literal["pixel", "channel", "none"] = "pixel"  # N(0, s^2) per pixel / per image per channel
    noise_std: float = 0.5  # s at step 0
    noise_schedule: Literal["linear", "released"] = "linear"  # see augment.noise_std_at
    order: tuple[str, ...] = ("jitter", "color", "noise")  # applied left to right (+ "affine")
    scale_range: tuple[float, float] = (1.0, 1.0)  # RandomAffine zoom per copy (1, 1 = off)
    rotate: float = 0.0  # RandomAffine rotation, +- degrees
    shift: float = 0.0  # RandomAffine shift, +- fraction of the size
    # --- image parametrization (vitviz_core.param) ---
    param: Literal["pixel", "fourier", "maco"] = "pixel"  # what is optimized: pixels / spectrum / phase
    param_init_std: float | None = None  # fourier: spectrum std; maco: phase std
    param_gain: float | None = None  # fourier: spatial gain; maco: contrast
    decay_power: float = 1.0  # fourier: 1/f^decay spectrum scale
    # --- objective ---
    reduce: Literal["mean", "sum"] = "mean"  # over patch tokens (prefix tokens excluded)
    extra_batch_factor: bool = False  # released: objective divided by n once more
    objective_on: Literal["hook", "pre_activation"] = "hook"  # for mlp.hook_post: the channel itself, or
    # its input before the GELU (mlp.hook_pre), whose
    # gradient does not vanish where GELU is flat
    # --- total variation (subtracted: objective - tv_weight * TV) ---
    tv_weight: float = 5e-5  # lambda
    tv_directions: Literal[2, 4] = 2  # 2: x, y; 4: x, y and both diagonals
    tv_on: Literal["image", "augmented"] = "image"  # the optimized image / the augmented batch
    # --- optimizer ---
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.99)
    eps: float = 1e-8  # Adam eps (paper silent; released: 1e-8)
    steps: int = 400
    anneal_to_zero_at_last_step: bool = False  # cosine T_max = steps - 1 (released) or steps
    schedule: Literal["cosine", "constant"] = "cosine"  # learning rate over the run
    clamp: tuple[float, float] = (0.0, 1.0)  # pixel range after every step
    init: Literal["uniform"] = "uniform"  # U(0, 1) pixels
    seed_mode: Literal["mixed", "feature"] = "mixed"  # generator seed: hash(seed, feature) / seed + feature

    def __post_init__(self) -> None:
        problems = []
        if self.n_augment < 1:
            problems.append(f"n_augment must be >= 1 (got {self.n_augment})")
        if self.steps < 1:
            problems.append(f"steps must be >= 1 (got {self.steps})")
        if self.jitter < 0:
            problems.append(f"jitter must be >= 0 (got {self.jitter})")
        if self.jitter_mode not in ("per_copy", "per_batch"):
            problems.append(f"jitter_mode must be 'per_copy' or 'per_batch' (got {self.jitter_mode!r})")
        if self.color_mode not in ("affine", "standardize", "none"):
            problems.append(f"color_mode must be 'affine', 'standardize' or 'none' (got {self.color_mode!r})")
        if self.noise_mode not in ("pixel", "channel", "none"):
            problems.append(f"noise_mode must be 'pixel', 'channel' or 'none' (got {self.noise_mode!r})")
        if self.noise_schedule not in ("linear", "released"):
            problems.append(f"noise_schedule must be 'linear' or 'released' (got {self.noise_schedule!r})")
        if sorted(set(self.order) - {"affine"}) != sorted(("jitter", "color", "noise")) or len(
            set(self.order)
        ) != len(self.order):
            problems.append(
                f"order must be a permutation of jitter, color, noise (+ affine) (got {self.order})"
            )
        if "affine" not in self.order and (self.scale_range != (1.0, 1.0) or self.rotate or self.shift):
            problems.append("scale_range/rotate/shift need 'affine' in order")
        if self.param not in ("pixel", "fourier", "maco"):
            problems.append(f"param must be 'pixel', 'fourier' or 'maco' (got {self.param!r})")
        if self.objective_on not in ("hook", "pre_activation"):
            problems.append(f"objective_on must be 'hook' or 'pre_activation' (got {self.objective_on!r})")
        if self.schedule not in ("cosine", "constant"):
            problems.append(f"schedule must be 'cosine' or 'constant' (got {self.schedule!r})")
        if self.reduce not in ("mean", "sum"):
            problems.append(f"reduce must be 'mean' or 'sum' (got {self.reduce!r})")
        if self.tv_directions not in (2, 4):
            problems.append(f"tv_directions must be 2 or 4 (got {self.tv_directions})")
        if self.tv_on not in ("image", "augmented"):
            problems.append(f"tv_on must be 'image' or 'augmented' (got {self.tv_on!r})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.seed_mode not in ("mixed", "feature"):
            problems.append(f"seed_mode must be 'mixed' or 'feature' (got {self.seed_mode!r})")
        if problems:
            raise VitvizError(f"invalid recipe {self.name!r}: " + "; ".join(problems))

    @property
    def cosine_t_max(self) -> int:
        """Period of the cosine learning-rate annealing (lr reaches 0 at step ``t = T_max``)."""
        return max(self.steps - 1, 1) if self.anneal_to_zero_at_last_step else self.steps

    def to_dict(self) -> dict[str, Any]:
        """Every constant as a plain dict (JSON friendly)."""
        d = dataclasses.asdict(self)
        d["order"] = list(self.order)
        d["betas"] = list(self.betas)
        d["clamp"] = list(self.clamp)
        d["scale_range"] = list(self.scale_range)
        return d

    def make_param(self) -> Any:
        """The recipe's image parametrization object (:mod:`vitviz_core.param`)."""
        from vitviz_core.param import FourierParam, MacoParam, PixelParam

        if self.param == "pixel":
            return PixelParam(self.clamp)
        opts: dict[str, float] = {}
        if self.param_init_std is not None:
            opts["init_std"] = self.param_init_std
        if self.param == "fourier":
            if self.param_gain is not None:
                opts["gain"] = self.param_gain
            return FourierParam(decay_power=self.decay_power, **opts)
        if self.param_gain is not None:
            opts["contrast"] = self.param_gain
        return MacoParam(**opts)

    def replace(self, **overrides: Any) -> "Recipe":
        """A copy with some fields changed; unknown names raise :class:`VitvizError`."""
        fields = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(overrides) - fields)
        if bad:
            raise VitvizError(f"unknown recipe setting(s) {bad}; valid: {sorted(fields)}")
        return dataclasses.replace(self, **overrides)


#: Appendix B of the paper.
PAPER = Recipe(name="paper")

#: The authors' released code (experiments/it15/vis35.py and the modules it imports).
RELEASED = Recipe(
    name="released",
    jitter_mode="per_batch",
    color_mode="standardize",
    noise_mode="channel",
    noise_schedule="released",
    order=("color", "noise", "jitter"),
    extra_batch_factor=True,
    tv_weight=5e-4,
    tv_directions=4,
    tv_on="augmented",
    steps=401,
    anneal_to_zero_at_last_step=True,
    seed_mode="feature",
)

#: Fourier parametrization with decorrelated colour (Olah et al. 2017; lucid/lucent), lucid's
#: transformation robustness (jitter, zoom, rotation) and small pixel noise; no TV, no colour shift.
FOURIER = Recipe(
    name="fourier",
    param="fourier",
    n_augment=4,
    jitter=16,
    color_mode="none",
    noise_std=0.05,
    order=("jitter", "color", "noise", "affine"),
    scale_range=(0.8, 1.2),
    rotate=10.0,
    tv_weight=0.0,
    objective_on="pre_activation",
    lr=0.05,
    steps=128,
    schedule="constant",
)

#: Magnitude-constrained optimization (Fel et al. 2023): natural amplitude spectrum, phase optimized.
#: lr 0.2 measured against 0.05 on vit-ti16 block 6 (32 steps x 4 copies): activation 10.5x vs 7.2x
#: the exemplars', spectral naturalness 0.90 vs 0.66.
MACO = FOURIER.replace(name="maco", param="maco", lr=0.2)

RECIPES: dict[str, Recipe] = {"paper": PAPER, "released": RELEASED, "fourier": FOURIER, "maco": MACO}

#: One line per named recipe (``render --help``, README).
RECIPE_SUMMARY: dict[str, str] = {
    "paper": "pixels, Appendix B of Ghiasi et al. (jitter, colour shift, noise, TV; 400 x 8)",
    "released": "pixels, the authors' released code",
    "fourier": "1/f Fourier spectrum with decorrelated colour (Olah et al. 2017), jitter/zoom/rotation",
    "maco": "phase only, natural-image amplitude spectrum (Fel et al. 2023), jitter/zoom/rotation",
}


def get_recipe(recipe: str | Recipe = "paper", **overrides: Any) -> Recipe:
    """A recipe by name (see :data:`RECIPES`) or as given, with field overrides.

    >>> get_recipe("paper", steps=50).steps
    50
    """
    if isinstance(recipe, Recipe):
        base = recipe
    elif isinstance(recipe, str) and recipe in RECIPES:
        base = RECIPES[recipe]
    else:
        raise VitvizError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**overrides) if overrides else base
