"""Data-parallel pretraining: gloo workers stay in sync and match one process; bad worker input."""

import json
import os

import pytest
import torch

from unikit import distributed as D
from unikit import model as M
from unikit import pretrain as P


def test_two_gloo_workers_keep_identical_weights_and_match_one_process(tmp_path):
    _, _, single = P.pretrain("smoke", out=tmp_path / "one", progress=False, workers=1)
    um, metrics, history = P.pretrain("smoke", out=tmp_path / "two", progress=False, workers=2)
    checks = history["replica_checksums"]
    assert len(checks) == 2 and checks[0] == checks[1]  # the two workers ended with the same weights
    assert metrics["workers"] == 2
    # the same global batches, split in two: the losses agree to float precision
    for key in ("vq", "vision", "lm"):
        a = [row[-1] for row in single[key]]
        b = [row[-1] for row in history[key]]
        assert len(a) == len(b)
        assert a[:10] == pytest.approx(b[:10], rel=1e-4, abs=1e-5), key
    one = M.load_model(tmp_path / "one").model.state_dict()
    two = um.model.state_dict()
    worst = max(float((one[k].float() - two[k].float()).abs().max()) for k in one)
    assert worst < 5e-2  # float drift over the run, not a different training


def _dies(ctx, marker):
    t = torch.ones(1)
    ctx.sum_(t)  # both workers are up and talking
    if ctx.rank == 1:
        os._exit(3)
    ctx.barrier()
    marker.write_text("rank 0 finished")  # never reached: the launcher stops it


def test_a_worker_that_dies_stops_the_run_with_a_message_naming_the_fix(tmp_path):
    with pytest.raises(D.WorkerDied, match="worker 1 died \\(exit code 3\\).*--resume"):
        D.launch(_dies, 2, tmp_path / "marker", resume_hint="continue with --resume")
    assert not (tmp_path / "marker").exists()


def _checkpoints_then_dies(ctx, checkpoint):
    if ctx.rank == 0:
        checkpoint.write_text("whole")  # what the run leaves on disk before a worker dies
    ctx.sum_(torch.ones(1))
    if ctx.rank == 1:
        os._exit(3)
    ctx.barrier()


def test_the_hint_is_decided_when_a_worker_dies_from_what_is_on_disk_then(tmp_path):
    ckpt = tmp_path / "checkpoint"

    def hint():
        return "continue with --resume" if ckpt.exists() else "start it again"

    assert hint() == "start it again"  # at launch there is no checkpoint yet
    with pytest.raises(D.WorkerDied, match="worker 1 died .*continue with --resume"):
        D.launch(_checkpoints_then_dies, 2, ckpt, resume_hint=hint)


def test_worker_counts_the_machine_cannot_run_are_refused(tmp_path):
    cores = os.cpu_count()
    with pytest.raises(D.WorkerError, match=f"--workers {cores + 1} but this machine has {cores} CPU cores"):
        P.pretrain("smoke", out=tmp_path / "x", workers=cores + 1, progress=False)
    with pytest.raises(D.WorkerError, match="give 1 or more"):
        D.check_workers(0)
    with pytest.raises(D.WorkerError, match="a batch of 7 does not split over 2 workers"):
        D.Context(0, 2).shard(list(range(7)))
    assert not (tmp_path / "x").exists()


def test_shards_cover_the_global_batch_once():
    items = list(range(8))
    parts = [D.Context(r, 2).shard(items) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == items and parts[0] == [0, 2, 4, 6]
    assert D.Context().shard(items) == items


def test_finished_phases_from_a_probe_directory_are_reused_when_their_settings_match(tmp_path):
    cfg = P.pretrain_config("smoke")
    um = M.build_model("smoke", seed=5)
    P.train_vision(um, cfg, {}, progress=False)
    P.save_phase_weights(um, "vision", tmp_path / "probe")
    P.record_phase(tmp_path / "probe", cfg, "vision", command="test")
    with pytest.raises(P.PretrainError, match="other settings.*vision_steps: 6 -> 7"):
        P.pretrain("smoke", out=tmp_path / "a", phases_from=[tmp_path / "probe"], vision_steps=7, progress=False)
    with pytest.raises(P.PretrainError, match="no phase.json"):
        P.pretrain("smoke", out=tmp_path / "a", phases_from=[tmp_path], progress=False)
    with pytest.raises(P.PretrainError, match="offers the vision phase.*must first train the vq phase"):
        P.plan_run(cfg, tmp_path / "b", False, [tmp_path / "probe"])
    um2 = M.build_model("smoke", seed=5)
    P.train_vq(um2, cfg, {}, progress=False)
    P.save_phase_weights(um2, "tokenizer", tmp_path / "vq")
    P.record_phase(tmp_path / "vq", cfg, "vq", command="test")
    (tmp_path / "vq" / "log.json").write_text(json.dumps([{"step": 30, "minutes": 78.7}]))  # as probe_base writes it
    plan = P.plan_run(cfg, tmp_path / "b", False, [tmp_path / "probe", tmp_path / "vq"])
    assert plan["phase"] == "align" and set(plan["reuse"]) == {"vq", "vision"}
    built, metrics, _ = P.pretrain("smoke", out=tmp_path / "b", phases_from=[tmp_path / "probe", tmp_path / "vq"],
                                   progress=False, lm_steps=2)
    assert set(metrics["reused_phases"]) == {"vq", "vision"}
    assert all(torch.equal(v, built.vq.state_dict()[k]) for k, v in um2.vq.state_dict().items())
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert "--phases-from" in card
    # the reused phases' own wall time is in the card's total, not left out
    own = json.loads((tmp_path / "b" / "metrics.json").read_text())["seconds"]
    assert "tokenizer 78.7 min" in card and f"{(own + 78.7 * 60) / 60:.1f} min in all" in card
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["reused_phases"]["vq"] == str(tmp_path / "vq")


def test_phases_are_shared_by_models_that_differ_only_in_language_model_depth(tmp_path, monkeypatch):
    """ship3's deeper language model reuses ship2's tokenizer and encoder; a wider encoder cannot."""
    import dataclasses

    ship2, ship3 = P.CONFIGS["ship2"], P.CONFIGS["ship3"]
    assert M.PROFILES[ship3.model]["layers"] == 2 * M.PROFILES[ship2.model]["layers"]
    for phase in ("vq", "vision"):
        P.record_phase(tmp_path / phase, ship2, phase, command="test")
    offered = [tmp_path / "vq", tmp_path / "vision"]
    assert P.plan_run(ship3, tmp_path / "out", False, offered)["reuse"] == {"vq": str(offered[0]), "vision": str(offered[1])}
    # records written before phases kept only their own sizes (every model size) still match
    path = tmp_path / "vision" / "phase.json"
    records = json.loads(path.read_text())
    records[0]["settings"]["model"] = json.loads(json.dumps(M.PROFILES["teach"]))
    path.write_text(json.dumps(records))
    assert P.plan_run(ship3, tmp_path / "out", False, offered)["phase"] == "align"
    monkeypatch.setitem(M.PROFILES, "wide", dict(M.PROFILES["teach"], vision_hidden=256))
    with pytest.raises(P.PretrainError, match="vision phase was made with other settings.*vision_hidden"):
        P.plan_run(dataclasses.replace(ship2, model="wide"), tmp_path / "out", False, offered)
