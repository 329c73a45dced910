"""Tiny randomly initialised Hugging Face checkpoints built on the spot (no download is possible
offline), for the hf-vilt and hf-video-llava tests: they check loading, preprocessing and the way
answers become probabilities, not what a real checkpoint would say. Needs the hf extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeswitch.video.source import VideoClip

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "is", "the", "person", "falling", "or",
         "lying", "on", "floor", "?", "what", "doing", "answer", "with", "one", "word", "from",
         ":", ",", ".", "adl", "fall", "user", "assistant", "<video>", "<image>", "<s>", "</s>"]
# a prompt in the tiny tokenizer's words
LLAVA_TEST_PROMPT = ("user : <video> what is the person doing ? answer from : {labels} . "
                     "assistant :")


def clips(n=2, frames=8, size=(48, 64)) -> list[VideoClip]:
    """n clips of random RGB frames (a SYNTHETIC stand-in for decoded video)."""
    rng = np.random.default_rng(0)
    return [VideoClip("synthetic.mp4", float(i), float(i) + 4,
                      rng.integers(0, 255, (frames, *size, 3), dtype=np.uint8),
                      np.linspace(i, i + 4, frames, endpoint=False)) for i in range(n)]


def word_tokenizer(cls):
    """A tiny word-level fast tokenizer over WORDS (the real ones would be downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return cls(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
               sep_token="[SEP]", mask_token="[MASK]", bos_token="<s>", eos_token="</s>")


def build_vilt(d: Path) -> Path:
    """A ViLT VQA checkpoint (answers no / yes / maybe) saved into `d`."""
    import torch
    from transformers import (
        BertTokenizerFast,
        ViltConfig,
        ViltForQuestionAnswering,
        ViltImageProcessor,
        ViltProcessor,
    )

    torch.manual_seed(0)
    cfg = ViltConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, image_size=64, patch_size=16, vocab_size=len(WORDS),
                     max_position_embeddings=40, num_images=1, id2label={0: "no", 1: "yes",
                                                                          2: "maybe"})
    ViltForQuestionAnswering(cfg).save_pretrained(d)
    image_proc = ViltImageProcessor(size={"shortest_edge": 64}, size_divisor=16)
    (d / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    ViltProcessor(image_proc, tokenizer).save_pretrained(d)
    return d


def build_llava(d: Path) -> Path:
    """A Video-LLaVA checkpoint (CLIP vision tower, Llama text model) saved into `d`."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        PreTrainedTokenizerFast,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
        VideoLlavaImageProcessor,
    )

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=32, patch_size=16)
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, vocab_size=len(WORDS),
                       max_position_embeddings=256, pad_token_id=0)
    cfg = VideoLlavaConfig(vision_config=vision, text_config=text,
                           image_token_index=WORDS.index("<image>"),
                           video_token_index=WORDS.index("<video>"), projector_hidden_act="gelu",
                           vision_feature_layer=-1)
    VideoLlavaForConditionalGeneration(cfg).save_pretrained(d)
    tok = word_tokenizer(PreTrainedTokenizerFast)
    tok.add_special_tokens({"additional_special_tokens": ["<video>", "<image>"]})
    tok.save_pretrained(d)
    VideoLlavaImageProcessor(size={"shortest_edge": 32},
                             crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d
