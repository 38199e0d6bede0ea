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


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (a :class:`KeyboardInterrupt`, so it stops whatever called the
    run). Not a :class:`KFACError`: nothing was wrong. ``iteration`` is the iteration under way
    (None: training had not begun, and the run directory is as it was), ``checkpoint`` the
    iteration of the last checkpoint on disk (None: none), ``out`` the run directory."""

    def __init__(self, out: str, iteration: int | None, checkpoint: int | None) -> None:
        self.out, self.iteration, self.checkpoint = out, iteration, checkpoint
        super().__init__(self.describe())

    def describe(self) -> str:
        """``interrupted at iteration k; last checkpoint in … at iteration k′`` (or what there
        is instead)."""
        if self.iteration is None:
            return f"interrupted before training began; {self.out} is as it was"
        if self.checkpoint is None:
            saved = f"no checkpoint in {self.out}"
        else:
            saved = f"last checkpoint in {self.out} at iteration {self.checkpoint}"
        return f"interrupted at iteration {self.iteration}; {saved}"
