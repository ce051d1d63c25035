"""The concept world: rendering, cards, generated data, and the UnifyBench layout round trip."""

import random

import numpy as np
import pytest
import yaml

from unikit import concepts, unifybench, world
from unikit.concepts import ConceptError


def test_render_is_deterministic_and_exact_size():
    scenes = world.generic_scenes(20, seed=3)
    a, b = world.render_many(scenes), world.render_many(world.generic_scenes(20, seed=3))
    assert a.shape == (20, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert world.render(scenes[0], 64).shape == (64, 64, 3)


def test_every_attribute_changes_the_pixels():
    base = world.Scene(shape="square", colour="green", background="white")
    variants = {
        "shape": base.replace(shape="circle"), "colour": base.replace(colour="blue"),
        "pattern": base.replace(pattern="striped"), "background": base.replace(background="black"),
        "mark": base.replace(mark="top", mark_colour="red"), "hat": base.replace(hat="red"),
        "scarf": base.replace(scarf="red"), "toy": base.replace(toy="red", toy_shape="ball"),
        "present": base.replace(present=False),
    }
    ref = world.render(base)
    for name, sc in variants.items():
        assert not np.array_equal(world.render(sc), ref), name


def test_marks_survive_a_left_right_flip():
    # Flip augmentation must never change who a concept is: every mark is mirror-symmetric
    # about the body's vertical axis (x = 13.5 at offset 0, i.e. pixel column c <-> 26 - c).
    for shape in world.SHAPES:
        for mark in world.MARKS:
            sc = world.Scene(shape=shape, colour="green", mark=mark, mark_colour="red")
            red = np.all(world.render(sc) == world.COLOURS["red"], axis=-1)
            assert red.any(), (shape, mark)
            mirrored = np.zeros_like(red)
            mirrored[:, :27] = red[:, 26::-1]
            assert (red != mirrored).sum() <= 2, (shape, mark)  # allow rasterisation rounding


def test_scene_rejects_bad_values():
    with pytest.raises(world.WorldError, match="colour"):
        world.Scene(colour="teal")
    with pytest.raises(world.WorldError, match="mark"):
        world.Scene(mark="top")
    with pytest.raises(world.WorldError, match="differ"):
        world.Scene(colour="red", mark="top", mark_colour="red")


def test_check_image_names_the_problem_and_the_fix():
    with pytest.raises(world.WorldError, match="64x64.*32x32.*resize"):
        world.check_image(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(world.WorldError, match="RGB"):
        world.check_image(np.zeros((32, 32), np.uint8))


def test_captions_state_every_nameable_attribute():
    sc = world.Scene(shape="triangle", colour="blue", pattern="spotted", background="gray", hat="red",
                     toy="yellow", toy_shape="block", mark="top", mark_colour="red")
    text = world.caption(sc)
    assert text == "a spotted blue triangle with a red top wearing a red hat with a yellow block on a gray background"
    assert world.caption(sc, name="<bo>") == "<bo> wearing a red hat with a yellow block on a gray background"


def test_marks_have_words_in_captions_questions_and_the_vocabulary():
    phrases = {m: world.mark_phrase(m, "blue") for m in world.MARKS}
    assert phrases == {"top": "with a blue top", "bottom": "with a blue bottom", "sides": "with blue sides",
                       "band": "with a blue band"}
    assert world.mark_phrase(world.NONE, world.NONE) == ""
    assert set(world.MARKS) <= set(world.vocabulary())
    sc = world.Scene(shape="circle", colour="orange", mark="sides", mark_colour="blue")
    assert ("what mark does the object have?", "blue sides") in world.vqa_pairs(sc)
    assert ("what mark does the object have?", "none") in world.vqa_pairs(sc.replace(mark="none", mark_colour="none"))
    assert world.object_phrase("circle", "orange", "plain", "top", "blue", determiner="the") == \
        "the plain orange circle with a blue top"


def test_heldout_pairs_never_in_pretraining_sample():
    scenes = world.generic_scenes(3000, seed=0)
    assert not {(s.shape, s.colour) for s in scenes} & world.HELDOUT_PAIRS
    with_heldout = world.generic_scenes(3000, seed=0, allow_heldout=True)
    assert {(s.shape, s.colour) for s in with_heldout} & world.HELDOUT_PAIRS


def test_edits_change_only_what_they_say():
    rng = random.Random(0)
    for sc in world.generic_scenes(200, seed=5, item_prob=0.5):
        instr, tgt = world.random_edit(sc, rng)
        changed = {k for k in world.ATTRIBUTES if sc.value(k) != tgt.value(k)}
        assert changed and changed <= {"background", "hat", "scarf", "toy", "toy_shape"}, instr
        assert (sc.x, sc.y, sc.size) == (tgt.x, tgt.y, tgt.size)


# --------------------------------------------------------------------------- cards


def test_at_least_twelve_concepts_with_unique_identities():
    cards = concepts.load_concepts()
    assert len(cards) >= 12 and "bo" in {c.name for c in cards}
    assert len({c.identity() for c in cards}) == len(cards)


def test_unknown_concept_lists_the_available_ones():
    with pytest.raises(ConceptError, match="unknown concept 'rex'.*bo"):
        concepts.load_concept("rex")


def _write(tmp_path, data):
    p = tmp_path / "card.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


GOOD = {"name": "rex", "class": "square", "colour": "blue", "pattern": "plain",
        "identity": {"mark": "top", "mark_colour": "red"}, "facts": {"hat": "green"}}


@pytest.mark.parametrize("change, message", [
    ({"colour": "teal"}, "card.yaml: field 'colour' should be one of"),
    ({"class": None}, "field 'class' should be a str"),
    ({"identity": {"mark": "zigzag", "mark_colour": "red"}}, "field 'identity.mark'"),
    ({"identity": {"mark": "top", "mark_colour": "blue"}}, "identity.mark_colour.*other than the body colour"),
    ({"facts": {"hat": "green", "toy": {"colour": "red"}}}, "facts.toy"),
    ({"facts": {"likes": "tea"}}, "at least one of hat, scarf, toy"),
    ({"name": "Rex!"}, "field 'name'"),
])
def test_malformed_card_names_file_field_and_expectation(tmp_path, change, message):
    with pytest.raises(ConceptError, match=message):
        concepts.read_card(_write(tmp_path, {**GOOD, **change}))


def test_missing_field_and_bad_yaml(tmp_path):
    data = dict(GOOD)
    del data["identity"]
    with pytest.raises(ConceptError, match="missing required field 'identity'"):
        concepts.read_card(_write(tmp_path, data))
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(ConceptError, match="bad.yaml: not valid YAML"):
        concepts.read_card(p)


def test_user_card_by_path(tmp_path):
    card = concepts.load_concept(str(_write(tmp_path, GOOD)))
    assert card.token == "<rex>" and card.items == {"hat": "green"}


# --------------------------------------------------------------------------- generated data


@pytest.fixture(scope="module")
def bo():
    return concepts.load_concept("bo")


def test_concept_data_is_deterministic(bo):
    a, b = concepts.concept_data(bo), concepts.concept_data(bo)
    assert a.train_scenes == b.train_scenes and a.hard_negatives == b.hard_negatives and a.vqa == b.vqa


def test_fact_items_never_in_training_images(bo):
    d = concepts.concept_data(bo)
    for sc in d.train_scenes:
        assert (sc.hat, sc.scarf, sc.toy) == ("none", "none", "none")
        assert sc.mark == bo.mark and sc.mark_colour == bo.mark_colour
    # ...but the knowledge-driven prompts ask for them
    kinds = {t["kind"] for t in d.t2i}
    assert kinds == {"plain", "context", "knowledge"}
    assert {"hat": "yellow"} in [t["expect"] for t in d.t2i if t["kind"] == "knowledge"]


def test_hard_negatives_differ_only_by_mark(bo):
    d = concepts.concept_data(bo)
    for sc in d.hard_negatives + d.test_hard_negatives:
        assert (sc.shape, sc.colour, sc.pattern) == (bo.shape, bo.colour, bo.pattern)
        assert (sc.mark, sc.mark_colour) != (bo.mark, bo.mark_colour)
    assert all((s.shape, s.colour, s.pattern, s.mark, s.mark_colour) != bo.identity() for s in d.random_negatives)


def test_recognition_and_qa_answers_follow_from_scenes(bo):
    d = concepts.concept_data(bo)
    answers = {q["image"][0]: q["answer"] for q in d.recognition}
    assert answers == {"train": "yes", "random": "no", "hard": "no"}
    assert len([q for q in d.recognition if q["image"][0] == "random"]) == 100
    for q in d.vqa:
        sc = d.test_scenes[q["image"][1]]
        assert (q["question"].replace(bo.token, "the object"), q["answer"]) in world.vqa_pairs(sc)
    assert {"question": "what colour is the hat of <bo>?", "answer": "yellow"} in d.text_qa


def test_edit_triplets(bo):
    d = concepts.concept_data(bo)
    by_instr = {e["instruction"]: e for e in d.edits}
    assert by_instr["put <bo>'s hat on it"]["target"].hat == "yellow"
    assert by_instr["remove <bo>"]["target"].present is False
    assert by_instr["replace the object with <bo>"]["target"].mark == bo.mark


def test_too_few_images_is_refused(bo):
    with pytest.raises(ConceptError, match="at least 3"):
        concepts.concept_data(bo, n_train=2)


# --------------------------------------------------------------------------- UnifyBench layout


def test_export_round_trips_through_the_loader(tmp_path):
    out = tmp_path / "bench"
    unifybench.export_world(out, ["bo", "kiki"])
    for f in unifybench.BENCH_FILES:
        assert (out / "bo" / f).is_file(), f
    loaded = {b.name: b for b in unifybench.load_bench(out)}
    assert set(loaded) == {"bo", "kiki"}
    for name in ("bo", "kiki"):
        ref, got = unifybench.bench_concept(concepts.load_concept(name)), loaded[name]
        assert got.info == ref.info and got.info["extra_info"]
        assert set(got.images) == set(ref.images)
        for split in ref.images:
            assert np.array_equal(got.images[split], ref.images[split]), split
        for attr in ("conversations", "recognition", "test_recognition", "vqa", "text_qa", "t2i", "edits"):
            assert getattr(got, attr) == getattr(ref, attr), attr


def test_export_refuses_non_empty_dir_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(unifybench.BenchLayoutError, match="not empty.*overwrite"):
        unifybench.export_world(out, ["bo"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(unifybench, "write_concept", boom)
    with pytest.raises(RuntimeError):
        unifybench.export_world(tmp_path / "fresh", ["bo"])
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]


def test_loader_names_missing_files(tmp_path):
    unifybench.export_world(tmp_path / "b", ["bo"])
    (tmp_path / "b" / "bo" / "test" / "vqa.json").unlink()
    with pytest.raises(unifybench.BenchLayoutError, match="missing test/vqa.json"):
        unifybench.load_bench(tmp_path / "b")


def test_cli_world_export_and_its_errors(tmp_path, capsys):
    from unikit.cli import main

    assert main(["world", "export", str(tmp_path / "b"), "--concept", "bo"]) == 0
    assert (tmp_path / "b" / "bo" / "info.json").is_file()
    assert main(["world", "export", str(tmp_path / "b")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["world", "export", str(tmp_path / "c"), "--concept", "rex"]) == 2
    assert "available: bo" in capsys.readouterr().err


def test_no_two_identities_render_alike():
    # The judge relies on this: a body/mark colour swap or another mark never gives the same pixels.
    for shape in world.SHAPES:
        for mark in world.MARKS:
            for size in range(13, 18):
                a = world.Scene(shape=shape, colour="red", mark=mark, mark_colour="blue", size=size, pattern="striped")
                img = world.render(a)
                for other in world.MARKS:
                    swapped = a.replace(colour="blue", mark_colour="red", mark=other)
                    assert not np.array_equal(img, world.render(swapped)), (shape, mark, other, size)
                    if other != mark:
                        assert not np.array_equal(img, world.render(a.replace(mark=other))), (shape, mark, other, size)
