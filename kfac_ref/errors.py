"""Exceptions raised by kfac_ref. Each names the problem it reports."""

from __future__ import annotations


class KFACError(Exception):
    """Base class of every error kfac_ref raises on purpose."""


class BackendError(KFACError, RuntimeError):
    """An array backend was requested that is unknown or not usable on this machine."""


class ShapeError(KFACError, ValueError):
    """Arrays of incompatible shapes were passed."""


class ConfigError(KFACError, ValueError):
    """An option has an invalid or unknown value."""


class NonFiniteError(KFACError, FloatingPointError):
    """A quantity that must be finite (input, loss, update, ...) is NaN or infinite."""


class TooLargeError(KFACError, MemoryError):
    """A dense matrix would need more memory than the allowed budget."""


class DataError(KFACError, OSError):
    """A data file is missing, corrupt or of an unexpected format."""


class TargetError(KFACError, ValueError):
    """Targets the output distribution cannot produce (Bernoulli outside [0, 1], softmax rows
    that are not probability vectors)."""
