"""Video models by name, for the CLI and config files.

Edge: `nfd` (MoveNet + the NFD fall head), `pose:MODEL.onnx` (MoveNet + a pose-sequence model
trained with `edgeswitch train-pose`), `hf-vilt:DIR` (a local ViLT VQA checkpoint).
Cloud: `openai-vlm` (with a URL and a model name), `yolo-fall[:MODEL.onnx]` (opt-in, AGPL
weights installed by the user), `hf-video-llava:DIR` (a local Video-LLaVA checkpoint).
"""

from __future__ import annotations

from edgeswitch.config import RuntimeConfig
from edgeswitch.errors import EdgeSwitchError

EDGE_KINDS = ("nfd", "pose:MODEL.onnx", "hf-vilt:DIR")
CLOUD_KINDS = ("openai-vlm", "yolo-fall[:MODEL.onnx]", "hf-video-llava:DIR")


def video_edge(spec: str, threads: int = 1):
    kind, _, arg = spec.partition(":")
    if kind == "nfd":
        from edgeswitch.video.edge_models import NFDFallModel

        return NFDFallModel(threads=threads)
    if kind == "pose" and arg:
        from edgeswitch.video.edge_models import PoseClassifier

        return PoseClassifier.load(arg, threads=threads)
    if kind == "hf-vilt" and arg:
        from edgeswitch.video.hf_models import HFViltEdge

        return HFViltEdge(arg)
    raise EdgeSwitchError(f"unknown video edge model {spec!r}; use one of {list(EDGE_KINDS)}")


def video_cloud(spec: str, url: str | None = None, model: str | None = None,
                token: str | None = None, classes: tuple[str, ...] = ("adl", "fall"),
                ca_cert: str | None = None, runtime: RuntimeConfig | None = None, **vlm):
    """A video cloud by name. `openai-vlm` is the shared remote client (deadline, retries,
    circuit breaker: `runtime`, default `vlm.VLM_RUNTIME`, 60 s a round; `ca_cert`: the CA or
    self-signed certificate to trust for https); `vlm` are `VLMConfig` fields."""
    kind, _, arg = spec.partition(":")
    if kind != "openai-vlm" and (ca_cert or runtime or vlm):
        raise EdgeSwitchError(f"{spec} runs in this process: the VLM settings, --ca-cert and "
                              "the runtime flags apply to --cloud-url only")
    if kind == "openai-vlm":
        from edgeswitch.video.vlm import OpenAIVLM, VLMConfig

        if not url or not model:
            raise EdgeSwitchError("openai-vlm needs --cloud-url (e.g. http://127.0.0.1:8000/v1)"
                                  " and --model (the served model's name)")
        return OpenAIVLM(VLMConfig(url, model, classes=classes, token=token, **vlm), runtime,
                         verify=ca_cert or True)
    if kind == "yolo-fall":
        from edgeswitch.video.yolo_fall import YoloFall

        return YoloFall(arg or None)
    if kind == "hf-video-llava" and arg:
        from edgeswitch.video.hf_models import HFVideoLlavaCloud

        return HFVideoLlavaCloud(arg, classes=classes)
    raise EdgeSwitchError(f"unknown video cloud model {spec!r}; use one of {list(CLOUD_KINDS)}")
