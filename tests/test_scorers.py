"""Real-image scorers on tiny CLIP and DINOv2 checkpoints the test saves and loads back."""

import numpy as np
import pytest

from unikit import scorers, world


@pytest.fixture(scope="module")
def checkpoints(scorer_checkpoints):
    return scorer_checkpoints


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return world.render_many(world.generic_scenes(6, seed=0)), rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["clip", "dino"])
def test_an_image_is_most_like_itself(checkpoints, images, kind):
    scorer = (scorers.load_clip if kind == "clip" else scorers.load_dino)(checkpoints / kind)
    renders, noise = images
    assert scorer.source.endswith(kind)
    same = scorer.image_similarity(renders[:1], renders[:1])
    assert same == pytest.approx(1.0, abs=1e-5)
    emb = scorer.embed_images(renders)
    assert emb.shape[0] == 6 and np.allclose(emb.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    assert scorer.image_similarity(renders[:1], noise) < same


def test_clip_t_pairs_each_image_with_its_prompt(checkpoints, images):
    clip = scorers.load_clip(checkpoints / "clip")
    renders, _ = images
    value = clip.text_similarity(renders[:2], ["a photo of a red circle", "a photo of a blue square"])
    assert -1.0 <= value <= 1.0
    with pytest.raises(scorers.ScorerError, match="2 images, 1 prompts"):
        clip.text_similarity(renders[:2], ["a photo of a red circle"])
    with pytest.raises(scorers.ScorerError, match="CLIP-T needs a CLIP checkpoint"):
        scorers.load_dino(checkpoints / "dino").embed_texts(["a photo"])


def test_wrong_or_missing_checkpoints_are_refused_with_what_to_pass(checkpoints, tmp_path):
    with pytest.raises(scorers.ScorerError, match="holds no config.json; pass --scorer-path clip=DIR"):
        scorers.load_clip(tmp_path)
    with pytest.raises(scorers.ScorerError, match="holds a 'dinov2' model, not CLIP"):
        scorers.load_clip(checkpoints / "dino")
    with pytest.raises(scorers.ScorerError, match="holds a 'clip' model, not DINOv2"):
        scorers.load_dino(checkpoints / "clip")


@pytest.mark.parametrize("answer,expected", [
    ("Yes, it is.", "yes"), ("yes", "yes"), ("No. The image shows a dog.", "no"), ("NO", "no"),
    ("Not in this image.", "no"), ("I think so", None), ("", None), ("  Yes!", "yes"),
])
def test_yes_no_answers_of_a_chat_model(answer, expected):
    assert scorers.parse_yes_no(answer) == expected
