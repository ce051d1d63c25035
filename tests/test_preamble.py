"""The facts phase's examples: facts stated first, then a request that uses them or not."""

import random
import re

from unikit import model as M
from unikit import pretrain as P
from unikit import preamble as Q
from unikit import world


def _scenes(n, seed=0, **kw):
    rng = random.Random(seed)
    return [world.random_scene(rng, **kw) for _ in range(n)]


def test_its_item_is_stated_by_a_fact_and_the_request_names_what_to_draw():
    rng = random.Random(1)
    tokenizer = M.build_tokenizer()
    for sc in _scenes(300, item_prob=0.5):
        prompt = Q.fact_t2i_prompt(sc, rng, its=1.0, form="caption")
        M.check_vocabulary(tokenizer, [prompt])
        facts, request = prompt.rsplit(". ", 1)
        # the request names body, mark and background exactly as the caption does; worn items only as "its"
        body = world.object_phrase(sc.shape, sc.colour, sc.pattern, sc.mark, sc.mark_colour)
        assert request.startswith(body) and request.endswith(f"on {world.article(sc.background)} {sc.background} background")
        for item in ("hat", "scarf", "toy"):
            value = Q.worn_value(sc, item)
            assert (f"its {item}" in request) == (value is not None)
            if value is not None:  # the colour comes from the fact sentence alone
                stated = " ".join(value) if item == "toy" else f"{value} {item}"
                assert stated in facts and stated not in request


def test_the_words_alone_still_draw_when_no_item_is_its():
    rng = random.Random(2)
    for sc in _scenes(100, item_prob=0.5):
        prompt = Q.fact_t2i_prompt(sc, rng, its=0.0, form="caption")
        assert prompt.endswith(world.caption(sc)) and "its" not in prompt.split()


def test_put_its_hat_on_takes_the_colour_from_the_fact():
    rng = random.Random(3)
    src = world.Scene(shape="circle", colour="red", pattern="plain")
    for instruction, item, value in (("add a blue hat", "hat", "blue"), ("add a green ball", "toy", "green ball")):
        text = Q.fact_edit_instruction(src, instruction, rng, convert=1.0)
        facts, request = text.rsplit(". ", 1)
        assert value in facts and value not in request
        assert request == ("give the plain red circle its toy" if item == "toy" else "put the plain red circle's hat on it") \
            or request == ("give a plain red circle its toy" if item == "toy" else "put a plain red circle's hat on it")
    # any other edit keeps its words, after facts about items it does not touch
    text = Q.fact_edit_instruction(src.replace(hat="red"), "make the hat blue", rng)
    assert text.endswith("make the hat blue") and " hat." not in text


def test_a_fact_question_is_answered_by_its_sentence_or_none():
    rng = random.Random(4)
    answers = []
    for _ in range(400):
        prompt, answer = Q.fact_qa_example(rng)
        *facts, question = re.split(r"(?<=\.) ", prompt)
        answers.append(answer)
        asked = next(i for i in ("hat", "scarf", "toy", "like") if i in question.replace("?", " ?").split())
        stating = {"hat": " hat.", "scarf": " scarf.", "toy": "'s toy is", "like": " likes "}[asked]
        assert (answer == world.NONE) == (not any(stating in f for f in facts))
        if answer != world.NONE:
            assert any(answer in f for f in facts)
    assert 0.1 < answers.count(world.NONE) / len(answers) < 0.3


def test_facts_before_an_image_question_never_concern_what_it_asks():
    rng = random.Random(5)
    for sc in _scenes(300, item_prob=0.5):
        question, answer = P.fact_ask_base(sc, rng)
        prompt, same = Q.fact_ask_example(sc, question, answer, rng)
        assert prompt.endswith(question) and same == answer
        facts = prompt[:-len(question)]
        for item in ("hat", "scarf", "toy"):
            if item in question.replace("?", " ?").split():
                assert item not in facts.replace(".", " .").split()


def test_examples_are_deterministic_in_the_seed():
    sc = _scenes(1, item_prob=1.0)[0]
    one = [Q.fact_t2i_prompt(sc, random.Random(7)), Q.fact_qa_example(random.Random(7))]
    two = [Q.fact_t2i_prompt(sc, random.Random(7)), Q.fact_qa_example(random.Random(7))]
    assert one == two
