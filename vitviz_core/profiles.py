"""Run profiles: the cheap CPU defaults every chapter executes with, and the paper's scale.

Each chapter has one ``parameters`` cell with ``profile = "cpu"``; papermill's
``-p profile full`` switches to the paper's settings on a GPU. A profile is a plain frozen
dataclass, so every chapter states exactly what produced its numbers (``profile.describe()``).
Any field can be overridden: ``get_profile("cpu", steps=50)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitviz_core.errors import VitvizError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Profile:
    """Knobs that trade cost for fidelity; the same names are used by every chapter."""

    name: str
    device: str  # "cpu" or "cuda"
    steps: int  # optimizer steps per visualization (paper: 400)
    n_augment: int  # augmented copies per feature per step (paper: 8)
    n_features: int  # features shown per figure
    image_size: int | None  # optimizer canvas; None = the model's input size
    eval_images: int | None  # images of imagenet-val-1300 used for accuracies (None = all)
    pool_images: int | None  # images of imagenet-sample-1000 used for exemplar search / fitting
    batch_size: int  # inference batch size
    bootstrap: int  # bootstrap resamples for confidence intervals
    vis_recipe: str = "paper"  # feature-visualization recipe the chapters and `render` use
    render_steps: int = 400  # `render` steps when --steps is not given
    render_augment: int = 8  # `render` augmented copies per feature per step
    # --- neurons chapter (Nguyen et al. 2022; vitviz_core.chapters.neurons) -----------------
    neurons_images: int | None = 40  # imagenet-val-1300 images for views, clustering, robustness
    neurons_views: int = 16  # of those, for filter responses and attention rollout
    neurons_cluster: int = 24  # of those, whose patch tokens are clustered
    neurons_probe_test: int | None = 100  # imagenet-val-1300 images scored by the linear probes
    neurons_probe_blocks: tuple[int, ...] | None = (2, 5, 11)  # blocks probed besides level 0 (None = all)
    neurons_ratios: tuple[float, ...] = (0.25, 0.5)  # occlusion ratios
    neurons_embedding: str = "pca"  # 2-D embedding of the token plots: "pca" | "tsne"
    # --- end neurons chapter ------------------------------------------------------------------
    # --- feature visualization chapter (vitviz_core.chapters.feature_visualization) ----------
    fv_second_depths: int = 1  # depths of the second model shown (1: one late block)
    # --- token mixing chapter (vitviz_core.chapters.token_mixing) -----------------------------
    token_table_images: int | None = 400  # imagenet-val-1300 images for Table 1 (None = all)
    token_sweep_images: int | None = 200  # images for the layer sweeps (None = all)
    token_dino: bool = False  # fit the DINOv2 linear probe and run its Table 1
    # --- ViT vs CNN chapter (vitviz_core.chapters.vit_vs_cnn) ---------------------------------
    #: masking: 200 images; frequency: 400 images put the 95 % interval of the paired
    #: ViT-minus-CNN difference at a 16-cycle low-pass at about +-5 points, enough to resolve
    #: the ~10-point gap vit-ti16 and efficientnet-lite0 show on all 1300 images (100 gave +-8).
    masking_images: int | None = 200  # images for Table 2 and the background features
    frequency_images: int | None = 400  # images for the frequency curves
    masking_fills: tuple[str, ...] = ("black",)  # Table 2 fills (black: the paper's)
    low_cutoffs: tuple[float, ...] = (4, 8, 16, 32, 64)  # low-pass cut-offs, cycles per image
    high_cutoffs: tuple[float, ...] = (8, 32)  # high-pass cut-offs
    gauss_cutoffs: tuple[float, ...] = (8, 16, 32)  # Gaussian low-pass cut-offs
    # --- atlas chapter (book/atlas.md) ----------------------------------------------------------
    atlas_steps: int | None = 32  # optimizer steps of the atlas (None = ``steps``)
    atlas_images: int | None = 256  # images searched for exemplars (None = all)
    atlas_hooks: str = "blocks.2.mlp.hook_post,blocks.6.mlp.hook_post"  # glob(s) over hook names
    atlas_features: str = "0-5"  # per hook: a range, a list, or "all"

    def describe(self) -> str:
        """One line naming the profile and its main settings (for figure captions)."""
        return (
            f"profile `{self.name}` ({self.device}): {self.steps} steps x {self.n_augment} "
            f"augmentations, {self.eval_images or 'all'} eval images, "
            f"{self.pool_images or 'all'} pool images"
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    # Executed by CI and the default book build on a 2-core CPU: minutes per chapter.
    "cpu": Profile(
        name="cpu",
        device="cpu",
        steps=40,
        n_augment=2,
        n_features=2,
        image_size=None,
        eval_images=1300,
        pool_images=200,
        batch_size=50,
        bootstrap=1000,
        vis_recipe="maco",
        render_steps=40,
        render_augment=2,
    ),
    # The paper's settings (Appendix B) and whole samples; meant for a GPU.
    "full": Profile(
        name="full",
        device="cuda",
        steps=400,
        n_augment=8,
        n_features=16,
        image_size=None,
        eval_images=None,
        pool_images=None,
        batch_size=128,
        bootstrap=2000,
        vis_recipe="paper",
        render_steps=400,
        render_augment=8,
        # neurons chapter
        neurons_images=None,
        neurons_views=100,
        neurons_cluster=300,
        neurons_probe_test=None,
        neurons_probe_blocks=None,
        neurons_ratios=(0.1, 0.25, 0.5, 0.75, 0.9),
        neurons_embedding="tsne",
        # feature visualization, token mixing, ViT vs CNN, atlas chapters
        fv_second_depths=4,
        token_table_images=None,
        token_sweep_images=None,
        token_dino=True,
        masking_images=None,
        frequency_images=None,
        masking_fills=("black", "dataset_mean", "blur"),
        low_cutoffs=(2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96),
        high_cutoffs=(2, 4, 8, 16, 32, 64),
        gauss_cutoffs=(2, 4, 8, 16, 32, 64),
        atlas_steps=None,
        atlas_images=None,
        atlas_hooks="blocks.*.mlp.hook_post",
        atlas_features="all",
    ),
}


def get_profile(name: str = "cpu", **overrides) -> Profile:
    """The named profile with optional field overrides; unknown names raise a clear error."""
    if name not in PROFILES:
        raise VitvizError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(Profile)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise VitvizError(f"unknown profile setting(s) {bad}; valid: {sorted(fields)}")
    return dataclasses.replace(PROFILES[name], **overrides)


def profiles_frame() -> pd.DataFrame:
    """Every profile's settings side by side (a pandas DataFrame: one row per knob, one column
    per profile), as the book's status page shows them."""
    import pandas

    return pandas.DataFrame(
        {name: {k: str(v) for k, v in p.to_dict().items()} for name, p in PROFILES.items()}
    )
