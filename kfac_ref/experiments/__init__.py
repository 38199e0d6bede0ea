"""The experiments beside the paper (§13) and the edges of the package: everything here uses
the math modules of :mod:`kfac_ref` and none of them uses anything here
(``tests/test_layout.py``).

* :mod:`~kfac_ref.experiments.run_config`: what a §13 run is (:class:`RunConfig`, the
  autoencoders, the methods)
* :mod:`~kfac_ref.experiments.runner`: the training loop with its log, checkpoints and resume
  (:func:`run_experiment`)
* :mod:`~kfac_ref.experiments.run_dir`: the run directory (its files, the checkpoint's content
  and its checks, the data fingerprint, a finished run's log)
* :mod:`~kfac_ref.experiments.schedules`: mini-batch sizes, momentum schedule, iterate averaging
* :mod:`~kfac_ref.experiments.sgd`: the SGD-momentum baseline
* :mod:`~kfac_ref.experiments.structures_compare`: every curvature structure in one optimizer on
  a small autoencoder (the figure ``paper_figures/structures_compare.py``, notebook 06)
* :mod:`~kfac_ref.experiments.data`: the data sets (MNIST, CURVES, FACES)
* :mod:`~kfac_ref.experiments.checkpoint`: checkpoints, saved and loaded without running code
* :mod:`~kfac_ref.experiments.run_lock`: one writer per run directory (``run.lock``)
* :mod:`~kfac_ref.experiments.io`: atomic files, JSON-lines logs, reading regular files only
* :mod:`~kfac_ref.experiments.cli`: the command line (``python -m kfac_ref``): its parser, whose
  ``train`` options are RunConfig's fields
* :mod:`~kfac_ref.experiments.commands`: what its subcommands do (``train``, ``compare``)
* :mod:`~kfac_ref.experiments.exit_status`: a failure as one line and an exit status (the
  command line, the figure scripts)
"""

from .run_config import (
    AUTOENCODERS,
    KFAC_OVERRIDABLE,
    MAY_CHANGE_ON_RESUME,
    METHODS,
    RunConfig,
    autoencoder,
    batch_size,
    make_optimizer,
)
from .run_dir import RUN_FILES, RunState, check_run_dir, finished_log
from .runner import (
    describe_data,
    load_run_data,
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
