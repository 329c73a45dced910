"""One portable device artifact: the edge model, the router, the stream state and the fusion
in one ONNX graph (`device.onnx`, and an int8 `device.int8.onnx`), described by `device.json`.

`export` writes it from a deployed bundle (`edgeswitch export-device`); `runner.DeviceRunner`
runs it with numpy and onnxruntime alone (a slim install: no torch, scipy, pandas, onnx).
Nothing is imported here, so `import edgeswitch.device.runner` stays slim.
"""
