"""Precomputed DREAM picks: embed a dataset once, cluster every class, write the picks to a file.

At ImageNet scale the real cost of live DREAM is re-embedding every class pool every ``interval``
calls. When a fixed network is good enough (a trained checkpoint, or a fresh network as in DREAM's
initialisation), ``dream-plugin precompute`` does the work once and the ``precomputed`` strategy
answers selections from the file.

One job per module:

* :mod:`dream_plugin.engine.precompute.picks` - the file format: fingerprint, loading and validation;
* :mod:`.job` - the resumable job (``<out>.partial/``, one file per finished class, assembly);
* :mod:`.resume` - that folder kept trustworthy: atomic class files, checksums in the manifest;
* :mod:`.sources` - features given directly, synthetic features, or a dataset and a network;
* the ``dream-plugin precompute`` command is :mod:`dream_plugin.cli.precompute`.
"""

from dream_plugin.engine.precompute.picks import FORMAT, FORMAT_VERSION, Fingerprint, PicksFile, PicksFileError, load_picks
from dream_plugin.engine.clustering.options import KMeansOptions
from dream_plugin.engine.precompute.job import PrecomputeReport, partial_dir, run_precompute
from dream_plugin.engine.precompute.sources import precompute_dataset, precompute_from_features, synthetic_features

__all__ = [
    "FORMAT", "FORMAT_VERSION", "Fingerprint", "KMeansOptions", "PicksFile", "PicksFileError", "PrecomputeReport",
    "load_picks", "partial_dir", "precompute_dataset",
    "precompute_from_features", "run_precompute", "synthetic_features",
]
