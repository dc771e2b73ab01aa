"""Exception types whose messages are meant for end users (what is wrong, what to do)."""

from __future__ import annotations


class SadTalkerError(Exception):
    """Base class: every error the package raises on purpose derives from it."""


class CheckpointError(SadTalkerError):
    """A weight file is missing, truncated, of the wrong format or has the wrong tensors."""


class InputError(SadTalkerError):
    """A user input (picture, audio, video or option value) cannot be used."""


class CancelledError(SadTalkerError):
    """The user asked to stop the generation."""
