"""Hugging Face `transformers` models from local checkpoints (nothing is downloaded).

- `hf-vilt` (edge): a ViLT visual-question-answering checkpoint asked a yes/no question about
  each of a few frames; P(fall) is the mean share of "yes" over the frames, and the embedding
  is the mean pooled ViLT feature.
- `hf-video-llava` (cloud): a Video-LLaVA checkpoint given the clip's frames as a video and a
  prompt listing the labels; class probabilities are the softmax of the next-token logits at
  the first token of each label.

Both need `pip install -e ".[hf]"` and a checkpoint folder (`save_pretrained` output, with its
processor). Install torch from the local CPU wheel first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeswitch.errors import ModelError
from edgeswitch.models.base import ModelOutput, class_indices
from edgeswitch.video.inputs import check_video_clips
from edgeswitch.video.source import VideoClip

VILT_QUESTION = "Is the person falling or lying on the floor?"
LLAVA_PROMPT = ("USER: <video>\nWhat is the person doing? Answer with one word from: "
                "{labels}. ASSISTANT:")


def _frames(clip: VideoClip, n: int) -> list[np.ndarray]:
    pick = np.linspace(0, len(clip.frames) - 1, min(n, len(clip.frames))).round().astype(int)
    return [clip.frames[i] for i in pick]


def _load(kind: str, path: str, model_cls, processor_cls):
    try:
        model = model_cls.from_pretrained(path, local_files_only=True)
        processor = processor_cls.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{kind}: cannot load a local checkpoint from {path}: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.eval(), processor


class HFViltEdge:
    """Edge: ViLT yes/no visual question answering over a few frames of each clip."""

    def __init__(self, path: str, question: str = VILT_QUESTION, frames: int = 2) -> None:
        from transformers import ViltForQuestionAnswering, ViltProcessor

        self.model, self.processor = _load("hf-vilt", path, ViltForQuestionAnswering,
                                           ViltProcessor)
        answers = {str(v).lower(): int(k) for k, v in self.model.config.id2label.items()}
        if not {"yes", "no"} <= answers.keys():
            raise ModelError(f"hf-vilt: {path} has no yes/no answers among its labels")
        self._yes, self._no = answers["yes"], answers["no"]
        self.question, self.frames = question, frames
        self.classes_, self.name = ("adl", "fall"), f"hf-vilt:{path}"

    def outputs(self, clips: Sequence[VideoClip]) -> ModelOutput:
        import torch

        proba, emb = [], []
        for clip in check_video_clips(clips, self.name):
            images = _frames(clip, self.frames)
            inputs = self.processor(images=images, text=[self.question] * len(images),
                                    return_tensors="pt", padding=True)
            with torch.no_grad():
                pooled = self.model.vilt(**inputs).pooler_output
                logits = self.model.classifier(pooled)
            yes_no = torch.sigmoid(logits[:, [self._yes, self._no]])
            p_fall = float((yes_no[:, 0] / yes_no.sum(dim=1).clamp_min(1e-9)).mean())
            proba.append([1 - p_fall, p_fall])
            emb.append(pooled.mean(dim=0).numpy())
        return ModelOutput(proba=np.asarray(proba, np.float32),
                           embedding=np.asarray(emb, np.float32))

    def predict_proba(self, clips: Sequence[VideoClip]) -> np.ndarray:
        return self.outputs(clips).proba

    def predict(self, clips: Sequence[VideoClip]) -> np.ndarray:
        """int64 indices into `classes_`."""
        return self.outputs(clips).label


class HFVideoLlavaCloud:
    """Cloud: Video-LLaVA over the clip's frames; label probabilities from next-token logits.

    The clip goes in through the checkpoint's image processor and tokenizer (its video
    processor would need torchvision, which has no CPU build here): each frame adds its
    patches plus one class token to the `<video>` placeholder, as the model expects."""

    def __init__(self, path: str, classes: tuple[str, ...] = ("adl", "fall"),
                 prompt: str = LLAVA_PROMPT, frames: int = 8) -> None:
        from transformers import (
            AutoTokenizer,
            VideoLlavaForConditionalGeneration,
            VideoLlavaImageProcessor,
        )

        self.model, self.tokenizer = _load("hf-video-llava", path,
                                           VideoLlavaForConditionalGeneration, AutoTokenizer)
        self.image_processor = VideoLlavaImageProcessor.from_pretrained(path,
                                                                        local_files_only=True)
        self.classes_, self.name = tuple(classes), f"hf-video-llava:{path}"
        if "<video>" not in prompt:
            raise ModelError("hf-video-llava: the prompt needs a <video> placeholder")
        self.prompt, self.frames = prompt.format(labels=", ".join(classes)), frames
        ids = [self._first_token(c) for c in classes]
        unk = self.tokenizer.unk_token_id
        if None in ids or unk in ids or len(set(ids)) != len(ids):
            raise ModelError(f"hf-video-llava: the labels {classes} do not start with distinct "
                             "known tokens in this tokenizer; rename them")
        self._label_ids = ids

    def _first_token(self, label: str) -> int | None:
        """The first token the model would write for `label` right after the prompt (a
        SentencePiece tokenizer may emit a bare space token first: skip such tokens)."""
        tok = self.tokenizer
        base = tok(self.prompt).input_ids
        full = tok(self.prompt + " " + label).input_ids
        k = next((i for i, (a, b) in enumerate(zip(base, full, strict=False)) if a != b),
                 len(base))
        for t in full[k:]:
            if tok.decode([t]).strip():
                return t
        return None

    def _inputs(self, clip: VideoClip) -> dict:
        from transformers.utils import logging

        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # the processor warns that videos are deprecated there
        try:
            pix = self.image_processor(images=None, videos=[_frames(clip, self.frames)],
                                       return_tensors="pt")["pixel_values_videos"]
        finally:
            logging.set_verbosity(verbosity)
        n_frames, _, h, w = pix.shape[1:]
        patch = self.model.config.vision_config.patch_size
        n_tokens = n_frames * ((h // patch) * (w // patch) + 1)
        text = self.prompt.replace("<video>", "<video>" * n_tokens)
        return dict(self.tokenizer(text, return_tensors="pt"), pixel_values_videos=pix)

    def predict_proba(self, clips: Sequence[VideoClip]) -> np.ndarray:
        import torch

        out = []
        for clip in check_video_clips(clips, self.name):
            with torch.no_grad():
                logits = self.model(**self._inputs(clip)).logits[0, -1, self._label_ids]
            out.append(torch.softmax(logits.float(), dim=0).numpy())
        return np.asarray(out, np.float64)

    def predict(self, clips: Sequence[VideoClip]) -> np.ndarray:
        """int64 indices into `classes_`."""
        return class_indices(self.predict_proba(clips))
