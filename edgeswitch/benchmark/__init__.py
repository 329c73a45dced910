"""Cross-validated evaluation of every router: folds, per-fold outputs and evaluation, statistics
across folds, reports. `run_benchmark` is what `edgeswitch benchmark` calls."""
