"""The bundle of a Janus model and its processor: configs per profile, build, load and save."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import concepts, world
from ..cache import atomic_path
from ..vq import adapt_for_flat_images
from .vocabulary import SPECIAL, build_processor, build_tokenizer

DEFAULT_MODEL_DIR = concepts.DATA_DIR / "base_model"
MAKE_DEFAULT = "unikit pretrain --profile ship8 --workers 2 --out data/base_model"  # the recipe from nothing
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
# wide: teach's depth at twice the language model's width (about 3.4M instead of 0.87M
# parameters); its tokenizer and encoder have teach's sizes, the aligners project to 256.
PROFILES["wide"] = dict(PROFILES["teach"], hidden=256, heads=8, intermediate=768)


class ModelError(RuntimeError):
    """A checkpoint is missing, partial or not Janus, or a request the model cannot serve."""


# --------------------------------------------------------------------------- configs


def make_config(profile: str = "teach", tokenizer=None, attn_implementation: str = "eager"):
    """A ``JanusConfig`` for a kit model size (``smoke``, ``teach``, ``deep`` or ``wide``); see :data:`PROFILES`.

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


