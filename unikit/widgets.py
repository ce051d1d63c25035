"""Interactive explorers over the figures of :mod:`unikit.viz` (ipywidgets).

Each explorer holds pickers (``ipywidgets`` controls, attributes named after what they pick)
and the figure they select:

- ``explorer.widget``: the container to display in a notebook (controls + the figure as a
  PNG ``ipywidgets.Image``);
- ``explorer.figure``: the current matplotlib ``Figure``, redrawn whenever a control's value
  changes (``explorer.layer.value = 1`` redraws, in a notebook or in a test).

The figure is drawn once on creation, and left to matplotlib's inline backend, so a notebook
executed by papermill (and the book built from it) shows it as a static image even though
the widget itself is not saved; pass ``static=False`` to skip that copy in live sessions.
Redrawn figures are closed from pyplot (they live in the widget), so they never pile up.

    TokenMapExplorer(um, {"coupled": [ct_a], "decoupled": [ct_b]})    # or a TokenRecorder
    AttentionExplorer(um, viz.generation_attention(um, prompt, ct))   # or understanding_attention
    PromptExplorer(um, ct, prompt="a photo of <bo>")
"""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib.pyplot as plt

from . import viz

ALL = "(all)"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


class Explorer:
    """Base of the explorers: controls + a figure redrawn on every value change."""

    def __init__(self, controls: Sequence, static: bool = True):
        import ipywidgets as w

        self.controls = list(controls)
        self.view = w.Image(format="png")
        self.message = w.HTML("")
        self.widget = w.VBox([w.HBox(self.controls), self.message, self.view])
        self.figure = None
        self.redraws = 0
        for c in self.controls:
            c.observe(lambda _change: self.redraw(), names="value")
        self.redraw(keep_open=static)

    def draw(self):
        """Return a new Figure for the current control values (subclasses)."""
        raise NotImplementedError

    def redraw(self, keep_open: bool = False) -> None:
        """Draw the figure for the current values; a bad combination shows its message instead."""
        try:
            fig = self.draw()
        except ValueError as e:  # the kit's errors name the problem and the fix: show them
            self.message.value = f"<span style='color:#b00'>{e}</span>"
            if self.figure is None:
                raise
            return
        self.message.value = ""
        self.view.value = _png(fig)
        if self.figure is not None:
            plt.close(self.figure)
        if not keep_open:
            plt.close(fig)
        self.figure = fig
        self.redraws += 1

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _dropdown(description: str, options, value=None):
    import ipywidgets as w

    options = list(options)
    return w.Dropdown(description=description, options=options,
                      value=value if value is not None else (options[0][1] if isinstance(options[0], tuple)
                                                               else options[0]),
                      layout=w.Layout(width="210px"), style={"description_width": "62px"})


class TokenMapExplorer(Explorer):
    """Concept / stage / colour / projection pickers over :func:`unikit.viz.token_map`.

    ``token_sets``: ``{name: [ConceptTokens, ...] or TokenRecorder}`` (e.g. coupled vs
    decoupled), a list of ConceptTokens, or one TokenRecorder (its snapshots, by stage).
    Maps are cached per (set, projection); UMAP's first use compiles for ~20 s.
    """

    def __init__(self, um, token_sets, method: str = "pca", context_words=None, n_image_tokens: int | None = None,
                 seed: int = 0, static: bool = True):
        if isinstance(token_sets, viz.TokenRecorder) or not isinstance(token_sets, dict):
            token_sets = {"tokens": token_sets}
        if not token_sets:
            raise viz.VizError("no token sets to explore: pass {name: [ConceptTokens]} or a TokenRecorder")
        self.um, self.sets = um, dict(token_sets)
        self.options = dict(context_words=context_words, n_image_tokens=n_image_tokens, seed=seed)
        self._maps: dict[tuple, object] = {}
        concepts, stages, final = set(), [], False
        for s in self.sets.values():
            if isinstance(s, viz.TokenRecorder):
                concepts |= set(s.concepts())
                stages += [x for x in s.stages() if x not in stages]
            else:
                concepts |= {ct.concept for ct in s}
                final = True
        self.token_set = _dropdown("set", list(self.sets))
        self.concept = _dropdown("concept", [ALL] + sorted(concepts))
        self.stage = _dropdown("stage", [ALL] + stages + (["final"] if final else []))
        self.color_by = _dropdown("colour", ["concept", "group", "stage"], "stage" if stages else "concept")
        self.method = _dropdown("method", viz.PROJECTIONS, method)
        super().__init__([self.token_set, self.concept, self.stage, self.color_by, self.method], static)

    def frame(self):
        """The :func:`~unikit.viz.token_map` frame of the chosen set and projection (cached)."""
        key = (self.token_set.value, self.method.value)
        if key not in self._maps:
            s = self.sets[key[0]]
            rec = s if isinstance(s, viz.TokenRecorder) else None
            self._maps[key] = viz.token_map(self.um, [] if rec else s, key[1], snapshots=rec, **self.options)
        return self._maps[key]

    def draw(self):
        df = self.frame()
        keep = df.kind != "concept"
        sel = df.kind == "concept"
        if self.concept.value != ALL:
            sel &= df.concept == self.concept.value
        if self.stage.value != ALL:
            sel &= df.stage == self.stage.value
        title = f"{self.token_set.value}: {self.concept.value}, stage {self.stage.value} ({self.method.value})"
        return viz.plot_token_map(df[keep | sel], color_by=self.color_by.value, title=title)


class AttentionExplorer(Explorer):
    """Layer / head / key-group selectors over a :class:`~unikit.viz.GenerationAttention` or
    :class:`~unikit.viz.UnderstandingAttention` (which shows every group in its bar panel)."""

    def __init__(self, um, attention, static: bool = True):
        self.um, self.attention = um, attention
        layers = [("mean", None)] + [(str(i), i) for i in range(attention.n_layers)]
        heads = [("mean", None)] + [(str(i), i) for i in range(attention.n_heads)]
        self.layer = _dropdown("layer", layers)
        self.head = _dropdown("head", heads)
        controls = [self.layer, self.head]
        if isinstance(attention, viz.GenerationAttention):
            default = "concept" if "concept" in attention.groups else "words"
            self.group = _dropdown("keys", attention.groups, default)
            controls.append(self.group)
        super().__init__(controls, static)

    def draw(self):
        if isinstance(self.attention, viz.GenerationAttention):
            return viz.plot_generation_attention(self.attention, self.layer.value, self.head.value, self.group.value)
        return viz.plot_understanding_attention(self.attention, self.layer.value, self.head.value)


class PromptExplorer(Explorer):
    """A prompt box: generates an image for the prompt and shows where its image tokens looked.

    The concept's identifier in the prompt is expanded with ``groups`` of ``tokens``
    (``tokens.generation_prompt``), as the methods write generation prompts. A prompt the
    model cannot read (unknown words) shows the error under the box.
    """

    def __init__(self, um, tokens=None, prompt: str | None = None, groups: Sequence[str] = ("shared", "generation"),
                 guidance: float | None = None, static: bool = True):
        import ipywidgets as w

        self.um, self.tokens, self.groups, self.guidance = um, tokens, tuple(groups), guidance
        default = prompt or (f"a photo of {tokens.identifier}" if tokens is not None else "a photo of a red circle")
        self.prompt = w.Text(value=default, description="prompt", continuous_update=False,
                             layout=w.Layout(width="420px"), style={"description_width": "50px"})
        self.seed = w.BoundedIntText(value=0, min=0, max=10**6, description="seed", layout=w.Layout(width="140px"),
                                     style={"description_width": "35px"})
        self.layer = _dropdown("layer", [("mean", None)] + [(str(i), i) for i in range(
            um.config.text_config.num_hidden_layers)])
        self.attention = None
        super().__init__([self.prompt, self.seed, self.layer], static)

    def full_prompt(self) -> str:
        text = self.prompt.value.strip()
        return self.tokens.generation_prompt(text, groups=self.groups) if self.tokens is not None else text

    def draw(self):
        key = (self.full_prompt(), self.seed.value)
        if self.attention is None or (self.attention.prompt, self._seed) != key:
            self.attention = viz.generation_attention(self.um, key[0], self.tokens, seed=key[1], guidance=self.guidance)
            self._seed = key[1]
        return viz.plot_generation_attention(self.attention, layer=self.layer.value)
