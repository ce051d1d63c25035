"""The shipped base model (data/base_model) still meets the quality it recorded when it was made.

A code change that breaks the model layer, the tokenizer or the prompts shows up here as a
re-measured metric well below its recorded value. The re-measurement is small (24 judged
examples per metric) and the allowed shortfall is what chance explains at that size
(see ``unikit.pretrain.quality_check``).
"""

import json

import pytest
import torch

from unikit import judge as J
from unikit import model as M
from unikit import pretrain as P

BASE_DIR = M.DEFAULT_MODEL_DIR
RECORDED_KEYS = {*P.TARGETS, *P.QUALITY_KEYS, "seconds", "profile"}
FRACTIONS = RECORDED_KEYS - {"seconds", "profile"}
MAX_MEGABYTES = 20


@pytest.fixture(scope="module")
def shipped():
    """``(UnifiedModel, metrics)`` of the shipped model; fails (not skips) when it is missing."""
    torch.set_num_threads(1)
    if not (BASE_DIR / "metrics.json").is_file():
        pytest.fail(f"the shipped base model is missing or unfinished ({BASE_DIR} has no metrics.json); "
                    f"make it with `{M.MAKE_DEFAULT}`")
    return M.load_model(BASE_DIR), json.loads((BASE_DIR / "metrics.json").read_text())


def test_metrics_record_every_quality_key_as_a_fraction(shipped):
    _, metrics = shipped
    assert RECORDED_KEYS <= set(metrics), f"metrics.json lacks {sorted(RECORDED_KEYS - set(metrics))}"
    bad = {k: metrics[k] for k in FRACTIONS if not (isinstance(metrics[k], float | int) and 0.0 <= metrics[k] <= 1.0)}
    assert not bad, f"not fractions in [0, 1]: {bad}"
    assert metrics["profile"] in P.CONFIGS and metrics["seconds"] > 0


def test_shipped_model_still_meets_its_recorded_quality(shipped):
    um, metrics = shipped
    assert um.profile == "teach"
    rows = P.quality_check(um, J.load_judge(), metrics, n=24, seed=2024)
    assert {r["metric"] for r in rows} >= set(P.QUALITY_KEYS)
    failed = [f"{r['metric']}: measured {r['measured']:.3f} < recorded {r['recorded']:.3f} - {r['tolerance']}"
              for r in rows if not r["ok"]]
    assert not failed, "the shipped model got worse than chance explains: " + "; ".join(failed)


def test_shipped_metrics_were_measured_by_the_shipped_judge(shipped):
    _, metrics = shipped
    assert metrics.get("judge_hash") == J.judge_hash(), (
        "data/base_model's judged metrics were measured by another judge than data/judge's; re-measure them with "
        "`unikit pretrain --rescore --out data/base_model`")


def test_quality_check_fails_a_model_that_does_not_have_the_recorded_quality():
    torch.set_num_threads(1)
    untrained = M.build_model("smoke", seed=0)
    claimed = {k: 1.0 for k in P.QUALITY_KEYS}
    rows = P.quality_check(untrained, J.load_judge(), claimed, n=4, seed=0, recorded_n=200)
    assert [r["ok"] for r in rows] == [False] * len(rows)
    assert all(r["tolerance"] == 0.05 for r in rows)  # p = 1: no binomial spread, only the slack
    with pytest.raises(P.PretrainError, match="lack"):
        P.quality_check(untrained, J.load_judge(), {"caption": 1.0}, n=4)


def test_model_card_names_the_command_and_seed(shipped):
    _, metrics = shipped
    card = (BASE_DIR / "MODEL_CARD.md").read_text()
    assert "unikit pretrain --profile" in card
    assert f"--seed {metrics.get('seed', 0)}" in card and f"seed: {metrics.get('seed', 0)}" in card


def test_the_recorded_profile_reproduces_the_shipped_settings(shipped):
    um, metrics = shipped  # so the card's pretraining profile makes this model's run again
    recorded = P.recorded_config(um.info["pretrain_config"])
    profile = metrics["profile"]
    differ = {k: (recorded[k], v) for k, v in P.CONFIGS[profile].as_dict().items()
              if k != "eval_n" and recorded[k] != v}
    assert not differ, f"{profile} settings changed since the shipped model was made (shipped, now): {differ}"
    assert um.info["world_version"] == P.world_version(), "the world changed since the shipped model was made"


def test_shipped_model_is_small_enough_to_ship():
    files = [p for p in BASE_DIR.rglob("*") if p.is_file()]
    assert files, f"nothing in {BASE_DIR}; make it with `{M.MAKE_DEFAULT}`"
    megabytes = sum(p.stat().st_size for p in files) / 2**20
    assert megabytes < MAX_MEGABYTES, f"{BASE_DIR} holds {megabytes:.1f} MB (limit {MAX_MEGABYTES} MB)"


def test_lessons_quote_the_shipped_bench_on_the_shipped_model(shipped, tmp_path, monkeypatch):
    """``benchmark.load_results`` passes over results made on another base model, token layout or
    replay; re-shipping any of them without re-running the bench fails here. The shipped file
    also covers every method, every shipped concept and three seeds."""
    from unikit import benchmark as B
    from unikit import methods
    from unikit.concepts import available_concepts

    um, _ = shipped
    path = B.SHIPPED_RESULTS / "teach.json"
    monkeypatch.setattr(B, "results_path", lambda profile: tmp_path / "no-cache.json")
    data = B.load_results("teach", base=um)
    fix = f"re-run `{json.loads(path.read_text()).get('command', 'unikit bench --profile teach --seeds 3')}`"
    assert data is not None and data["path"] == str(path), f"lessons pass over {path}; {fix}"
    every = {*methods.METHODS, *methods.ABLATIONS}
    assert set(data["methods"]) == every, f"{path} lacks {sorted(every - set(data['methods']))}; {fix}"
    assert set(data["concepts"]) == set(available_concepts()), f"{path} does not cover every shipped concept; {fix}"
    assert data["seeds"] == 3 and len(data["rows"]) == len(every) * len(data["concepts"]) * 3
