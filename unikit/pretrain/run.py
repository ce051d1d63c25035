"""A whole pretraining run: where it starts (resume, reuse of finished phases), the data-parallel
launch, the tokenizer's gate, scoring and the files it writes; and re-scoring a finished model."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import torch

from .. import model as M
from .. import world
from ..cache import atomic_path, write_json
from ..distributed import Context
from .config import PretrainConfig, PretrainError, pretrain_config, recorded_config
from .data import build_corpus
from .phases import (LATE_PHASES, PHASE_CLOCK, PHASES, trained_phases, PHASE_FILES, PHASE_SETTINGS, checkpoint_dir, setting_differences, load_checkpoint,
    save_checkpoint, load_phase_state, load_phase_weights, phase_settings, phase_state, recorded_phase_settings,
    world_version)
from .quality import FACT_KEYS, TARGETS, calibrate_and_score, tokenizer_quality
from .training import late_phase_config, train_align, train_lm, train_vision, train_vq


def pretrain(profile: str = "teach", out=None, resume: bool = False, seed: int = 0, progress: bool = True,
             judge=None, workers: int = 1, phases_from=None, finish: bool = False,
             **overrides) -> tuple[M.UnifiedModel, dict, dict]:
    """Pretrain a base model. Returns ``(model, metrics, history)`` and writes them to ``out``.

    ``out`` defaults to the cache (``pretrain/<profile>-<hash>``). ``workers`` > 1 trains
    data-parallel (:mod:`unikit.distributed`: one-thread gloo workers; under ``torchrun`` the
    launcher's processes). With ``resume`` an interrupted run continues from its last checkpoint
    (same config required); if settings changed, the checkpoint's finished phases whose own
    settings (:data:`PHASE_SETTINGS`) are unchanged are reused and the rest start afresh.
    ``phases_from``: directories holding finished phases (``tokenizer.safetensors`` /
    ``vision.safetensors`` with ``phase.json``, as ``benchmarks/probe_base.py`` writes them), or a
    finished model (its four phases up to the model phase), to reuse when their settings equal
    this run's. ``finish``: score and write an interrupted run's
    model as its last checkpoint (in the model phase) holds it, without training further; the
    metrics record the step it stopped at (``lm_steps_done``).
    """
    from .. import cache
    from ..distributed import check_workers, launch

    cfg = pretrain_config(profile, seed=seed, **overrides)
    check_workers(workers)
    out = Path(out) if out else cache.artifact_dir("pretrain", profile, cfg.as_dict())
    plan = plan_run(cfg, out, resume or finish, [Path(d) for d in (phases_from or [])])
    if finish and not (plan["resume"] and plan["phase"] in ("lm", *LATE_PHASES)):
        raise PretrainError(f"--finish needs an interrupted run in its model phase at {checkpoint_dir(out)} with these "
                            f"same settings; there is none (run it, or resume it, first)")
    plan["finish"] = finish
    command = "unikit pretrain --profile {} --seed {} --out {}{}{}{}{}".format(
        profile, seed, out, f" --workers {workers}" if workers > 1 else "", " --resume" if resume else "",
        "".join(f" --phases-from {d}" for d in (phases_from or [])), " --finish" if finish else "")
    again = command if (resume or finish) else command + " --resume"

    def hint() -> str:  # decided when a worker fails: by then a checkpoint may exist
        if checkpoint_dir(out).exists():
            return f"The last checkpoint in {checkpoint_dir(out)} is whole: continue with `{again}`."
        return f"No checkpoint was written yet: start it again with `{command}`."

    launch(_run, workers, cfg, out, plan, progress, command, judge if workers == 1 else None, resume_hint=hint)
    return M.load_model(out), json.loads((out / "metrics.json").read_text()), json.loads((out / "history.json").read_text())


def probe_seconds(directory: Path) -> float:
    """The wall time a probe directory's phase took (its ``log.json``'s last ``minutes``; 0 if unrecorded)."""
    log = directory / "log.json"
    rows = json.loads(log.read_text()) if log.is_file() else []
    return 60.0 * float(rows[-1].get("minutes", 0.0)) if rows else 0.0


def finished_model(directory: Path) -> bool:
    """Whether ``directory`` holds a finished pretraining run (what ``unikit pretrain --out`` writes)."""
    return (directory / "metrics.json").is_file() and (directory / "unikit.json").is_file()


def plan_run(cfg: PretrainConfig, out: Path, resume: bool, phases_from: list[Path]) -> dict:
    """Where a run starts: ``{"phase", "step", "resume": checkpoint or None, "reuse": {phase: source}}``.
    Raises :class:`PretrainError` for an output directory or checkpoint it cannot use."""
    ckpt = checkpoint_dir(out)
    want = cfg.as_dict()
    if out.exists() and any(out.iterdir()) and not resume and not (out / "metrics.json").exists() and not ckpt.exists():
        raise PretrainError(f"{out} is not empty and holds no unikit pretraining run; choose another --out")
    if ckpt.exists() and not resume and not (out / "metrics.json").exists():
        raise PretrainError(f"{out} holds an interrupted run; continue it with --resume, or delete {ckpt} to start afresh")
    plan = {"phase": "vq", "step": 0, "resume": None, "reuse": {}}
    if resume and ckpt.exists():
        state = torch.load(ckpt / "state.pt", weights_only=True)
        if state.get("world") != world_version():
            raise PretrainError(f"the checkpoint in {ckpt} was made for another version of the world (its renders or "
                                f"words differ); it cannot be resumed: delete {ckpt} or choose another --out")
        saved = recorded_config(state["config"])
        if saved == want:
            return {"phase": state["phase"], "step": state["step"], "resume": str(ckpt), "reuse": {}}
        done = PHASES[:PHASES.index(state["phase"])]
        reuse = [ph for ph in done if ph in PHASE_SETTINGS and phase_settings(saved, ph) == phase_settings(want, ph)]
        reuse = reuse[:next((i for i, ph in enumerate(done) if ph not in reuse), len(reuse))]  # a prefix only
        if state["step"] > 0:  # the phase it is in has moved the weights of earlier ones (all but the frozen tokenizer)
            reuse = [ph for ph in reuse if ph == "vq"]
        if not reuse:
            raise PretrainError(f"the checkpoint in {ckpt} was made with other settings ({'; '.join(setting_differences(saved, want))}) "
                                f"and none of its finished phases has this run's settings; resume with the same "
                                f"options, or delete {ckpt}")
        print(f"the checkpoint in {ckpt} was made with other settings ({'; '.join(setting_differences(saved, want))}); "
              f"reusing its finished {', '.join(reuse)} phase(s), the rest start afresh")
        plan.update(phase=PHASES[len(reuse)], reuse={ph: str(ckpt) for ph in reuse})
    offered = {}
    for d in phases_from:
        meta_file = d / "phase.json"
        if finished_model(d):  # a finished run offers every phase up to the last one it ran
            saved = recorded_config(json.loads((d / "unikit.json").read_text()).get("pretrain_config", {}))
            last = trained_phases(saved)[-1]
            offered.update({ph: (d, phase_settings(saved, ph)) for ph in PHASES[:PHASES.index(last) + 1]})
            continue
        if not meta_file.is_file():
            raise PretrainError(f"--phases-from {d}: no phase.json there (a directory benchmarks/probe_base.py wrote) "
                                f"and no finished model (unikit pretrain --out)")
        for meta in json.loads(meta_file.read_text()):
            offered[meta["settings"]["phase"]] = (d, recorded_phase_settings(meta["settings"]))
    for ph, (d, settings) in offered.items():
        if settings != phase_settings(want, ph):
            raise PretrainError(f"--phases-from {d}: its {ph} phase was made with other settings "
                                f"({'; '.join(setting_differences(settings, phase_settings(want, ph)))}); "
                                f"pass options that match it or leave it out")
    for ph in PHASES[PHASES.index(plan["phase"]):]:
        if ph not in offered:
            break
        plan["reuse"][ph] = str(offered[ph][0])
        plan["phase"] = PHASES[PHASES.index(ph) + 1] if ph != PHASES[-1] else None
    wanted = trained_phases(want)
    if offered and all(ph in plan["reuse"] for ph in wanted):
        raise PretrainError(f"--phases-from {', '.join(map(str, phases_from))} already ran every phase of this run "
                            f"(through {wanted[-1]}), so nothing is left to train; to measure that model again use "
                            f"`unikit pretrain --rescore --out DIR`")
    unused = [ph for ph in offered if ph not in plan["reuse"] and PHASES.index(ph) >= PHASES.index(plan["phase"])]
    if unused:
        raise PretrainError(f"--phases-from offers the {', '.join(unused)} phase(s), but this run must first train "
                            f"the {plan['phase']} phase; offer that phase too (or leave them out)")
    return plan


def _run(ctx: Context, cfg: PretrainConfig, out: Path, plan: dict, progress: bool, command: str, judge) -> None:
    """One worker's pretraining run as ``plan`` (:func:`plan_run`) says; the main worker writes."""
    from ..judge import load_judge

    ckpt = checkpoint_dir(out)
    t0 = time.time()
    history, seconds, reused = {}, {}, {}
    phase, step, opt_state, elapsed = plan["phase"], plan["step"], None, 0.0
    if plan["resume"]:
        um, state = load_checkpoint(ckpt)
        history, seconds = json.loads(state["history"]), dict(state.get("seconds", {}))
        opt_state, elapsed, reused = state["opt"], state["elapsed"], dict(state.get("reused", {}))
        if ctx.is_main:
            print(f"resuming {cfg.profile} pretraining at {phase} step {step}")
    else:
        um = M.build_model(cfg.model, seed=cfg.seed)
        for ph, source in plan["reuse"].items():
            if finished_model(Path(source)):  # its whole model, once, with the record of its phases
                if ph == "vq":
                    load_phase_state(um, "model", phase_state(M.load_model(source), "model"))
                    history.update(json.loads((Path(source) / "history.json").read_text()))
                    earlier = json.loads((Path(source) / "metrics.json").read_text())
                    # the wall time the reused model took, with what it reused in turn
                    seconds["reused_run"] = earlier["seconds"] + sum(
                        v for k, v in earlier.get("phase_seconds", {}).items() if k.startswith("reused_"))
            elif source == str(ckpt):
                old, state = load_checkpoint(ckpt)
                load_phase_state(um, PHASE_FILES[ph], phase_state(old, PHASE_FILES[ph]))
                history.update({k: v for k, v in json.loads(state["history"]).items() if k.startswith(ph)})
                # its wall time counts in this run's total, as a reused phase
                seconds.update({f"reused_{k}": v for k, v in state.get("seconds", {}).items() if k == PHASE_CLOCK[ph]})
            else:
                load_phase_weights(um, PHASE_FILES[ph], Path(source) / f"{PHASE_FILES[ph]}.safetensors")
                seconds[f"reused_{PHASE_FILES[ph]}"] = probe_seconds(Path(source))
            reused[ph] = source
    torch.manual_seed(cfg.seed)

    def save(ph, st, opt):
        if ctx.is_main:
            save_checkpoint(um, ckpt, {"phase": ph, "step": st, "opt": opt, "history": json.dumps(history),
                                   "seconds": seconds, "config": cfg.as_dict(), "world": world_version(),
                                   "reused": reused, "elapsed": elapsed + time.time() - t0})
        ctx.barrier()

    judge = judge or load_judge(progress=False)
    if phase == "vq":
        t = time.time()
        train_vq(um, cfg, history, start=step, opt_state=opt_state, save=save, progress=progress, ctx=ctx)
        seconds["tokenizer"] = seconds.get("tokenizer", 0.0) + time.time() - t
        phase, step, opt_state = "vision", 0, None
        save("vision", 0, None)
    if "vq_gate" not in history:
        gate_tokenizer(um, judge, cfg, history, out, verbose=ctx.is_main)
    if phase == "vision":  # (an interrupted vision or align phase restarts)
        t = time.time()
        train_vision(um, cfg, history, progress=progress, ctx=ctx)
        seconds["vision"] = time.time() - t
        phase, step, opt_state = "align", 0, None
        save("align", 0, None)
    if phase == "align":
        if cfg.align_steps:
            t = time.time()
            train_align(um, cfg, history, progress=progress, ctx=ctx)
            seconds["align"] = time.time() - t
        phase, step, opt_state = "lm", 0, None
        save("lm", 0, None)
    t = time.time()
    corpus = None if plan.get("finish") else build_corpus(um, cfg.corpus, cfg.seed)
    seconds["corpus"] = seconds.get("corpus", 0.0) + time.time() - t
    # what train_lm runs from here on (a phase with no steps, e.g. facts_steps=0, is passed over)
    for ph in [ph for ph in trained_phases(cfg.as_dict()) if PHASES.index(ph) >= PHASES.index(phase)]:
        if ph != phase:
            phase, step, opt_state = ph, 0, None
            save(ph, 0, None)
        t = time.time()
        train_lm(um, corpus, cfg if ph == "lm" else late_phase_config(cfg, ph), history, start=step, opt_state=opt_state,
                 save=save, progress=progress, ctx=ctx, stop=step if plan.get("finish") else None, phase=ph)
        seconds[PHASE_CLOCK[ph]] = seconds.get(PHASE_CLOCK[ph], 0.0) + time.time() - t
        if plan.get("finish"):  # the phase it stopped in ends there; later phases do not run
            break
    if not ctx.is_main:
        return
    torch.set_num_threads(max(1, os.cpu_count() or 1) if ctx.distributed else torch.get_num_threads())
    t = time.time()
    metrics = calibrate_and_score(um, judge, cfg)
    seconds["evaluation"] = time.time() - t
    total = elapsed + time.time() - t0
    metrics.update(seconds=round(total, 1), phase_seconds={k: round(v, 1) for k, v in seconds.items()},
                   profile=cfg.profile, seed=cfg.seed, workers=ctx.world, targets=TARGETS, reused_phases=reused,
                   lm_steps_done=len({row[0] for row in history.get("lm", [])}),
                   facts_steps_done=len({row[0] for row in history.get("facts", [])}),
                   drawing_steps_done=len({row[0] for row in history.get("drawing", [])}),
                   command=command)
    um.info.update(profile=cfg.model, pretrain_profile=cfg.profile, seed=cfg.seed, pretrain_config=cfg.as_dict(),
                   world_version=world_version())
    with atomic_path(out) as tmp:
        M.save_model(um, path=tmp)
        write_json(tmp / "metrics.json", metrics)
        (tmp / "history.json").write_text(json.dumps(history) + "\n")
        (tmp / "MODEL_CARD.md").write_text(model_card(um, cfg, metrics, command))


def rescore(model_dir, judge=None) -> dict:
    """Re-measure a pretrained model with ``judge`` (default: the shipped one): calibrate its
    sampling again (:func:`calibrate_sampling`), score it on the examples its run scored
    (:func:`evaluate_base`'s seed, the run's ``eval_n``) and rewrite the directory atomically
    (weights unchanged; ``metrics.json``, ``MODEL_CARD.md`` and the sampling in ``unikit.json``
    new; what the run measured of itself, times, steps and phases, kept). For a model scored by a
    judge that has since been replaced, or made before models calibrated their sampling.
    Returns the new metrics."""
    import shutil

    from ..judge import load_judge

    model_dir = Path(model_dir)
    if not (model_dir / "metrics.json").is_file():
        raise PretrainError(f"{model_dir} holds no pretrained model (no metrics.json); give the directory "
                            f"`unikit pretrain --out` wrote")
    judge = judge or load_judge(progress=False)
    um = M.load_model(model_dir)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    cfg = PretrainConfig(**recorded_config(um.info.get("pretrain_config", {})))
    command = metrics.get("command")
    if command is None:  # models written before metrics recorded their command
        found = re.search(r"^- command: `(.*)`$", (model_dir / "MODEL_CARD.md").read_text(), re.M)
        command = found.group(1) if found else ""
    t = time.time()
    metrics.update(calibrate_and_score(um, judge, cfg), command=command, rescored_seconds=round(time.time() - t, 1))
    um.info["pretrain_config"] = cfg.as_dict()
    with atomic_path(model_dir) as tmp:
        M.save_model(um, path=tmp)
        if (model_dir / "history.json").is_file():
            shutil.copy2(model_dir / "history.json", Path(tmp) / "history.json")
        write_json(Path(tmp) / "metrics.json", metrics)
        (Path(tmp) / "MODEL_CARD.md").write_text(model_card(um, cfg, metrics, command))
    return metrics


def gate_tokenizer(um: M.UnifiedModel, judge, cfg: PretrainConfig, history: dict, out: Path,
                   verbose: bool = True) -> dict:
    """Score the trained tokenizer (:func:`tokenizer_quality`, seed 777) into ``history["vq_gate"]``
    and stop the run if the judge reads fewer than ``cfg.vq_gate`` of its reconstructions right:
    generation can never draw what the tokenizer cannot decode, so an hour of model training on a
    failed tokenizer would be wasted. The tokenizer checkpoint is kept."""
    quality = tokenizer_quality(um, judge, n=min(200, max(8, cfg.eval_n)), seed=777)
    history["vq_gate"] = quality
    if verbose:
        print(f"tokenizer: the judge reads {quality['vq_recon_judge']:.1%} of reconstructions right "
              f"(gate {cfg.vq_gate:.0%}; {quality['vq_original_judge']:.1%} of the renders themselves), "
              f"{quality['vq_codes_used']} of {um.codebook_size} codes used", flush=True)
    if quality["vq_recon_judge"] < cfg.vq_gate:
        raise PretrainError(
            f"the tokenizer failed its gate: the judge reads {quality['vq_recon_judge']:.1%} of its reconstructions "
            f"right, below vq_gate={cfg.vq_gate:.0%} (pixel MSE {quality['vq_recon_mse']:.4f}); generation could not "
            f"show more than that. Train it longer (vq_steps > {cfg.vq_steps}) or check the world changed; "
            f"its checkpoint is in {checkpoint_dir(out)}")
    return quality


def reused_time(own: float, phase_seconds: dict) -> str:
    """The model card's account of reused phases' wall time, added to the run's own ``own`` seconds
    (phases that once ran side by side are counted as if one after the other)."""
    reused = {k[len("reused_"):]: v for k, v in phase_seconds.items() if k.startswith("reused_")}
    if not reused:
        return ""
    parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in reused.items())
    return f"; with the reused phases' own time ({parts}), {(own + sum(reused.values())) / 60:.1f} min in all"


def model_card(um: M.UnifiedModel, cfg: PretrainConfig, metrics: dict, command: str) -> str:
    reused = ", ".join(f"{ph} (from {src})" for ph, src in (metrics.get("reused_phases") or {}).items()) or "none"
    table = M.parameter_table(um)
    rows = "\n".join(f"| {k} | {v:,} |" for k, v in table.items())
    keys = [*TARGETS, "t2i_heldout", *(k for k in ("edit_object", "vq_original_judge", *FACT_KEYS) if k in metrics)]
    notes = {"vq_original_judge": "(report: the judge on the renders themselves, vq_recon_judge's ceiling)",
             "edit_object": "(report: remove or replace the object, the personalized edits' operations)",
             **{k: "(report: facts stated first, `evaluate_facts`)" for k in FACT_KEYS}}
    quality = "\n".join(f"| {k} | {metrics.get(k, float('nan')):.3f} | {TARGETS.get(k, notes.get(k, '(report)'))} |"
                         for k in keys)
    sampling = metrics.get("sampling")
    calibration = "" if not sampling else (
        f"\n## Sampling (calibrated, `calibrate_sampling`)\n\nThe model draws with guidance {sampling['guidance']} and "
        f"temperature {sampling['temperature']} unless told otherwise: the best of these settings on {sampling['n']} "
        f"validation captions, edits and object edits each (judge: every attribute right; the sum decides)."
        f"\n\n| guidance | temperature | t2i_seen | edit | edit_object |\n"
        f"|---|---|---|---|---|\n" + "\n".join(f"| {r['guidance']} | {r['temperature']} | {r['t2i_seen']:.3f} | {r['edit']:.3f} | "
                                          f"{r.get('edit_object', float('nan')):.3f} |" for r in sampling["grid"]) + "\n")
    return f"""# The kit's base model ({cfg.profile} profile)

A small `JanusForConditionalGeneration` pretrained from scratch on the concept world's generic
objects by `unikit.pretrain` (image tokenizer; the understanding encoder on attribute labels;
then every other part on captioning, VQA, recognition, same-object pairs, text-to-image and
instruction editing{'' if not cfg.facts_steps else '; then the same tasks with facts stated first (`unikit.preamble`)'}{
    '' if not cfg.drawing_steps else '; last, a shorter schedule where text-to-image has half the steps'}).
No personal concept was seen. Held-out shape+colour pairs:
{sorted(world.HELDOUT_PAIRS)}.

- command: `{command}`
- seed: {cfg.seed}
- wall time: {metrics['seconds'] / 60:.1f} min on {torch.get_num_threads()} CPU threads ({metrics['phase_seconds']}){
    reused_time(metrics['seconds'], metrics['phase_seconds'])}
- phases reused from earlier runs with the same settings: {reused}
- model phase: {metrics.get('lm_steps_done', cfg.lm_steps)} of {cfg.lm_steps} steps{
    '' if metrics.get('lm_steps_done', cfg.lm_steps) >= cfg.lm_steps else ' (stopped early with --finish: the last checkpoint, scored as it was)'}
- facts phase: {metrics.get('facts_steps_done', 0)} of {cfg.facts_steps} steps
- drawing phase: {metrics.get('drawing_steps_done', 0)} of {cfg.drawing_steps} steps
- held-out examples per metric: {cfg.eval_n}{'' if metrics.get('drawing_n', cfg.eval_n) == cfg.eval_n else
    f"; text-to-image and edit {metrics['drawing_n']}"}
- python {sys.version.split()[0]}, torch {torch.__version__}

## Parameters

| part | parameters |
|---|---|
{rows}

## Quality (judge-scored, held-out examples)

| metric | value | target |
|---|---|---|
{quality}
{calibration}
## Config

```json
{json.dumps(cfg.as_dict(), indent=1)}
```
"""
