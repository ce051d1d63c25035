"""Personal concepts: cards, and the UnifyBench-style data each card generates.

A card (``data/concepts/<name>.yaml``) holds what a user would write about a concept (its
class word = shape, colour, pattern, and facts that only text states: "<bo> has a yellow
hat") and its identity mark, the judge's ground truth, which no prompt built from the card
states (the world's language could name it; the user did not write it down). :func:`concept_data` turns a
card into training images, test images, recognition QA with random and hard
negatives, VQA, text-only QA, conversations, generation prompts and editing
triplets, all deterministic in the card.

The fact items never appear in the concept's training images, so drawing
"<bo> wearing its hat" needs knowledge that only the understanding data carries.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import world
from .world import COLOURS, NONE, Scene

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CONCEPTS_DIR = DATA_DIR / "concepts"
FACT_ITEMS = ("hat", "scarf", "toy")
LIKES = ("apples", "honey", "naps", "rain", "music", "puzzles", "snow", "boats", "stars", "kites", "tea", "bells")


def fact_sentence(subject: str, item: str, value) -> str:
    """A fact only text states: ``"<bo> has a yellow hat."``. The toy's ``value`` is ``(colour,
    shape)``; ``"likes"`` takes one of :data:`LIKES`. Cards and the base model's facts phase
    (:mod:`unikit.preamble`) use these same words."""
    if item == "toy":
        colour, shape = value
        return f"{subject}'s toy is {world.article(colour)} {colour} {shape}."
    if item == "likes":
        return f"{subject} likes {value}."
    return f"{subject} has {world.article(value)} {value} {item}."


def fact_question(subject: str, item: str) -> str:
    """The text-only question that asks for one fact: ``"what colour is the hat of <bo>?"``."""
    if item == "toy":
        return f"what toy does {subject} have?"
    if item == "likes":
        return f"what does {subject} like?"
    return f"what colour is the {item} of {subject}?"


class ConceptError(ValueError):
    """A card is missing, malformed or names something unknown; the message says how to fix it."""


@dataclass(frozen=True)
class ConceptCard:
    """A personal concept as its card describes it."""

    name: str  # plain name, e.g. "bo"; its token is "<bo>"
    shape: str  # the class word
    colour: str
    pattern: str
    mark: str  # identity: which part of the body carries the mark colour
    mark_colour: str
    hat: str = NONE  # fact items: colours (toy also has a shape)
    scarf: str = NONE
    toy: str = NONE
    toy_shape: str = NONE
    likes: str = ""  # a non-visual fact, only text can carry it
    source: str = ""  # the card's path, for error messages

    @property
    def token(self) -> str:
        return f"<{self.name}>"

    @property
    def items(self) -> dict[str, str]:
        """Fact items the concept owns: ``{"hat": "yellow", "toy": "blue ball", ...}``."""
        out = {k: getattr(self, k) for k in ("hat", "scarf") if getattr(self, k) != NONE}
        if self.toy != NONE:
            out["toy"] = f"{self.toy} {self.toy_shape}"
        return out

    def scene(self, **changes) -> Scene:
        """The concept itself (no items unless asked) with ``changes`` applied."""
        base = Scene(shape=self.shape, colour=self.colour, pattern=self.pattern, mark=self.mark, mark_colour=self.mark_colour)
        return base.replace(**changes)

    def with_items(self, *items: str, **changes) -> Scene:
        """The concept wearing/holding the named fact items."""
        extra = {}
        for item in items:
            if item == "toy":
                extra.update(toy=self.toy, toy_shape=self.toy_shape)
            else:
                extra[item] = getattr(self, item)
        return self.scene(**extra, **changes)

    @property
    def fact_answers(self) -> dict[str, str]:
        """The facts only text states, as answers: ``{"hat": "yellow", "toy": "blue ball", "likes": "naps"}``."""
        return {**self.items, **({"likes": self.likes} if self.likes else {})}

    def facts(self) -> list[str]:
        """Facts only text states, e.g. ``"<bo> has a yellow hat."``."""
        t = self.token
        out = [fact_sentence(t, item, getattr(self, item)) for item in ("hat", "scarf") if getattr(self, item) != NONE]
        if self.toy != NONE:
            out.append(fact_sentence(t, "toy", (self.toy, self.toy_shape)))
        if self.likes:
            out.append(fact_sentence(t, "likes", self.likes))
        return out

    def description(self) -> str:
        """The concept in words (nameable attributes + facts): the text_prompt baseline."""
        head = f"{self.token} is {world.article(self.pattern)} {self.pattern} {self.colour} {self.shape}."
        return " ".join([head, *self.facts()])

    def in_words(self, text: str, article: str = "the", mark: bool = False) -> str:
        """``<bo>`` -> ``the plain orange circle`` (with ``mark``: ``... with a blue top``)."""
        marked = (self.mark, self.mark_colour) if mark else ()
        return text.replace(self.token, world.object_phrase(self.shape, self.colour, self.pattern, *marked,
                                                            determiner=article))

    def identity(self) -> tuple[str, str, str, str, str]:
        """What makes this concept itself: what the judge's identity check compares."""
        return tuple(getattr(self, k) for k in world.IDENTITY)


# --------------------------------------------------------------------------- cards

_REQUIRED = {"name": str, "class": str, "colour": str, "pattern": str, "identity": dict}


def _fail(path, fieldname: str, expected: str, got) -> ConceptError:
    return ConceptError(f"{path}: field '{fieldname}' should be {expected}, got {got!r}")


def parse_card(data, source: str = "<card>") -> ConceptCard:
    """Validate a card's mapping and return a :class:`ConceptCard`; errors name the field."""
    if not isinstance(data, dict):
        raise ConceptError(f"{source}: a concept card must be a YAML mapping, got {type(data).__name__}")
    for key, typ in _REQUIRED.items():
        if key not in data:
            raise ConceptError(f"{source}: missing required field '{key}' (a card needs: {', '.join(_REQUIRED)})")
        if not isinstance(data[key], typ):
            raise _fail(source, key, f"a {typ.__name__}", data[key])
    name = data["name"]
    if not name.isidentifier() or not name.islower():
        raise _fail(source, "name", "a lowercase word of letters, digits or _ (its token is <name>)", name)
    checks = [("class", data["class"], world.SHAPES), ("colour", data["colour"], tuple(COLOURS)),
              ("pattern", data["pattern"], world.PATTERNS)]
    ident = data["identity"]
    checks += [("identity.mark", ident.get("mark"), world.MARKS), ("identity.mark_colour", ident.get("mark_colour"), tuple(COLOURS))]
    facts = data.get("facts", {}) or {}
    if not isinstance(facts, dict):
        raise _fail(source, "facts", "a mapping (hat, scarf, toy, likes)", facts)
    unknown = set(facts) - {"hat", "scarf", "toy", "likes"}
    if unknown:
        raise ConceptError(f"{source}: field 'facts' has unknown keys {sorted(unknown)}; allowed: hat, scarf, toy, likes")
    for item in ("hat", "scarf"):
        if item in facts:
            checks.append((f"facts.{item}", facts[item], tuple(COLOURS)))
    toy, toy_shape = NONE, NONE
    if "toy" in facts:
        t = facts["toy"]
        if not isinstance(t, dict) or set(t) != {"colour", "shape"}:
            raise _fail(source, "facts.toy", "a mapping with 'colour' and 'shape'", t)
        checks += [("facts.toy.colour", t["colour"], tuple(COLOURS)), ("facts.toy.shape", t["shape"], world.TOY_SHAPES)]
        toy, toy_shape = t["colour"], t["shape"]
    if "likes" in facts:
        checks.append(("facts.likes", facts["likes"], LIKES))
    for fieldname, value, allowed in checks:
        if value not in allowed:
            raise _fail(source, fieldname, f"one of {list(allowed)}", value)
    if ident["mark_colour"] == data["colour"]:
        raise _fail(source, "identity.mark_colour", f"a colour other than the body colour '{data['colour']}'", ident["mark_colour"])
    if (data["class"], data["colour"]) in world.HELDOUT_PAIRS:
        raise ConceptError(f"{source}: {data['colour']} {data['class']} is a held-out pair the base model never saw; pick another colour or class")
    if not any(k in facts for k in FACT_ITEMS):
        raise ConceptError(f"{source}: field 'facts' needs at least one of hat, scarf, toy (knowledge-driven generation tests them)")
    return ConceptCard(
        name=name, shape=data["class"], colour=data["colour"], pattern=data["pattern"],
        mark=ident["mark"], mark_colour=ident["mark_colour"], hat=facts.get("hat", NONE), scarf=facts.get("scarf", NONE),
        toy=toy, toy_shape=toy_shape, likes=facts.get("likes", ""), source=str(source),
    )


def read_card(path) -> ConceptCard:
    """Read and validate one card file."""
    path = Path(path)
    if not path.is_file():
        raise ConceptError(f"{path}: no such concept card")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConceptError(f"{path}: not valid YAML ({e})") from None
    return parse_card(data, str(path))


def available_concepts(directory=CONCEPTS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_concept(name_or_path, directory=CONCEPTS_DIR) -> ConceptCard:
    """A concept by name (``"bo"`` or ``"<bo>"``) or by a card's path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return read_card(text)
    name = text.strip("<>")
    path = Path(directory) / f"{name}.yaml"
    if not path.is_file():
        raise ConceptError(f"unknown concept {text!r}; available: {', '.join(available_concepts(directory))} "
                           f"(or pass the path of a card .yaml)")
    return read_card(path)


def load_concepts(names=None, directory=CONCEPTS_DIR) -> list[ConceptCard]:
    """Several concepts; all of them when ``names`` is None. Identities must be unique."""
    cards = [load_concept(n, directory) for n in (names or available_concepts(directory))]
    seen = {}
    for c in cards:
        if c.identity() in seen:
            raise ConceptError(f"{c.source}: same identity (shape, colour, pattern, mark) as {seen[c.identity()]}")
        seen[c.identity()] = c.source
    return cards


# --------------------------------------------------------------------------- data


@dataclass
class ConceptData:
    """Everything a card generates. Images are ``uint8[n, H, W, 3]`` with matching scene lists."""

    card: ConceptCard
    train_scenes: list[Scene]
    test_scenes: list[Scene]
    random_negatives: list[Scene]
    hard_negatives: list[Scene]
    conversations: list[dict]  # {"question", "answer"} text turns stating the facts
    recognition: list[dict]  # {"image": ("train"|"random"|"hard", i), "question", "answer"}
    vqa: list[dict]  # on test images: {"image": ("test", i), "question", "answer"}
    text_qa: list[dict]  # {"question", "answer"}
    t2i: list[dict]  # {"prompt", "kind": plain|context|knowledge, "expect": {attribute: value}}
    edits: list[dict]  # {"source": Scene, "instruction", "target": Scene}
    test_recognition: list[dict] = field(default_factory=list)
    test_random_negatives: list[Scene] = field(default_factory=list)
    test_hard_negatives: list[Scene] = field(default_factory=list)

    def images(self, split: str, image_size: int = world.IMAGE_SIZE):
        """Render a split: train, test, random, hard, test_random, test_hard."""
        scenes = {"train": self.train_scenes, "test": self.test_scenes, "random": self.random_negatives,
                  "hard": self.hard_negatives, "test_random": self.test_random_negatives,
                  "test_hard": self.test_hard_negatives}[split]
        return world.render_many(scenes, image_size)


def _seed(card: ConceptCard, salt: str) -> int:
    key = f"{card.name}|{card.identity()}|{salt}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def _hard_negative(card: ConceptCard, rng: random.Random, **layout) -> Scene:
    """Same class, colour and pattern; another mark (or none)."""
    options = [(world.NONE, world.NONE)] + [(m, c) for m in world.MARKS for c in COLOURS
                                           if c != card.colour and (m, c) != (card.mark, card.mark_colour)]
    mark, mc = rng.choice(options)
    return card.scene(mark=mark, mark_colour=mc, background=rng.choice(tuple(world.BACKGROUNDS)), **layout)


def _random_negative(card: ConceptCard, rng: random.Random) -> Scene:
    while True:
        sc = world.random_scene(rng, item_prob=0.2)
        if (sc.shape, sc.colour, sc.pattern, sc.mark, sc.mark_colour) != card.identity():
            return sc


def concept_data(card: ConceptCard, n_train: int = 10, n_test: int = 5, n_random: int = 100, n_hard: int = 20) -> ConceptData:
    """Generate a concept's whole dataset, deterministically from its card."""
    if n_train < 3:
        raise ConceptError(f"{card.name}: n_train={n_train} is too few; personalization needs at least 3 training images")
    rng = random.Random(_seed(card, "data"))
    bgs = tuple(world.BACKGROUNDS)
    t = card.token
    train = [card.scene(background=bgs[i % len(bgs)], **world.random_layout(rng)) for i in range(n_train)]
    # Test images: new layouts; some wear their fact items (so VQA can ask about them).
    items = list(card.items)
    test = [card.with_items(*([items[i % len(items)]] if i % 2 else []), background=bgs[(i + 1) % len(bgs)],
                            **world.random_layout(rng)) for i in range(n_test)]
    randoms = [_random_negative(card, rng) for _ in range(n_random)]
    hards = [_hard_negative(card, rng, **world.random_layout(rng)) for _ in range(n_hard)]
    test_randoms = [_random_negative(card, rng) for _ in range(max(n_test * 2, 10))]
    test_hards = [_hard_negative(card, rng, **world.random_layout(rng)) for _ in range(max(n_test, 5))]

    q_rec = f"is {t} in this image?"
    recognition = ([{"image": ("train", i), "question": q_rec, "answer": "yes"} for i in range(n_train)]
                   + [{"image": ("random", i), "question": q_rec, "answer": "no"} for i in range(n_random)]
                   + [{"image": ("hard", i), "question": q_rec, "answer": "no"} for i in range(n_hard)])
    test_recognition = ([{"image": ("test", i), "question": q_rec, "answer": "yes"} for i in range(n_test)]
                        + [{"image": ("test_random", i), "question": q_rec, "answer": "no"} for i in range(len(test_randoms))]
                        + [{"image": ("test_hard", i), "question": q_rec, "answer": "no"} for i in range(len(test_hards))])

    text_qa = [
        {"question": f"what shape is {t}?", "answer": card.shape},
        {"question": f"what colour is {t}?", "answer": card.colour},
        {"question": f"what pattern does {t} have?", "answer": card.pattern},
    ]
    text_qa += [{"question": fact_question(t, item), "answer": value} for item, value in card.fact_answers.items()]
    conversations = [{"question": f"tell me about {t}.", "answer": card.description()}] + text_qa

    vqa = []
    for i, sc in enumerate(test):
        for q, a in world.vqa_pairs(sc, subject=t):
            if set(q.rstrip("?").split()) & {"hat", "scarf", "toy"}:
                continue  # items are asked by text QA; in images only via generation
            vqa.append({"image": ("test", i), "question": q, "answer": a})

    t2i = [{"prompt": f"a photo of {t}", "kind": "plain", "expect": {}}]
    for bg in bgs:
        t2i.append({"prompt": f"{t} on {world.article(bg)} {bg} background", "kind": "context", "expect": {"background": bg}})
    for item, value in card.items.items():
        verb = "with its" if item == "toy" else "wearing its"
        expect = {"toy": card.toy, "toy_shape": card.toy_shape} if item == "toy" else {item: value}
        t2i.append({"prompt": f"{t} {verb} {item}", "kind": "knowledge", "expect": expect})

    edits = []
    for item in card.items:
        layout = dict(background=rng.choice(bgs), **world.random_layout(rng))
        instr = f"give {t} its toy" if item == "toy" else f"put {t}'s {item} on it"
        edits.append({"source": card.scene(**layout), "instruction": instr, "target": card.with_items(item, **layout)})
    generic = world.random_scene(rng, item_prob=0.0)
    edits.append({"source": generic, "instruction": f"replace the object with {t}",
                  "target": card.scene(background=generic.background, x=generic.x, y=generic.y, size=generic.size)})
    src = card.scene(background=rng.choice(bgs), **world.random_layout(rng))
    edits.append({"source": src, "instruction": f"remove {t}", "target": src.replace(present=False)})

    return ConceptData(card, train, test, randoms, hards, conversations, recognition, vqa, text_qa, t2i, edits,
                       test_recognition, test_randoms, test_hards)


def prompt_words() -> set[str]:
    """Words the concept data and prompts use beyond world captions (for the tokenizer)."""
    words = {"is", "in", "this", "image", "?", "yes", "no", "tell", "me", "about", ".", "a", "photo", "of", "its",
             "with", "wearing", "has", "'s", "toy", "likes", "what", "does", "have", "put", "on", "it", "give",
             "replace", "the", "object", "remove", "colour", "shape", "pattern", "hat", "scarf", "an", "like", "there"}
    return words | set(LIKES)
