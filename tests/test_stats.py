"""unikit.stats on doctored bench rows: verdicts, floors, pairing, Holm, power, determinism."""

import random

import numpy as np
import pytest

from unikit import concepts as C
from unikit import benchmark
from unikit import evaluate as E
from unikit import stats as S

B = 500  # bootstrap resamples in tests
CONCEPTS = [f"c{i}" for i in range(8)]  # no card: levels fall back to every card


def rows_of(method, metric, centre, spread=0.02, seed=0, concepts=CONCEPTS, seeds=(0, 1, 2), shift=None):
    """One row per (concept, seed): ``centre`` + a concept offset (``shift``) + small noise."""
    rng = np.random.default_rng(seed)
    shift = shift if shift is not None else {c: 0.0 for c in concepts}
    return [{"method": method, "concept": c, "seed": s, metric: float(centre + shift[c] + rng.normal(0, spread))}
            for c in concepts for s in seeds]


# concept offsets shared by both methods: concepts differ far more than seeds
SHIFT = {c: 0.1 * (i % 4 - 1.5) for i, c in enumerate(CONCEPTS)}


def test_clear_win_and_clear_loss():
    rows = rows_of("a", "rec", 0.8, shift=SHIFT, seed=1) + rows_of("b", "rec", 0.65, shift=SHIFT, seed=2)
    win = S.compare(rows, "a", "b", "rec", n_boot=B)
    assert win["verdict"] == "a > b"
    assert win["diff"] == pytest.approx(0.15, abs=0.02)
    assert win["a_mean"] - win["b_mean"] == pytest.approx(win["diff"])
    assert 0 < win["ci"][0] < win["diff"] < win["ci"][1]
    assert win["p"] == pytest.approx(2 / 2 ** 8)  # exact sign flips: only all-plus and all-minus are as extreme
    assert win["n_concepts"] == 8 and win["n_pairs"] == 24 and win["seeds"] == 3 and win["k"] == 1
    assert win["sentence"] == (
        f"rec: a {win['a_mean']:.2f} [{win['a_ci'][0]:.2f}, {win['a_ci'][1]:.2f}] vs b {win['b_mean']:.2f} "
        f"[{win['b_ci'][0]:.2f}, {win['b_ci'][1]:.2f}]; paired difference {win['diff']:+.2f} "
        f"[{win['ci'][0]:+.2f}, {win['ci'][1]:+.2f}] over 8 concepts (24 pairs), p=0.008 -> a > b")
    loss = S.compare(rows, "b", "a", "rec", n_boot=B)
    assert loss["verdict"] == "b < a" and loss["diff"] == pytest.approx(-win["diff"])
    assert loss["sentence"].endswith("p=0.008 -> b < a")
    # the concept spread (SHIFT) is large, yet pairing removes it: the paired interval is narrow
    assert loss["ci"][1] - loss["ci"][0] < 0.5 * (loss["a_ci"][1] - loss["a_ci"][0])


def test_both_at_the_floor_is_not_measurable():
    parg_floor = S.levels("parg")["floor"]
    rows = rows_of("a", "parg", 0.08, seed=1) + rows_of("b", "parg", 0.0, spread=0.0, seed=2)
    res = S.compare(rows, "a", "b", "parg", n_boot=B)
    assert res["diff"] > 0.05 and res["p"] < 0.05  # clearly different, but both below the guessing floor
    assert res["verdict"] == "not measurable here" and res["floor"] == pytest.approx(parg_floor)
    assert res["sentence"].endswith(f"-> not measurable here (both at the floor {parg_floor:.2f})")
    rows = rows_of("a", "rec", 0.48, seed=1) + rows_of("b", "rec", 0.5, seed=2)
    res = S.compare(rows, "a", "b", "rec", n_boot=B)
    assert res["sentence"].endswith("-> not measurable here (both at the floor 0.50)")
    # one method above the floor is measurable
    rows = rows_of("a", "rec", 0.9, seed=1) + rows_of("b", "rec", 0.5, seed=2)
    assert S.compare(rows, "a", "b", "rec", n_boot=B)["verdict"] == "a > b"


def test_no_clear_difference_names_what_the_bench_could_detect():
    rows = rows_of("a", "vqa", 0.7, spread=0.1, shift=SHIFT, seed=1) + rows_of("b", "vqa", 0.7, spread=0.1,
                                                                                shift=SHIFT, seed=2)
    res = S.compare(rows, "a", "b", "vqa", n_boot=B)
    assert res["verdict"] == "no clear difference" and res["p"] > 0.05
    assert res["ci"][0] < 0 < res["ci"][1]
    assert res["mde"] == pytest.approx((1.959964 + 0.841621) * res["se"], rel=1e-5)
    assert res["sentence"].endswith(f"-> no clear difference (the bench detects {res['mde']:.2f} or more)")
    # with 5 concepts the sign flips cannot give p < 0.05, however large the difference
    few = [r for r in rows_of("a", "vqa", 0.9, seed=1) + rows_of("b", "vqa", 0.1, seed=2) if r["concept"] < "c5"]
    res = S.compare(few, "a", "b", "vqa", n_boot=B)
    assert res["p"] == res["p_min"] == 2 / 2 ** 5 and res["verdict"] == "no clear difference"
    assert res["sentence"].endswith("-> no clear difference (with 5 concepts no p can fall below 0.062: "
                                    "more concepts needed)")


def test_unbalanced_and_missing_pairs():
    a = rows_of("a", "rec", 0.9, seed=1)
    b = rows_of("b", "rec", 0.6, seed=2)
    b = [r for r in b if not (r["concept"] == "c0" and r["seed"] == 2) and r["concept"] != "c7"]
    b[0]["rec"] = None  # c0, seed 0: no value
    res = S.compare(a + b, "a", "b", "rec", n_boot=B)
    assert res["n_concepts"] == 7 and res["n_pairs"] == 24 - 3 - 2 and res["verdict"] == "a > b"
    # only the shared cells count, each concept once: c0 has its one seed left
    by = {(r["concept"], r["seed"]): r["rec"] for r in a}
    shared = {(r["concept"], r["seed"]) for r in b if r["rec"] is not None}
    want = np.mean([np.mean([by[k] for k in shared if k[0] == c]) for c in sorted({c for c, _ in shared})])
    assert res["a_mean"] == pytest.approx(want) and res["a_mean"] - res["b_mean"] == pytest.approx(res["diff"])
    # the concept is the unit: one concept with 1 seed and one with 3 weigh the same
    rows = [{"method": "m", "concept": "x", "seed": 0, "rec": 1.0}] + [
        {"method": "m", "concept": "y", "seed": s, "rec": 0.0} for s in range(3)]
    iv = S.interval(rows, "m", "rec", n_boot=B)
    assert iv["mean"] == 0.5 and (iv["n_concepts"], iv["n_seeds"], iv["n_rows"]) == (2, 3, 4)
    with pytest.raises(S.StatsError, match="no \\(concept, seed\\) has a rec value for both"):
        S.compare(a + [{"method": "z", "concept": "other", "seed": 0, "rec": 0.5}], "a", "z", "rec")
    with pytest.raises(E.BenchError, match="unknown metric 'recall'"):
        S.compare(a + b, "a", "b", "recall")


def test_replay_variants_compare_only_where_replay_acts():
    rows = []
    for method, parg in (("decoupled", 0.2), ("decoupled_replay", 0.5), ("coupled", 0.3), ("coupled_replay", 0.4)):
        base = "decoupled" if method.startswith("decoupled") else "coupled"
        rows += [{**r, **u} for r, u in zip(rows_of(method, "parg", parg, seed=len(method)),
                                            rows_of(method, "rec", 0.9 if base == "decoupled" else 0.7, seed=7))]
    with pytest.raises(S.StatsError, match="inference variant of decoupled.*compare them on a metric replay "
                                           "changes \\(gen_identity, gen_similarity, parg, parg_identity, edit\\)"):
        S.compare(rows, "decoupled_replay", "decoupled", "rec")
    assert S.compare(rows, "decoupled_replay", "decoupled", "parg", n_boot=B)["verdict"] == \
        "decoupled_replay > decoupled"
    twice = S.compare_claims(rows, [("decoupled_replay", "coupled_replay", "rec"), ("decoupled", "coupled", "rec"),
                                    ("decoupled_replay", "coupled_replay", "parg")], n_boot=B)
    assert [r["k"] for r in twice] == [2, 2, 2]  # the two rec claims are one result
    assert twice[0]["p_holm"] == twice[1]["p_holm"] and twice[0]["diff"] == pytest.approx(twice[1]["diff"])
    assert twice[0]["sentence"].endswith("(replay does not change rec: the same result as decoupled vs coupled)")
    assert twice[1]["same_as"] is None and "replay does not change" not in twice[1]["sentence"]


def test_holm_by_hand_and_over_claims():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and S.holm([]) == []
    rows = (rows_of("a", "rec", 0.8, seed=1) + rows_of("b", "rec", 0.6, seed=2) + rows_of("c", "rec", 0.8, seed=3))
    claims = [("a", "b", "rec"), ("a", "c", "rec"), ("c", "b", "rec")]
    res = S.compare_claims(rows, claims, n_boot=B)
    raw = [S.compare(rows, *c, n_boot=B)["p"] for c in claims]
    assert [r["p"] for r in res] == raw and [r["p_holm"] for r in res] == pytest.approx(S.holm(raw))
    # a-b and c-b both at 2/256 (all concepts agree): x3 and x2, then the running max: 6/256 each
    assert res[0]["p_holm"] == res[2]["p_holm"] == pytest.approx(3 * 2 / 2 ** 8)
    assert [r["verdict"] for r in res] == ["a > b", "no clear difference", "c > b"]
    assert res[0]["sentence"].endswith("Holm p=0.023 over 3 comparisons -> a > b")


def test_same_seed_same_numbers():
    rows = rows_of("a", "vqa", 0.7, spread=0.1, shift=SHIFT, seed=1) + rows_of("b", "vqa", 0.6, spread=0.1,
                                                                                shift=SHIFT, seed=2)
    first, again = S.compare(rows, "a", "b", "vqa", n_boot=B), S.compare(rows, "a", "b", "vqa", n_boot=B)
    assert first == again
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert S.compare(shuffled, "a", "b", "vqa", n_boot=B) == first  # row order does not matter
    other = S.compare(rows, "a", "b", "vqa", n_boot=B, seed=1)
    assert other["ci"] != first["ci"] and other["diff"] == first["diff"]
    assert S.interval(rows, "a", "vqa", n_boot=B) == S.interval(shuffled, "a", "vqa", n_boot=B)


def test_levels_are_computed_from_the_world_and_cards():
    cards = C.load_concepts()
    rec = S.levels("rec")
    assert (rec["chance"], rec["floor"], rec["ceiling"]) == (0.5, 0.5, 1.0) and set(rec["why"]) == {
        "chance", "floor", "ceiling"}
    assert (S.levels("rec_hard")["chance"], S.levels("rec_hard")["floor"]) == (0.5, 0.0)
    # parg: the prompt names the item; a hat or scarf leaves 1 colour in 6, a toy colour and shape 1 in 12
    guess = {"hat": 1 / 6, "scarf": 1 / 6, "toy": 1 / 12}
    want = np.mean([np.mean([guess[i] for i in c.items]) for c in cards])
    assert S.levels("parg")["floor"] == pytest.approx(want)
    assert S.levels("parg", concepts=["pip", "not_a_card"])["floor"] == pytest.approx(1 / 6)  # hat + scarf
    # vqa: shape 1/4, colour 1/6, pattern 1/3, mark 1/25 (none, or 4 parts x 6 colours), background 1/3
    assert S.levels("vqa")["chance"] == pytest.approx(np.mean([1 / 4, 1 / 6, 1 / 3, 1 / 25, 1 / 3]))
    likes = len(C.LIKES)
    want = np.mean([np.mean([1 / 4, 1 / 6, 1 / 3, *[guess[i] for i in c.items], *([1 / likes] if c.likes else [])])
                    for c in cards])
    assert S.levels("text_qa")["chance"] == pytest.approx(want)
    # edit: "remove" needs no knowledge (1), an item its colour, "replace the object with" the whole look (~0)
    edit = np.mean([(1 + sum(guess[i] for i in c.items)) / (len(c.items) + 2) for c in cards])
    assert edit <= S.levels("edit")["floor"] <= edit + 0.01
    assert S.levels("gen_identity")["chance"] == pytest.approx(1 / (4 * 6 * 3 * (1 + 4 * 5)))
    assert S.levels("gen_similarity")["floor"] is None
    base = {"vq_recon_judge": 0.83}
    assert S.levels("parg", base)["ceiling"] == 0.83 and S.levels("edit", base)["ceiling"] == 0.83
    assert S.levels("parg")["ceiling"] == 1.0 and "vq_recon_judge" in S.levels("parg")["why"]["ceiling"]
    assert S.levels("rec", base)["ceiling"] == 1.0
    with pytest.raises(S.StatsError, match="unknown metric"):
        S.levels("accuracy")


def test_power_note_and_detectable():
    assert S.detectable(0.1) == pytest.approx((1.959964 + 0.841621) * 0.1, rel=1e-5)
    rows = (rows_of("a", "rec", 0.8, spread=0.05, seed=1) + rows_of("b", "rec", 0.6, spread=0.05, seed=2)
            + [{"method": m, "concept": c, "seed": s, "parg_identity": 0.0} for m in "ab" for c in CONCEPTS
               for s in range(3)])
    note = S.power_note(rows, n_boot=B)
    assert set(note) == {"rec", "parg_identity"}
    rec = note["rec"]
    assert rec["pairs"] == 1 and (rec["n_concepts"], rec["n_seeds"]) == (8, 3)
    assert rec["se"] == pytest.approx(S.compare(rows, "a", "b", "rec", n_boot=B)["se"])
    assert 0.005 < rec["mde"] < 0.1 and rec["mde"] == pytest.approx(S.detectable(rec["se"]))
    assert rec["sentence"] == (f"rec: with 8 concepts x 3 seeds the bench detects a paired difference of "
                               f"{rec['mde']:.2f} or more (alpha 0.05, power 0.8; median over 1 method pairs); "
                               f"below that, 'no clear difference' says nothing either way")
    assert note["parg_identity"]["mde"] == 0 and "cannot tell methods apart" in note["parg_identity"]["sentence"]
    few = S.power_note([r for r in rows if r["concept"] < "c3"], n_boot=B)["rec"]
    assert few["mde"] == np.inf and "no p-value can fall below 0.25" in few["sentence"]


def test_summary_table_and_evaluate_compare_delegates():
    rows = rows_of("a", "rec", 0.8, seed=1) + rows_of("b", "rec", 0.5, seed=2)
    summ = S.summary(rows, n_boot=B)
    assert set(summ) == {"a", "b"} and set(summ["a"]) == {"rec"}
    assert summ["a"]["rec"]["at_floor"] is False and summ["b"]["rec"]["at_floor"] is True
    assert summ["a"]["rec"]["lo"] < summ["a"]["rec"]["mean"] < summ["a"]["rec"]["hi"]
    text = S.table(summ)
    assert "| a | 0.80 [" in text and "| *floor* | 0.50 |" in text
    assert S.frame(summ).loc["floor", "rec"] == "0.50" and S.frame(summ).loc["a", "rec"].startswith("0.80 [")
    old = benchmark.compare(rows, "a", "b", "rec", n_boot=B)
    assert {"a", "b", "metric", "a_mean", "b_mean", "diff", "ci", "verdict", "sentence"} <= set(old)
    assert old == S.compare(rows, "a", "b", "rec", n_boot=B) and old["verdict"] == "a > b"


def test_bootstrap_resamples_concepts_then_seeds():
    zero = [{"method": "b", "concept": c, "seed": s, "rec": 0.0} for c in CONCEPTS for s in range(3)]
    # concepts differ, seeds agree: the spread is the concepts' (SE = population SD / sqrt(C))
    between = [{"method": "a", "concept": c, "seed": s, "rec": 0.1 * i} for i, c in enumerate(CONCEPTS)
               for s in range(3)]
    se = S.compare(between + zero, "a", "b", "rec", n_boot=2000)["se"]
    assert se == pytest.approx(np.std(0.1 * np.arange(8)) / np.sqrt(8), rel=0.1)
    # concepts agree, seeds differ: the spread is the seeds' within each concept (SD / sqrt(3 C))
    within = [{"method": "a", "concept": c, "seed": s, "rec": v} for c in CONCEPTS for s, v in enumerate((0, .5, 1))]
    se = S.compare(within + zero, "a", "b", "rec", n_boot=2000)["se"]
    assert se == pytest.approx(np.std([0, .5, 1]) / np.sqrt(3 * 8), rel=0.1)


def test_proportion_change_reads_a_fall_a_rise_and_noise():
    # 24 images a side: the difference of two proportions at 0.5 has half-width 1.96 * sqrt(0.5 / 24)
    half = 1.959964 * (0.5 / 24) ** 0.5
    assert S.proportion_change(-0.46, 24) == ("fell", pytest.approx(half, rel=1e-5))
    assert S.proportion_change(+0.46, 24)[0] == "rose"
    assert S.proportion_change(-0.2, 24)[0] == "within"  # 0.2 < 0.28: a one-sided half-width would call it a fall
    assert S.proportion_change(-0.2, 400)[0] == "fell"
    with pytest.raises(S.StatsError, match="at least one trial"):
        S.proportion_change(0.1, 0)
