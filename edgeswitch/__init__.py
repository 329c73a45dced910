"""edgeswitch: hybrid edge-cloud action classification with a DMD-trained switcher.

Subpackages, one per concept of the method:
  data        clips, loaders, group splits
  models      edge and cloud classifiers (torch training, ONNX Runtime inference)
  dmd         unsupervised switcher targets from edge/cloud agreement
  switcher    the learned switcher, baseline routers, threshold calibration
  runtime     the hybrid classifier and the cloud client interface
  evaluation  metrics, offload curves, reports
  cli         the `edgeswitch` command
Heavy dependencies (the 'train' extra: torch, scipy, pandas, pyarrow, matplotlib, ...) are
imported inside the functions that use them, so `import edgeswitch` stays cheap and a device's
core install (numpy, onnxruntime, httpx, pydantic, tqdm) runs `classify` and `watch`;
edgeswitch/extras.py says which extra brings which package.
"""

__version__ = "0.1.0"
