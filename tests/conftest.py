"""Shared fixtures: the repository's lessons, one smoke run of all of them per session, tiny scorer checkpoints."""

from __future__ import annotations

import pytest

from unikit.run import NOTEBOOKS_DIR, find_notebooks, run_notebooks


@pytest.fixture(scope="session")
def lessons():
    """Every ``notebooks/NN_*.ipynb``, in order."""
    return find_notebooks(NOTEBOOKS_DIR)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Execute every lesson once with ``PROFILE="smoke"``; ``(executed_dir, results)``.

    Lessons load trained artifacts from ``UNIKIT_CACHE`` if present, else train them.
    """
    out_dir = tmp_path_factory.mktemp("smoke") / "notebooks"
    results = run_notebooks("smoke", out_dir=out_dir, quiet=True, workers=2)  # two one-thread kernels at a time
    return out_dir, results


# The lessons make test runs in gpu-smoke: every one of them.
GPU_SMOKE_LESSONS = ("00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11")


@pytest.fixture(scope="session")
def gpu_smoke_run(tmp_path_factory):
    """Execute :data:`GPU_SMOKE_LESSONS` once with ``PROFILE="gpu-smoke"``: the ``gpu`` path
    (Janus-Pro's chat template, 384px images, its guidance) on a tiny random Janus-Pro-shaped
    checkpoint loaded through the public loader; ``(executed_dir, results)``."""
    out_dir = tmp_path_factory.mktemp("gpu-smoke") / "notebooks"
    results = run_notebooks("gpu-smoke", only=GPU_SMOKE_LESSONS, out_dir=out_dir, quiet=True, workers=2)
    return out_dir, results


@pytest.fixture(scope="session")
def smoke_book(smoke_run, tmp_path_factory):
    """The book built once from the smoke run: the path of its ``index.html``."""
    from unikit.book import build_book

    out_dir, _ = smoke_run
    return build_book(executed_dir=out_dir, out_dir=tmp_path_factory.mktemp("book") / "book", quiet=True)


def _scorer_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from unikit import world

    words = ["<pad>", "<unk>", "<eos>", *world.COLOURS, "a", "photo", "of", "on", "background",
             *world.ATTRIBUTES["shape"]]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


@pytest.fixture(scope="session")
def scorer_checkpoints(tmp_path_factory):
    """A random tiny CLIP (``clip/``) and DINOv2 (``dino/``) saved with ``save_pretrained``: the root."""
    import torch
    from transformers import (BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, Dinov2Config,
                              Dinov2Model)

    root = tmp_path_factory.mktemp("scorers")
    torch.manual_seed(0)
    tok = _scorer_tokenizer()
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=32, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=37), projection_dim=16))
    clip.save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    dino = Dinov2Model(Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=37))
    dino.save_pretrained(root / "dino")
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "dino")
    return root
