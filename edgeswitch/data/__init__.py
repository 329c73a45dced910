"""Clips, loaders and group splits."""

from edgeswitch.data.clips import ClipBatch, check_clips
from edgeswitch.data.loaders import load_dataset
from edgeswitch.data.splits import SPLITS, Splits, split_by_group

__all__ = ["SPLITS", "ClipBatch", "Splits", "check_clips", "load_dataset", "split_by_group"]
