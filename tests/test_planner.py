"""The planner: estimates that follow the config and schedule, a refusal that names the change."""

import dataclasses

import pytest
import torch

from unikit import model as M
from unikit import planner, profiles, tokens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    M.save_model(M.build_model("smoke", seed=0), path=path)
    return path


def make(tiny, **kw):
    args = dict(sched=profiles.schedule("teach"), method="unictokens", concepts=1, available=2**34, throughput=1e10)
    return planner.plan(tiny, **{**args, **kw})


def test_plan_reads_the_config_alone_and_counts_parameters_exactly(tiny):
    um = M.load_model(tiny)
    p = make(tiny)
    sched = profiles.schedule("teach")
    assert p.weights >= sum(t.numel() for t in um.model.parameters()) * 4
    assert p.fits and p.seconds_per_step > 0 and p.steps == sched.stage1_steps + sched.stage2_steps + sched.stage3_steps
    assert "fits" in str(p) and "unictokens" in str(p)


def test_estimates_grow_with_batch_concepts_and_tasks_and_shrink_with_bf16(tiny):
    p = make(tiny)
    assert make(tiny, concepts=2).activations == pytest.approx(2 * p.activations)
    assert make(tiny, sched=dataclasses.replace(p.inputs["sched"], batch=8)).activations == pytest.approx(
        2 * p.activations)
    assert make(tiny, method="coupled").activations > p.activations  # + editing sequences
    assert make(tiny, method="text_prompt").activations == 0 and make(tiny, method="text_prompt").steps == 0
    half = make(tiny, dtype="bf16")
    assert half.weights < p.weights and half.activations < p.activations


def test_a_run_that_does_not_fit_is_refused_with_the_change_that_fits(tiny):
    p = make(tiny)
    tight = make(tiny, available=int(p.peak * 0.8))
    with pytest.raises(planner.PlanError, match=r"needs ~.* GiB at peak .*with (DTYPE='bfloat16'|batch=)"):
        planner.check(tight)
    hopeless = make(tiny, available=1000)
    with pytest.raises(planner.PlanError, match="no single change fits"):
        planner.check(hopeless)
    assert planner.check(p) is p


def test_unknown_dtype_is_refused():
    from unikit import runtime

    with pytest.raises(runtime.DtypeError, match="choose one of float32, bfloat16, float16"):
        runtime.parse_dtype("int8")
    assert runtime.parse_dtype("bf16") is torch.bfloat16


def test_concept_rows_stay_fp32_on_a_bf16_model_and_train(tiny):
    um = M.load_model(tiny, dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in um.model.state_dict().items()}
    ct = tokens.add_concept(um, "bo", groups={"shared": 2}, init="class_word")
    assert all(p.dtype == torch.float32 for p in ct.parameters())
    start = [p.detach().clone() for p in ct.parameters()]
    opt = torch.optim.AdamW(list(ct.parameters()), lr=1e-2)
    loss = M.understanding_loss(um, None, [ct.understanding_prompt("what colour is <bo>?")], ["red"])
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(start, ct.parameters()))
    after = um.model.state_dict()
    moved = [k for k, v in before.items() if not torch.equal(after[k][: v.shape[0]], v)]  # old rows of resized tables
    assert not moved, f"frozen model tensors changed: {moved}"


def test_personalize_prints_the_plan_before_training(tiny, tmp_path, capsys):
    from unikit import cli

    out = tmp_path / "run"
    code = cli.main(["personalize", "--concept", "bo", "--method", "unictokens", "--profile", "smoke",
                     "--base", str(tiny), "--device", "cpu", "--out", str(out), "--plan"])
    printed = capsys.readouterr().out
    assert code == 0 and "plan for unictokens on cpu (float32)" in printed and "peak ~" in printed
    assert not out.exists(), "--plan trains nothing and writes nothing"
    assert cli.main(["personalize", "--concept", "bo", "--method", "unictokens", "--profile", "smoke",
                     "--base", str(tiny), "--dtype", "int8", "--plan"]) == 2
    assert "choose one of float32, bfloat16, float16" in capsys.readouterr().err
