"""Personalization methods, all in one harness on the same frozen base model.

A method turns concept cards into a :class:`Personalized` model: the concept tokens it trained
(if any) and the rule that writes each task's prompt. Evaluation (:mod:`unikit.evaluate`) sees
only that, so every method is scored the same way.

================== ================================================================================
``text_prompt``     no training: the concept described in words, as its card has them (class, colour,
                    pattern and facts) in every prompt. A card does not state the mark, so hard
                    negatives (the same words, another mark) fool it.
``oracle_text``     no training: the same, with the mark named too ("the plain orange circle with a
                    blue top"): the upper bound a perfect description reaches
``understanding_only`` Yo'LLaVA-style: ``<c>`` + shared tokens trained on understanding alone
``generation_only`` textual-inversion-style: ``<c>`` + generation tokens trained on generation alone
``separate``        disjoint understanding and generation token sets, each trained on its own task;
                    ``<c>`` stays at its class-word start, so nothing crosses between the tasks
``unictokens``      UniCTokens' three stages (:mod:`unikit.stages`)
``coupled``         one token set used by every task, trained jointly on understanding, generation
                    and editing (text CE + l_gen * generation + l_edit * editing)
``decoupled``       OmniPersona's layout: ``<c>`` + a dedicated group per task, a task's prompts use
                    only its group; the same joint training
``decoupled_replay`` decoupled + explicit knowledge replay at inference (:mod:`unikit.replay`)
================== ================================================================================

Ablations (OmniPersona's table, in :data:`ABLATIONS`): ``coupled_replay`` (no decoupling),
``decoupled_replay_noedit`` (no editing data); ``decoupled`` is the no-replay ablation.

Token-training methods get the same budget of steps per task.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import model as M
from . import stages as S
from . import token_files
from . import tokens as T
from .concepts import ConceptCard
from .photos import as_concept
from .profiles import GROUP_STARTS, schedule
from .trajectory import TokenRecorder


class MethodError(ValueError):
    """An unknown method or a personalization that cannot run as asked."""


@dataclass
class Personalized:
    """A base model taught some concepts by one method: tokens plus prompt rules."""

    method: str
    cards: list[ConceptCard]
    tokens: dict = field(default_factory=dict)  # concept name -> ConceptTokens (attached to the model)
    prompting: S.Prompting | None = None  # None: words instead of tokens (text_prompt, oracle_text)
    curves: dict = field(default_factory=dict)  # stage -> loss per step
    seconds: float = 0.0
    replay: bool = False  # knowledge replay before generation and editing
    # UniCTokens: every concept's rows every few steps through its stages, kept in its checkpoint
    trajectory: TokenRecorder | None = None

    def request(self, um, name: str, text: str, task: str = "generation"):
        """``(prompt to generate from, or instruction to edit with; ReplayTrace or None)`` for a
        ``task`` of :data:`unikit.replay.TASKS`: with replay, a request that needs a fact ("<bo>
        wearing its hat", "put <bo>'s hat on it") is first rewritten with what the understanding
        path answers about the concept."""
        if self.replay:
            from .replay import replay
            trace = replay(um, self, name, text, task=task)
            return trace.prompt, trace
        return (self.generation_prompt if task == "generation" else self.editing_prompt)(name, text), None

    def card(self, name: str) -> ConceptCard:
        for c in self.cards:
            if c.name == name:
                return c
        raise MethodError(f"{name!r} is not one of this model's concepts: {[c.name for c in self.cards]}")

    @property
    def names_mark(self) -> bool:
        """Whether this method's words name the concept's mark (the oracle's description)."""
        return self.method == "oracle_text"

    def _words(self, text: str, card: ConceptCard, article: str) -> str:
        return " ".join([*(card.in_words(f, "the", self.names_mark) for f in card.facts()),
                         card.in_words(text, article, self.names_mark)])

    def understanding_prompt(self, name: str, question: str) -> str:
        """The question as this method asks it (``question`` names the concept by its token)."""
        card = self.card(name)
        if self.prompting is None:
            return self._words(question, card, "the")
        return self.tokens[name].understanding_prompt(question, groups=self.prompting.understanding)

    def generation_prompt(self, name: str, prompt: str) -> str:
        card = self.card(name)
        if self.prompting is None:
            return self._words(prompt, card, "a")
        return self.tokens[name].generation_prompt(prompt, groups=self.prompting.generation)

    def editing_prompt(self, name: str, instruction: str) -> str:
        card = self.card(name)
        if self.prompting is None:
            return self._words(instruction, card, "a")
        return self.tokens[name].generation_prompt(instruction, groups=self.prompting.editing)


# --------------------------------------------------------------------------- the methods


def token_layout(um) -> dict:
    """How this kit lays out, starts and trains a concept's tokens on ``um``: ``{"groups": sizes,
    "start": GROUP_STARTS, "understanding_mix": stages.UNDERSTANDING_MIX}``. Results and
    checkpoints record it; ones made otherwise are not reused."""
    return {"groups": T.default_group_sizes(um), "start": dict(GROUP_STARTS),
            "understanding_mix": dict(S.UNDERSTANDING_MIX)}


def add_token_groups(um, cards, sizes: dict, pdata, init: dict | None = None) -> dict:
    """Add each card's identifier and ``sizes`` (``{group: k}``) to ``um``; a group starts as
    ``init[group]`` says, else as :data:`~unikit.profiles.GROUP_STARTS` does. Returns ``{name: ConceptTokens}``."""
    out = {}
    for card, pd in zip(cards, pdata):
        ct = T.add_concept(um, card, groups={})
        for group, k in sizes.items():
            how = (init or {}).get(group, GROUP_STARTS[group])
            # the training images' codes: the first of the generation targets (encoded once)
            kw = {"codes": pd.gen_codes[:len(pd.train_images)]} if how == "kmeans_images" else {}
            ct.add_group(um, group, k, init=how, words=T.card_words(card), **kw)
        out[card.name] = ct
    return out


def run_text_prompt(um, cards, pdata, sched, seed, **_) -> Personalized:
    return Personalized("text_prompt", list(cards), prompting=None)


def run_oracle_text(um, cards, pdata, sched, seed, **_) -> Personalized:
    return Personalized("oracle_text", list(cards), prompting=None)


def run_understanding_only(um, cards, pdata, sched, seed, on_step=None, progress=False, **_) -> Personalized:
    cts = add_token_groups(um, cards, {"shared": T.default_group_sizes(um)["shared"]}, pdata)
    p = S.Prompting(understanding=("shared",), generation=("shared",), editing=("shared",))
    curve = S.train_tokens(um, list(cts.values()), pdata, steps=sched.stage1_steps + sched.stage3_steps,
                           train_groups=("identifier", "shared"), weights={"understanding": 1.0}, prompting=p,
                           sched=sched, seed=seed, stage="understanding", on_step=on_step, progress=progress)
    return Personalized("understanding_only", list(cards), cts, p, {"understanding": curve})


def run_generation_only(um, cards, pdata, sched, seed, on_step=None, progress=False, **_) -> Personalized:
    sizes = T.default_group_sizes(um)
    cts = add_token_groups(um, cards, {"generation": sizes["generation"]}, pdata)
    p = S.Prompting(understanding=("generation",), generation=("generation",), editing=("generation",))
    curve = S.train_tokens(um, list(cts.values()), pdata, steps=sched.stage2_steps,
                           train_groups=("identifier", "generation"), weights={"generation": 1.0}, prompting=p,
                           sched=sched, seed=seed, stage="generation", on_step=on_step, progress=progress)
    return Personalized("generation_only", list(cards), cts, p, {"generation": curve})


def run_separate(um, cards, pdata, sched, seed, on_step=None, progress=False, **_) -> Personalized:
    sizes = T.default_group_sizes(um)
    cts = add_token_groups(um, cards, {"understanding": sizes["shared"], "generation": sizes["generation"]}, pdata)
    p = S.Prompting(understanding=("understanding",), generation=("generation",), editing=("generation",))
    cl = list(cts.values())
    u = S.train_tokens(um, cl, pdata, steps=sched.stage1_steps + sched.stage3_steps, train_groups=("understanding",),
                       weights={"understanding": 1.0}, prompting=p, sched=sched, seed=seed, stage="understanding",
                       on_step=on_step, progress=progress)
    g = S.train_tokens(um, cl, pdata, steps=sched.stage2_steps, train_groups=("generation",),
                       weights={"generation": 1.0}, prompting=p, sched=sched, seed=seed + 1, stage="generation",
                       on_step=on_step, progress=progress)
    return Personalized("separate", list(cards), cts, p, {"understanding": u, "generation": g})


def run_unictokens(um, cards, pdata, sched, seed, on_step=None, progress=False, checkpoint=None, stop_after: int = 3,
                   **_) -> Personalized:
    """UniCTokens' three stages, with a checkpoint of every concept's tokens after each stage;
    with ``checkpoint`` (a directory) an interrupted run resumes after its last finished stage.
    ``stop_after`` (1 or 2) stops early: the lessons run one stage each. The result's
    ``trajectory`` (a :class:`~unikit.trajectory.TokenRecorder`: every concept's rows at the start and
    every few steps of each stage) is saved with each stage, so a run loaded from its checkpoint
    still shows the path its tokens took."""
    sizes = T.default_group_sizes(um)
    names = [c.name for c in cards]
    curves = {}
    trajectory = TokenRecorder()  # the tokens' path, saved with each stage's checkpoint
    done = min(finished_stage(checkpoint, names), stop_after)
    if done:
        cts = {n: token_files.load_concept_tokens(um, Path(checkpoint) / f"{n}.stage{done}.safetensors") for n in names}
        curves = json.loads((Path(checkpoint) / f"curves.stage{done}.json").read_text())
        trajectory = TokenRecorder.load(Path(checkpoint) / f"trajectory.stage{done}.safetensors")
        print(f"{'loaded' if done == stop_after else 'resuming'} unictokens after stage {done} from {checkpoint}")
    else:
        cts = add_token_groups(um, cards, {"shared": sizes["shared"]}, pdata)
        for n in names:
            trajectory.start(cts[n])
    cl = [cts[n] for n in names]

    def record(stage, step, loss, ct):
        trajectory(stage, step, loss, ct)
        if on_step is not None:
            on_step(stage, step, loss, ct)

    def save(stage: int):
        if checkpoint is None:
            return
        Path(checkpoint).mkdir(parents=True, exist_ok=True)
        for n in names:
            token_files.save_concept_tokens(cts[n], Path(checkpoint) / f"{n}.stage{stage}.safetensors",
                                  extra={"method": "unictokens", "stage": stage})
        trajectory.save(Path(checkpoint) / f"trajectory.stage{stage}.safetensors")
        from .cache import write_json
        write_json(Path(checkpoint) / f"curves.stage{stage}.json", curves)  # last: it marks the stage done

    def result(prompting):
        return Personalized("unictokens", list(cards), cts, prompting, curves, trajectory=trajectory)

    p = S.Prompting(understanding=("shared", "understanding"), generation=("shared", "generation"),
                    editing=("shared", "generation"))
    if done < 1:
        curves["stage1"] = S.train_stage_1_understanding(um, cl, pdata, sched, seed, record, progress)
        save(1)
    if stop_after == 1:
        return result(S.Prompting(understanding=("shared",), generation=("shared",), editing=("shared",)))
    if done < 2:
        for ct in cl:
            ct.add_group(um, "generation", sizes["generation"], init="class_word")
        curves["stage2"] = S.train_stage_2_generation(um, cl, pdata, sched, seed, record, progress)
        save(2)
    if stop_after == 2:
        return result(S.Prompting(understanding=("shared",), generation=("shared", "generation"),
                                  editing=("shared", "generation")))
    if done < 3:
        for i, ct in enumerate(cl):
            codes = S.generated_codes(um, ct, sched.n_generated, sched.guidance, seed=seed + 100 + i)
            ct.add_group(um, "understanding", sizes["understanding"], init="kmeans_codes", codes=codes)
        curves["stage3"] = S.train_stage_3_understanding(um, cl, pdata, sched, seed, record, progress)
        save(3)
    return result(p)


def joint_layout(um, layout: str) -> tuple[dict, S.Prompting]:
    """A joint-training layout's token groups and the groups each task's prompt uses:
    ``coupled``, one set for every task; ``decoupled``, one group per task, the understanding
    one as large as the shared group (as in ``separate``), so each holds the card's words."""
    sizes = T.default_group_sizes(um)
    if layout == "coupled":
        return {"shared": sizes["shared"]}, S.Prompting(("shared",), ("shared",), ("shared",))
    tasks = ("understanding", "generation", "editing")
    groups = {"understanding": sizes["shared"], "generation": sizes["generation"], "editing": sizes["editing"]}
    return groups, S.Prompting(*((t,) for t in tasks))


def _run_joint(um, cards, pdata, sched, seed, layout: str, replay: bool, edits: bool = True, on_step=None,
               progress=False) -> Personalized:
    """One end-to-end stage on all three tasks: text CE + l_gen * generation + l_edit * editing."""
    groups, p = joint_layout(um, layout)
    cts = add_token_groups(um, cards, groups, pdata)
    weights = {"understanding": 1.0, "generation": sched.l_gen, "editing": sched.l_edit if edits else 0.0}
    curve = S.train_tokens(um, [cts[c.name] for c in cards], pdata, steps=sched.joint_steps,
                           train_groups=("identifier", *groups), weights=weights, prompting=p, sched=sched,
                           seed=seed, stage="joint", on_step=on_step, progress=progress)
    name = layout + ("_replay" if replay else "") + ("" if edits else "_noedit")
    return Personalized(name, list(cards), cts, p, {"joint": curve}, replay=replay)


def run_coupled(um, cards, pdata, sched, seed, on_step=None, progress=False, **_) -> Personalized:
    return _run_joint(um, cards, pdata, sched, seed, "coupled", replay=False, on_step=on_step, progress=progress)


def run_decoupled(um, cards, pdata, sched, seed, on_step=None, progress=False, **_) -> Personalized:
    return _run_joint(um, cards, pdata, sched, seed, "decoupled", replay=False, on_step=on_step, progress=progress)


def run_decoupled_replay(um, cards, pdata, sched, seed, on_step=None, progress=False, **_) -> Personalized:
    return _run_joint(um, cards, pdata, sched, seed, "decoupled", replay=True, on_step=on_step, progress=progress)


def run_coupled_replay(um, cards, pdata, sched, seed, on_step=None, progress=False, **_) -> Personalized:
    return _run_joint(um, cards, pdata, sched, seed, "coupled", replay=True, on_step=on_step, progress=progress)


def run_decoupled_replay_noedit(um, cards, pdata, sched, seed, on_step=None, progress=False, **_) -> Personalized:
    return _run_joint(um, cards, pdata, sched, seed, "decoupled", replay=True, edits=False, on_step=on_step,
                      progress=progress)


def run_unictokens_stage1(um, cards, pdata, sched, seed, on_step=None, progress=False, checkpoint=None, **_) \
        -> Personalized:
    """UniCTokens stopped after stage 1 (same seed, so the same rows its full run starts stage 2
    from): the other side of the paper's claim that stage 3 improves understanding."""
    pers = run_unictokens(um, cards, pdata, sched, seed, on_step=on_step, progress=progress, checkpoint=checkpoint,
                          stop_after=1)
    pers.method = "unictokens_stage1"
    return pers


def finished_stage(checkpoint, names) -> int:
    if checkpoint is None:
        return 0
    for stage in (3, 2, 1):
        d = Path(checkpoint)
        if all((d / f"{n}.stage{stage}.safetensors").is_file() for n in names) and \
                (d / f"trajectory.stage{stage}.safetensors").is_file() and (d / f"curves.stage{stage}.json").is_file():
            return stage
    return 0


METHODS = {
    "text_prompt": run_text_prompt,
    "oracle_text": run_oracle_text,
    "understanding_only": run_understanding_only,
    "generation_only": run_generation_only,
    "separate": run_separate,
    "unictokens": run_unictokens,
    "coupled": run_coupled,
    "decoupled": run_decoupled,
    "decoupled_replay": run_decoupled_replay,
}
ABLATIONS = {
    "coupled_replay": run_coupled_replay,  # OmniPersona without decoupling
    "decoupled_replay_noedit": run_decoupled_replay_noedit,  # without editing data
    "unictokens_stage1": run_unictokens_stage1,  # UniCTokens without stages 2 and 3
}
JOINT = {"coupled", "decoupled", "decoupled_replay", *ABLATIONS}  # methods that train on editing triplets


def check_method(method: str) -> str:
    if method not in METHODS and method not in ABLATIONS:
        raise MethodError(f"unknown method {method!r}; available: {', '.join(METHODS)} "
                          f"(ablations: {', '.join(ABLATIONS)})")
    return method


def personalize(um: M.UnifiedModel, concepts: Sequence, method: str, profile: str = "teach", seed: int = 0,
                checkpoint=None, on_step=None, progress: bool = False, stop_after: int = 3,
                **schedule_overrides) -> Personalized:
    """Teach ``um`` the ``concepts`` (names, cards or card paths) with ``method``; all concepts
    train together in one loop. ``um`` is modified (tokens added): load a fresh base per method.

    ``checkpoint``: a directory for stage checkpoints (``"cache"``: the kit's cache, keyed by the
    base model, concepts, method, profile, schedule and seed), so lessons load what an earlier
    lesson trained. ``stop_after``: UniCTokens' last stage to run (1-3).
    """
    check_method(method)
    cards = [as_concept(c, um.image_size) for c in concepts]
    if not cards:
        raise MethodError("no concepts given")
    if len({c.name for c in cards}) != len(cards):
        raise MethodError(f"a concept is listed twice: {[c.name for c in cards]}")
    if stop_after not in (1, 2, 3):
        raise MethodError(f"stop_after={stop_after!r}: UniCTokens has stages 1, 2 and 3; stop after one of them")
    sched = schedule(profile, **schedule_overrides)
    if checkpoint == "cache":
        from .cache import artifact_dir
        import dataclasses
        checkpoint = artifact_dir("personalize", profile, {
            "method": method, "concepts": [c.identity() + (c.name,) for c in cards], "seed": seed,
            "base": T.base_model_hash(um), "schedule": dataclasses.asdict(sched),
            "tokens": token_layout(um)})
    if checkpoint is not None and method != "unictokens" and _has_final(checkpoint, cards):
        return _load_final(um, checkpoint, cards, method)
    t0 = time.time()
    if method == "unictokens" and finished_stage(checkpoint, [c.name for c in cards]) >= stop_after:
        pdata = []  # every stage asked for is in the checkpoint: nothing left to train on
    else:
        pdata = [S.personal_data(um, c, sched, seed, n_edits=sched.n_edits if method in JOINT else 0)
                 for c in cards]
    result = {**METHODS, **ABLATIONS}[method](um, cards, pdata, sched, seed, on_step=on_step, progress=progress,
                                              checkpoint=checkpoint, stop_after=stop_after)
    result.seconds = time.time() - t0
    if checkpoint is not None and method != "unictokens":  # (unictokens saves after every stage itself)
        _save_final(result, checkpoint)
    return result


def _has_final(checkpoint, cards) -> bool:
    d = Path(checkpoint)
    return (d / "final.json").is_file() and all((d / f"{c.name}.final.safetensors").is_file() for c in cards)


def _save_final(pers: Personalized, checkpoint) -> None:
    from .cache import write_json
    d = Path(checkpoint)
    d.mkdir(parents=True, exist_ok=True)
    for name, ct in pers.tokens.items():
        token_files.save_concept_tokens(ct, d / f"{name}.final.safetensors", extra={"method": pers.method})
    write_json(d / "final.json", {"method": pers.method, "curves": pers.curves, "seconds": pers.seconds,
                                  "replay": pers.replay,
                                  "prompting": None if pers.prompting is None else vars(pers.prompting)})


def _load_final(um, checkpoint, cards, method) -> Personalized:
    d = Path(checkpoint)
    meta = json.loads((d / "final.json").read_text())
    cts = {} if meta["prompting"] is None else \
        {c.name: token_files.load_concept_tokens(um, d / f"{c.name}.final.safetensors") for c in cards}
    p = None if meta["prompting"] is None else S.Prompting(**{k: tuple(v) for k, v in meta["prompting"].items()})
    return Personalized(method, list(cards), cts, p, meta["curves"], meta["seconds"], meta["replay"])
