"""The model layer every lesson uses: a small Janus (``JanusForConditionalGeneration``).

Janus reads images for *understanding* through a SigLIP-style vision encoder (+ an
aligner), and writes images for *generation* as VQ codes through a separate
generation head: decoupled visual encoding. The kit builds tiny Janus models for the
32x32 world (:func:`build_model`), or loads any Janus checkpoint (:func:`load_model`).

Prompt formats (token ids, built here and the same in training and inference;
``N`` = understanding placeholders per image, ``T`` = VQ codes per image):

- understanding: ``<bos> [<begin_of_image> <image_placeholder>*N <end_of_image>]*k question <sep> answer <eos>``
  (one bracket per image, k = 0, 1, 2, ...; the loss covers ``answer <eos>``);
- text-to-image: ``<bos> prompt <begin_of_image>`` then T image codes;
- editing: ``<bos> <begin_of_image> <image_placeholder>*N <end_of_image> instruction <begin_of_image>`` then T codes.

Classifier-free guidance (Janus's way): the unconditional prompt replaces every token
but ``<bos>`` and ``<begin_of_image>`` by ``<pad>`` (so an edit's unconditional prompt
has no source image either); caption dropout in training does the same.

Batches are left-padded with an attention mask. Images are ``uint8[B, 32, 32, 3]``
numpy arrays (or lists of arrays / PIL images).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import concepts, formats, world
from .cache import atomic_path
from .vq import adapt_for_flat_images, unit_to_uint8

DEFAULT_MODEL_DIR = concepts.DATA_DIR / "base_model"
MAKE_DEFAULT = (
    "unikit pretrain --profile ship4 --workers 2 --out runs/ship4 --phases-from data/phases/tokenizer-4000 "
    "data/phases/vision-8000 && unikit pretrain --profile ship5 --workers 2 --out data/base_model "
    "--phases-from runs/ship4")
SPECIAL = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "sep": "<sep>",
           "image": "<image_placeholder>", "boi": "<begin_of_image>", "eoi": "<end_of_image>"}
EXTRA_WORDS = (",", "!", ":", ";", "describe", "both", "images", "same", "different")
SPLIT_PATTERN = r"'s\b|[?.,!;:]"
INFO_FILE = "unikit.json"
VQ_ADAPTED = "vq_affine_output_norms"  # unikit.json flag: re-apply vq.adapt_for_flat_images on load

# Sizes per profile; both read 32px images with patch 4 (8x8 = 64 understanding tokens)
# and write an 8x8 VQ grid (two downsamplings: len(channel_multiplier) - 1 = 2).
PROFILES = {
    "smoke": dict(hidden=64, layers=2, heads=2, intermediate=128, vision_hidden=64, vision_layers=1,
                  vision_heads=2, vq_base=32, vq_mult=(1, 1, 1), vq_res_blocks=1, vq_latent=32,
                  codebook=64, vq_embed_dim=8, context=256),
    "teach": dict(hidden=128, layers=4, heads=4, intermediate=384, vision_hidden=128, vision_layers=2,
                  vision_heads=4, vq_base=32, vq_mult=(1, 2, 2), vq_res_blocks=1, vq_latent=64,
                  codebook=512, vq_embed_dim=8, context=320),
}
# deep: teach's widths with twice the language-model layers (1.7M instead of 0.87M parameters);
# its tokenizer, encoder and aligner have teach's sizes, so their pretraining phases are shared.
PROFILES["deep"] = dict(PROFILES["teach"], layers=8)

EmbedHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``hook(input_ids [B, L], embeds [B, L, D]) -> embeds``: applied to text embeddings before image features."""


class ModelError(RuntimeError):
    """A checkpoint is missing, partial or not Janus, or a request the model cannot serve."""


class ImageResized(UserWarning):
    """An input image had another size than the model reads; it was resized (a notice, not an error)."""


class OutOfVocabularyError(ValueError):
    """Text uses words the tokenizer does not know; ``.words`` lists them."""

    def __init__(self, words: Sequence[str]):
        self.words = sorted(set(words))
        concept = [w for w in self.words if w.startswith("<") and w.endswith(">")]
        hint = (f" Concept tokens must be added first: unikit.tokens.add_concept(um, {concept[0].strip('<>')!r})."
                if concept else
                " The kit's tokenizer knows only the world's words (unikit.model.base_words()).")
        super().__init__(f"words not in the vocabulary: {self.words}.{hint}")


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
    words make the tokenizer raise (the kit's functions raise :class:`OutOfVocabularyError`
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


# --------------------------------------------------------------------------- configs


def make_config(profile: str = "teach", tokenizer=None, attn_implementation: str = "eager"):
    """A ``JanusConfig`` for a kit model size (``smoke``, ``teach`` or ``deep``); see :data:`PROFILES`.

    All projection dims equal the language model's hidden size; the VQ grid equals
    ``image_size // patch_size``; input and output embeddings are not tied.
    """
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    if profile == "gpu":
        raise ModelError("the gpu profile uses a real checkpoint: load_model('deepseek-community/Janus-Pro-1B')")
    if profile not in PROFILES:
        raise ModelError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    p = PROFILES[profile]
    tok = tokenizer or build_tokenizer()
    size, patch = world.IMAGE_SIZE, 4
    grid = size // patch
    if grid * 2 ** (len(p["vq_mult"]) - 1) != size:
        raise ModelError(f"profile {profile}: VQ downsamplings do not give a {grid}x{grid} grid")
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in SPECIAL.items()}
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=p["hidden"], intermediate_size=p["intermediate"],
        num_hidden_layers=p["layers"], num_attention_heads=p["heads"], num_key_value_heads=p["heads"],
        max_position_embeddings=p["context"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
        pad_token_id=ids["pad"], tie_word_embeddings=False)
    vision = JanusVisionConfig(
        hidden_size=p["vision_hidden"], num_hidden_layers=p["vision_layers"], num_attention_heads=p["vision_heads"],
        image_size=size, patch_size=patch, projection_dim=p["hidden"], depth=2, num_image_tokens=grid * grid)
    vq = JanusVQVAEConfig(
        embed_dim=p["vq_embed_dim"], num_embeddings=p["codebook"], latent_channels=p["vq_latent"],
        base_channels=p["vq_base"], channel_multiplier=list(p["vq_mult"]), num_res_blocks=p["vq_res_blocks"],
        num_patches=grid, projection_dim=p["hidden"], image_token_embed_dim=p["hidden"], num_hidden_layers=2)
    for c in [p["vq_base"] * m for m in p["vq_mult"]] + [p["vq_latent"]]:
        if c % 32:
            raise ModelError(f"profile {profile}: VQ channels {c} must be multiples of 32 (group norm)")
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids["image"],
                       tie_word_embeddings=False, attn_implementation=attn_implementation)


def parameter_table(model) -> dict[str, int]:
    """Parameter counts per part of a Janus model (or a :class:`UnifiedModel`)."""
    model = getattr(model, "model", model) if not hasattr(model, "lm_head") else model
    m = model.model
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    table = {
        "vision encoder": count(m.vision_model), "vision aligner": count(m.aligner),
        "language model": count(m.language_model), "lm head": count(model.lm_head),
        "VQ tokenizer": count(m.vqmodel), "generation embeddings": count(m.generation_embeddings),
        "generation aligner": count(m.generation_aligner), "generation head": count(m.generation_head),
    }
    table["total"] = count(model)
    return table


# --------------------------------------------------------------------------- the bundle


@dataclass
class UnifiedModel:
    """A Janus model with its processor and the sizes the kit's functions need."""

    model: object  # JanusForConditionalGeneration
    processor: object  # JanusProcessor
    source: str = ""
    profile: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def config(self):
        return self.model.config

    @property
    def image_size(self) -> int:
        """Side of the images the understanding path reads."""
        return int(self.config.vision_config.image_size)

    @property
    def num_image_tokens(self) -> int:
        """Placeholders per image in understanding prompts (``(image_size // patch_size) ** 2``)."""
        return (self.image_size // int(self.config.vision_config.patch_size)) ** 2

    @property
    def vq(self):
        return self.model.model.vqmodel

    @property
    def gen_grid(self) -> int:
        """Side of the VQ code grid (8 for the kit)."""
        return int(self.vq.quantize.quant_state_dims[0])

    @property
    def num_gen_tokens(self) -> int:
        return int(self.config.vision_config.num_image_tokens)

    @property
    def codebook_size(self) -> int:
        return int(self.config.vq_config.num_embeddings)

    @property
    def context_length(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def ids(self) -> dict[str, int | None]:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": pad, "sep": tok.sep_token_id,
                "image": int(self.config.image_token_id), "boi": tok.convert_tokens_to_ids(tok.boi_token),
                "eoi": tok.convert_tokens_to_ids(tok.eoi_token)}

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return (f"UnifiedModel({self.source or 'built'}: {n / 1e6:.2f}M parameters, {self.image_size}px, "
                f"{self.num_image_tokens} understanding tokens, {self.gen_grid}x{self.gen_grid} VQ codes "
                f"of {self.codebook_size})")


def build_model(profile: str = "teach", seed: int = 0, attn_implementation: str = "eager") -> UnifiedModel:
    """A freshly initialised kit model for ``profile`` (deterministic in ``seed``)."""
    from transformers import JanusForConditionalGeneration

    tok = build_tokenizer()
    config = make_config(profile, tok, attn_implementation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
        adapt_for_flat_images(model.model.vqmodel, reinit=True)
    _set_generation_ids(model, tok)
    model.eval()
    processor = build_processor(tok, config.vision_config.image_size, config.vision_config.num_image_tokens)
    return UnifiedModel(model, processor, source=f"built:{profile}", profile=profile,
                        info={"profile": profile, VQ_ADAPTED: True})


@torch.no_grad()
def move_to_vocabulary(um: UnifiedModel, tokenizer=None) -> UnifiedModel:
    """``um`` on another tokenizer (default: :func:`build_tokenizer`, today's words): each word keeps
    its input-embedding and text-head rows under its new id; words the old tokenizer lacked start
    at the mean row (untrained). Returns a new :class:`UnifiedModel` sharing every other weight."""
    new_tok = tokenizer or build_tokenizer()
    old_vocab, new_vocab = um.tokenizer.get_vocab(), new_tok.get_vocab()
    model = um.model
    old_in, old_out = model.get_input_embeddings().weight, model.lm_head.weight
    new_in = old_in.mean(0, keepdim=True).repeat(len(new_tok), 1)
    new_out = old_out.mean(0, keepdim=True).repeat(len(new_tok), 1)
    for word, i in new_vocab.items():
        if word in old_vocab:
            new_in[i], new_out[i] = old_in[old_vocab[word]], old_out[old_vocab[word]]
    model.resize_token_embeddings(len(new_tok))
    model.get_input_embeddings().weight.copy_(new_in)
    model.lm_head.weight.copy_(new_out)
    ids = {k: new_tok.convert_tokens_to_ids(v) for k, v in SPECIAL.items()}
    model.config.image_token_id = ids["image"]
    tc = model.config.text_config
    tc.vocab_size, tc.bos_token_id, tc.eos_token_id, tc.pad_token_id = len(new_tok), ids["bos"], ids["eos"], ids["pad"]
    _set_generation_ids(model, new_tok)
    v = model.config.vision_config
    processor = build_processor(new_tok, v.image_size, (v.image_size // v.patch_size) ** 2)
    return UnifiedModel(model, processor, source=um.source, profile=um.profile, info=dict(um.info))


def _set_generation_ids(model, tok) -> None:
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id = tok.bos_token_id, tok.eos_token_id
    gc.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


# --------------------------------------------------------------------------- load and save


@contextlib.contextmanager
def quiet_transformers():
    """No transformers progress bars (loading/saving a tiny model is instant)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def save_model(model, processor=None, path=None) -> Path:
    """Save a model and its processor (``save_pretrained``, safetensors) atomically to ``path``.

    ``model`` may be a :class:`UnifiedModel` (then ``processor`` may be omitted).
    """
    info = {}
    if isinstance(model, UnifiedModel):
        processor, info, model = processor or model.processor, dict(model.info), model.model
    if processor is None or path is None:
        raise ModelError("save_model needs a model, its processor and a path")
    path = Path(path)
    with atomic_path(path) as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (Path(tmp) / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def _resolve(path_or_name) -> Path:
    if path_or_name is None:
        if not DEFAULT_MODEL_DIR.is_dir():
            raise ModelError(f"the kit's base model is missing ({DEFAULT_MODEL_DIR}); make it with `{MAKE_DEFAULT}`")
        return DEFAULT_MODEL_DIR
    text = str(path_or_name)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{path} is a file; a checkpoint is a directory (config.json, weights, tokenizer)")
        return path
    looks_local = text.startswith((".", "/", "~")) or text.count("/") != 1
    if looks_local:
        raise ModelError(f"no checkpoint directory at {path}")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(text, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, RepositoryNotFoundError, ...
        raise ModelError(
            f"{text!r} is not a local directory and not in the Hugging Face cache ({type(e).__name__}); there is no "
            f"network here. Download it where there is (`hf download {text}`) and copy the cache, or pass a local path."
        ) from None


def _check_checkpoint(path: Path) -> None:
    missing = []
    config_file = path / "config.json"
    if not config_file.is_file():
        missing.append("config.json (the model config)")
    if not any((path / f).exists() for f in ("model.safetensors", "model.safetensors.index.json",
                                               "pytorch_model.bin", "pytorch_model.bin.index.json")):
        missing.append("model.safetensors (the weights)")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        missing.append("tokenizer.json (the tokenizer)")
    if missing:
        raise ModelError(f"incomplete checkpoint at {path}: missing {', '.join(missing)}. "
                         f"Re-save it with unikit.model.save_model or re-make it (`{MAKE_DEFAULT}`)")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "janus":
        raise ModelError(f"{path} holds a {model_type!r} model, not Janus (config model_type must be 'janus'); "
                         f"the kit runs JanusForConditionalGeneration checkpoints only")


def load_model(path_or_name=None, attn_implementation: str = "eager", dtype=torch.float32,
               device: str | torch.device = "cpu") -> UnifiedModel:
    """Load a Janus checkpoint: ``None`` (the kit's base model at ``data/base_model``), a local
    directory, or a Hugging Face id already in the local cache (e.g. ``deepseek-community/Janus-Pro-1B``).

    ``attn_implementation``: ``"eager"`` (attention maps) or ``"sdpa"`` (faster).
    Missing, partial or non-Janus checkpoints raise :class:`ModelError` naming what is wrong.
    """
    from transformers import JanusForConditionalGeneration, JanusProcessor

    path = _resolve(path_or_name)
    _check_checkpoint(path)
    with quiet_transformers():
        model = JanusForConditionalGeneration.from_pretrained(path, attn_implementation=attn_implementation,
                                                              dtype=dtype, local_files_only=True)
    model.to(device).eval()
    if any((path / f).exists() for f in ("processor_config.json", "preprocessor_config.json")):
        processor = JanusProcessor.from_pretrained(path, local_files_only=True)
    else:
        from transformers import AutoTokenizer
        v = model.config.vision_config
        processor = build_processor(AutoTokenizer.from_pretrained(path, local_files_only=True), v.image_size,
                                    (v.image_size // v.patch_size) ** 2)
    for name in ("image_token", "boi_token", "eoi_token"):
        if getattr(processor.tokenizer, name, None) is None:
            raise ModelError(f"the tokenizer at {path} has no {name} (Janus needs image, begin- and end-of-image tokens)")
    _set_generation_ids(model, processor.tokenizer)
    info_file = path / INFO_FILE
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    if info.get(VQ_ADAPTED):
        adapt_for_flat_images(model.model.vqmodel)
    return UnifiedModel(model, processor, source=str(path_or_name or path), profile=info.get("profile"), info=info)


def base_metrics(um) -> dict | None:
    """The quality its pretraining measured (``metrics.json`` beside the weights), or None for a
    checkpoint without one (a real Janus-Pro, a test's tiny model). ``um``: a :class:`UnifiedModel`,
    or the path or id :func:`load_model` takes (None: the shipped base model)."""
    source = um.source if isinstance(um, UnifiedModel) else um
    try:
        path = _resolve(source or None)
    except ModelError:
        return None
    return json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else None


# --------------------------------------------------------------------------- inputs


def pixel_values(um: UnifiedModel, images) -> torch.Tensor:
    """Images -> the understanding path's ``float[B, 3, S, S]`` (the processor's normalisation).

    ``uint8[B, S, S, 3]`` at the model's size take a fast path equal to the image processor's
    output; anything else (PIL images, other sizes) goes through the processor. A float
    tensor is taken as already processed.
    """
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        return images.to(um.device)
    ip = um.processor.image_processor
    s = um.image_size
    arr = np.asarray(images) if isinstance(images, np.ndarray) else None
    if arr is not None and arr.ndim == 3:
        arr = arr[None]
    if arr is not None and arr.ndim == 4 and arr.shape[1:3] != (s, s):
        import warnings
        warnings.warn(f"images of {arr.shape[1]}x{arr.shape[2]} pixels are resized to {s}x{s} by the image processor "
                      f"(this model reads {s}x{s}); render or resize them to {s}x{s} yourself to avoid it",
                      ImageResized, stacklevel=3)
    if arr is not None and arr.dtype == np.uint8 and arr.shape[1:] == (s, s, 3) and ip.do_rescale and ip.do_normalize:
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() * float(ip.rescale_factor)
        mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
        return ((x - mean) / std).to(um.device)
    return ip(images=list(images), return_tensors="pt")["pixel_values"].to(um.device)


def _as_list(x, n_name: str) -> list:
    if isinstance(x, str):
        return [x]
    if x is None:
        raise ValueError(f"{n_name} is required")
    return list(x)


def _split_images(images, n: int):
    """-> (images per example, all images in order) for n examples.

    ``images``: None; ``uint8[B, H, W, 3]``; a list whose entries are None, one image
    ``[H, W, 3]`` (or PIL) or several ``[k, H, W, 3]``; or pixel values ``float[B, 3, S, S]``
    / ``float[B, k, 3, S, S]``.
    """
    if images is None:
        return [0] * n, None
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        counts = [1 if images.dim() == 4 else images.shape[1]] * images.shape[0]
        batch = images if images.dim() == 4 else images.flatten(0, 1)
    else:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        counts, flat = [], []
        for im in images:
            if im is None:
                counts.append(0)
            elif isinstance(im, np.ndarray) and im.ndim == 4:
                counts.append(len(im))
                flat.extend(im)
            else:
                counts.append(1)
                flat.append(im)
        batch = (np.stack([np.asarray(im) for im in flat]) if all(isinstance(im, np.ndarray) for im in flat)
                 else flat) if flat else None
    if len(counts) != n:
        raise ValueError(f"got {len(counts)} images for {n} texts")
    return counts, (batch if any(counts) else None)


def _left_pad(seqs: list[list[int]], pad: int, labels: list[list[int]] | None = None):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    for r, s in enumerate(seqs):
        if s:
            ids[r, n - len(s):] = torch.tensor(s)
            mask[r, n - len(s):] = 1
            if labels is not None:
                lab[r, n - len(s):] = torch.tensor(labels[r])
    return ids, mask, lab


def _check_length(um: UnifiedModel, length: int, extra: int, what: str) -> None:
    if length + extra > um.context_length:
        raise ModelError(f"{what} is {length} tokens; with {extra} more it exceeds the model's context of "
                         f"{um.context_length} tokens: shorten it")


def understanding_inputs(um: UnifiedModel, images, questions, answers=None) -> dict:
    """Token ids for understanding: ``input_ids``/``attention_mask`` ``[B, L]`` (left-padded),
    ``labels`` ``[B, L]`` (answer + eos, else -100; only with answers) and ``pixel_values``
    ``[n_images, 3, S, S]`` or None. ``images`` may be None or contain None (text-only QA)."""
    questions = _as_list(questions, "questions")
    counts, batch = _split_images(images, len(questions))
    a_ids = formats.answer_ids(um, _as_list(answers, "answers")) if answers is not None else None
    if a_ids is not None and len(a_ids) != len(questions):
        raise ValueError(f"got {len(a_ids)} answers for {len(questions)} questions")
    seqs, labels = [], []
    for r, prompt in enumerate(formats.understanding_prompts(um, questions, counts)):
        tail = a_ids[r] if a_ids is not None else []
        seqs.append(prompt + tail)
        labels.append([-100] * len(prompt) + tail)
    ids, mask, lab = _left_pad(seqs, um.ids["pad"], labels)
    _check_length(um, ids.shape[1], 0, "the understanding prompt")
    out = {"input_ids": ids.to(um.device), "attention_mask": mask.to(um.device),
           "pixel_values": pixel_values(um, batch) if batch is not None else None}
    if a_ids is not None:
        out["labels"] = lab.to(um.device)
    return out


def embed(um: UnifiedModel, input_ids, pixel_values=None, embed_hook: EmbedHook | None = None) -> torch.Tensor:
    """Input embeddings ``[B, L, D]``: text rows (through ``embed_hook`` if given) with the vision
    features of ``pixel_values`` scattered into the image placeholders (in order)."""
    model = um.model
    emb = model.get_input_embeddings()(input_ids)
    if embed_hook is not None:
        emb = embed_hook(input_ids, emb)
    if pixel_values is not None:
        feats = model.model.get_image_features(pixel_values).pooler_output
        place = input_ids == um.ids["image"]
        if int(place.sum()) != feats.shape[0] * feats.shape[1]:
            raise ModelError(f"{int(place.sum())} image placeholders for {feats.shape[0]} images of {feats.shape[1]} tokens")
        emb = emb.masked_scatter(place.unsqueeze(-1), feats.reshape(-1, emb.shape[-1]).to(emb.dtype))
    return emb


def _uncond(um: UnifiedModel, ids: torch.Tensor) -> torch.Tensor:
    """Janus's unconditional prompt: every token but BOS and BOI replaced by PAD."""
    keep = (ids == um.ids["bos"]) | (ids == um.ids["boi"])
    return torch.where(keep, ids, torch.full_like(ids, um.ids["pad"]))


@functools.cache
def _cache_keyword() -> str:
    """The keyword the installed transformers' language model takes its KV cache by
    (``cache`` in recent 5.x releases, ``past_key_values`` before, now deprecated)."""
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def run_language_model(um: UnifiedModel, embeds, mask, cache=None, **kw):
    """The language model on ``inputs_embeds`` ``[B, L, D]`` with ``attention_mask`` ``[B, L]``;
    ``cache``: the KV cache of an earlier call (see :func:`kv_cache`). Keyword arguments such
    as ``output_attentions`` or ``use_cache`` pass through."""
    if cache is not None:
        kw[_cache_keyword()] = cache
    return um.model.model.language_model(inputs_embeds=embeds, attention_mask=mask, **kw)


def kv_cache(out):
    """The KV cache a :func:`run_language_model` call with ``use_cache=True`` returned."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


# --------------------------------------------------------------------------- understanding


@torch.no_grad()
def answer(um: UnifiedModel, images, questions, max_new_tokens: int = 4,
           embed_hook: EmbedHook | None = None) -> list[str]:
    """Greedy answers to ``questions`` (``list[str]``) about ``images`` (``uint8[B, 32, 32, 3]``,
    or None / None entries for text-only questions). Returns ``B`` strings (without ``<eos>``)."""
    batch = understanding_inputs(um, images, questions)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    _check_length(um, ids.shape[1], max_new_tokens, "the question prompt")
    out = run_language_model(um, embed(um, ids, batch["pixel_values"], embed_hook), mask, use_cache=True)
    eos, B = um.ids["eos"], ids.shape[0]
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    result = [[] for _ in range(B)]
    for _ in range(max_new_tokens):
        nxt = um.model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        for r in range(B):
            if not done[r] and nxt[r] != eos:
                result[r].append(int(nxt[r]))
        done |= nxt == eos
        if bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
        out = run_language_model(um, embed(um, nxt[:, None], None, embed_hook), mask,
                                 cache=kv_cache(out), use_cache=True)
    return [um.tokenizer.decode(r, skip_special_tokens=True).strip() for r in result]


def understanding_loss(um: UnifiedModel, images, prompts, answers, embed_hook: EmbedHook | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on the answer tokens (+ ``<eos>``) of the understanding format.

    ``images``: ``uint8[B, 32, 32, 3]``, processed ``float[B, 3, S, S]`` pixel values, or None
    (entries may be None for text-only QA). ``reduction="none"`` gives one loss per example ``[B]``.
    """
    batch = understanding_inputs(um, images, prompts, answers)
    emb = embed(um, batch["input_ids"], batch["pixel_values"], embed_hook)
    hidden = run_language_model(um, emb, batch["attention_mask"]).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    sel = labels != -100
    logits = um.model.lm_head(hidden[sel])
    losses = F.cross_entropy(logits.float(), labels[sel], reduction="none")
    return _reduce(losses, sel, reduction)


def _reduce(losses: torch.Tensor, sel: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "none":
        per = torch.zeros(sel.shape, dtype=losses.dtype, device=losses.device)
        per[sel] = losses
        return per.sum(1) / sel.sum(1).clamp(min=1)
    raise ValueError(f"reduction={reduction!r}; choose 'mean' or 'none'")


# --------------------------------------------------------------------------- generation


DEFAULT_SAMPLING = {"guidance": 3.0, "temperature": 1.0}
"""Sampling of a model whose pretraining did not calibrate it (:func:`unikit.pretrain.calibrate_sampling`)."""


def sampling(um: UnifiedModel) -> dict:
    """``{"guidance", "temperature"}`` the model draws with when a caller gives none: what its
    pretraining calibrated (``um.info["sampling"]``), else :data:`DEFAULT_SAMPLING`."""
    return {**DEFAULT_SAMPLING, **{k: v for k, v in um.info.get("sampling", {}).items() if k in DEFAULT_SAMPLING}}


def _sampling(um: UnifiedModel, guidance, temperature) -> tuple[float, float]:
    own = sampling(um)
    guidance = own["guidance"] if guidance is None else guidance
    _check_guidance(guidance)
    return float(guidance), float(own["temperature"] if temperature is None else temperature)


def _check_guidance(guidance: float) -> None:
    if guidance is None or guidance <= 1:
        raise ValueError(f"guidance={guidance}: classifier-free guidance needs guidance > 1 (Janus's image "
                         f"generation always runs the guided pair; 1.01 is nearly unguided). Try 2.0-5.0")


def generation_inputs(um: UnifiedModel, prompts, images=None) -> dict:
    """Token ids for generation, the twin of :func:`understanding_inputs`: ``input_ids`` /
    ``attention_mask`` ``[B, L]`` left-padded, each prompt ending in ``<begin_of_image>`` (an
    edit's source image block(s) first), ``counts`` (source images per prompt) and
    ``pixel_values`` ``[n_images, 3, S, S]`` or None."""
    prompts = _as_list(prompts, "prompts")
    counts, batch = _split_images(images, len(prompts)) if images is not None else ([0] * len(prompts), None)
    if images is not None and not all(counts):
        raise ValueError("every edit needs a source image")
    seqs = formats.generation_prompts(um, prompts, counts)
    ids, mask, _ = _left_pad(seqs, um.ids["pad"])
    _check_length(um, ids.shape[1], um.num_gen_tokens, "the generation prompt")
    return {"input_ids": ids.to(um.device), "attention_mask": mask.to(um.device), "counts": counts,
            "pixel_values": pixel_values(um, batch) if batch is not None else None}


def decode_images(um: UnifiedModel, codes) -> np.ndarray:
    """VQ codes ``[B, T]`` or ``[B, g, g]`` -> ``uint8[B, S, S, 3]``."""
    codes = torch.as_tensor(codes, device=um.device).reshape(len(codes), -1)
    with torch.no_grad():
        return unit_to_uint8(um.model.decode_image_tokens(codes), channels_last=True)


def generate_images(um: UnifiedModel, prompts, n: int = 1, guidance: float | None = None, seed: int = 0,
                    temperature: float | None = None, top_k: int | None = None, return_codes: bool = False):
    """Text-to-image with ``model.generate(generation_mode="image")`` and classifier-free guidance.

    Returns ``uint8[B*n, S, S, 3]`` (row ``i*n + j`` is sample ``j`` of prompt ``i``), and the
    codes ``LongTensor[B*n, g, g]`` too with ``return_codes``. ``temperature=0`` is greedy;
    ``guidance`` / ``temperature`` left None take the model's own (:func:`sampling`).
    Deterministic in ``seed`` (the caller's random state is left untouched).
    """
    from transformers import GenerationConfig

    guidance, temperature = _sampling(um, guidance, temperature)
    batch = generation_inputs(um, prompts)
    kw = dict(do_sample=True, temperature=float(temperature), top_k=int(top_k or 0)) if temperature > 0 else \
        dict(do_sample=False)
    gc = GenerationConfig(bos_token_id=um.ids["bos"], pad_token_id=um.ids["pad"], eos_token_id=um.ids["eos"],
                          guidance_scale=float(guidance), num_return_sequences=int(n),
                          generation_kwargs={"boi_token_id": um.ids["boi"]}, **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codes = um.model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], generation_config=gc,
                                  generation_mode="image")
    images = decode_images(um, codes)
    return (images, codes.view(-1, um.gen_grid, um.gen_grid)) if return_codes else images


def sample_image_codes(um: UnifiedModel, input_ids, attention_mask, pixel_values=None,
                       guidance: float | None = None, seed: int = 0, temperature: float | None = None,
                       top_k: int | None = None,
                       embed_hook: EmbedHook | None = None, attention_steps: Sequence[int] = ()):
    """The image sampling loop written out (what ``generate(generation_mode="image")`` does,
    plus vision-encoder inputs and attention capture). Prompts end in BOI.

    Conditional and unconditional (:func:`_uncond`) prompts run as one doubled batch with a
    KV cache; logits = uncond + guidance * (cond - uncond). Returns ``(codes [B, T], attentions)``
    where ``attentions[step]`` is a tuple over layers of ``[B, heads, keys]`` (conditional half).
    ``guidance`` / ``temperature`` left None take the model's own (:func:`sampling`).
    """
    guidance, temperature = _sampling(um, guidance, temperature)
    B = input_ids.shape[0]
    cond = embed(um, input_ids, pixel_values, embed_hook)
    unc = embed(um, _uncond(um, input_ids), None, embed_hook)
    mask = attention_mask.repeat(2, 1)
    steps = set(attention_steps)
    codes = torch.zeros(B, um.num_gen_tokens, dtype=torch.long, device=input_ids.device)
    attentions = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = run_language_model(um, torch.cat([cond, unc]), mask, use_cache=True, output_attentions=0 in steps)
        for i in range(um.num_gen_tokens):
            if i in steps:
                attentions[i] = tuple(a[:B, :, -1].detach() for a in out.attentions)
            c, u = um.model.model.generation_head(out.last_hidden_state[:, -1]).chunk(2)
            scores = u + guidance * (c - u)
            if temperature > 0:
                scores = scores / temperature
                if top_k:
                    kth = scores.topk(min(top_k, scores.shape[-1])).values[:, -1:]
                    scores = scores.masked_fill(scores < kth, float("-inf"))
                nxt = torch.multinomial(scores.softmax(-1), 1).squeeze(-1)
            else:
                nxt = scores.argmax(-1)
            codes[:, i] = nxt
            if i + 1 == um.num_gen_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(2 * B, 1)], dim=1)
            e = um.model.prepare_embeddings_for_image_generation(torch.cat([nxt, nxt])[:, None])
            out = run_language_model(um, e, mask, cache=kv_cache(out), use_cache=True,
                                     output_attentions=(i + 1) in steps)
    return codes, attentions


@torch.no_grad()
def edit_image(um: UnifiedModel, images, instructions, guidance: float | None = None, seed: int = 0,
               temperature: float | None = None, top_k: int | None = None, n: int = 1,
               embed_hook: EmbedHook | None = None, return_codes: bool = False):
    """Edit ``images`` (``uint8[B, 32, 32, 3]``, read by the vision encoder) by ``instructions``.

    Returns ``uint8[B*n, S, S, 3]`` (and codes ``[B*n, g, g]`` with ``return_codes``);
    deterministic in ``seed``. ``guidance`` / ``temperature`` left None take the model's own.
    """
    batch = generation_inputs(um, instructions, images)
    ids, mask, pv = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    if n > 1:
        ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        pv = torch.cat([g for g in pv.split(batch["counts"]) for _ in range(n)])
    codes, _ = sample_image_codes(um, ids, mask, pv, guidance, seed, temperature, top_k, embed_hook)
    images = decode_images(um, codes)
    return (images, codes.view(-1, um.gen_grid, um.gen_grid)) if return_codes else images


def _code_loss(um: UnifiedModel, prompt_embeds, mask, codes, reduction: str) -> torch.Tensor:
    codes = torch.as_tensor(codes, device=um.device).reshape(prompt_embeds.shape[0], -1)
    T = codes.shape[1]
    if T != um.num_gen_tokens:
        raise ValueError(f"expected {um.num_gen_tokens} VQ codes per image, got {T}")
    img = um.model.prepare_embeddings_for_image_generation(codes[:, :-1])
    full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], T - 1)], dim=1)
    hidden = run_language_model(um, torch.cat([prompt_embeds, img], dim=1), full_mask).last_hidden_state[:, -T:]
    logits = um.model.model.generation_head(hidden)
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), codes.reshape(-1), reduction="none")
    return _reduce(losses, torch.ones_like(codes, dtype=torch.bool), reduction)


def _dropout(um, ids, p: float, generator, drop=None) -> tuple[torch.Tensor, torch.Tensor]:
    if drop is None:
        drop = torch.rand(ids.shape[0], generator=generator) < p if p > 0 else torch.zeros(ids.shape[0], dtype=torch.bool)
    drop = torch.as_tensor(drop, dtype=torch.bool).to(ids.device)
    return torch.where(drop[:, None], _uncond(um, ids), ids), drop


def t2i_loss(um: UnifiedModel, prompts, vq_ids, caption_dropout: float = 0.1, embed_hook: EmbedHook | None = None,
             generator: torch.Generator | None = None, reduction: str = "mean", drop=None) -> torch.Tensor:
    """Text-to-image cross-entropy on the VQ codes ``vq_ids`` (``[B, g, g]`` or ``[B, T]``).

    With probability ``caption_dropout`` a prompt becomes the unconditional prompt
    ``generate`` uses for guidance (all but BOS/BOI -> PAD), so guidance has something to
    subtract. ``drop`` (``bool[B]``) chooses the dropped prompts instead of drawing them.
    """
    batch = generation_inputs(um, prompts)
    ids, _ = _dropout(um, batch["input_ids"], caption_dropout, generator, drop)
    return _code_loss(um, embed(um, ids, None, embed_hook), batch["attention_mask"], vq_ids, reduction)


def edit_loss(um: UnifiedModel, src_images, instructions, tgt_vq_ids, caption_dropout: float = 0.0,
              embed_hook: EmbedHook | None = None, generator: torch.Generator | None = None,
              reduction: str = "mean", drop=None) -> torch.Tensor:
    """Editing cross-entropy: source image (understanding path) + instruction -> target VQ codes.

    Dropped examples (``caption_dropout``) lose both image and instruction, as in guidance.
    """
    batch = generation_inputs(um, instructions, src_images)
    ids, drop = _dropout(um, batch["input_ids"], caption_dropout, generator, drop)
    keep = torch.repeat_interleave(~drop.cpu(), torch.tensor(batch["counts"]))
    pv = batch["pixel_values"][keep.to(batch["pixel_values"].device)]
    emb = embed(um, ids, pv if len(pv) else None, embed_hook)
    return _code_loss(um, emb, batch["attention_mask"], tgt_vq_ids, reduction)


# --------------------------------------------------------------------------- attention maps


@dataclass
class AttentionMaps:
    """Attention weights. ``tokens[b]``: a label per key position of example ``b``.

    ``understanding``: tuple over LM layers of ``[B, heads, L, L]``;
    ``generation``: ``{step: tuple over layers of [B, heads, keys]}`` (the query that
    predicts image code ``step``; keys are the prompt plus the codes before it).
    """

    tokens: list[list[str]]
    understanding: tuple | None = None
    generation: dict | None = None
    codes: torch.Tensor | None = None
    images: np.ndarray | None = None


def ensure_eager_attention(um: UnifiedModel):
    """Switch ``um`` to eager attention (sdpa returns no attention weights). Returns the previous
    implementation to switch back to, or None if it was eager already; raises :class:`ModelError`
    saying how to reload the model if it cannot switch."""
    impl = um.model.config._attn_implementation
    if impl == "eager":
        return None
    try:
        um.model.set_attn_implementation("eager")
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"attention maps need eager attention and this model uses {impl!r}; reload it with "
                         f"load_model(path, attn_implementation='eager') ({e})") from None
    return impl


def _labels(um: UnifiedModel, ids: torch.Tensor, mask: torch.Tensor) -> list[list[str]]:
    toks = [um.tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]
    return [[t if m else "" for t, m in zip(row, mrow.tolist())] for row, mrow in zip(toks, mask)]


@torch.no_grad()
def attention_maps(um: UnifiedModel, images=None, questions=None, prompts=None, steps: Sequence[int] = (0,),
                   guidance: float | None = None, seed: int = 0, temperature: float | None = None) -> AttentionMaps:
    """Attention weights of the language model (eager attention; an sdpa model is switched
    to eager for the call).

    - ``questions`` (with ``images`` or None): one understanding forward of the prompts.
    - ``prompts``: image generation (text-to-image; an edit when ``images`` are given),
      keeping the attentions at the listed sampling ``steps``.
    """
    if (questions is None) == (prompts is None):
        raise ValueError("pass questions (understanding) or prompts (generation), not both")
    previous = ensure_eager_attention(um)
    try:
        if questions is not None:
            b = understanding_inputs(um, images, questions)
            out = run_language_model(um, embed(um, b["input_ids"], b["pixel_values"]), b["attention_mask"],
                                     output_attentions=True)
            return AttentionMaps(_labels(um, b["input_ids"], b["attention_mask"]), understanding=out.attentions)
        b = generation_inputs(um, prompts, images)
        codes, att = sample_image_codes(um, b["input_ids"], b["attention_mask"], b["pixel_values"], guidance, seed,
                                        temperature, attention_steps=steps)
        labels = [row + [f"<code_{i}>" for i in range(um.num_gen_tokens - 1)]
                  for row in _labels(um, b["input_ids"], b["attention_mask"])]
        return AttentionMaps(labels, generation=att, codes=codes.view(-1, um.gen_grid, um.gen_grid),
                             images=decode_images(um, codes))
    finally:
        if previous is not None:
            um.model.set_attn_implementation(previous)
