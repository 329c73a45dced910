"""What a device artifact is: the graph's fixed input and output names, and `device.json`,
the description that travels beside `device.onnx` (and is all a runner needs besides it).

numpy and the standard library only: the slim device runner and the browser page read the
same file. `read_spec` refuses a file that is missing, not JSON, of another format version,
or lacking a field the runner needs, naming the problem.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgeswitch.errors import DataError

FORMAT = "edgeswitch-device"
FORMAT_VERSION = 1
SPEC_FILE = "device.json"
GRAPH_FILES = {"float": "device.onnx", "int8": "device.int8.onnx"}
NEVER = 1e9   # `age` of a stream whose cloud never answered (numpy's state says inf)
META_ARTIFACT = "edgeswitch.artifact_id"
# float32 cannot settle a tie that float64 does: a switcher whose trust takes few values (trees,
# a saturated confidence) puts test clips exactly on the threshold or on a calibration
# quantile, where the graph's float32 trust lands an ulp or two off. A trust within TIE of the
# threshold (or of a quantile knot, for the controller) counts as equal to it.
TIE = 1e-6

# name, dtype, shape ("n": clips of one call; 1 on a device) - fixed: pages are built on them
INPUTS = (("clip", "float32", ["n", "T", "C"]),
          ("belief", "float32", ["n", "J", "K"]),
          ("age", "float32", ["n"]),
          ("last", "float32", ["n"]),
          ("cloud_proba", "float32", ["n", "K"]),
          ("cloud_mask", "float32", ["n"]),
          ("threshold", "float32", [1]))
OUTPUTS = (("edge_proba", "float32", ["n", "K"]),
           ("trust", "float32", ["n"]),
           ("offload", "bool", ["n"]),
           ("answer", "float32", ["n", "K"]),
           ("belief_next", "float32", ["n", "J", "K"]),
           ("age_next", "float32", ["n"]),
           ("last_next", "float32", ["n"]))
INPUT_NAMES = tuple(name for name, _, _ in INPUTS)
OUTPUT_NAMES = tuple(name for name, _, _ in OUTPUTS)

LOOP = ("step, then observe: out = run(clip, state, cloud_proba=0, cloud_mask=0); if "
        "out.offload (or the adaptive controller says so, from out.trust): ask the cloud; if it "
        "answered: out = run(clip, state, cloud_proba=reply, cloud_mask=1) (the same state: the "
        "edge runs twice on an answered offload); state = (out.belief_next, out.age_next, "
        "out.last_next); the clip's answer is out.answer")
LATE = ("not in the graph: an answer that arrives after later clips of its stream were routed "
        "(an asynchronous cloud) is dropped by this artifact's loop; the Python runtime ages it "
        "into the state (Router.late)")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


REQUIRED = ("format", "format_version", "artifact_id", "classes", "clip_shape", "input_bound",
            "threshold", "operating_point", "state", "initial_state", "graphs")


def read_spec(folder: str | Path) -> dict:
    """device.json of an exported artifact folder, checked to be one this code can run."""
    path = Path(folder) / SPEC_FILE
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"not a device artifact: {path} not found (write one with "
                        "`edgeswitch export-device BUNDLE --out DIR`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON device description ({exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise DataError(f"{path}: not an edgeswitch device description (format is not "
                        f"{FORMAT!r})")
    if spec.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: device format version {spec.get('format_version')!r}; this "
                        f"edgeswitch reads version {FORMAT_VERSION}: export the bundle again")
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise DataError(f"{path}: device description lacks {missing}")
    return spec


def json_number(x: float) -> float | str:
    """A threshold JSON can hold: +-inf as "Infinity" / "-Infinity" (what both Python's
    float() and JavaScript's Number() read back)."""
    x = float(x)
    if x == float("inf"):
        return "Infinity"
    return "-Infinity" if x == float("-inf") else x


# the cloud endpoint a device asks (the native protocol of `edgeswitch serve-cloud`)
CLOUD = {"protocol": "native", "method": "POST", "path": "/v1/classify",
         "auth": "Authorization: Bearer <token> (a device token)",
         "headers": {"X-Edgeswitch-Deadline-Ms": "optional: the edge's remaining wait, so the "
                     "server drops a request nobody waits for any more"},
         "request": {"clips": {"shape": "[n, T, C]", "dtype": "float32",
                               "b64": "base64 of the clips' little-endian float32 bytes"}},
         "response": {"proba": "[n, K] class probabilities",
                      "classes": "the server's class names in order: must equal these"},
         "openai": "or POST {base}/chat/completions with the clip as a .npy file part "
                   "(runtime.protocol = openai; edgeswitch.cloud.transports)"}
