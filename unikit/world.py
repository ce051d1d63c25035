"""The concept world: a procedural renderer whose every pixel has a known cause.

A *scene* is one subject (a shape with a body colour and a nameable pattern) on a
plain background, optionally carrying owned items (a hat, a scarf, a toy). A subject
may also carry a *mark*: one part of its body painted in a second colour ("a red circle
with a blue top"). The world's language names marks, so the base model can see, say and
draw them; personal concepts (see :mod:`unikit.concepts`) are told apart by their mark,
which their cards (what a user would write) do not state.

Everything a caption, a question or the judge needs follows from the :class:`Scene`
fields, so ground truth is always exact. Images are ``uint8`` arrays of shape
``[size, size, 3]`` (channels last); 32x32 by default.

Marks are symmetric under a left-right flip, so flip augmentation never changes who
a concept is.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 25),
    "green": (35, 165, 60),
    "blue": (40, 90, 225),
    "purple": (145, 55, 195),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "gray": (125, 125, 125),
    "black": (18, 18, 18),
}
SHAPES = ("circle", "square", "triangle", "diamond")
PATTERNS = ("plain", "striped", "spotted")
MARKS = ("top", "bottom", "sides", "band")  # which part of the body the mark colour covers
TOY_SHAPES = ("ball", "block")
# Names generic objects get in pretraining ("ada is a plain red circle. is ada in this image?"), so the
# base model learns to bind a name to what a sentence says about it; personal concepts get their own.
NAMES = ("ada", "bex", "cal", "dex", "eli", "fay", "gus", "hal", "ivy", "jon", "kai", "lux", "max", "ned", "oz", "pia")
NONE = "none"
PATTERN_COLOUR = (250, 250, 250)

# Shape+colour pairs never shown in pretraining: the compositional-generalisation test.
HELDOUT_PAIRS = frozenset({("circle", "purple"), ("square", "yellow"), ("triangle", "blue"), ("diamond", "red")})

# Every field the judge reads, with the values it can take (index 0 is the default).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "present": ("yes", "no"),
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "background": tuple(BACKGROUNDS),
    "mark": (NONE, *MARKS),
    "mark_colour": (NONE, *COLOURS),
    "hat": (NONE, *COLOURS),
    "scarf": (NONE, *COLOURS),
    "toy": (NONE, *COLOURS),
    "toy_shape": (NONE, *TOY_SHAPES),
}
# The attributes a caption states (all of them but ``present``).
NAMEABLE = ("shape", "colour", "pattern", "background", "mark", "mark_colour", "hat", "scarf", "toy", "toy_shape")
IDENTITY = ("shape", "colour", "pattern", "mark", "mark_colour")  # what makes an object itself (the judge compares it)


class WorldError(ValueError):
    """Raised for input the world cannot render; the message names the fix."""


@dataclass(frozen=True)
class Scene:
    """Everything that decides one image.

    ``x``, ``y`` (pixel offsets of the subject's centre from its home position) and
    ``size`` (the subject's width in pixels at 32px) are layout jitter: edits keep
    them, so a source and its edited target differ only in what the instruction says.
    """

    shape: str = "circle"
    colour: str = "red"
    pattern: str = "plain"
    background: str = "white"
    mark: str = NONE
    mark_colour: str = NONE
    hat: str = NONE
    scarf: str = NONE
    toy: str = NONE
    toy_shape: str = NONE
    present: bool = True
    x: int = 0
    y: int = 0
    size: int = 15

    def __post_init__(self) -> None:
        for name, allowed in ATTRIBUTES.items():
            value = getattr(self, name)
            if name == "present":
                continue
            if value not in allowed:
                raise WorldError(f"Scene.{name}={value!r} is not one of {list(allowed)}")
        if (self.mark == NONE) != (self.mark_colour == NONE):
            raise WorldError("Scene: mark and mark_colour must both be 'none' or both be set")
        if self.mark != NONE and self.mark_colour == self.colour:
            raise WorldError(f"Scene: mark_colour must differ from the body colour ({self.colour})")
        if (self.toy == NONE) != (self.toy_shape == NONE):
            raise WorldError("Scene: toy (its colour) and toy_shape must both be 'none' or both be set")

    def labels(self) -> dict[str, int]:
        """Index of each attribute's value in :data:`ATTRIBUTES` (the judge's targets)."""
        return {k: ATTRIBUTES[k].index(self.value(k)) for k in ATTRIBUTES}

    def value(self, attribute: str) -> str:
        """An attribute as a word (``present`` as ``"yes"``/``"no"``)."""
        if attribute == "present":
            return "yes" if self.present else "no"
        return getattr(self, attribute)

    def replace(self, **changes) -> "Scene":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- rendering


def _body_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r * 1.05), (cx + r * 1.1, cy + r), (cx - r * 1.1, cy + r)]
    return [(cx, cy - r * 1.15), (cx + r * 1.15, cy), (cx, cy + r * 1.15), (cx - r * 1.15, cy)]  # diamond


def _mask(size: int, draw_fn) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    draw_fn(ImageDraw.Draw(img))
    return np.asarray(img) > 0


def render(scene: Scene, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Render a scene. Returns ``uint8[image_size, image_size, 3]``.

    Drawn at 32px then scaled (nearest) to ``image_size``, so geometry is identical
    at every size and flat colours stay flat (kind to a small VQ tokenizer).
    """
    if image_size < 16:
        raise WorldError(f"image_size={image_size} is too small; use 16 or more (default {IMAGE_SIZE})")
    s = IMAGE_SIZE
    canvas = np.empty((s, s, 3), np.uint8)
    canvas[:] = BACKGROUNDS[scene.background]
    cx, cy = 13.5 + scene.x, 18.5 + scene.y
    r = scene.size / 2
    if scene.present:
        yy, xx = np.mgrid[0:s, 0:s] + 0.5  # pixel centres: analytic masks stay mirror-symmetric
        if scene.shape == "circle":
            body = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        elif scene.shape == "square":
            body = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        else:
            body = _mask(s, lambda d: d.polygon(_body_polygon(scene.shape, cx, cy, r), fill=1))
        canvas[body] = COLOURS[scene.colour]
        if scene.mark != NONE:
            region = {
                "top": yy < cy - r * 0.4,
                "bottom": yy > cy + r * 0.4,
                "sides": np.abs(xx - cx) > r * 0.5,
                "band": np.abs(xx - cx) < r * 0.28,
            }[scene.mark]
            canvas[body & region] = COLOURS[scene.mark_colour]
        if scene.pattern == "striped":
            canvas[body & (np.abs(yy - (cy + r * 0.25)) < 1.6)] = PATTERN_COLOUR
        elif scene.pattern == "spotted":
            canvas[body & ((xx - cx) ** 2 + (yy - (cy + r * 0.2)) ** 2 < 2.6**2)] = PATTERN_COLOUR
        top = cy - r * (1.15 if scene.shape == "diamond" else 1.05)
        if scene.hat != NONE:
            hat = _mask(s, lambda d: (d.rectangle([cx - 3, top - 6, cx + 3, top - 1], fill=1),
                                      d.rectangle([cx - 5, top - 2, cx + 5, top], fill=1)))
            canvas[hat] = COLOURS[scene.hat]
        if scene.scarf != NONE:
            sy = cy - r * 0.25
            scarf = _mask(s, lambda d: d.rectangle([cx - r - 1, sy - 1.5, cx + r + 1, sy + 1.5], fill=1))
            canvas[scarf] = COLOURS[scene.scarf]
    if scene.toy != NONE:
        tx, ty = 27.0, 26.5
        if scene.toy_shape == "ball":
            toy = _mask(s, lambda d: d.ellipse([tx - 3.5, ty - 3.5, tx + 3.5, ty + 3.5], fill=1))
        else:
            toy = _mask(s, lambda d: d.rectangle([tx - 3, ty - 3, tx + 3, ty + 3], fill=1))
        canvas[toy] = COLOURS[scene.toy]
    if image_size != s:
        canvas = np.asarray(Image.fromarray(canvas).resize((image_size, image_size), Image.NEAREST))
    return canvas


def render_many(scenes: list[Scene], image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Render a list of scenes. Returns ``uint8[n, image_size, image_size, 3]``."""
    return np.stack([render(sc, image_size) for sc in scenes]) if scenes else np.zeros((0, image_size, image_size, 3), np.uint8)


def check_image(image, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Return ``image`` as ``uint8[image_size, image_size, 3]`` or raise a clear error."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise WorldError(f"expected an RGB image of shape [{image_size}, {image_size}, 3], got shape {list(arr.shape)}")
    if arr.shape[:2] != (image_size, image_size):
        raise WorldError(
            f"image is {arr.shape[1]}x{arr.shape[0]} but this world is {image_size}x{image_size}; "
            f"resize it first, e.g. PIL.Image.fromarray(img).resize(({image_size}, {image_size}))"
        )
    if arr.dtype != np.uint8:
        raise WorldError(f"expected uint8 pixels (0-255), got {arr.dtype}")
    return arr


# --------------------------------------------------------------------------- language


def article(word: str) -> str:
    """``"a"`` or ``"an"`` for ``word``."""
    return "an" if word[0] in "aeiou" else "a"


def mark_phrase(mark: str, mark_colour: str) -> str:
    """A mark in words: ``"with a blue top"``, ``"with blue sides"``; ``""`` for no mark."""
    if mark == NONE:
        return ""
    if mark == "sides":
        return f"with {mark_colour} sides"
    return f"with {article(mark_colour)} {mark_colour} {mark}"


def object_phrase(shape: str, colour: str, pattern: str, mark: str = NONE, mark_colour: str = NONE,
                  determiner: str = "a") -> str:
    """The subject's body in words, e.g. ``"a striped red circle with a blue top"`` (``determiner``
    ``"a"`` picks a/an; ``"the"`` gives ``"the striped red circle ..."``)."""
    det = article(pattern) if determiner == "a" else determiner
    return " ".join(w for w in (det, pattern, colour, shape, mark_phrase(mark, mark_colour)) if w)


def describe_subject(scene: Scene, name: str | None = None) -> str:
    """The subject with its mark and items, e.g. ``"a striped red circle with a blue top wearing
    a yellow hat"``.

    With ``name`` (e.g. ``"<bo>"``) the subject is called by its name instead (body and mark).
    """
    head = name if name else object_phrase(scene.shape, scene.colour, scene.pattern, scene.mark, scene.mark_colour)
    worn = [f"{article(c)} {c} {item}" for item, c in (("hat", scene.hat), ("scarf", scene.scarf)) if c != NONE]
    out = head
    if worn:
        out += " wearing " + " and ".join(worn)
    if scene.toy != NONE:
        out += f" with {article(scene.toy)} {scene.toy} {scene.toy_shape}"
    return out


def caption(scene: Scene, name: str | None = None) -> str:
    """A caption stating every nameable attribute and nothing else."""
    if not scene.present:
        toy = f"{article(scene.toy)} {scene.toy} {scene.toy_shape}" if scene.toy != NONE else "nothing"
        return f"{toy} on {article(scene.background)} {scene.background} background"
    return f"{describe_subject(scene, name)} on {article(scene.background)} {scene.background} background"


def vqa_pairs(scene: Scene, subject: str = "the object") -> list[tuple[str, str]]:
    """Questions about an image with exact answers (one or two words)."""
    bg = ("what colour is the background?", scene.background)
    if not scene.present:
        return [bg, ("is there an object?", "no")]
    toy = f"{scene.toy} {scene.toy_shape}" if scene.toy != NONE else NONE
    mark = f"{scene.mark_colour} {scene.mark}" if scene.mark != NONE else NONE
    return [
        (f"what shape is {subject}?", scene.shape),
        (f"what colour is {subject}?", scene.colour),
        (f"what pattern does {subject} have?", scene.pattern),
        (f"what mark does {subject} have?", mark),
        bg,
        (f"what colour is the hat of {subject}?", scene.hat),
        (f"what colour is the scarf of {subject}?", scene.scarf),
        (f"what toy does {subject} have?", toy),
    ]


# --------------------------------------------------------------------------- sampling


def random_layout(rng: random.Random) -> dict:
    """Position and scale jitter for one subject."""
    return {"x": rng.randint(-2, 2), "y": rng.randint(-2, 2), "size": rng.randint(13, 17)}


def random_scene(
    rng: random.Random,
    *,
    allow_heldout: bool = False,
    item_prob: float = 0.35,
    mark_prob: float = 0.5,
    **fixed,
) -> Scene:
    """A random generic scene. Keyword arguments fix fields; held-out pairs are skipped unless allowed."""
    while True:
        shape, colour = rng.choice(SHAPES), rng.choice(tuple(COLOURS))
        if allow_heldout or (fixed.get("shape", shape), fixed.get("colour", colour)) not in HELDOUT_PAIRS:
            break
    fields = dict(shape=shape, colour=colour, pattern=rng.choice(PATTERNS), background=rng.choice(tuple(BACKGROUNDS)))
    fields.update(random_layout(rng))
    fields.update({k: v for k, v in fixed.items() if k in ("shape", "colour", "pattern", "background")})
    if rng.random() < mark_prob:
        fields["mark"] = rng.choice(MARKS)
        fields["mark_colour"] = rng.choice([c for c in COLOURS if c != fields["colour"]])
    for item in ("hat", "scarf"):
        if rng.random() < item_prob:
            fields[item] = rng.choice(tuple(COLOURS))
    if rng.random() < item_prob:
        fields["toy"], fields["toy_shape"] = rng.choice(tuple(COLOURS)), rng.choice(TOY_SHAPES)
    fields.update(fixed)
    return Scene(**fields)


def generic_scenes(n: int, seed: int = 0, **kwargs) -> list[Scene]:
    """``n`` random generic scenes (the pretraining corpus), deterministic in ``seed``."""
    rng = random.Random(seed)
    return [random_scene(rng, **kwargs) for _ in range(n)]


# --------------------------------------------------------------------------- editing

def random_edit(scene: Scene, rng: random.Random) -> tuple[str, Scene]:
    """One instruction edit of a generic scene. Returns ``(instruction, target_scene)``."""
    worn = [i for i in ("hat", "scarf", "toy") if scene.value(i) != NONE]
    missing = [i for i in ("hat", "scarf", "toy") if scene.value(i) == NONE]
    kinds = ["background"] + (["recolour_item", "remove_item"] if worn else []) + (["add_item"] if missing else [])
    kind = rng.choice(kinds)
    if kind == "background":
        bg = rng.choice([b for b in BACKGROUNDS if b != scene.background])
        return f"make the background {bg}", scene.replace(background=bg)
    if kind == "recolour_item":
        item = rng.choice(worn)
        colour = rng.choice([c for c in COLOURS if c != scene.value(item)])
        return f"make the {item} {colour}", scene.replace(**{item: colour})
    if kind == "remove_item":
        item = rng.choice(worn)
        extra = {"toy_shape": NONE} if item == "toy" else {}
        return f"remove the {item}", scene.replace(**{item: NONE}, **extra)
    item = rng.choice(missing)
    colour = rng.choice(tuple(COLOURS))
    if item == "toy":
        shape = rng.choice(TOY_SHAPES)
        return f"add {article(colour)} {colour} {shape}", scene.replace(toy=colour, toy_shape=shape)
    return f"add {article(colour)} {colour} {item}", scene.replace(**{item: colour})


def object_edit(scene: Scene, rng: random.Random) -> tuple[str, Scene]:
    """Remove the object (named in words: ``"remove the plain red circle with a blue top"``) or
    replace it by another described object (``"replace the object with a striped green square"``),
    the personalized edits' operations (``"remove <bo>"``, ``"replace the object with <bo>"``).
    Worn items go with the object; a toy stays. Returns ``(instruction, target_scene)``."""
    worn = dict(hat=NONE, scarf=NONE)
    if rng.random() < 0.5:
        who = object_phrase(*(scene.value(k) for k in IDENTITY), determiner=rng.choice(("a", "the")))
        return f"remove {who}", scene.replace(present=False, **worn)
    while True:
        new = random_scene(rng, item_prob=0.0)
        if any(new.value(k) != scene.value(k) for k in IDENTITY):
            break
    body = {k: new.value(k) for k in IDENTITY}
    return f"replace the object with {object_phrase(*body.values())}", scene.replace(**body, **worn)


def vocabulary() -> list[str]:
    """Every word the world's language uses (captions, questions, answers, instructions)."""
    words = set()
    rng = random.Random(0)
    for sc in generic_scenes(400, seed=1, allow_heldout=True, item_prob=0.5):
        words.update(caption(sc).split())
        for q, a in vqa_pairs(sc):
            words.update(q.replace("?", " ?").split())
            words.update(a.split())
        words.update(random_edit(sc, rng)[0].split())
        words.update(object_edit(sc, rng)[0].split())
    words.update(SHAPES + PATTERNS + TOY_SHAPES + MARKS + NAMES + tuple(COLOURS) + tuple(BACKGROUNDS)
                 + (NONE, "yes", "no", "is", "a", "photo", "of", "."))
    return sorted(words)
