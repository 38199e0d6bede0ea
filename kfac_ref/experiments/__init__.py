"""The experiments beside the paper (§13) and the edges of the package: everything here uses
the math modules of :mod:`kfac_ref` and none of them uses anything here
(``tests/test_layout.py``).

* :mod:`~kfac_ref.experiments.runner`: the §13 autoencoders and a training run with its log,
  checkpoints and resume (:func:`run_experiment`, :class:`RunConfig`; re-exported here)
* :mod:`~kfac_ref.experiments.schedules`: mini-batch sizes, momentum schedule, iterate averaging
* :mod:`~kfac_ref.experiments.sgd`: the SGD-momentum baseline
* :mod:`~kfac_ref.experiments.data`: the data sets (MNIST, CURVES, FACES)
* :mod:`~kfac_ref.experiments.io`: checkpoints and atomic files
* :mod:`~kfac_ref.experiments.cli`: the command line (``python -m kfac_ref``)
"""

from .runner import (
    AUTOENCODERS,
    KFAC_OVERRIDABLE,
    MAY_CHANGE_ON_RESUME,
    METHODS,
    RUN_FILES,
    RunConfig,
    RunState,
    autoencoder,
    batch_size,
    check_run_dir,
    describe_data,
    finished_log,
    load_run_data,
    make_optimizer,
    reconstruction_error,
    run_data_info,
    run_experiment,
)

__all__ = [
    "AUTOENCODERS",
    "KFAC_OVERRIDABLE",
    "MAY_CHANGE_ON_RESUME",
    "METHODS",
    "RUN_FILES",
    "RunConfig",
    "RunState",
    "autoencoder",
    "batch_size",
    "check_run_dir",
    "describe_data",
    "finished_log",
    "load_run_data",
    "make_optimizer",
    "reconstruction_error",
    "run_data_info",
    "run_experiment",
]
