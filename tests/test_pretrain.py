"""Pretraining on the smoke profile: the whole pipeline, resume after an interruption, bad input."""

import dataclasses
import random
import json

import numpy as np
import pytest
import torch

from unikit import model as M
from unikit import pretrain as P
from unikit import vq as V
from unikit import world

METRIC_KEYS = {"vq_recon_judge", "t2i_seen", "t2i_heldout", "caption", "vqa", "recognition", "edit"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "smoke"
    um, metrics, history = P.pretrain("smoke", out=out, progress=False)
    return out, um, metrics, history


def test_smoke_pretraining_writes_a_loadable_model_with_metrics(smoke_run):
    out, um, metrics, history = smoke_run
    for f in ("model.safetensors", "config.json", "tokenizer.json", "metrics.json", "history.json", "MODEL_CARD.md"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(saved) and saved["profile"] == "smoke" and saved["seconds"] > 0
    assert all(0.0 <= saved[k] <= 1.0 for k in METRIC_KEYS)
    yesno = {"attribute", *(f"attribute_{a}" for a in P.YESNO_ORDER)}  # yes/no accuracy, overall and per attribute
    assert yesno <= set(saved) and all(0.0 <= saved[k] <= 1.0 for k in yesno)
    assert [t["step"] for t in history["tracked"]] == [12, 24]  # yes/no per question kind along the way
    assert {"recognition", "same_object", *(f"attribute_{a}" for a in P.YESNO_ORDER)} <= set(history["tracked"][0])
    assert len(history["align"]) == P.CONFIGS["smoke"].align_steps
    smoke = P.CONFIGS["smoke"]
    # every task of the mixture trained, then the facts phase (facts stated first), and the tokenizer's curve was kept
    assert {task for _, task, _ in history["lm"]} == set(smoke.mix)
    assert [s for s, _, _ in history["facts"]] == list(range(smoke.facts_steps))
    assert set(P.FACT_TASKS) <= {task for _, task, _ in history["facts"]} <= set(smoke.facts_mix)
    assert saved["facts_steps_done"] == smoke.facts_steps and all(0.0 <= saved[k] <= 1.0 for k in P.FACT_KEYS)
    # then the drawing phase, text-to-image on half its steps
    assert [s for s, _, _ in history["drawing"]] == list(range(smoke.drawing_steps))
    assert saved["drawing_steps_done"] == smoke.drawing_steps
    # the yes/no curriculum, then understanding, then everything
    assert {t for s, t, _ in history["lm"] if s < smoke.yesno_steps} == {"attribute"}
    assert {t for s, t, _ in history["lm"] if s < smoke.perception_steps} <= {"caption", "vqa", "attribute",
                                                                                "recognition", "same"}
    assert len(history["vq"]) == P.CONFIGS["smoke"].vq_steps
    assert [t["step"] for t in history["tracked"]] == [12, 24]  # yes/no per question kind along the way
    assert {"recognition", "same_object", *(f"attribute_{a}" for a in P.YESNO_ORDER)} <= set(history["tracked"][0])
    assert len(history["align"]) == P.CONFIGS["smoke"].align_steps
    loaded = M.load_model(out)
    assert V.is_adapted(loaded.vq)
    img = world.render_many(world.generic_scenes(2, seed=1))
    assert M.answer(loaded, img, ["what colour is the background?"] * 2) == M.answer(um, img, ["what colour is the background?"] * 2)
    assert "unikit pretrain --profile smoke" in (out / "MODEL_CARD.md").read_text()


def test_drawing_metrics_can_be_scored_on_more_examples_of_their_own(smoke_run):
    """``eval_n_drawing`` scores text-to-image and editing on that many examples (their own seed),
    every other metric on ``eval_n``; unset, all use ``eval_n``."""
    from unikit.judge import load_judge

    _, um, _, _ = smoke_run
    judge = load_judge(progress=False)
    cfg = P.pretrain_config("smoke", eval_n=4, eval_n_drawing=10)
    wide, narrow = P.calibrate_and_score(um, judge, cfg), P.calibrate_and_score(um, judge, dataclasses.replace(cfg, eval_n_drawing=0))
    assert (wide["drawing_n"], narrow["drawing_n"]) == (10, 4)
    assert all(abs(wide[k] * 10 - round(wide[k] * 10)) < 1e-9 for k in ("t2i_seen", "t2i_heldout", "edit"))
    assert all(wide[k] == narrow[k] for k in ("caption", "vqa", "attribute", "edit_object", "vq_recon_judge"))
    assert P.CONFIGS["ship8"].eval_n_drawing == 1000


def test_rescore_remeasures_a_finished_model_with_another_judge(smoke_run, tmp_path):
    """After the judge is retrained, `unikit pretrain --rescore` re-measures the model's judged
    metrics with it (same examples as the run) and keeps what the run measured of itself."""
    import shutil

    from unikit import judge as J

    out, um, metrics, _ = smoke_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["judge_hash"] == J.judge_hash(J.load_judge(progress=False).config)
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    cfg = dict(J.JUDGE_CONFIG, hidden=64)
    other, _ = J.train_judge(seed=3, steps=2, progress=False, config=cfg, evaluate=False)
    other.eval()
    new = P.rescore(copy, judge=other)
    assert new["judge_hash"] == J.judge_hash(other.config) != saved["judge_hash"]
    assert json.loads((copy / "metrics.json").read_text()) == new
    assert new["seconds"] == saved["seconds"] and new["command"] == saved["command"]
    assert new["caption"] == saved["caption"]  # text answers are not judged
    assert any(new[k] != saved[k] for k in ("vq_recon_judge", "t2i_seen", "edit", "vq_original_judge"))
    assert saved["command"] in (copy / "MODEL_CARD.md").read_text()
    # the calibration keeps the best setting of its grid, and the saved model draws with it by default
    grid = new["sampling"]["grid"]
    smoke_grid = P.CONFIGS["smoke"].sampling_grid
    assert len(grid) == len(smoke_grid["guidance"]) * len(smoke_grid["temperature"]) > 1
    best = max(r["t2i_seen"] + r["edit"] + r["edit_object"] for r in grid)
    chosen = [r for r in grid if (r["guidance"], r["temperature"]) == (new["sampling"]["guidance"],
                                                                       new["sampling"]["temperature"])]
    assert chosen and chosen[0]["t2i_seen"] + chosen[0]["edit"] + chosen[0]["edit_object"] == best
    rescored = M.load_model(copy)
    own = M.sampling(rescored)
    assert own == {"guidance": new["sampling"]["guidance"], "temperature": new["sampling"]["temperature"]}
    assert (M.generate_images(rescored, ["a plain red circle"], n=2, seed=4) ==
            M.generate_images(rescored, ["a plain red circle"], n=2, seed=4, **own)).all()
    with pytest.raises(P.PretrainError, match="no metrics.json"):
        P.rescore(tmp_path / "nothing")


def test_later_phases_continue_a_finished_model_as_the_whole_run_would(smoke_run, tmp_path):
    """A model pretrained without the facts and drawing phases, continued with them (--phases-from
    that model), ends with the weights of the run that did all in one go; so does one that ran the
    facts phase, continued with the drawing phase. A model whose facts phase ran differently cannot
    offer its model phase, and one that ran every phase leaves nothing to train."""
    out, um, metrics, history = smoke_run
    whole = um.model.state_dict()
    P.pretrain("smoke", out=tmp_path / "lm", progress=False, facts_steps=0, drawing_steps=0)
    cont, cmetrics, chistory = P.pretrain("smoke", out=tmp_path / "cont", progress=False, phases_from=[tmp_path / "lm"])
    assert set(cmetrics["reused_phases"]) == {"vq", "vision", "align", "lm"}
    assert [chistory[k] for k in ("lm", "facts", "drawing")] == [history[k] for k in ("lm", "facts", "drawing")]
    assert cmetrics["phase_seconds"]["reused_run"] > 0 and "model" not in cmetrics["phase_seconds"]
    mine = cont.model.state_dict()
    assert mine.keys() == whole.keys() and all(torch.equal(mine[k], whole[k]) for k in mine)
    P.pretrain("smoke", out=tmp_path / "facts", progress=False, drawing_steps=0)
    cont, cmetrics, chistory = P.pretrain("smoke", out=tmp_path / "draw", progress=False, phases_from=[tmp_path / "facts"])
    assert set(cmetrics["reused_phases"]) == {"vq", "vision", "align", "lm", "facts"}
    assert chistory["drawing"] == history["drawing"] and cmetrics["drawing_steps_done"] == P.CONFIGS["smoke"].drawing_steps
    mine = cont.model.state_dict()
    assert all(torch.equal(mine[k], whole[k]) for k in mine)
    # a run without the facts phase goes from the model phase straight to the drawing phase
    _, dmetrics, dhistory = P.pretrain("smoke", out=tmp_path / "nofacts", progress=False, facts_steps=0,
                                       phases_from=[tmp_path / "lm"])
    assert "facts" not in dhistory and len(dhistory["drawing"]) == dmetrics["drawing_steps_done"] == P.CONFIGS["smoke"].drawing_steps
    with pytest.raises(P.PretrainError, match="its facts phase was made with other settings"):
        P.pretrain("smoke", out=tmp_path / "again", progress=False, phases_from=[out], facts_steps=5)
    with pytest.raises(P.PretrainError, match="nothing is left to train"):
        P.pretrain("smoke", out=tmp_path / "again", progress=False, phases_from=[out])


def test_object_edits_remove_or_replace_the_object_and_train_as_their_own_task():
    rng, kinds = random.Random(0), set()
    for sc in world.generic_scenes(40, seed=3):
        instr, target = world.object_edit(sc, rng)
        kept = ("background", "x", "y", "size", "toy", "toy_shape")
        assert [getattr(target, k) for k in kept] == [getattr(sc, k) for k in kept]
        assert target.hat == target.scarf == world.NONE  # worn items go with the object
        if instr.startswith("remove "):
            body = world.object_phrase(*(sc.value(k) for k in world.IDENTITY), determiner="the")
            assert instr.split(" ", 2)[2] == body.split(" ", 1)[1] and not target.present
        else:
            assert instr == "replace the object with " + world.object_phrase(*(target.value(k) for k in world.IDENTITY))
            assert target.present and any(target.value(k) != sc.value(k) for k in world.IDENTITY)
        kinds.add(instr.split()[0])
    assert kinds == {"remove", "replace"}
    um = M.build_model("smoke")
    corpus = P.build_corpus(um, 32, seed=0)
    M.check_vocabulary(um.tokenizer, corpus.object_instr)
    src, instr, codes = P.task_batch("object_edit", corpus, 4, random.Random(0))
    assert src.shape == (4, 32, 32, 3) and codes.shape == (4, um.gen_grid, um.gen_grid) and len(instr) == 4
    P.train_lm(um, corpus, P.pretrain_config("smoke", lm_steps=2, mix={"object_edit": 1}), {}, progress=False)
    from unikit.judge import load_judge
    assert 0 <= P.evaluate_base(um, load_judge(progress=False), n=2, tasks=("object_edit",))["edit_object"] <= 1


def test_tokenizer_stays_frozen_while_the_rest_trains():
    um = M.build_model("smoke")
    corpus = P.build_corpus(um, 32, seed=0)
    vq_before = {k: v.clone() for k, v in um.vq.state_dict().items()}
    lm_before = {k: v.clone() for k, v in um.model.model.language_model.state_dict().items()}
    P.train_lm(um, corpus, P.pretrain_config("smoke", lm_steps=3), {}, progress=False)
    assert all(torch.equal(vq_before[k], v) for k, v in um.vq.state_dict().items())
    assert any(not torch.equal(lm_before[k], v) for k, v in um.model.model.language_model.state_dict().items())


def test_phase_3_can_keep_the_understanding_encoder_frozen():
    um = M.build_model("smoke")
    corpus = P.build_corpus(um, 32, seed=0)
    vision_before = [p.detach().clone() for p in P.vision_parameters(um)]
    lm_before = {k: v.clone() for k, v in um.model.model.language_model.state_dict().items()}
    P.train_lm(um, corpus, P.pretrain_config("smoke", lm_steps=3, lm_train_vision=False), {}, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(vision_before, P.vision_parameters(um)))
    assert any(not torch.equal(lm_before[k], v) for k, v in um.model.model.language_model.state_dict().items())


def test_bf16_autocast_trains_fp32_weights_close_to_fp32_and_deterministically():
    def run(precision):
        um = M.build_model("smoke", seed=0)
        corpus = P.build_corpus(um, 32, seed=0)
        history = {}
        P.train_lm(um, corpus, P.pretrain_config("smoke", lm_steps=4, precision=precision), history, progress=False)
        return um, [row[-1] for row in history["lm"]]

    fp32, fp32_losses = run("fp32")
    bf16, bf16_losses = run("bf16")
    again, again_losses = run("bf16")
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # weights and optimizer stay fp32
    assert bf16_losses == again_losses  # deterministic for a seed
    assert all(torch.equal(a, b) for a, b in zip(bf16.model.parameters(), again.model.parameters()))
    assert bf16_losses != fp32_losses  # the forward pass really ran in bfloat16
    assert bf16_losses == pytest.approx(fp32_losses, rel=0.05)  # ... and computed the same losses
    with pytest.raises(P.PretrainError, match="precision='fp16'; choose one of fp32, bf16"):
        P.pretrain_config("smoke", precision="fp16")


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_train_lm = P.train_lm
    calls = {"n": 0}

    def interrupted(um, corpus, cfg, history, start=0, opt_state=None, save=None, progress=True, **kw):
        if kw.get("phase") in P.LATE_PHASES:  # the crash and the resume happen in the model phase
            return real_train_lm(um, corpus, cfg, history, start, opt_state, save, progress, **kw)
        calls["n"] += 1
        if calls["n"] == 1:  # first attempt: the loop checkpoints at step 12 (optimizer state too), then "crash"
            assert cfg.checkpoint_every == 12
            real_train_lm(um, corpus, dataclasses.replace(cfg, lm_steps=12), history, start, opt_state, save, progress,
                          **kw)
            raise KeyboardInterrupt
        assert start == 12 and opt_state  # the second attempt starts where the first stopped, with Adam's state
        return real_train_lm(um, corpus, cfg, history, start, opt_state, save, progress, **kw)

    monkeypatch.setattr(P.run, "train_lm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        P.pretrain("smoke", out=out, progress=False)
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "metrics.json").exists()
    import shutil
    shutil.copytree(out, tmp_path / "early")  # the same interrupted run, shipped as it is with --finish
    monkeypatch.setattr(P.run, "train_lm", real_train_lm)
    _, early, _ = P.pretrain("smoke", out=tmp_path / "early", finish=True, progress=False)
    assert early["lm_steps_done"] == 12 and "stopped early with --finish" in (tmp_path / "early" / "MODEL_CARD.md").read_text()
    with pytest.raises(P.PretrainError, match="--finish needs an interrupted run"):
        P.pretrain("smoke", out=tmp_path / "none", finish=True, progress=False)
    monkeypatch.setattr(P.run, "train_lm", interrupted)
    _, metrics, history = P.pretrain("smoke", out=out, resume=True, progress=False)
    assert (out / "metrics.json").is_file()
    assert [s for s, _, _ in history["lm"]] == list(range(P.CONFIGS["smoke"].lm_steps))
    assert metrics["lm_steps_done"] == P.CONFIGS["smoke"].lm_steps


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(P.PretrainError, match="no pretraining profile 'huge'.*smoke, teach, v1, ship"):
        P.pretrain_config("huge")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(P.PretrainError, match="not empty"):
        P.pretrain("smoke", out=foreign, progress=False)


def test_same_object_pairs_differ_only_by_mark_when_negative():
    import random

    rng = random.Random(0)
    for _ in range(200):
        a, b, y = P.same_object_pair(rng)
        assert (a.shape, a.colour, a.pattern) == (b.shape, b.colour, b.pattern)
        assert ((a.mark, a.mark_colour) == (b.mark, b.mark_colour)) == (y == "yes")
        assert not np.array_equal(world.render(a), world.render(b)) or y == "yes"


def test_a_tokenizer_below_its_gate_stops_the_run_before_the_model_phase(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model phase must not start after a failed tokenizer gate")

    monkeypatch.setattr(P.run, "train_lm", never)
    with pytest.raises(P.PretrainError, match="failed its gate.*vq_steps"):
        P.pretrain("smoke", out=tmp_path / "run", progress=False, vq_gate=1.01)
    assert (tmp_path / "run" / "checkpoint" / "state.pt").is_file()  # the tokenizer is kept


def test_smoke_run_records_its_tokenizer_gate(smoke_run):
    _, um, metrics, history = smoke_run
    gate = history["vq_gate"]
    assert 0.0 <= gate["vq_recon_judge"] <= 1.0 and 0 < gate["vq_codes_used"] <= um.codebook_size
    assert 0.0 <= gate["vq_original_judge"] <= 1.0
    assert 0 < metrics["vq_codes_used"] <= um.codebook_size


def test_vision_phase_trains_the_understanding_encoder_alone():
    torch.manual_seed(0)
    um = M.build_model("smoke")
    vision = {id(p) for p in P.vision_parameters(um)}
    before = {n: p.clone() for n, p in um.model.named_parameters()}
    history = {}
    P.train_vision(um, P.pretrain_config("smoke", vision_steps=30), history, progress=False)
    changed = {n for n, p in um.model.named_parameters() if not torch.equal(before[n], p)}
    names = {n for n, p in um.model.named_parameters() if id(p) in vision}
    assert changed and changed <= names  # vision encoder and aligner only: LM, heads, tokenizer untouched
    losses = [loss for _, loss in history["vision"]]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert set(history["vision_accuracy"]) == set(world.ATTRIBUTES)
    assert all(0.0 <= v <= 1.0 for v in history["vision_accuracy"].values())


def test_fan_in_vision_init_and_encoder_readout_touch_the_understanding_encoder_alone():
    """vision_init="fan_in" re-initialises exactly the vision encoder and aligner, the same way for
    the same seed; with vision_readout="encoder" the heads read the encoder, so the aligner keeps
    its new init through phase 2 while the encoder learns."""
    cfg = P.pretrain_config("smoke", vision_steps=20, vision_init="fan_in", vision_readout="encoder")
    runs = []
    for _ in range(2):
        um = M.build_model("smoke")
        fresh = {n: p.clone() for n, p in um.model.named_parameters()}
        P.init_vision_fan_in(um, cfg.seed)
        inited = {n: p.clone() for n, p in um.model.named_parameters()}
        P.train_vision(um, dataclasses.replace(cfg, vision_init="transformers"), {}, progress=False)
        runs.append((fresh, inited, {n: p.clone() for n, p in um.model.named_parameters()}))
    (fresh, inited, trained), (_, inited2, trained2) = runs
    changed = {n for n in fresh if not torch.equal(fresh[n], inited[n])}
    assert changed and all(n.startswith(("model.vision_model.", "model.aligner.")) for n in changed)
    assert any(".self_attn.q_proj." in n for n in changed) and any(n.startswith("model.aligner.") for n in changed)
    assert all(torch.equal(inited[n], inited2[n]) and torch.equal(trained[n], trained2[n]) for n in fresh)
    learnt = {n for n in fresh if not torch.equal(inited[n], trained[n])}
    assert learnt and all(n.startswith("model.vision_model.") for n in learnt)
    um = M.build_model("smoke")  # "both" (the teach profile's): the aligner learns as well
    before = {n: p.clone() for n, p in um.model.named_parameters() if n.startswith("model.aligner.")}
    P.train_vision(um, dataclasses.replace(cfg, vision_readout="both"), {}, progress=False)
    assert all(not torch.equal(before[n], p) for n, p in um.model.named_parameters() if n in before)
    with pytest.raises(P.PretrainError, match="vision_readout='mean'.*aligner, encoder, both"):
        P.pretrain_config("smoke", vision_readout="mean")


def test_fan_in_language_init_touches_the_language_model_alone_and_only_on_a_fresh_start(monkeypatch):
    """lm_init="fan_in" re-initialises the language model's linear layers and text head, the same
    way for the same seed, nothing else; train_lm applies it on a fresh phase 3, not on a resume."""
    inits = []
    for _ in range(2):
        um = M.build_model("smoke")
        fresh = {n: p.clone() for n, p in um.model.named_parameters()}
        P.init_language_fan_in(um, 0)
        inits.append({n: p.clone() for n, p in um.model.named_parameters()})
    changed = {n for n in fresh if not torch.equal(fresh[n], inits[0][n])}
    assert any(".self_attn.q_proj." in n for n in changed) and "lm_head.weight" in changed
    assert all(n.startswith("model.language_model.layers.") or n == "lm_head.weight" for n in changed)
    assert all(torch.equal(inits[0][n], inits[1][n]) for n in fresh)
    calls = []
    monkeypatch.setattr(P.training, "init_language_fan_in", lambda um, seed: calls.append(seed))
    cfg = P.pretrain_config("smoke", lm_init="fan_in", lm_steps=3)
    P.train_lm(um, None, cfg, {}, start=3, progress=False)  # a resume at its end: no steps, no re-init
    assert calls == []
    P.train_lm(um, None, dataclasses.replace(cfg, lm_steps=0), {}, start=0, progress=False)
    assert calls == [0]
    with pytest.raises(P.PretrainError, match="lm_init='xavier'.*transformers, fan_in"):
        P.pretrain_config("smoke", lm_init="xavier")


def test_resume_with_changed_later_settings_reuses_the_finished_tokenizer(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_train_lm = P.train_lm

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(P.run, "train_lm", crash)
    with pytest.raises(KeyboardInterrupt):
        P.pretrain("smoke", out=out, progress=False)
    trained_vq = {k: v.clone() for k, v in M.load_model(out / "checkpoint" / "model").vq.state_dict().items()}
    monkeypatch.setattr(P.run, "train_lm", real_train_lm)
    um, metrics, history = P.pretrain("smoke", out=out, resume=True, progress=False, lm_steps=10)
    said = capsys.readouterr().out
    assert "lm_steps: 24 -> 10" in said and "reusing its finished vq, vision, align phase(s)" in said
    assert set(metrics["reused_phases"]) == {"vq", "vision", "align"}
    # the reused phases' wall time is counted in the card, not left out
    assert {"reused_tokenizer", "reused_vision", "reused_align"} <= set(metrics["phase_seconds"])
    assert "with the reused phases' own time" in (out / "MODEL_CARD.md").read_text()
    assert all(torch.equal(trained_vq[k], v) for k, v in um.vq.state_dict().items())
    assert len(history["vq"]) == P.CONFIGS["smoke"].vq_steps and len(history["lm"]) == 10
    assert "--resume" in (out / "MODEL_CARD.md").read_text()
    monkeypatch.setattr(P.run, "train_lm", crash)
    with pytest.raises(KeyboardInterrupt):
        P.pretrain("smoke", out=tmp_path / "b", progress=False)
    with pytest.raises(P.PretrainError, match="vq_steps: 30 -> 31.*none of its finished phases"):
        P.pretrain("smoke", out=tmp_path / "b", resume=True, progress=False, vq_steps=31)  # nothing is reusable
    with pytest.raises(P.PretrainError, match="holds an interrupted run; continue it with --resume"):
        P.pretrain("smoke", out=tmp_path / "b", progress=False)
    state = torch.load(tmp_path / "b" / "checkpoint" / "state.pt", weights_only=True)
    torch.save({**state, "world": "another"}, tmp_path / "b" / "checkpoint" / "state.pt")
    with pytest.raises(P.PretrainError, match="another version of the world"):
        P.pretrain("smoke", out=tmp_path / "b", resume=True, progress=False)


def test_yes_no_curriculum_adds_one_attribute_per_fifth_and_asks_exact_questions():
    assert [P.yesno_attributes(s, 500) for s in (0, 99, 100, 250, 499, 5000)] == [
        ("background",), ("background",), ("background", "colour"), ("background", "colour", "shape"),
        P.YESNO_ORDER, P.YESNO_ORDER]
    rng = random.Random(0)
    for sc in world.generic_scenes(60, seed=3):
        q, a = P.attribute_example(sc, rng, ("background", "colour"), newest=1.0)
        asked = q.removeprefix("is the object ").removesuffix("?")
        assert q.startswith("is the object ") and asked in world.COLOURS, q  # newest=1: always the newest
        assert a == ("yes" if sc.present and asked == sc.colour else "no")
    answers = [P.attribute_example(sc, rng)[1] for sc in world.generic_scenes(400, seed=4)]
    assert 0.35 < answers.count("yes") / len(answers) < 0.6


def test_the_same_seed_pretrains_the_same_model(smoke_run, tmp_path):
    """A second smoke run with the same seed, in the same process setup, repeats the first:
    every loss of every phase and every saved weight, bit for bit."""
    out, _, metrics, history = smoke_run
    again, metrics2, history2 = P.pretrain("smoke", out=tmp_path / "again", progress=False)
    assert history2["vq"] == history["vq"] and history2["lm"] == history["lm"]
    assert {k: v for k, v in metrics2.items() if "seconds" not in k and k != "command"} == \
        {k: v for k, v in metrics.items() if "seconds" not in k and k != "command"}  # (--out differs)
    first = M.load_model(out).model.state_dict()
    second = again.model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_recognition_questions_name_a_mark_half_the_time_and_negatives_differ_in_one_thing():
    rng = random.Random(1)
    named = 0
    for sc in world.generic_scenes(400, seed=6, mark_prob=0.7):
        q, a = P.recognition_example(sc, rng)
        assert q.endswith(" in this image?")
        if q.startswith("is the "):
            words = q.removeprefix("is the ").removesuffix(" in this image?").split()
        else:  # "ada is a plain red circle. is ada in this image?"
            name, statement = q.split(" is ", 1)
            assert statement.endswith(f". is {name} in this image?") and name in world.NAMES
            words = statement.split(".")[0].split()[1:]
        pattern, colour, shape = words[:3]
        same_body = (pattern, colour, shape) == (sc.pattern, sc.colour, sc.shape)
        if "with" in words:  # "with a blue top" / "with blue sides"
            named += 1
            mark, mark_colour = words[-1], words[-2]
            same = same_body and (mark, mark_colour) == (sc.mark, sc.mark_colour)
        else:
            same = same_body
        assert (a == "yes") == same, (q, a, world.caption(sc))
    assert 0.3 < named / 400 < 0.6
    # a pair asked about one image: the true question and the false one differ only in the mark
    sc = world.Scene(shape="circle", colour="orange", pattern="plain", mark="top", mark_colour="blue")
    q_true, yes = P.recognition_example(sc, rng, truth=True, with_mark=True, named=False)
    assert (q_true, yes) == ("is the plain orange circle with a blue top in this image?", "yes")


def test_mark_questions_ask_about_the_mark_and_colour_together():
    rng = random.Random(2)
    sc = world.Scene(shape="square", colour="red", mark="band", mark_colour="green")
    assert P.attribute_example(sc, rng, which="mark", truth=True) == ("does the object have a green band?", "yes")
    q, a = P.attribute_example(sc, rng, which="mark", truth=False)
    assert a == "no" and q != "does the object have a green band?" and "red" not in q  # never the body colour
    plain = sc.replace(mark="none", mark_colour="none")
    assert P.attribute_example(plain, rng, which="mark", truth=True)[1] == "no"  # nothing to say yes to
    corpus = P.Corpus(world.generic_scenes(40, seed=1), world.render_many(world.generic_scenes(40, seed=1)),
                      torch.zeros(40, 8, 8, dtype=torch.long), [], [], np.zeros((0, 32, 32, 3), np.uint8),
                      torch.zeros(0, 8, 8, dtype=torch.long))
    images, questions, answers = P.task_batch("attribute", corpus, 8, random.Random(0), paired=True)
    assert len(questions) == 8 and all(np.array_equal(images[i], images[i + 1]) for i in range(0, 8, 2))
    assert [answers[i] for i in range(0, 8, 2) if answers[i] != answers[i + 1]]  # pairs ask true and false


def test_align_phase_trains_the_encoder_and_the_words_of_values_only():
    um = M.build_model("smoke")
    before = {k: v.clone() for k, v in um.model.state_dict().items()}
    history = {}
    P.train_align(um, P.pretrain_config("smoke", align_steps=3), history, progress=False)
    after = um.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("model.vision_model.") for k in changed) and any("aligner" in k for k in changed)
    assert all(k.startswith(("model.vision_model.", "model.aligner.", "model.language_model.embed_tokens."))
               for k in changed), changed
    emb_key = "model.language_model.embed_tokens.weight"
    moved = (before[emb_key] != after[emb_key]).any(dim=1).nonzero().flatten().tolist()
    words = {w for words, _ in P.ALIGN_WORDS.values() for w in words}
    assert set(um.tokenizer.convert_ids_to_tokens(moved)) == words
    assert set(history["align_accuracy"]) == set(P.ALIGN_WORDS) and len(history["align"]) == 3


def test_encoder_probe_reads_every_attribute_on_held_out_renders():
    um = M.build_model("smoke")
    probe = P.encoder_probe(um, n_train=120, n_test=60)
    assert set(probe) == {f"encoder_probe_{a}" for a in world.ATTRIBUTES}
    assert all(0.0 <= v <= 1.0 for v in probe.values())
    assert probe["encoder_probe_background"] > 0.9  # even a random encoder's mean feature shows the background


def test_replicates_table_puts_runs_of_the_shipped_profile_side_by_side(tmp_path):
    """The run-to-run spread: other seeds of the base model's profile join its column, runs of
    another profile stay out, and the spread and targets met are computed from the files."""
    def run(where, **m):
        where.mkdir(parents=True)
        (where / "metrics.json").write_text(json.dumps(m))

    secs = {"model": 600.0, "reused_tokenizer": 60.0}
    run(tmp_path / "base", profile="ship7", seed=0, t2i_seen=0.72, edit=0.61, phase_seconds=secs)
    run(tmp_path / "reps" / "ship7-seed2", profile="ship7", seed=2, t2i_seen=0.81, edit=0.55, phase_seconds=secs)
    run(tmp_path / "reps" / "ship7-seed1", profile="ship7", seed=1, t2i_seen=0.76, edit=0.66, phase_seconds=secs)
    run(tmp_path / "reps" / "ship6-seed1", profile="ship6", seed=1, t2i_seen=0.10, phase_seconds=secs)
    runs = P.load_replicates(tmp_path / "base", tmp_path / "reps")
    assert list(runs) == ["seed 0", "seed 1", "seed 2"]
    table = P.spread_table(runs, targets={"t2i_seen": 0.80, "edit": 0.60, "vqa": 0.95})
    assert table.loc["t2i_seen", "spread"] == pytest.approx(0.09)
    assert table.loc["t2i_seen", "met by"] == "1 of 3"
    assert table.loc["edit", "met by"] == "2 of 3"
    assert "vqa" not in table.index  # no run recorded it
    assert table.loc["wall minutes", "seed 1"] == pytest.approx(11.0)
    said = P.spread_sentences(runs, table, n_eval=200)
    assert "+-0.06" in said[0] and said[1].endswith("t2i_seen, edit.") and said[2].endswith("none.")
    assert "1000" not in said[0]
    runs["seed 0"]["drawing_n"] = 1000  # text-to-image and edit scored on more examples
    assert "(text-to-image and editing on 1000: +-0.03)" in P.spread_sentences(runs, table, n_eval=200)[0]
    alone = P.load_replicates(tmp_path / "base", tmp_path / "no-replicates")
    assert "one run" in P.spread_sentences(alone, P.spread_table(alone), n_eval=200)[-1]
    run(tmp_path / "reps" / "again", profile="ship7", seed=1, t2i_seen=0.7, phase_seconds=secs)
    with pytest.raises(P.PretrainError, match="share a seed"):
        P.load_replicates(tmp_path / "base", tmp_path / "reps")
    with pytest.raises(P.PretrainError, match="no metrics.json"):
        P.load_replicates(tmp_path / "nothing", tmp_path / "reps")
