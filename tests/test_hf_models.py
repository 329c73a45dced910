"""hf-vilt and hf-video-llava through transformers, on tiny randomly initialised checkpoints
built here (no download is possible offline). This checks loading, preprocessing and the
way answers become probabilities and embeddings, not what a real checkpoint would say."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="needs the hf extra")
pytest.importorskip("av", reason="needs the video extra")

from edgeswitch.errors import ModelError  # noqa: E402
from edgeswitch.video.source import VideoClip  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "is", "the", "person", "falling", "or",
         "lying", "on", "floor", "?", "what", "doing", "answer", "with", "one", "word", "from",
         ":", ",", ".", "adl", "fall", "user", "assistant", "<video>", "<image>", "<s>", "</s>"]


def clips(n=2, frames=8, size=(48, 64)):
    rng = np.random.default_rng(0)
    return [VideoClip("synthetic.mp4", float(i), float(i) + 4,
                      rng.integers(0, 255, (frames, *size, 3), dtype=np.uint8),
                      np.linspace(i, i + 4, frames, endpoint=False)) for i in range(n)]


def word_tokenizer(tmp_path, cls):
    """A tiny word-level fast tokenizer over WORDS (the real ones would be downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return cls(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
               sep_token="[SEP]", mask_token="[MASK]", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def vilt_dir(tmp_path_factory):
    import torch
    from transformers import (
        BertTokenizerFast,
        ViltConfig,
        ViltForQuestionAnswering,
        ViltImageProcessor,
        ViltProcessor,
    )

    d = tmp_path_factory.mktemp("vilt")
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


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        PreTrainedTokenizerFast,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
        VideoLlavaImageProcessor,
    )

    d = tmp_path_factory.mktemp("llava")
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
    tok = word_tokenizer(d, PreTrainedTokenizerFast)
    tok.add_special_tokens({"additional_special_tokens": ["<video>", "<image>"]})
    tok.save_pretrained(d)
    VideoLlavaImageProcessor(size={"shortest_edge": 32},
                             crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d


def test_vilt_edge_gives_probabilities_and_an_embedding(vilt_dir):
    from edgeswitch.video.hf_models import HFViltEdge

    edge = HFViltEdge(str(vilt_dir))
    out = edge.outputs(clips(3))
    assert out.proba.shape == (3, 2) and np.allclose(out.proba.sum(axis=1), 1)
    assert out.embedding.shape == (3, 32)
    assert len({tuple(r) for r in out.proba.round(6)}) > 1  # different clips, different answers
    with pytest.raises(ModelError, match="local checkpoint"):
        HFViltEdge(str(vilt_dir / "missing"))


def test_video_llava_cloud_scores_the_labels(llava_dir):
    from edgeswitch.video.hf_models import HFVideoLlavaCloud

    prompt = "user : <video> what is the person doing ? answer from : {labels} . assistant :"
    cloud = HFVideoLlavaCloud(str(llava_dir), prompt=prompt)
    p = cloud.predict_proba(clips(2))
    assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1)
    label = cloud.predict(clips(1))  # indices into classes_, like every model's predict
    assert label.dtype == np.int64 and cloud.classes_[label[0]] in ("adl", "fall")
    with pytest.raises(ModelError, match="distinct known tokens"):
        HFVideoLlavaCloud(str(llava_dir), classes=("zebra", "yak"), prompt=prompt)
