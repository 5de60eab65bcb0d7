"""User-facing error types.

Every error a user can cause by bad input (an unknown model name, a missing weights file, a
layer out of range, an empty data folder...) is raised as a :class:`VitvizError` subclass
with a message that says what is wrong and how to fix it. The command line prints that
message on one line and exits with status 2, without a traceback.
"""

from __future__ import annotations


class VitvizError(Exception):
    """Base class of all errors caused by bad input or a missing resource."""


class UnknownModelError(VitvizError, KeyError):
    """A model name that neither the built-in zoo nor timm knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(VitvizError):
    """Weights that cannot be found or read on this machine."""


class HookError(VitvizError, KeyError):
    """A hook name that does not resolve, or a layer/feature index out of range."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataError(VitvizError):
    """A missing or empty data folder, or an unreadable image or annotation file."""


class ConfigError(VitvizError):
    """An environment variable or setting that points somewhere unusable (e.g. VITVIZ_CACHE
    naming a file instead of a folder)."""
