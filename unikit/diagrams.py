"""Diagrams of the kit's machinery, drawn with matplotlib from the code's own tables.

Each ``draw_*`` function returns a matplotlib ``Figure`` (a notebook shows it as is);
:func:`render_diagrams` writes all of them as SVG files, which ``unikit book`` does into
the staged book source (``figures/``), so no image in the book is drawn by hand:

- :func:`draw_unified_model` -- the two visual paths of the small Janus (sizes from
  :data:`unikit.model.PROFILES`);
- :func:`draw_token_layouts` -- which token rows each layout adds and which of them every
  task's prompt uses (prompts written by :class:`unikit.tokens.ConceptTokens` itself);
- :func:`draw_unictokens_stages` -- UniCTokens' three stages as data flows (steps from
  :data:`unikit.profiles.SCHEDULES`);
- :func:`draw_knowledge_replay` -- OmniPersona's four replay steps (strings from
  :mod:`unikit.replay` and the concept card of ``<bo>``).
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure

from . import replay, world
from .concepts import load_concept
from .model import PROFILES
from .profiles import GROUP_SIZES, SCHEDULES
from .sketch import arrow, box, canvas, title
from .tokens import GROUP_LETTERS, ConceptTokens

GROUP_COLOURS = {"identifier": "#f2c14e", "shared": "#8fb9e3", "understanding": "#7fc8a9",
                 "generation": "#f19c79", "editing": "#c3a6e0"}
PATH_COLOURS = {"understanding": "#2f7d5b", "generation": "#c0562a", "text": "#555555"}
GREY = "#555555"
EXAMPLE_CONCEPT = "bo"
TASKS = ("understanding", "generation", "editing")
TASK_TEXT = {  # the request each task's prompt is built from (the concept as its token)
    "understanding": "is <bo> in this image?",
    "generation": "a photo of <bo>",
    "editing": "put <bo>'s hat on it",
}
LAYOUTS = {
    # layout: (title, groups added after the identifier, the groups each task's prompt
    # uses, whether <c> trains). As in unikit.methods (run_unictokens, run_separate,
    # _layout).
    "unified": ("unified (UniCTokens)", ("shared", "generation", "understanding"),
                {"understanding": ("shared", "understanding"),
                 "generation": ("shared", "generation"),
                 "editing": ("shared", "generation")}, True),
    "separate": ("separate", ("understanding", "generation"),
                 {"understanding": ("understanding",), "generation": ("generation",),
                  "editing": ("generation",)}, False),
    "coupled": ("coupled", ("shared",),
                {"understanding": ("shared",), "generation": ("shared",),
                 "editing": ("shared",)}, True),
    "decoupled": ("decoupled (OmniPersona)", ("understanding", "generation", "editing"),
                  {"understanding": ("understanding",), "generation": ("generation",),
                   "editing": ("editing",)}, True),
}
_TOKEN = re.compile(r"<[a-z0-9_]+>|[^\s<]+")


class DiagramError(ValueError):
    """A diagram asked for with an unknown profile, layout or name."""


def _check_profile(profile: str, table: dict, what: str) -> None:
    if profile not in table:
        raise DiagramError(f"{what}: unknown profile {profile!r}; "
                           f"choose one of {', '.join(table)}")


# --------------------------------------------------------------------------- (a) model


def draw_unified_model(profile: str = "teach") -> Figure:
    """Janus's two visual paths into one language model, with the sizes of ``profile``."""
    _check_profile(profile, PROFILES, "draw_unified_model")
    p, size = PROFILES[profile], world.IMAGE_SIZE
    grid = size // 2 ** (len(p["vq_mult"]) - 1)  # VQ grid = the encoder's patch grid
    n, d = grid * grid, p["hidden"]
    und, gen, txt = (PATH_COLOURS[k] for k in ("understanding", "generation", "text"))
    fig, ax = canvas(17, 7.2)
    title(ax, 0.2, 6.85, f"the unified model ({profile} profile): two visual paths, "
          "one language model")
    ax.text(0.2, 6.35, "understanding path (reads images)", color=und, fontsize=8.5,
            fontweight="bold")
    ax.text(0.2, 0.15, "generation path (writes images as VQ codes, one at a time)",
            color=gen, fontsize=8.5, fontweight="bold")

    box(ax, 0.2, 4.6, 1.9, 1.2, f"image\n{size}x{size} px", edge=und)
    box(ax, 2.6, 4.4, 2.9, 1.6, f"vision encoder (SigLIP-style)\n{grid}x{grid} patches\n"
        f"{p['vision_layers']} layers, width {p['vision_hidden']}", edge=und)
    box(ax, 6.0, 4.6, 2.4, 1.2, f"aligner (MLP)\n{n} vectors x {d}", edge=und)
    for a, b in (((2.1, 5.2), (2.6, 5.2)), ((5.5, 5.2), (6.0, 5.2)),
                 ((8.4, 5.2), (9.2, 5.0))):
        arrow(ax, a, b, und)

    box(ax, 0.2, 2.9, 1.9, 1.2, "prompt\nwords + <bo> ...", edge=txt)
    box(ax, 2.6, 2.9, 5.8, 1.2, f"input embedding (one row of {d} per word)\n"
        "concept-token rows hooked in here", edge=txt)
    arrow(ax, (2.1, 3.5), (2.6, 3.5), txt)
    arrow(ax, (8.4, 3.5), (9.2, 3.5), txt)

    box(ax, 0.2, 0.7, 1.9, 1.2, f"image\n{size}x{size} px\n(training target)", edge=gen)
    box(ax, 2.6, 0.5, 2.9, 1.6, f"VQ tokenizer\nencoder + codebook of {p['codebook']}\n"
        f"-> {grid}x{grid} = {n} code ids", edge=gen)
    box(ax, 6.0, 0.7, 2.4, 1.2, f"generation embedding\n+ aligner -> {d}", edge=gen)
    for a, b in (((2.1, 1.3), (2.6, 1.3)), ((5.5, 1.3), (6.0, 1.3)),
                 ((8.4, 1.3), (9.2, 2.0))):
        arrow(ax, a, b, gen)
    ax.text(8.45, 0.55, "codes drawn\nso far", fontsize=7, color=gen)

    box(ax, 9.2, 0.5, 2.6, 5.5, f"language model\n(Llama)\n\n{p['layers']} layers\n"
        f"hidden {d}\n{p['heads']} heads\n\nshared by\nboth paths", face="#f4f4f4",
        size=9.5, weight="bold")
    box(ax, 12.4, 4.6, 2.0, 1.2, "lm_head\nnext word", edge=und)
    box(ax, 14.8, 4.6, 2.0, 1.2, "answer\n\"yes\", \"orange\"", edge=und)
    box(ax, 12.4, 0.7, 2.0, 1.2, f"generation_head\nnext of {n} codes", edge=gen)
    box(ax, 14.8, 0.7, 2.0, 1.2, f"VQ decoder\n-> {size}x{size} image", edge=gen)
    arrow(ax, (11.8, 5.0), (12.4, 5.2), und)
    arrow(ax, (14.4, 5.2), (14.8, 5.2), und)
    arrow(ax, (11.8, 1.6), (12.4, 1.3), gen)
    arrow(ax, (14.4, 1.3), (14.8, 1.3), gen)
    ax.text(13.4, 2.35, "classifier-free guidance:\nconditional and unconditional\n"
            "prompts run as one batch", ha="center", va="center", fontsize=7.5, color=gen)
    return fig


# --------------------------------------------------------------------------- (b) layouts


def example_tokens(layout: str, profile: str = "teach") -> ConceptTokens:
    """``<bo>``'s tokens in ``layout`` (names and groups only, no model): a ConceptTokens
    whose prompt methods write exactly the prompts training and evaluation use."""
    if layout not in LAYOUTS:
        raise DiagramError(f"unknown layout {layout!r}; "
                           f"choose one of {', '.join(LAYOUTS)}")
    _check_profile(profile, GROUP_SIZES, "example_tokens")
    sizes = dict(GROUP_SIZES[profile])
    if layout in ("separate", "decoupled"):  # their understanding rows are as many as the shared ones
        sizes["understanding"] = sizes["shared"]
    card = load_concept(EXAMPLE_CONCEPT)
    ct = ConceptTokens(card.name, card.shape, base_hash="")
    ct.groups["identifier"] = [card.token]
    for g in LAYOUTS[layout][1]:
        ct.groups[g] = [f"<{card.name}_{GROUP_LETTERS[g]}{i}>" for i in range(sizes[g])]
    return ct


def task_prompt(layout: str, task: str, profile: str = "teach") -> str:
    """The prompt ``task`` writes for ``<bo>`` in ``layout`` (from :data:`TASK_TEXT`)."""
    ct = example_tokens(layout, profile)
    groups = LAYOUTS[layout][2][task]
    if task == "understanding":
        return ct.understanding_prompt(TASK_TEXT[task], groups=groups)
    return ct.generation_prompt(TASK_TEXT[task], groups=groups)


def _chips(ct: ConceptTokens, text: str) -> list[tuple[str, str | None]]:
    """``text`` as ``(label, group or None)`` chips; one chip per run of a group."""
    group_of = {t: g for g, names in ct.groups.items() for t in names}
    runs: list[tuple[list[str], str | None]] = []
    for tok in _TOKEN.findall(text):
        g = group_of.get(tok)
        if g not in (None, "identifier") and runs and runs[-1][1] == g:
            runs[-1][0].append(tok)
        else:
            runs.append(([tok], g))
    return [(_run_label(toks, g), g) for toks, g in runs]


def _run_label(tokens: list[str], group: str | None) -> str:
    """``["<bo_s0>", ..., "<bo_s7>"]`` -> ``"s0..7 (x8)"``; one token keeps its name."""
    if group in (None, "identifier") or len(tokens) == 1:
        return tokens[0]
    first, last = (t.strip("<>").split("_")[-1] for t in (tokens[0], tokens[-1]))
    return f"{first}..{last[1:]} (x{len(tokens)})"


def collapsed(ct: ConceptTokens, text: str) -> str:
    """``text`` with each run of one group's tokens written once: ``<bo_u0..3>``."""
    words = [f"<{ct.concept}_{label.split(' ')[0]}>" if "(x" in label else label
             for label, _ in _chips(ct, text)]
    return re.sub(r" ([.?,]|'s)", r"\1", " ".join(words))


def _draw_chips(ax, x, y, chips, h=0.42, size=7.5, trained=None) -> float:
    for label, g in chips:
        if g is None:
            ax.text(x, y + h / 2, label, fontsize=size, va="center", family="monospace")
            w = 0.095 * len(label)
        else:
            w = 0.09 * len(label) + 0.22
            frozen = trained is not None and g not in trained
            box(ax, x, y, w, h, label, face=GROUP_COLOURS[g], size=size,
                family="monospace", hatch="////" if frozen else None)
        x += w + 0.1
    return x


def draw_token_layouts(profile: str = "teach") -> Figure:
    """Per layout: the rows added for ``<bo>`` and the prompt each task writes."""
    _check_profile(profile, GROUP_SIZES, "draw_token_layouts")
    fig, ax = canvas(17, 1.0 + 2.0 * len(LAYOUTS))
    top = 0.6 + 2.0 * len(LAYOUTS)
    title(ax, 0.2, top + 0.25, f"concept-token layouts ({profile} profile sizes): the "
          "rows each adds, and the prompt each task writes")
    for i, (layout, (heading, groups, _, identifier_trains)) in enumerate(LAYOUTS.items()):
        y0 = top - 2.0 * (i + 1)
        ct = example_tokens(layout, profile)
        trained = set(groups) | ({"identifier"} if identifier_trains else set())
        ax.plot([0.2, 16.8], [y0 + 1.95, y0 + 1.95], color="#cccccc", lw=0.8)
        ax.text(0.2, y0 + 1.55, heading, fontsize=9, fontweight="bold", va="center")
        ax.text(0.2, y0 + 1.15, "rows added:", fontsize=7.5, va="center", color=GREY)
        rows = [(_run_label(names, g), g) for g, names in ct.groups.items()]
        _draw_chips(ax, 0.2, y0 + 0.45, rows, trained=trained)
        for j, task in enumerate(TASKS):
            yy = y0 + 1.35 - 0.6 * j
            ax.text(6.3, yy + 0.21, task, fontsize=7.5, va="center", ha="right",
                    color=GREY)
            _draw_chips(ax, 6.5, yy, _chips(ct, task_prompt(layout, task, profile)))
    x = 0.2
    for g, colour in GROUP_COLOURS.items():
        box(ax, x, 0.1, 0.35, 0.3, face=colour)
        ax.text(x + 0.45, 0.25, g, fontsize=7.5, va="center")
        x += 1.0 + 0.09 * len(g)
    box(ax, x, 0.1, 0.35, 0.3, hatch="////")
    ax.text(x + 0.45, 0.25, "not trained (stays at the class word)", fontsize=7.5,
            va="center")
    return fig


# --------------------------------------------------------------------------- (c) stages


def _token_state(ax, x, y, states: dict[str, str], sizes: dict[str, int]) -> None:
    """Group chips: ``trained`` (solid), ``frozen`` (pale), else not added (dashed)."""
    for g in ("identifier", "shared", "generation", "understanding"):
        state = states.get(g, "absent")
        label = "<c>" if g == "identifier" else f"{GROUP_LETTERS[g]} x{sizes[g]}"
        if state == "absent":
            box(ax, x, y, 0.85, 0.45, label, edge="#aaaaaa", dashed=True, size=7.5)
        else:
            box(ax, x, y, 0.85, 0.45, label, face=GROUP_COLOURS[g], size=7.5,
                alpha=1.0 if state == "trained" else 0.35,
                weight="bold" if state == "trained" else "normal")
        x += 0.93


def draw_unictokens_stages(profile: str = "teach") -> Figure:
    """UniCTokens' stages 1-3 and the generation-as-perception step between 2 and 3."""
    _check_profile(profile, SCHEDULES, "draw_unictokens_stages")
    _check_profile(profile, GROUP_SIZES, "draw_unictokens_stages")
    s, sizes = SCHEDULES[profile], GROUP_SIZES[profile]
    fig, ax = canvas(17, 6.6)
    title(ax, 0.2, 6.4, f"UniCTokens' three stages ({profile} profile: batch {s.batch} "
          f"per task, AdamW lr {s.lr:g})")
    trained, frozen = "trained", "frozen"
    columns = [
        ("stage 1: understanding warm-up", f"{s.stage1_steps} steps",
         "recognition: positives,\nrandom and hard negatives;\nconversations; questions\n"
         "about the photos", "\"<c> is <shared>. \" + question",
         "L = L_und (answer tokens)", {"identifier": trained, "shared": trained}),
        ("stage 2: generation from\nunderstanding", f"{s.stage2_steps} steps",
         f"training photos x{s.augment_copies}\n(crop 1.1x, flip) -> VQ codes;\n"
         "+ the stage-1 data", "\"a photo of <shared> <gen> <c>\"",
         "L = 0.8 L_gen + 0.2 L_und",
         {"identifier": trained, "shared": trained, "generation": trained}),
        ("generation as perception", "no training",
         f"draw {s.n_generated} images with the\nstage-2 tokens; k-means over\n"
         "their codes' embeddings", "k = understanding size",
         "-> the understanding rows' start",
         {"identifier": frozen, "shared": frozen, "generation": frozen}),
        ("stage 3: understanding from\ngeneration", f"{s.stage3_steps} steps",
         "the stage-1 understanding\ndata again",
         "\"<c> is <shared> <und>. \" + question",
         "L = L_und (answer tokens)",
         {"identifier": trained, "shared": frozen, "generation": frozen,
          "understanding": trained}),
    ]
    for i, (heading, steps, data, prompt, loss, states) in enumerate(columns):
        x = 0.3 + 4.2 * i
        ax.text(x + 1.85, 5.75, heading, ha="center", va="center", fontsize=9,
                fontweight="bold")
        ax.text(x + 1.85, 5.2, steps, ha="center", va="center", fontsize=8, color=GREY)
        box(ax, x, 3.35, 3.7, 1.55, data, size=8)
        box(ax, x, 2.55, 3.7, 0.55, prompt, size=7.5, family="monospace", face="#f7f7f7")
        _token_state(ax, x + 0.05, 1.7, states, sizes)
        ax.text(x + 1.85, 1.15, loss, ha="center", va="center", fontsize=8.5,
                fontweight="bold")
        if i:
            arrow(ax, (x - 0.45, 1.92), (x - 0.05, 1.92), label="tokens")
    ax.text(0.3, 0.45, "token rows: solid = trained in this stage; pale = kept frozen; "
            "dashed = not added yet.   L_und: cross-entropy on answer tokens; L_gen: "
            "cross-entropy on VQ codes.", fontsize=7.5, color=GREY)
    return fig


# --------------------------------------------------------------------------- (d) replay


def replay_example(concept: str = EXAMPLE_CONCEPT) -> dict[str, str]:
    """The strings of one replay for ``concept``: request, question, answer (the card's
    own fact: what a well-trained understanding path answers), rewritten request."""
    card = load_concept(concept)
    request = f"a photo of {replay.EXAMPLES[0][0].format(c=card.token)}"
    question, example = replay.ask(request, card.token)
    item = example[0].split()[-1]  # "hat" in "{c} wearing its hat"
    answer = card.items.get(item, world.NONE)
    article = world.article(answer.split()[0])
    filled = example[2].format(c=card.token, a=answer, art=article)
    return {"request": request, "question": question, "answer": answer,
            "rewritten": request.replace(example[0].format(c=card.token), filled)}


def draw_knowledge_replay(concept: str = EXAMPLE_CONCEPT,
                          layout: str = "decoupled") -> Figure:
    """OmniPersona's explicit knowledge replay: ask, answer, rewrite, generate (prompts as
    ``layout`` writes them)."""
    r = replay_example(concept)
    ct, groups = example_tokens(layout), LAYOUTS[layout][2]
    asked = ct.understanding_prompt(r["question"], groups=groups["understanding"])
    drawn = ct.generation_prompt(r["rewritten"], groups=groups["generation"])
    und, gen = PATH_COLOURS["understanding"], PATH_COLOURS["generation"]
    fig, ax = canvas(17, 4.6)
    title(ax, 0.2, 4.35, "explicit knowledge replay: understanding tells generation "
          "what it knows")
    steps = [
        ("1  ask", "turn the request into a question\n(in-context examples:\n"
         "unikit.replay.EXAMPLES)", r["question"], "", GREY),
        ("2  answer", "the understanding path answers\nfrom the understanding tokens",
         r["answer"], collapsed(ct, asked), und),
        ("3  rewrite", "put the answer into the request", r["rewritten"], "", GREY),
        ("4  generate", "the generation path draws\nfrom the rewritten prompt",
         "-> VQ codes -> image", collapsed(ct, drawn), gen),
    ]
    box(ax, 0.2, 2.75, 2.8, 0.9, f"request\n{r['request']}", size=7.5,
        family="monospace")
    x = 3.4
    for heading, what, out, prompt, colour in steps:
        arrow(ax, (x - 0.4, 3.2), (x, 3.2), colour)
        box(ax, x, 2.55, 3.0, 1.3, f"{heading}\n{what}", edge=colour, size=7.8)
        ax.text(x + 1.5, 2.15, out, ha="center", va="center", fontsize=7.8,
                family="monospace", color=colour)
        if prompt:
            ax.text(x + 1.5, 1.55, f"prompt:\n{prompt}", ha="center", va="center",
                    fontsize=6.5, family="monospace", color=colour)
        x += 3.35
    ax.text(0.2, 0.95, "A request that matches no example falls back to the plain "
            "prompt, and so does an answer the rewrite cannot use; the trace "
            "(unikit.replay.ReplayTrace) says which.", fontsize=7.5, color=GREY)
    ax.text(0.2, 0.5, f"Answer shown: <{concept}>'s card's fact (what a well-trained "
            f"understanding path says); prompts as the {layout} layout writes them.",
            fontsize=7.5, color=GREY)
    return fig


# --------------------------------------------------------------------------- all of them


DIAGRAMS = {
    "unified_model": draw_unified_model,
    "token_layouts": draw_token_layouts,
    "unictokens_stages": draw_unictokens_stages,
    "knowledge_replay": draw_knowledge_replay,
}


def render_diagrams(out_dir, names=None, fmt: str = "svg") -> dict[str, Path]:
    """Write the diagrams ``names`` (default: all of :data:`DIAGRAMS`) to
    ``out_dir/<name>.<fmt>``; returns ``{name: path}``. An SVG carries no date, so the
    same code writes the same file."""
    unknown = [n for n in (names or ()) if n not in DIAGRAMS]
    if unknown:
        raise DiagramError(f"unknown diagram(s) {unknown}; "
                           f"choose from {', '.join(DIAGRAMS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or DIAGRAMS:
        path = out_dir / f"{name}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else None
        with rc_context({"svg.hashsalt": "unikit"}):  # fixed ids: same code, same file
            DIAGRAMS[name]().savefig(path, format=fmt, dpi=150, metadata=metadata,
                                     bbox_inches="tight")
        paths[name] = path
    return paths
