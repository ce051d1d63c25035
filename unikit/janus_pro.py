"""A tiny random Janus with Janus-Pro's shapes of configuration, to exercise the real-model path on a CPU.

What it shares with Janus-Pro-1B/7B: 384px images read by a vision tower with patch 16 (576
understanding tokens), a VQ tokenizer that downsamples 16x (a 24x24 grid: 576 generation
tokens), a byte-level BPE tokenizer with Janus-Pro's special tokens, a chat template that writes
Janus-Pro's ``<|User|>: ... <|Assistant|>:`` turns, and a ``JanusProcessor`` that pads to a square
and resizes to 384px. What it does not share: widths, depths, vocabulary and codebook sizes (tiny)
and, being random, any ability; its tokenizer has one residual block per level in the decoder and none
in the encoder (Janus-Pro has two). :func:`build_tiny_janus_pro` saves it with ``save_pretrained``;
:func:`unikit.model.load_model` reads it like any checkpoint.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE, PATCH, GEN_DOWNSAMPLE = 384, 16, 16
VQ_RES_BLOCKS = 0  # per level: the encoder only downsamples, the decoder has one block; at 384px the
# tokenizer's convolutions are most of a CPU lesson's time, and a random model draws nothing anyway
SPECIALS = {"bos": "<｜begin▁of▁sentence｜>", "eos": "<｜end▁of▁sentence｜>", "pad": "<｜▁pad▁｜>",
            "image": "<image_placeholder>", "boi": "<begin_of_image>", "eoi": "<end_of_image>",
            "user": "<|User|>", "assistant": "<|Assistant|>"}
# Janus-Pro's conversation format ("deepseek" template): turns separated by a blank line, the
# assistant's turn closed by end-of-sentence; images are placeholders on their own line.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: "
    "{% elif message['role'] == 'assistant' %}<|Assistant|>: {% else %}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image_placeholder>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}<｜end▁of▁sentence｜>{% else %}{{ '\\n\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


def _corpus() -> list[str]:
    """Text the tiny tokenizer's BPE merges are learnt from: the world's words and the system prompt."""
    from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

    from .model import base_words

    return [" ".join(base_words()), DEFAULT_SYSTEM_PROMPT, "a photo of a dog on a beach . what does it like ?"]


def build_tokenizer(vocab_size: int = 600):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Janus-Pro's special tokens (and its
    image / begin- / end-of-image names), any text encodable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=SPECIALS["bos"], eos_token=SPECIALS["eos"], pad_token=SPECIALS["pad"],
        padding_side="left", model_max_length=16384,
        extra_special_tokens={"image_token": SPECIALS["image"], "boi_token": SPECIALS["boi"],
                              "eoi_token": SPECIALS["eoi"]})


def build_config(tokenizer, width: int = 32, layers: int = 2):
    """A ``JanusConfig`` with Janus-Pro's image geometry and tiny widths."""
    from transformers import JanusConfig

    grid = IMAGE_SIZE // GEN_DOWNSAMPLE
    tokens = (IMAGE_SIZE // PATCH) ** 2
    text = dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    vision = dict(hidden_size=width, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * width,
                  image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=width, depth=2, num_image_tokens=tokens)
    # five resolution levels (four 2x downsamplings) as in Janus-Pro's [1, 1, 2, 2, 4], at 32 channels
    # throughout (its GroupNorms need multiples of 32)
    vq = dict(embed_dim=8, num_embeddings=64, base_channels=32, channel_multiplier=[1, 1, 1, 1, 1],
              num_res_blocks=VQ_RES_BLOCKS,
              latent_channels=32, num_patches=grid, projection_dim=width, image_token_embed_dim=width,
              num_hidden_layers=2)
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                         image_token_id=tokenizer.convert_tokens_to_ids(SPECIALS["image"]))
    return config


def build_processor(tokenizer):
    """Janus-Pro's processing: pad to a square, resize to 384px (bicubic), scale to [-1, 1]; its chat template."""
    from transformers import JanusImageProcessor, JanusProcessor

    image_processor = JanusImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3,
                                          image_std=[0.5] * 3, do_pad=True)
    return JanusProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE,
                          num_image_tokens=(IMAGE_SIZE // PATCH) ** 2)


def tiny_janus_pro(seed: int = 0) -> Path:
    """The tiny model of ``seed`` in the artifact cache (``janus_pro/gpu-smoke-<hash>``), built
    the first time it is asked for: the ``gpu-smoke`` profile's base model."""
    from .cache import artifact_dir

    width, layers = 32, 2
    settings = {"seed": seed, "width": width, "layers": layers, "image_size": IMAGE_SIZE, "patch": PATCH,
                "vq_res_blocks": VQ_RES_BLOCKS, "chat_template": CHAT_TEMPLATE}
    path = artifact_dir("janus_pro", "gpu-smoke", settings)
    return path if (path / "config.json").is_file() else build_tiny_janus_pro(path, seed, width, layers)


def build_tiny_janus_pro(path, seed: int = 0, width: int = 32, layers: int = 2) -> Path:
    """Build, initialise (``seed``) and save the tiny model to ``path`` (atomically); returns ``path``."""
    import torch
    from transformers import JanusForConditionalGeneration

    from .model import quiet_transformers
    from .cache import atomic_path

    tok = build_tokenizer()
    config = build_config(tok, width, layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    path = Path(path)
    with atomic_path(path) as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        build_processor(tok).save_pretrained(tmp)
    return path

