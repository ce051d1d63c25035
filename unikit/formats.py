"""Prompt formats: how a question, an answer or a generation prompt becomes token ids.

- **The kit's models** (no chat template): ``<bos> [image block]* question <sep>``, then
  ``answer <eos>``; generation ``<bos> [image block]* prompt <boi>``.
- **A checkpoint with a chat template** (Janus-Pro): the template renders one user turn (images
  as the processor's image placeholder, expanded to ``<boi> <image>*N <eoi>``) and the
  assistant's generation prompt; understanding prompts start with Janus' default system prompt
  (``transformers``' ``DEFAULT_SYSTEM_PROMPT``); an answer follows as `` answer<eos>``;
  generation prompts end in ``<boi>``, as the processor's ``generation_mode="image"`` does.

An image block is ``<boi> <image> * num_image_tokens <eoi>``.
"""

from __future__ import annotations

import re
from typing import Sequence

# Janus-Pro's classifier-free guidance weight in DeepSeek's and transformers' generation examples.
JANUS_PRO_GUIDANCE = 5.0


class OutOfVocabularyError(ValueError):
    """Text uses words the tokenizer does not know; ``.words`` lists them."""

    def __init__(self, words: Sequence[str]):
        self.words = sorted(set(words))
        concept = [w for w in self.words if w.startswith("<") and w.endswith(">")]
        hint = (f" Concept tokens must be added first: unikit.tokens.add_concept(um, {concept[0].strip('<>')!r})."
                if concept else
                " The kit's tokenizer knows only the world's words (unikit.model.base_words()).")
        super().__init__(f"words not in the vocabulary: {self.words}.{hint}")


def check_vocabulary(tokenizer, texts: Sequence[str]) -> None:
    """Raise :class:`OutOfVocabularyError` listing every word of ``texts`` the tokenizer lacks.

    Only WordLevel tokenizers (the kit's) can lack words; others pass.
    """
    backend = tokenizer.backend_tokenizer
    if type(backend.model).__name__ != "WordLevel":
        return
    vocab = tokenizer.get_vocab()
    added = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
    splitter = re.compile("|".join(map(re.escape, added))) if added else None
    missing = []
    for text in texts:
        text = backend.normalizer.normalize_str(text) if backend.normalizer else text
        for piece in (splitter.split(text) if splitter else [text]):
            missing += [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(piece) if w not in vocab]
    if missing:
        raise OutOfVocabularyError(missing)


def uses_chat_template(um) -> bool:
    """Whether ``um``'s processor carries a chat template (Janus-Pro does; the kit's models do not)."""
    return bool(getattr(um.processor, "chat_template", None))


def image_block(um) -> list[int]:
    i = um.ids
    return [i["boi"]] + [i["image"]] * um.num_image_tokens + [i["eoi"]]


def text_ids(um, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of plain text pieces (no special tokens added); the kit's word-level tokenizer
    raises :class:`OutOfVocabularyError` for words it lacks."""
    check_vocabulary(um.tokenizer, texts)
    return um.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def _sep_ids(um) -> list[int]:
    sep = um.ids["sep"]
    return [sep] if sep is not None else um.tokenizer("\n", add_special_tokens=False)["input_ids"]


def _chat_ids(um, texts: Sequence[str], counts: Sequence[int], system: bool) -> list[list[int]]:
    """One user turn per text through the chat template, images expanded, as ids after ``<bos>``."""
    from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

    out = []
    for text, n in zip(texts, counts):
        content = [{"type": "image"}] * n + [{"type": "text", "text": text}]
        rendered = um.processor.apply_chat_template([{"role": "user", "content": content}],
                                                    add_generation_prompt=True, tokenize=False)
        if system and not rendered.startswith(DEFAULT_SYSTEM_PROMPT):
            rendered = DEFAULT_SYSTEM_PROMPT + rendered
        pieces = rendered.split(um.processor.image_token)
        if len(pieces) != n + 1:
            raise ValueError(f"the chat template rendered {len(pieces) - 1} image placeholders for {n} images")
        ids = []
        for k, piece_ids in enumerate(text_ids(um, pieces)):
            ids += (image_block(um) if k else []) + piece_ids
        out.append(ids)
    return out


def understanding_prompts(um, questions: Sequence[str], counts: Sequence[int]) -> list[list[int]]:
    """Per question, ``<bos>`` ... up to where its answer starts (``counts[i]`` images first)."""
    bos = [um.ids["bos"]]
    if uses_chat_template(um):
        return [bos + ids for ids in _chat_ids(um, questions, counts, system=True)]
    return [bos + image_block(um) * c + q + _sep_ids(um) for c, q in zip(counts, text_ids(um, questions))]


def answer_ids(um, answers: Sequence[str]) -> list[list[int]]:
    """Each answer's ids followed by ``<eos>`` (after a chat template's ``Assistant:``, a space first)."""
    lead = " " if uses_chat_template(um) else ""
    return [ids + [um.ids["eos"]] for ids in text_ids(um, [lead + a for a in answers])]


def generation_prompts(um, prompts: Sequence[str], counts: Sequence[int]) -> list[list[int]]:
    """Per prompt, ``<bos>`` ... ``<boi>``: text-to-image, or an edit's instruction after its source image(s)."""
    bos, boi = [um.ids["bos"]], [um.ids["boi"]]
    if uses_chat_template(um):
        return [bos + ids + boi for ids in _chat_ids(um, prompts, counts, system=False)]
    return [bos + image_block(um) * c + t + boi for c, t in zip(counts, text_ids(um, prompts))]
