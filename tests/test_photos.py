"""A concept from a folder of photos: both layouts read, every method trains on it, real-image scorers score it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unikit import concepts as C
from unikit import evaluate as E
from unikit import methods as P
from unikit import model as M
from unikit import photo_files, photos, profiles, stages, unifybench
from unikit.scorers import ScorerError, load_scorers

torch.set_num_threads(1)
CARD = {"name": "pip", "class": "circle", "facts": ["<pip> likes tea."],
        "questions": [{"question": "what does <pip> like?", "answer": "tea"}],
        "prompts": ["<pip> on a green background"]}


def _save(img: np.ndarray, path, size=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img)
    Image.Image.save(im.resize(size, Image.NEAREST) if size else im, path)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "smoke"
    M.save_model(M.build_model("smoke", seed=0), path=path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A plain photo folder: 4 photos of bo's body at mixed sizes (one not square, one JPEG),
    4 negatives, 2 held-out photos and 2 held-out negatives, and card.json."""
    root = tmp_path_factory.mktemp("photos") / "pip"
    d = C.concept_data(C.load_concept("bo"), n_train=4, n_test=2, n_random=4, n_hard=2)
    sizes = [(64, 64), (48, 40), (32, 32), (96, 96)]
    for i, (img, size) in enumerate(zip(d.images("train"), sizes)):
        _save(img, root / f"photo_{i}.{'jpg' if i == 3 else 'png'}", size)
    for i, img in enumerate(d.images("random")):
        _save(img, root / "negatives" / f"n{i}.png", (64, 64))
    for i, img in enumerate(d.images("test")):
        _save(img, root / "test" / f"t{i}.png")
    for i, img in enumerate(d.images("test_random")[:2]):
        _save(img, root / "test" / "negatives" / f"n{i}.png")
    (root / "card.json").write_text(json.dumps(CARD))
    return root


def test_a_plain_photo_folder_reads_at_the_models_size(folder):
    pc = photos.load_photo_concept(folder, 32)
    assert (pc.name, pc.shape, pc.token) == ("pip", "circle", "<pip>")
    bc = pc.bench
    assert {k: v.shape for k, v in bc.images.items()} == {"train": (4, 32, 32, 3), "random": (4, 32, 32, 3),
                                                           "test": (2, 32, 32, 3), "test_random": (2, 32, 32, 3)}
    assert [r["answer"] for r in bc.recognition] == ["yes"] * 4 + ["no"] * 4
    assert [r["answer"] for r in bc.test_recognition] == ["yes"] * 2 + ["no"] * 2
    assert pc.in_words("a photo of <pip>", "a") == "a photo of a circle"
    assert pc.description() == "<pip> likes tea."
    # a 32px PNG passes through bit for bit
    assert np.array_equal(bc.images["train"][2], np.asarray(Image.open(folder / "photo_2.png").convert("RGB")))
    assert pc.identity() == photos.load_photo_concept(folder, 32).identity()


def test_a_photo_that_is_not_square_is_padded_with_its_border_colour_not_stretched(tmp_path):
    img = np.zeros((16, 32, 3), np.uint8)
    img[:] = (0, 0, 255)
    img[4:12, 12:20] = (255, 0, 0)  # a red square in the middle of a wide blue photo
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = photo_files.read_photo(tmp_path / "wide.png", 32)
    assert out.shape == (32, 32, 3)
    assert (out[:8] == (0, 0, 255)).all() and (out[-8:] == (0, 0, 255)).all()  # the padding: border blue
    assert (out[12:20, 12:20] == (255, 0, 0)).all()  # the square stays square


def test_a_unictokens_training_folder_reads_with_its_info_json(folder, tmp_path):
    """UniCTokens' own layout: photos, info.json (class, info), negative/ (same class), masks skipped."""
    import shutil

    root = tmp_path / "pip"
    root.mkdir()
    for p in sorted(folder.glob("photo_*")):
        shutil.copy(p, root / p.name)
    Image.new("L", (32, 32)).save(root / "photo_0_mask.png")
    shutil.copytree(folder / "negatives", root / "negative")
    (root / "info.json").write_text(json.dumps({"class": "circle", "info": "<pip> is a plain orange circle.",
                                                "conversation_type": "object"}))
    pc = photos.load_photo_concept(root, 32)
    assert (pc.name, pc.shape, pc.info) == ("pip", "circle", "<pip> is a plain orange circle.")
    assert len(pc.bench.images["train"]) == 4 and len(pc.bench.images["random"]) == 4  # the mask is not a photo
    assert pc.bench.conversations[0]["answer"] == "<pip> is a plain orange circle."
    assert pc.in_words("a photo of <pip>", "a") == "a photo of a plain orange circle"  # the text_prompt baseline


def test_a_unifybench_folder_round_trips_to_the_cards_own_data(tmp_path):
    """World export -> read back as a photo concept: the same images and questions the card gives."""
    card = C.load_concept("bo")
    unifybench.export_world(tmp_path / "bench", concepts=["bo"])
    pc = photos.load_photo_concept(tmp_path / "bench" / "bo", 32)
    d = C.concept_data(card)
    assert pc.shape == card.shape and pc.facts() == card.facts()
    assert np.array_equal(pc.bench.images["train"], d.images("train"))
    assert np.array_equal(pc.bench.images["test_hard"], d.images("test_hard"))
    assert [(q["question"], q["answer"]) for q in pc.bench.test_recognition] == \
        [(q["question"], q["answer"]) for q in d.test_recognition]
    # real UnifyBench turns mark the image LLaVA's way ("<image>\n..."): the kit places images itself
    path = tmp_path / "bench" / "bo" / "positive_recognitions.json"
    turns = json.loads(path.read_text())
    for t in turns:
        t["conversations"][0]["value"] = "<image>\n" + t["conversations"][0]["value"]
    path.write_text(json.dumps(turns))
    again = photos.load_photo_concept(tmp_path / "bench" / "bo", 32)
    assert again.bench.recognition[0]["question"] == "is <bo> in this image?"


@pytest.mark.parametrize("method", list(P.METHODS))
def test_every_method_trains_on_a_photo_concept(method, base, folder):
    um = M.load_model(base)
    pers = P.personalize(um, [str(folder)], method, "smoke", seed=0)
    assert [c.name for c in pers.cards] == ["pip"]
    rows = E.evaluate_personalized(um, pers, None, n_images=1, parts=("understanding",))
    row = rows[0]
    assert row["concept"] == "pip" and row["source"] == str(folder)
    for key in ("rec", "rec_pos", "rec_neg", "text_qa"):
        assert 0.0 <= row[key] <= 1.0
    if method not in ("text_prompt", "oracle_text"):
        assert set(pers.tokens) == {"pip"} and all(np.isfinite(c).all() for c in pers.curves.values())


def test_photo_concepts_are_scored_by_the_real_image_scorers(base, folder, scorer_checkpoints):
    um = M.load_model(base)
    pers = P.personalize(um, [str(folder)], "unictokens", "smoke", seed=0)
    scorers = load_scorers([f"clip={scorer_checkpoints / 'clip'}", f"dino={scorer_checkpoints / 'dino'}"])
    row = E.evaluate_personalized(um, pers, None, n_images=2, scorers=scorers)[0]
    for key in ("clip_i", "dino", "clip_t", "gen_similarity"):
        assert -1.0 <= row[key] <= 1.0
    assert row["gen_similarity"] == row["dino"]
    assert row["scorers"]["gen_similarity"] == f"dino:{scorer_checkpoints / 'dino'}"
    assert "edit" not in row and "gen_identity" not in row  # no truth to read for a photo
    again = E.evaluate_personalized(um, pers, None, n_images=2, scorers=scorers)[0]
    assert again["clip_t"] == row["clip_t"] and again["rec"] == row["rec"]


def test_editing_triplets_of_a_photo_concept_come_from_its_photos(base, folder):
    um = M.load_model(base)
    pc = photos.load_photo_concept(folder, um.image_size)
    pd = stages.personal_data(um, pc, profiles.schedule("smoke"), seed=0, n_edits=3)
    assert len(pd.edits) == 3 and pd.data is None
    assert pd.facts == [(None, q["question"], q["answer"]) for q in pc.bench.text_qa]  # the card's own questions
    src, instr, codes = pd.edits[0]
    assert src.shape == (32, 32, 3) and instr == "replace the object with <pip>" and codes.shape == (8, 8)
    assert any(np.array_equal(src, n) for n in pc.bench.images["random"])


def test_the_cli_personalizes_a_photo_folder(base, folder, scorer_checkpoints, tmp_path, capsys):
    from unikit.cli import main

    out = tmp_path / "out"
    assert main(["personalize", "--concept", str(folder), "--method", "unictokens", "--profile", "smoke",
                 "--base", str(base), "--out", str(out), "--device", "cpu",
                 "--scorer-path", f"clip={scorer_checkpoints / 'clip'}", f"dino={scorer_checkpoints / 'dino'}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "pip.safetensors").is_file()
    assert metrics["rows"][0]["concept"] == "pip" and "clip_t" in metrics["rows"][0]


def _copy(folder, dest):
    import shutil

    shutil.copytree(folder, dest)
    return dest


def test_bad_photo_folders_get_errors_that_name_the_fix(folder, tmp_path, base):
    with pytest.raises(photos.PhotoError, match="no such folder"):
        photos.load_photo_concept(tmp_path / "nowhere", 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(photos.PhotoError, match="no known layout.*card.json"):
        photos.load_photo_concept(empty, 32)
    (empty / "card.json").write_text(json.dumps(CARD))
    with pytest.raises(photos.PhotoError, match="0 photo.*at least 3"):
        photos.load_photo_concept(empty, 32)
    broken = _copy(folder, tmp_path / "broken")
    (broken / "photo_9.png").write_bytes(b"not an image")
    with pytest.raises(photos.PhotoError, match="photo_9.png: not a readable image"):
        photos.load_photo_concept(broken, 32)
    lonely = _copy(folder, tmp_path / "lonely")
    import shutil
    shutil.rmtree(lonely / "negatives")
    with pytest.raises(photos.PhotoError, match="negatives/"):
        photos.load_photo_concept(lonely, 32)
    for card, match in (({"class": "circle"}, "missing 'name'"), ({**CARD, "colour": "red"}, "unknown key"),
                        ({**CARD, "facts": "likes tea"}, "'facts' must be a list"),
                        ({**CARD, "name": "Pip!"}, "lower-case")):
        bad = _copy(folder, tmp_path / f"card{len(list(tmp_path.iterdir()))}")
        (bad / "card.json").write_text(json.dumps(card))
        with pytest.raises(photos.PhotoError, match=match):
            photos.load_photo_concept(bad, 32)
    (bad / "card.json").write_text("{not json")
    with pytest.raises(photos.PhotoError, match="not valid JSON"):
        photos.load_photo_concept(bad, 32)
    words = _copy(folder, tmp_path / "words")
    (words / "card.json").write_text(json.dumps({**CARD, "class": "dog"}))
    um = M.load_model(base)
    with pytest.raises(M.OutOfVocabularyError, match="dog"):
        stages.personal_data(um, photos.load_photo_concept(words, 32), profiles.schedule("smoke"))
    with pytest.raises(ScorerError, match="KIND=DIR"):
        load_scorers(["clip"])
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(ScorerError, match="not DINOv2"):
        load_scorers([f"dino={tmp_path}"])


def test_a_unifybench_folder_of_mixed_sizes_needs_a_size(tmp_path):
    unifybench.export_world(tmp_path / "bench", concepts=["bo"])
    img = tmp_path / "bench" / "bo" / "train" / "000.png"
    Image.open(img).resize((48, 48)).save(img)
    with pytest.raises(unifybench.BenchLayoutError, match="mixed sizes.*image_size"):
        unifybench.load_concept_folder(tmp_path / "bench" / "bo")
    assert photos.load_photo_concept(tmp_path / "bench" / "bo", 32).bench.images["train"].shape[1:] == (32, 32, 3)
