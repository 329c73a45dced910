"""Video: decoding to clips (PyAV), pose and fall models, vision-language cloud models."""
