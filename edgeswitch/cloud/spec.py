"""`CloudSpec`: which cloud client to build, from plain settings that pickle (a CLI command
builds it here; a Ray worker builds it from the same spec)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeswitch.config import DistillConfig, RuntimeConfig
from edgeswitch.errors import EdgeSwitchError


@dataclass
class CloudSpec:
    """How each worker reaches the cloud: an ONNX file loaded in the worker, or a server."""

    model: str | None = None          # ONNX file (the cloud runs in-worker)
    url: str | None = None            # or an `edgeswitch serve-cloud` / OpenAI-compatible URL
    token: str | None = None
    served_model: str | None = None   # model name to ask the server for
    ca_cert: str | None = None        # CA or self-signed certificate to trust (https)
    client_cert: str | None = None    # mutual TLS: this client's certificate and key (PEM)
    client_key: str | None = None
    # a DMD worker's cloud: the timeout of a DMD run ([distill] cloud_timeout_ms)
    runtime: RuntimeConfig = field(default_factory=lambda: RuntimeConfig(
        deadline_ms=DistillConfig().cloud_timeout_ms))

    def __post_init__(self) -> None:
        if (self.model is None) == (self.url is None):
            raise EdgeSwitchError("give the cloud as an ONNX model file or a server URL, "
                                  "not both or neither")

    def build(self, classes: tuple[str, ...], model_bytes: bytes | None = None):
        """The cloud client (anything with `predict_proba`)."""
        if self.model is not None:
            from edgeswitch.cloud.client import InProcessCloud
            from edgeswitch.models import OnnxClassifier

            return InProcessCloud(OnnxClassifier(model_bytes or self.model))
        from edgeswitch.cloud.remote import RemoteCloud

        mtls = (self.client_cert, self.client_key) if self.client_cert or self.client_key \
            else None
        return RemoteCloud(self.url, classes, self.runtime, token=self.token,
                           model=self.served_model, verify=self.ca_cert or True,
                           client_cert=mtls)

    def identity(self, cloud) -> str:
        """The server's URL and the model it serves, asked at /v1/models by `cloud` (the
        client this spec built), for the manifest."""
        served = cloud.served_models()
        url = self.url.rstrip("/")
        model = self.served_model or (served[0] if served else None)
        if model not in served:
            raise EdgeSwitchError(f"the cloud server {url} serves {served}, not {model!r}")
        return f"remote:{url}#{model}"
