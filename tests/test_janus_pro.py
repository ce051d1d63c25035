"""The real-model path on a tiny random Janus with Janus-Pro's shapes: its chat format, 384px, the papers' group sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

from unikit import evaluate as E
from unikit import formats, janus_pro, profiles
from unikit import methods as P
from unikit import model as M
from unikit import tokens as T
from unikit import world

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pro(tmp_path_factory):
    return janus_pro.build_tiny_janus_pro(tmp_path_factory.mktemp("janus_pro") / "tiny-janus-pro")


def test_it_loads_through_the_public_loader_with_janus_pros_geometry(pro):
    um = M.load_model(pro)
    assert (um.image_size, um.num_image_tokens, um.gen_grid, um.num_gen_tokens) == (384, 576, 24, 576)
    assert um.profile is None and formats.uses_chat_template(um)
    assert T.default_group_sizes(um) == profiles.GROUP_SIZES["gpu"]  # the papers' sizes: 16 + 8 + 8 (+ identifier)
    assert not (pro / M.INFO_FILE).exists()  # nothing kit-specific: a Janus-Pro snapshot looks the same


def test_understanding_prompts_follow_the_chat_template_and_system_prompt(pro):
    um = M.load_model(pro)
    images = world.render_many(world.generic_scenes(2, seed=0), 384)
    batch = M.understanding_inputs(um, images, ["is <x> red?", "what colour is it?"], ["yes", "red"])
    row = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    text = um.tokenizer.decode(row)
    assert text.startswith(um.tokenizer.bos_token + DEFAULT_SYSTEM_PROMPT + "<|User|>: <begin_of_image>")
    assert text.endswith("<end_of_image>\nis <x> red?\n\n<|Assistant|>: yes" + um.tokenizer.eos_token)
    assert row.count(um.ids["image"]) == 576 and batch["pixel_values"].shape == (2, 3, 384, 384)
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert um.tokenizer.decode(labelled) == " yes" + um.tokenizer.eos_token  # only the answer is learnt
    gen = M.generation_inputs(um, ["a photo of a red circle"])
    gen_text = um.tokenizer.decode(gen["input_ids"][0].tolist())
    assert gen_text == um.tokenizer.bos_token + "<|User|>: a photo of a red circle\n\n<|Assistant|>:<begin_of_image>"


def test_it_answers_and_draws_at_384px(pro):
    um = M.load_model(pro)
    images = world.render_many(world.generic_scenes(1, seed=1), 384)
    assert len(M.answer(um, images, ["what colour is it?"], max_new_tokens=2)) == 1
    out = M.generate_images(um, ["a photo of a red circle"], guidance=formats.JANUS_PRO_GUIDANCE, seed=0)
    assert out.shape == (1, 384, 384, 3) and out.dtype == np.uint8
    assert np.array_equal(out, M.generate_images(um, ["a photo of a red circle"], guidance=5.0, seed=0))


def test_a_photo_concept_personalizes_with_the_papers_group_sizes(pro, tmp_path):
    from PIL import Image

    folder = tmp_path / "pip"
    scenes = world.generic_scenes(6, seed=3)
    for sub, imgs in (("", world.render_many(scenes[:3], 96)), ("negatives", world.render_many(scenes[3:], 64)),
                      ("test", world.render_many(scenes[:1], 50)), ("test/negatives", world.render_many(scenes[4:5], 50))):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            Image.fromarray(img).save(folder / sub / f"{i}.png")
    (folder / "card.json").write_text(json.dumps({"name": "pip", "class": "dog", "facts": ["<pip> likes tea."]}))
    um = M.load_model(pro)
    pers = P.personalize(um, [str(folder)], "unictokens", "smoke", seed=0, stop_after=1)
    ct = pers.tokens["pip"]
    assert ct.sizes()["shared"] == 16  # stage 1 trains the identifier and the shared group at the papers' size
    row = E.evaluate_personalized(um, pers, None, parts=("understanding",))[0]
    assert 0.0 <= row["rec_pos"] <= 1.0


def test_world_concepts_are_judged_on_a_384px_model(pro):
    from unikit.judge import load_judge

    judge = load_judge(progress=False)
    scenes = world.generic_scenes(4, seed=2)
    assert judge.read(world.render_many(scenes, 384)) == judge.read(world.render_many(scenes))  # block means: exact
    um = M.load_model(pro)
    pers = P.personalize(um, ["bo"], "text_prompt", "smoke")
    row = E.evaluate_personalized(um, pers, judge, n_images=1)[0]
    for key in ("rec", "vqa", "gen_identity", "parg", "edit"):
        assert 0.0 <= row[key] <= 1.0
