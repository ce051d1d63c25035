"""The claims' words follow doctored bench rows: a clear win, a clear loss, both at the floor."""

import numpy as np
import pytest

from unikit import claims, stats
from unikit.concepts import available_concepts


def rows_for(a_mean: float, b_mean: float, a="unictokens", b="unictokens_stage1", metric="rec", spread=0.03):
    rng = np.random.default_rng(0)
    rows = []
    for concept in available_concepts():
        for seed in range(3):
            for method, mean in ((a, a_mean), (b, b_mean)):
                rows.append({"method": method, "concept": concept, "seed": seed,
                             metric: float(np.clip(mean + rng.normal(0, spread), 0, 1))})
    return rows


@pytest.mark.parametrize("a_mean,b_mean,expected,words", [
    (0.93, 0.70, "supported", "holds here"),
    (0.70, 0.93, "refuted", "does not reproduce"),
    (0.50, 0.50, "not measurable here", "cannot be judged"),
    (0.81, 0.80, "no clear difference", "not supported at this size"),
])
def test_claim_b_words_follow_the_numbers(a_mean, b_mean, expected, words):
    (res,) = claims.judge(rows_for(a_mean, b_mean), ["b"])
    assert res["finding"] == expected
    assert words in res["explanation"]
    assert f"{res['a_mean']:.2f}" in res["explanation"]


def test_weak_claim_e_is_refuted_only_by_a_clear_loss():
    tie = rows_for(0.6, 0.6, a="text_prompt", b="unictokens", metric="parg", spread=0.05)
    loss = rows_for(0.3, 0.7, a="text_prompt", b="unictokens", metric="parg")
    assert claims.judge(tie, ["e"])[0]["finding"] == "supported (no clear difference)"
    assert claims.judge(loss, ["e"])[0]["finding"] == "refuted"


def test_holm_counts_the_lesson_claims_and_missing_methods_are_named():
    rows = [{**r, "vqa": r["rec"]} for r in rows_for(0.93, 0.70)]
    judged = claims.judge(rows, ["b", "b'", "c"])
    assert [r["finding"] for r in judged] == ["supported", "supported", "not run"]
    assert judged[0]["k"] == 2
    assert "decoupled" in judged[2]["explanation"] and "--methods" in judged[2]["explanation"]
    frame = claims.table(judged)
    assert list(frame.index) == ["b", "b'", "c"]


def test_unknown_claim_is_named():
    with pytest.raises(stats.StatsError, match="unknown claim"):
        claims.judge([], ["z"])


def test_plot_draws_levels_and_bands():
    rows = rows_for(0.93, 0.70)
    judged = claims.judge(rows, ["b"])
    fig = claims.plot(judged, rows)
    ax = fig.axes[0]
    assert ax.get_title() == "(b) supported"
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("chance 0.50") for label in labels)
    assert any(label.startswith("ceiling") for label in labels)
    assert len(ax.collections) == 2  # the two intervals as bands


def test_too_few_concepts_is_said():
    rows = [r for r in rows_for(0.81, 0.80) if r["concept"] in available_concepts()[:3]]
    (res,) = claims.judge(rows, ["b"])
    assert res["finding"] == "no clear difference"
    assert "more concepts needed" in res["explanation"]


def interference_curves(coupled_end: float, decoupled_end: float, start: float = 0.9):
    """Doctored ``measure_interference`` rows: understanding starts at ``start`` and moves linearly."""
    rng = np.random.default_rng(1)
    rows = []
    for concept in available_concepts()[:4]:
        for seed in range(2):
            for layout, end in (("coupled", coupled_end), ("decoupled", decoupled_end)):
                for step in (0, 10, 20):
                    value = start + (end - start) * step / 20 + rng.normal(0, 0.02)
                    rows.append({"layout": layout, "concept": concept, "seed": seed, "step": step,
                                 **{m: float(np.clip(value, 0, 1)) for m in ("rec", "rec_hard", "text_qa")}})
    return rows


def _mean(cell: str) -> float:
    return float(cell.split()[0])


def test_interference_change_is_paired_and_follows_the_curves():
    table = claims.interference_change(interference_curves(coupled_end=0.5, decoupled_end=0.9))
    assert list(table.index) == ["coupled", "decoupled"]
    coupled, decoupled = table.loc["coupled", "rec"], table.loc["decoupled", "rec"]
    assert abs(_mean(coupled) + 0.4) < 0.05 and abs(_mean(decoupled)) < 0.05, table
    hi = float(coupled.split("[")[1].split(",")[1].rstrip("]"))
    assert hi < 0, f"a clear drop must have an interval below 0: {coupled}"


def test_interference_plot_draws_a_band_per_layout_and_the_levels():
    import matplotlib

    matplotlib.use("Agg")
    fig = claims.plot_interference(interference_curves(0.5, 0.9))
    ax = fig.axes[0]
    assert len(ax.collections) == 2, "one interval band per layout"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["coupled", "decoupled"] and any(lab.startswith("chance") for lab in labels)


def test_a_sentence_never_says_an_interval_contains_zero_when_it_does_not():
    res = claims.judge(rows_for(0.81, 0.80), ["b"])[0]  # a real comparison, then doctored
    assert res["finding"] == "no clear difference"
    assert "the interval contains zero" in res["explanation"] and res["ci"][0] <= 0 <= res["ci"][1]
    off_zero = {**res, "ci": (-0.20, -0.02), "p_holm": 0.17, "k": 11}  # Holm over 11 claims undoes it
    words = claims.explain(claims.CLAIMS["b"], off_zero)
    assert "contains zero" not in words
    assert "leaves out zero" in words and "Holm's correction over 11 comparisons (p = 0.17)" in words
