"""Methods, stages, replay and the bench on a smoke model: every method runs end to end and is scored."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch
import yaml

from unikit import benchmark as B
from unikit import evaluate as E
from unikit import methods as P
from unikit import model as M
from unikit import replay as R
from unikit import profiles
from unikit import stages as S
from unikit import tokens as T
from unikit import world
from unikit.concepts import load_concept
from unikit.judge import load_judge
from unikit.token_starts import text_rows

torch.set_num_threads(1)
CONCEPTS = ["bo", "kiki"]


@pytest.fixture(scope="module")
def judge():
    return load_judge(progress=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "smoke"
    M.save_model(M.build_model("smoke", seed=0), path=path)
    return path


def _rows_ok(rows, method):
    assert [r["concept"] for r in rows] == CONCEPTS
    for r in rows:
        assert r["method"] == method
        for m in E.METRICS:
            if m in ("tok_identity", "tok_mark"):  # differences of cosines; only methods with tokens have them
                assert m not in r or -2.0 <= r[m] <= 2.0, (m, r[m])
                continue
            lo = -1.0 if m == "gen_similarity" else 0.0
            assert lo <= r[m] <= 1.0, (m, r[m])
        assert r["rec"] == pytest.approx((r["rec_pos"] + r["rec_neg"]) / 2)


@pytest.mark.parametrize("method", list(P.METHODS))
def test_every_method_runs_and_is_scored(method, base, judge):
    um = M.load_model(base)
    before = {k: v.clone() for k, v in um.model.state_dict().items()}
    pers = P.personalize(um, CONCEPTS, method, "smoke", seed=0)
    _rows_ok(E.evaluate_personalized(um, pers, judge, n_images=1), method)
    if method in ("text_prompt", "oracle_text"):
        assert pers.tokens == {} and pers.prompting is None
        return
    assert set(pers.tokens) == set(CONCEPTS)
    assert pers.curves and all(len(c) > 0 and np.isfinite(c).all() for c in pers.curves.values())
    # the base model's own rows never move: compare the rows that existed before
    after = um.model.state_dict()
    for k, v in before.items():
        w = after[k]
        if w.shape != v.shape:  # resized embedding / head: the old rows must be bit-identical
            w = w[: v.shape[0]]
        assert torch.equal(w, v), f"{method} changed {k}"


def test_understanding_batches_draw_the_facts_no_photo_shows_at_their_own_share(base):
    import collections
    import random

    card = load_concept("bo")
    pd = S.personal_data(M.load_model(base), card, profiles.schedule("smoke"))
    assert pd.facts == [(None, f"what colour is the hat of {card.token}?", "yellow"),  # bo's card
                        (None, f"what toy does {card.token} have?", "blue ball"),
                        (None, f"what does {card.token} like?", "naps")]
    assert not {q for _, q, _ in pd.facts} & {f"what shape is {card.token}?", f"what colour is {card.token}?"}
    drawn = collections.Counter()
    rng = random.Random(0)
    for _ in range(2000):
        for ex in S.understanding_batch(pd, 4, rng):
            drawn["facts" if ex[0] is None and ex[1:] in [f[1:] for f in pd.facts] else "other"] += 1
    facts_in_text = sum(t[0] is None and t[1:] in [f[1:] for f in pd.facts] for t in pd.text) / len(pd.text)
    mix = S.UNDERSTANDING_MIX
    share = (mix["facts"] + mix["text"] * facts_in_text) / sum(mix.values())
    assert abs(drawn["facts"] / 8000 - share) < 0.015, (drawn, share)


def test_unictokens_stages_add_groups_in_order_and_freeze_earlier_ones(base):
    um = M.load_model(base)
    sched = profiles.schedule("smoke")
    card_data = [S.personal_data(um, load_concept("bo"), sched)]
    ct = T.add_concept(um, "bo", groups={"shared": 2})
    S.train_stage_1_understanding(um, [ct], card_data, sched)
    with pytest.raises(S.StageError, match="generation tokens"):
        S.train_stage_2_generation(um, [ct], card_data, sched)
    ct.add_group(um, "generation", 1)
    S.train_stage_2_generation(um, [ct], card_data, sched)
    codes = S.generated_codes(um, ct, 2, seed=0)
    assert codes.shape == (2, um.gen_grid, um.gen_grid)
    ct.add_group(um, "understanding", 1, init="kmeans_codes", codes=codes)
    frozen = {g: [p.detach().clone() for p in ct.parameters(groups=(g,))] for g in ("shared", "generation")}
    trained = [p.detach().clone() for p in ct.parameters(groups=("understanding",))]
    S.train_stage_3_understanding(um, [ct], card_data, sched)
    for g, rows in frozen.items():
        assert all(torch.equal(a, b) for a, b in zip(rows, ct.parameters(groups=(g,)))), g
    assert not all(torch.equal(a, b) for a, b in zip(trained, ct.parameters(groups=("understanding",))))


def test_unictokens_resumes_from_its_last_stage_checkpoint(base, tmp_path, capsys, monkeypatch):
    um = M.load_model(base)
    first = P.personalize(um, ["bo"], "unictokens", "smoke", seed=0, checkpoint=tmp_path, stop_after=2)
    assert sorted(p.name for p in tmp_path.glob("bo.*.safetensors")) == ["bo.stage1.safetensors",
                                                                          "bo.stage2.safetensors"]
    assert first.trajectory.stages() == ["start", "stage1", "stage2"]
    um2 = M.load_model(base)  # "interrupted": a fresh process carries on from stage 2
    second = P.personalize(um2, ["bo"], "unictokens", "smoke", seed=0, checkpoint=tmp_path)
    assert "resuming unictokens after stage 2" in capsys.readouterr().out
    assert set(second.curves) == {"stage1", "stage2", "stage3"}
    assert second.curves["stage2"] == first.curves["stage2"]
    assert (tmp_path / "bo.stage3.safetensors").is_file()
    # the trajectory came back from the checkpoint, row for row, and went on through stage 3
    assert second.trajectory.stages() == ["start", "stage1", "stage2", "stage3"]
    n = len(first.trajectory)
    for a, b in zip(first.trajectory.snapshots, second.trajectory.snapshots[:n]):
        assert (a.stage, a.step, a.names) == (b.stage, b.step, b.names)
        assert all(torch.equal(a.rows[g], b.rows[g]) for g in a.rows)
    last = second.trajectory.last_rows("stage3", "bo")
    assert torch.equal(last["understanding"], second.tokens["bo"].rows["understanding"][0].detach())
    # every stage asked for is in the checkpoint: loading renders and encodes no training data
    monkeypatch.setattr(S, "personal_data", lambda *a, **k: pytest.fail("training data built for a finished run"))
    loaded = P.personalize(M.load_model(base), ["bo"], "unictokens", "smoke", seed=0, checkpoint=tmp_path, stop_after=2)
    assert loaded.curves["stage2"] == first.curves["stage2"]
    monkeypatch.undo()
    (tmp_path / "trajectory.stage3.safetensors").unlink()  # a cache from before trajectories: stage 3 is redone
    assert P.finished_stage(tmp_path, ["bo"]) == 2


def test_personalization_is_deterministic(base, judge):
    rows = []
    for _ in range(2):
        um = M.load_model(base)
        pers = P.personalize(um, ["bo"], "separate", "smoke", seed=3)
        rows.append(E.evaluate_personalized(um, pers, judge, n_images=1)[0])
    assert rows[0] == rows[1]


def test_bad_input_gets_clear_errors(base):
    um = M.load_model(base)
    with pytest.raises(P.MethodError, match="available: text_prompt"):
        P.personalize(um, ["bo"], "dreambooth", "smoke")
    with pytest.raises(ValueError, match="unknown concept 'nobody'"):
        P.personalize(um, ["nobody"], "separate", "smoke")
    with pytest.raises(P.MethodError, match="listed twice"):
        P.personalize(um, ["bo", "bo"], "separate", "smoke")
    with pytest.raises(P.MethodError, match="stop_after=4: UniCTokens has stages 1, 2 and 3"):
        P.personalize(um, ["bo"], "unictokens", "smoke", stop_after=4)
    with pytest.raises(profiles.ProfileError, match="unknown profile 'huge'; choose one of smoke, teach, gpu"):
        profiles.schedule("huge")


def test_replay_trace_and_fallback(base):
    um = M.load_model(base)
    pers = P.personalize(um, ["bo"], "decoupled_replay", "smoke", seed=0)
    tr = R.replay(um, pers, "bo", "<bo> wearing its hat")
    assert tr.question == "what colour is the hat of <bo>?"
    assert tr.answer is not None and tr.prompt
    if not tr.fell_back:
        assert tr.rewritten.startswith("<bo> wearing") and "its hat" not in tr.rewritten
    assert "<bo_g0>" in tr.prompt  # the rewritten request is written with the generation group
    plain = R.replay(um, pers, "bo", "<bo> on a red background")
    assert plain.fell_back and "no example matches" in plain.note
    assert plain.prompt == pers.generation_prompt("bo", "<bo> on a red background")
    assert any(line.startswith("fallback:") for line in plain.lines())
    edit = R.replay(um, pers, "bo", "put <bo>'s hat on it", task="editing")
    assert edit.question == "what colour is the hat of <bo>?"
    if not edit.fell_back:  # the base model's own edit, the fact filled in
        assert edit.rewritten == f"add {world.article(edit.answer.split()[0])} {edit.answer} hat"
    assert edit.prompt == pers.editing_prompt("bo", edit.rewritten)
    prompt, trace = pers.request(um, "bo", "remove <bo>", "editing")  # needs no fact: the plain instruction
    assert trace.fell_back and prompt == pers.editing_prompt("bo", "remove <bo>")
    with pytest.raises(ValueError, match="generation and editing"):
        R.replay(um, pers, "bo", "<bo>", task="captioning")


@pytest.mark.parametrize("method,words_group,class_groups", [
    ("unictokens", "shared", ()), ("separate", "understanding", ("generation",)),
    ("decoupled", "understanding", ("generation", "editing")), ("coupled", "shared", ())])
def test_every_method_starts_understanding_rows_as_the_card_words(base, method, words_group, class_groups):
    """With no training step, the rows understanding trains hold the card's words (profiles.GROUP_STARTS),
    the rows only generation or editing trains the class word."""
    um = M.load_model(base)
    pers = P.personalize(um, ["bo"], method, "smoke", stop_after=1, stage1_steps=0, stage2_steps=0, stage3_steps=0,
                         joint_steps=0)
    ct = pers.tokens["bo"]
    own = {ct.ids["identifier"][0]: ct.rows["identifier"][0][0]}
    k = len(ct.groups[words_group])
    assert k == T.default_group_sizes(um)["shared"], "every layout's understanding rows are as many as the shared ones"
    words = text_rows(um, T.card_words(load_concept("bo")), k, own)
    assert len(words) == k and torch.equal(ct.rows[words_group][0].detach(), words)
    word = T.class_word_rows(um, "circle", 1)[0][0]
    for g in class_groups:
        assert torch.equal(ct.rows[g][0].detach(), word.expand(len(ct.groups[g]), -1))


def test_bench_writes_results_csv_and_resumes(base, judge, tmp_path):
    out = tmp_path / "results.json"
    res = B.bench("smoke", ["text_prompt", "generation_only"], ["bo"], seeds=2, out=out, base=base, judge=judge,
                  progress=False)
    data = json.loads(out.read_text())
    assert data["profile"] == "smoke" and len(data["rows"]) == 4
    assert set(data["summary"]) == {"text_prompt", "generation_only"}
    for v in data["summary"]["generation_only"].values():
        assert {"mean", "lo", "hi", "floor", "ceiling", "at_floor"} <= set(v) and v["n_seeds"] == 2
    assert out.with_suffix(".csv").read_text().splitlines()[0].startswith("method,concept,seed,rec_pos")
    assert res["rows"] == data["rows"]
    assert data["base_model_hash"] == T.base_model_hash(M.load_model(base))
    # an interrupted run's finished jobs are kept and skipped, but only for the same base model
    partial = out.with_suffix(".partial.json")
    assert data["replay"] == list(R.TASKS)
    run_id = {"profile": "smoke", "base_model_hash": data["base_model_hash"], "tokens": data["tokens"],
              "replay": data["replay"], "concepts": ["bo"]}
    partial.write_text(json.dumps({**run_id, "rows": data["rows"], "seconds": 1000.0}))
    again = B.bench("smoke", ["text_prompt", "generation_only"], ["bo"], seeds=2, out=out, base=base, judge=judge,
                    progress=False)
    # nothing left to run: the rows come back, and the time counts the interrupted run's 1000 s
    assert again["rows"] == data["rows"] and not partial.exists() and 1000.0 <= again["seconds"] < 1005
    partial.write_text(json.dumps({**run_id, "base_model_hash": "0" * 16, "rows": data["rows"]}))
    with pytest.raises(E.BenchError, match="another base_model_hash.*--fresh"):
        B.bench("smoke", ["text_prompt"], ["bo"], seeds=2, out=out, base=base, judge=judge, progress=False)
    partial.write_text(json.dumps({**run_id, "tokens": {**data["tokens"], "start": {}}, "rows": data["rows"]}))
    with pytest.raises(E.BenchError, match="another tokens"):
        B.bench("smoke", ["text_prompt"], ["bo"], seeds=2, out=out, base=base, judge=judge, progress=False)
    partial.write_text(json.dumps(data["rows"]))
    with pytest.raises(E.BenchError, match="older unikit"):
        B.bench("smoke", ["text_prompt"], ["bo"], seeds=2, out=out, base=base, judge=judge, progress=False)
    partial.unlink()
    with pytest.raises(P.MethodError, match="unknown method"):
        B.bench("smoke", ["nope"], ["bo"], out=out, base=base, judge=judge)
    with pytest.raises(E.BenchError, match=".json"):
        B.bench("smoke", ["text_prompt"], ["bo"], out=tmp_path / "r.txt", base=base, judge=judge)


def test_lessons_never_quote_bench_results_made_on_another_base_model(base, tmp_path, monkeypatch, capsys):
    um = M.load_model(base)
    cached, shipped = tmp_path / "cache" / "smoke.json", tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(B, "results_path", lambda profile: cached)
    monkeypatch.setattr(B, "SHIPPED_RESULTS", shipped)
    (shipped / "smoke.json").write_text(json.dumps({"base_model_hash": "0" * 16, "command": "unikit bench -x", "rows": []}))
    assert B.load_results("smoke")["base_model_hash"] == "0" * 16  # no base given: any results
    assert B.load_results("smoke", base=um) is None
    assert "not on this one" in capsys.readouterr().out
    cached.parent.mkdir()
    cached.write_text(json.dumps({"base_model_hash": T.base_model_hash(um), "rows": [1]}))
    assert B.load_results("smoke", base=um) is None  # made before the token layout was recorded
    assert "laid out or started otherwise" in capsys.readouterr().out
    made = {"base_model_hash": T.base_model_hash(um), "tokens": P.token_layout(um), "rows": [1]}
    cached.write_text(json.dumps(made))
    assert B.load_results("smoke", base=um) is None  # made when replay served generation only
    assert "its replay served other tasks (unrecorded" in capsys.readouterr().out
    cached.write_text(json.dumps({**made, "replay": list(R.TASKS)}))
    assert B.load_results("smoke", base=um)["rows"] == [1]


def test_bench_workers_give_the_same_numbers(base, judge, tmp_path):
    one = B.bench("smoke", ["separate"], ["bo"], seeds=2, out=tmp_path / "a.json", base=base, judge=judge,
                  progress=False)
    two = B.bench("smoke", ["separate"], ["bo"], seeds=2, out=tmp_path / "b.json", base=base, progress=False,
                  workers=2)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]  # noqa: E731
    assert strip(one["rows"]) == strip(two["rows"])
    assert two["workers"] == 2


def test_accelerate_launch_spreads_concepts_over_two_cpu_processes_with_the_same_numbers(base, judge, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m unikit.cli bench --concepts-per-job 1` on a
    machine without a GPU (two CPU processes on gloo) merges to exactly the rows one process gives."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    one = B.bench("smoke", ["text_prompt", "unictokens"], CONCEPTS, seeds=1, out=tmp_path / "one.json", base=base,
                  judge=judge, progress=False, concepts_per_job=1)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "unikit.cli", "bench", "--profile", "smoke", "--methods", "text_prompt",
           "unictokens", "--concepts", *CONCEPTS, "--seeds", "1", "--base", str(base), "--out",
           str(tmp_path / "two.json"), "--concepts-per-job", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "UNIKIT_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]  # noqa: E731
    assert strip(two["rows"]) == strip(one["rows"])
    assert (two["processes"], two["concepts_per_job"], one["processes"]) == (2, 1, 1)
    assert not list(tmp_path.glob("two.partial*.json"))  # the per-process partial files are merged away


def test_decoupled_layout_tasks_use_only_their_group_and_train_alone(base):
    um = M.load_model(base)
    pers = P.personalize(um, ["bo"], "decoupled", "smoke", seed=0)
    ct = pers.tokens["bo"]
    prompts = {"understanding": pers.understanding_prompt("bo", "is <bo> in this image?"),
               "generation": pers.generation_prompt("bo", "a photo of <bo>"),
               "editing": pers.editing_prompt("bo", "put <bo>'s hat on it")}
    for task, text in prompts.items():
        words = set(re.findall(r"<[^>]+>", text))
        used = {g for g, names in ct.groups.items() if g != "identifier" and words & set(names)}
        assert used == {task}, (task, text)
    sched = profiles.schedule("smoke")
    pdata = [S.personal_data(um, load_concept("bo"), sched, n_edits=3)]
    others = {g: [p.detach().clone() for p in ct.parameters(groups=(g,))] for g in ("identifier", "understanding", "editing")}
    S.train_tokens(um, [ct], pdata, steps=3, train_groups=("generation",), weights={"generation": 1.0},
                   prompting=pers.prompting, sched=sched)
    for g, rows in others.items():
        assert all(torch.equal(a, b) for a, b in zip(rows, ct.parameters(groups=(g,)))), g


def test_editing_on_a_smoke_model(base, judge):
    um = M.load_model(base)
    pers = P.personalize(um, ["bo"], "coupled", "smoke", seed=0)
    row = E.evaluate_personalized(um, pers, judge, with_images=True, parts=("editing",))[0]
    assert 0.0 <= row["edit"] <= 1.0 and "rec" not in row
    e = row["edits"]
    assert e["source"].shape == e["result"].shape == e["target"].shape and e["result"].dtype == np.uint8
    assert any("<bo>" in i for i in e["instruction"])
    with pytest.warns(M.ImageResized, match="48x48 pixels are resized to 32x32"):
        out = M.edit_image(um, np.zeros((1, 48, 48, 3), np.uint8), [pers.editing_prompt("bo", "remove <bo>")])
    assert out.shape == (1, 32, 32, 3)


def test_bench_scores_replay_on_the_tokens_decoupled_trained(base, judge, tmp_path):
    res = B.bench("smoke", ["decoupled", "decoupled_replay"], ["bo"], seeds=1, out=tmp_path / "r.json", base=base,
                  judge=judge, progress=False)
    by = {r["method"]: r for r in res["rows"]}
    assert set(by) == {"decoupled", "decoupled_replay"}
    um = M.load_model(base)  # the replay row equals a separate replay run (same seed, same training)
    pers = P.personalize(um, ["bo"], "decoupled_replay", "smoke", seed=0)
    alone = E.evaluate_personalized(um, pers, judge, n_images=1, guidance=profiles.schedule("smoke").guidance, seed=1000)[0]
    assert {k: by["decoupled_replay"][k] for k in E.METRICS} == {k: alone[k] for k in E.METRICS}


def test_a_cached_personalization_loads_instead_of_training(base, judge, tmp_path):
    um = M.load_model(base)
    first = P.personalize(um, ["bo"], "decoupled_replay", "smoke", seed=0, checkpoint=tmp_path)
    um2 = M.load_model(base)
    again = P.personalize(um2, ["bo"], "decoupled_replay", "smoke", seed=0, checkpoint=tmp_path)
    assert again.replay and again.curves == first.curves and again.prompting == first.prompting
    a = E.evaluate_personalized(um, first, judge, n_images=1, parts=("understanding",))
    b = E.evaluate_personalized(um2, again, judge, n_images=1, parts=("understanding",))
    assert a == b


WORKER_PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
from unikit import benchmark as B


def busy():
    print(os.getpid(), flush=True)  # the worker has the job: it computes (sleeps) for two minutes
    time.sleep(120)


if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=B.exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        pool.submit(busy).result()
"""


def test_bench_workers_exit_when_the_bench_process_is_killed(tmp_path):
    """A killed bench (SIGKILL: no clean-up runs) must not leave its workers computing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(WORKER_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
            with open(f"/proc/{worker}/stat") as f:  # a zombie has exited: only its new parent can reap it
                if f.read().split(") ")[1].startswith("Z"):
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.5)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the bench worker outlived its killed parent by 20 s")


def test_cards_the_kit_has_never_seen_personalize_and_bench(base, judge, tmp_path):
    """Cards written by someone else, in the documented format, run through the bench unchanged."""
    from unikit import world
    from unikit.concepts import read_card

    rng = random.Random(2026)
    paths, names = [], []
    while len(paths) < 3:
        shape, colour = rng.choice(world.SHAPES), rng.choice(sorted(world.COLOURS))
        if (shape, colour) in world.HELDOUT_PAIRS:
            continue
        name = f"user{len(paths)}"
        card = {"name": name, "class": shape, "colour": colour, "pattern": rng.choice(world.PATTERNS),
                "identity": {"mark": rng.choice(world.MARKS),
                             "mark_colour": rng.choice([c for c in sorted(world.COLOURS) if c != colour])},
                "facts": {"hat": rng.choice(sorted(world.COLOURS)),
                          "toy": {"colour": rng.choice(sorted(world.COLOURS)), "shape": rng.choice(world.TOY_SHAPES)}}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(card))
        read_card(path)  # valid
        paths.append(str(path))
        names.append(name)
    res = B.bench("smoke", ["text_prompt", "unictokens"], paths, seeds=1, out=tmp_path / "r.json", base=base,
                  judge=judge, progress=False)
    assert sorted({r["concept"] for r in res["rows"]}) == names and len(res["rows"]) == 6
    for r in res["rows"]:
        assert all(0.0 <= r[k] <= 1.0 for k in E.METRICS if k not in ("gen_similarity", "tok_identity", "tok_mark")), r
        assert ("tok_mark" in r) == (r["method"] != "text_prompt"), r  # only methods with tokens have them
    assert set(res["summary"]) == {"text_prompt", "unictokens"}
