"""Explicit knowledge replay (OmniPersona): let understanding tell generation what it knows.

"``<bo>`` wearing its hat" names the hat but not its colour. Generation tokens trained on
pictures of ``<bo>`` never saw the hat; the understanding tokens learned "``<bo>`` has a yellow
hat" from text. Replay routes that knowledge through words at inference, in four steps:

1. **ask**: turn the request into a question about the concept
   ("``<bo>`` wearing its hat" -> "what colour is the hat of ``<bo>``?");
2. **answer** it with the model's understanding path ("yellow");
3. **rewrite** the request with the answer ("``<bo>`` wearing a yellow hat");
4. **generate** from the rewritten prompt.

Step 1 is where OmniPersona prompts its large language model with in-context examples
(0 -> 6 examples: +107% PARG). The kit's small model cannot rewrite text, so step 1 is a
parser driven by the same kind of examples (:data:`EXAMPLES`): each example is a request
pattern, the question it asks, and the rewrite. A request that matches no example falls back
to the plain prompt, and the trace says so. Every intermediate string is in the
:class:`ReplayTrace`, for the lesson to show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import model as M
from . import world

EXAMPLES = (
    # (request pattern, question, rewrite): {c} is the concept token, {a} the answer
    ("{c} wearing its hat", "what colour is the hat of {c}?", "{c} wearing {art} {a} hat"),
    ("{c} wearing its scarf", "what colour is the scarf of {c}?", "{c} wearing {art} {a} scarf"),
    ("{c} with its toy", "what toy does {c} have?", "{c} with {art} {a}"),
)
"""The in-context examples of step 1 for generation. Patterns match inside longer prompts
("a photo of <bo> wearing its hat on a red background")."""

EDIT_EXAMPLES = (
    # an edit that needs a fact becomes the base model's own edit with the fact filled in
    ("put {c}'s hat on it", "what colour is the hat of {c}?", "add {art} {a} hat"),
    ("put {c}'s scarf on it", "what colour is the scarf of {c}?", "add {art} {a} scarf"),
    ("give {c} its toy", "what toy does {c} have?", "add {art} {a}"),
)
"""The examples of step 1 for editing (the kit's extension: OmniPersona replays for generation).
"Put ``<bo>``'s hat on it" asks for the hat's colour and becomes "add a yellow hat", an edit the
base model learned on generic scenes; the source image carries the concept's look."""

TASKS = ("generation", "editing")
"""The requests replay rewrites; results record it (``benchmark``), so a bench made when replay
served fewer tasks is not quoted."""


@dataclass
class ReplayTrace:
    """Every string of one replay: ``request -> question -> answer -> rewritten -> prompt``."""

    request: str
    question: str | None = None
    answer: str | None = None
    rewritten: str = ""
    prompt: str = ""  # the rewritten request as the method writes it (tokens expanded)
    fell_back: bool = False
    note: str = ""
    examples: list = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"request:   {self.request}"]
        if self.fell_back:
            return out + [f"fallback:  {self.note}", f"prompt:    {self.prompt}"]
        return out + [f"question:  {self.question}", f"answer:    {self.answer}", f"rewritten: {self.rewritten}",
                      f"prompt:    {self.prompt}"]


def _pattern(template: str, token: str) -> re.Pattern:
    return re.compile(re.escape(template.format(c=token)))


def ask(request: str, token: str, examples=EXAMPLES) -> tuple[str | None, tuple | None]:
    """Step 1: ``(question, example)`` for the first of ``examples`` whose pattern occurs in
    ``request``, else ``(None, None)``."""
    for ex in examples:
        if _pattern(ex[0], token).search(request):
            return ex[1].format(c=token), ex
    return None, None


def replay(um: M.UnifiedModel, pers, name: str, request: str, task: str = "generation") -> ReplayTrace:
    """Steps 1-3 for concept ``name`` of a :class:`~unikit.methods.Personalized`; returns the trace
    whose ``prompt`` goes to generation (step 4 is the caller's ``generate_images``), or with
    ``task="editing"`` to the editor (``edit_image``) as the instruction."""
    if task not in TASKS:
        raise ValueError(f"replay serves {' and '.join(TASKS)}, not {task!r}")
    examples, to_prompt = ((EXAMPLES, pers.generation_prompt) if task == "generation"
                           else (EDIT_EXAMPLES, pers.editing_prompt))
    card = pers.card(name)
    token = card.token
    trace = ReplayTrace(request=request, examples=[ex[0].format(c="<c>") + " -> " + ex[1].format(c="<c>")
                                                   for ex in examples])
    question, ex = ask(request, token, examples)
    if question is None:
        trace.fell_back, trace.note = True, (f"no example matches {request!r}; "
                                             f"{'generating' if task == 'generation' else 'editing'} from the plain request")
        trace.rewritten = request
        trace.prompt = to_prompt(name, request)
        return trace
    trace.question = question
    trace.answer = M.answer(um, None, [pers.understanding_prompt(name, question)], max_new_tokens=4)[0]
    words = trace.answer.split()
    known = set(um.tokenizer.get_vocab())
    if not words or not all(w in known for w in words) or trace.answer in (world.NONE, "no", "yes"):
        trace.fell_back = True
        trace.note = f"the understanding path answered {trace.answer!r}, which cannot fill {ex[2]!r}; plain prompt"
        trace.rewritten = request
    else:
        filled = ex[2].format(c=token, a=trace.answer, art=world.article(words[0]))
        trace.rewritten = _pattern(ex[0], token).sub(filled, request, count=1)
    trace.prompt = to_prompt(name, trace.rewritten)
    return trace
