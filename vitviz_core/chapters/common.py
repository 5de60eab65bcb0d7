"""What every chapter's ``run`` shares: splitting ``**overrides`` into profile fields, chapter
knobs and run options; the device; loading a model given by name; the book's table style."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, Sequence

import torch

from vitviz_core.errors import VitvizError
from vitviz_core.profiles import Profile, get_profile


def split_overrides(
    chapter: str,
    profile: str | Profile,
    overrides: Mapping[str, Any],
    knobs: Mapping[str, str],
    options: Mapping[str, Any],
    sections: Sequence[str] | None = None,
) -> tuple[Profile, dict]:
    """``overrides`` -> (the profile with its fields replaced, the run options).

    ``knobs`` maps the chapter's parameter names to the :class:`Profile` fields they override;
    a knob given as None means "the profile's value". Any Profile field may be given by its own
    name; ``options`` are the chapter's other settings with their defaults. Anything else is a
    clear error, and so is a ``sections`` option naming a section not in ``sections``.
    """
    pfields = {f.name for f in fields(Profile)}
    to_profile: dict[str, Any] = {}
    opt = dict(options)
    for k, v in overrides.items():
        if k in knobs:
            if v is not None:
                to_profile[knobs[k]] = tuple(v) if isinstance(v, list) else v
        elif k in pfields:
            to_profile[k] = v
        elif k in options:
            opt[k] = v
        else:
            raise VitvizError(
                f"unknown setting {k!r} for the {chapter} chapter; valid: "
                f"{sorted(set(knobs) | pfields | set(options))}"
            )
    if sections is not None:
        bad = sorted(set(opt["sections"]) - set(sections))
        if bad:
            raise VitvizError(f"unknown section(s) {bad}; choose from {list(sections)}")
    if isinstance(profile, str):
        P = get_profile(profile, **to_profile)
    else:
        P = get_profile(profile.name, **{**profile.to_dict(), **to_profile, "name": profile.name})
    return P, opt


def resolve_models(
    chapter: str, models: Mapping[str, Any] | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Model roles -> specs: ``defaults`` updated by ``models``; unknown roles are an error."""
    given = dict(models or {})
    bad = sorted(set(given) - set(defaults))
    if bad:
        raise VitvizError(f"unknown model role(s) {bad} for the {chapter} chapter; valid: {sorted(defaults)}")
    return {**defaults, **given}


def device_for(P: Profile, device: str | None = None) -> str:
    """``device`` if given, else the profile's (``cuda`` falls back to ``cpu`` without a GPU)."""
    if device:
        return device
    return P.device if (P.device != "cuda" or torch.cuda.is_available()) else "cpu"


def load(spec: Any, device: str) -> Any:
    """A model role's value: a name is loaded with :func:`vitviz_core.models.load_model`, a
    loaded model is returned as is."""
    from vitviz_core.models import load_model

    return load_model(spec, device=device) if isinstance(spec, str) else spec
