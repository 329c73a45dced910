"""The old name of evaluation/quality.py (accuracy, macro-F1), kept only for the modules that
still import it (runtime/replay.py, evaluation/curves.py, pipeline/evaluate.py,
benchmark/evaluate.py): switch them to edgeswitch.evaluation.quality, then delete this file."""

from edgeswitch.evaluation.quality import accuracy, macro_f1

__all__ = ["accuracy", "macro_f1"]
