"""The kit's word-level tokenizer over the world's words, and the Janus processor around it."""

from __future__ import annotations

import functools
from typing import Sequence

from .. import concepts, world

SPECIAL = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "sep": "<sep>",
           "image": "<image_placeholder>", "boi": "<begin_of_image>", "eoi": "<end_of_image>"}
EXTRA_WORDS = (",", "!", ":", ";", "describe", "both", "images", "same", "different")
SPLIT_PATTERN = r"'s\b|[?.,!;:]"

# --------------------------------------------------------------------------- tokenizer and processor


@functools.lru_cache(maxsize=1)
def _base_words() -> tuple[str, ...]:
    return tuple(sorted(set(world.vocabulary()) | concepts.prompt_words() | set(EXTRA_WORDS)))


def base_words() -> list[str]:
    """The tokenizer's words: the world's, the concept prompts' and a few punctuation marks."""
    return list(_base_words())


def build_tokenizer(extra_words: Sequence[str] = ()):
    """A ``PreTrainedTokenizerFast`` (WordLevel, lower-cased, no unknown token) over :func:`base_words`.

    ``?``, ``.``, ``,`` and ``'s`` are separate tokens. There is no ``<unk>``: unknown
    words make the tokenizer raise (the kit's functions raise :class:`~unikit.formats.OutOfVocabularyError`
    naming them). New words or concept tokens: ``tokenizer.add_tokens([...])``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL.values())
    words = [w for w in sorted(set(base_words()) | set(extra_words)) if w not in specials]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + words)}))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, "x ?" -> "x?"
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"], pad_token=SPECIAL["pad"],
        sep_token=SPECIAL["sep"], padding_side="left", model_max_length=4096,
        extra_special_tokens={"image_token": SPECIAL["image"], "boi_token": SPECIAL["boi"], "eoi_token": SPECIAL["eoi"]},
    )


def build_processor(tokenizer=None, image_size: int = world.IMAGE_SIZE, num_image_tokens: int = 64):
    """A ``JanusProcessor`` (tokenizer + PIL image processor) for ``image_size`` images.

    Pixels are scaled to [-1, 1] (mean = std = 0.5, like Janus and its VQ tokenizer);
    other sizes are resized with nearest neighbour, like the world's own scaling.
    """
    from transformers import JanusImageProcessorPil, JanusProcessor
    from transformers.image_utils import PILImageResampling

    image_processor = JanusImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        resample=PILImageResampling.NEAREST, min_size=min(14, image_size))
    return JanusProcessor(image_processor, tokenizer or build_tokenizer(), num_image_tokens=num_image_tokens)




