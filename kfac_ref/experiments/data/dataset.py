"""The record every loader of the §13 data sets returns, and the names it may carry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DATASET_NAMES = ("mnist", "curves", "faces")
ORIGINS = ("original", "subset", "stand-in", "reconstruction")


@dataclass(frozen=True)
class Dataset:
    """One data set of §13: training and test cases as rows of float64 host arrays.

    ``X_train: (n_train, d)``, ``X_test: (n_test, d)``; ``y_train`` / ``y_test`` are int64 labels
    of shape ``(n,)`` (MNIST) or ``None`` (the autoencoders' targets are the inputs).
    ``source`` says where the numbers came from (a file, or the generator and its seed).
    ``origin`` is one of :data:`ORIGINS`: ``"original"`` (the files the paper used),
    ``"subset"`` (part of the original, e.g. only the MNIST test split), ``"stand-in"``
    (generated here, not the paper's data: CURVES) or ``"reconstruction"`` (remade here from
    the same source by the published recipe, not the paper's file: FACES from the Olivetti
    faces). ``label`` is one line for logs, JSON and figure
    panels that names the data set, its origin and the number of cases, e.g.
    ``"MNIST test split only, 10,000 cases"``.
    """

    name: str
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""
    origin: str = "original"
    label: str = ""
