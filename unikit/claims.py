"""The papers' claims as tests on bench rows, and the words that report them.

A claim is a paired comparison ``a`` vs ``b`` on one metric with the direction the paper
expects (:class:`Claim`). :func:`judge` runs a lesson's claims through
:func:`unikit.stats.compare_claims` (Holm over the lesson's k comparisons) and turns each
verdict into a finding: ``"supported"``, ``"refuted"``, ``"no clear difference"`` or
``"not measurable here"``, with a sentence computed from the numbers, so a lesson's words
change when its data changes. :func:`plot` draws one claim with its chance, floor and
ceiling as lines and the intervals as bands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import stats


@dataclass(frozen=True)
class Claim:
    """``a`` beats ``b`` on ``metric`` (``expect="a > b"``), or ``a`` is not below ``b``
    (``expect="a >= b"``: refuted only by a clear loss)."""

    key: str
    paper: str
    says: str
    a: str
    b: str
    metric: str
    expect: str = "a > b"


CLAIMS = {c.key: c for c in [
    Claim("a", "UniCTokens", "unified tokens beat separate ones on knowledge-driven generation",
          "unictokens", "separate", "parg"),
    Claim("a'", "UniCTokens", "... with the concept drawn too (the item and the identity right)",
          "unictokens", "separate", "parg_identity"),
    Claim("b", "UniCTokens", "stage 3 improves recognition over stage 1",
          "unictokens", "unictokens_stage1", "rec"),
    Claim("b'", "UniCTokens", "stage 3 improves visual question answering over stage 1",
          "unictokens", "unictokens_stage1", "vqa"),
    Claim("c", "OmniPersona", "decoupled tokens keep understanding better than coupled ones (less interference)",
          "decoupled", "coupled", "rec"),
    Claim("c'", "OmniPersona", "decoupled tokens keep text-only knowledge better than coupled ones",
          "decoupled", "coupled", "text_qa"),
    Claim("d", "OmniPersona", "explicit knowledge replay raises knowledge-driven generation",
          "decoupled_replay", "decoupled", "parg"),
    Claim("e", "OmniPersona", "a plain text prompt is strong on knowledge-driven generation (not below tokens)",
          "text_prompt", "unictokens", "parg", expect="a >= b"),
    Claim("mark", "both", "learned tokens beat the user's words on hard negatives (the mark the card leaves out)",
          "unictokens", "text_prompt", "rec_hard"),
    Claim("edit", "OmniPersona", "joint training with editing data edits the concept better than UniCTokens",
          "decoupled", "unictokens", "edit"),
    Claim("edit data", "OmniPersona", "training on editing triplets is what makes personalized editing work",
          "decoupled_replay", "decoupled_replay_noedit", "edit"),
]}

LESSON_CLAIMS = {  # the claims each lesson judges together (Holm over each lesson's set)
    "05": ("b", "b'"),
    "06": ("a", "a'", "e", "mark"),
    "07": ("c", "c'", "d"),
    "08": ("edit", "edit data"),
}


def claims_for(keys: Sequence[str]) -> list[Claim]:
    unknown = [k for k in keys if k not in CLAIMS]
    if unknown:
        raise stats.StatsError(f"unknown claim(s) {unknown}; known: {', '.join(CLAIMS)}")
    return [CLAIMS[k] for k in keys]


def finding(claim: Claim, verdict: str) -> str:
    """What a verdict of :func:`unikit.stats.compare` says about ``claim``."""
    if verdict == "not measurable here":
        return "not measurable here"
    if verdict == f"{claim.a} > {claim.b}":
        return "supported"
    if verdict == f"{claim.a} < {claim.b}":
        return "refuted"
    return "supported (no clear difference)" if claim.expect == "a >= b" else "no clear difference"


def explain(claim: Claim, res: dict) -> str:
    """One sentence on ``claim`` computed from its comparison ``res`` (with ``finding``)."""
    f = res["finding"]
    nums = (f"{claim.a} {res['a_mean']:.2f} vs {claim.b} {res['b_mean']:.2f} on {claim.metric}, "
            f"difference {res['diff']:+.2f} [{res['ci'][0]:+.2f}, {res['ci'][1]:+.2f}]")
    if f == "not measurable here":
        return (f"({claim.key}) cannot be judged here: {nums}, and both methods' intervals reach the floor "
                f"({res['floor']:.2f}), so the test has no power; this says nothing about the paper.")
    if f == "supported":
        return f"({claim.key}) holds here: {nums}, clear after Holm's correction."
    if f == "supported (no clear difference)":
        return (f"({claim.key}) holds here in its weak form: {nums}; the text prompt is not measurably "
                f"below the tokens.")
    if f == "refuted":
        return (f"({claim.key}) does not reproduce here: {nums}, a clear difference the other way, "
                f"on a model whose scores sit above the floor.")
    if res["k"] * res["p_min"] >= res["alpha"]:
        return (f"({claim.key}) cannot be decided with {res['n_concepts']} concepts: {nums}; no corrected "
                f"p-value can fall below {min(1.0, res['k'] * res['p_min']):.2g} (more concepts needed).")
    lo, hi = res["ci"]
    why = ("the interval contains zero" if lo <= 0 <= hi else
           f"the interval leaves out zero, but the paired test is not significant after Holm's correction over "
           f"{res['k']} comparisons (p = {res['p_holm']:.2g})")
    return (f"({claim.key}) is not supported at this size: {nums}; {why} "
            f"(the bench detects differences of {res['mde']:.2f} or more).")


def judge(rows: list[dict], keys: Sequence[str], base_metrics: dict | None = None, **options) -> list[dict]:
    """Judge the claims ``keys`` on bench rows (Holm over the claims whose methods are present).
    Each result is a :func:`unikit.stats.compare` dict plus ``claim``, ``says``, ``finding`` and
    ``explanation``; claims whose methods are missing from ``rows`` come back with
    ``finding="not run"`` and the methods to add."""
    chosen = claims_for(keys)
    have = {r["method"] for r in rows}
    runnable = [c for c in chosen if {c.a, c.b} <= have]
    judged = stats.compare_claims(rows, [(c.a, c.b, c.metric) for c in runnable], base_metrics, **options)
    by_key = dict(zip([c.key for c in runnable], judged))
    out = []
    for c in chosen:
        if c.key not in by_key:
            missing = sorted({c.a, c.b} - have)
            out.append({"claim": c.key, "paper": c.paper, "says": c.says, "a": c.a, "b": c.b, "metric": c.metric,
                        "finding": "not run", "explanation": f"({c.key}) not run: the rows have no "
                        f"{' or '.join(missing)}; add it to `unikit bench --methods`."})
            continue
        res = {**by_key[c.key], "claim": c.key, "paper": c.paper, "says": c.says}
        res["finding"] = finding(c, res["verdict"])
        res["explanation"] = explain(c, res)
        out.append(res)
    return out


def table(judged: list[dict]):
    """The judged claims as a DataFrame (one row per claim) for a lesson to display."""
    import pandas as pd

    def cell(r, key):
        return None if key not in r else round(float(r[key]), 3)

    return pd.DataFrame([{
        "claim": r["claim"], "paper": r["paper"], "says": r["says"], "metric": r["metric"],
        "a": r["a"], "a mean": cell(r, "a_mean"), "b": r["b"], "b mean": cell(r, "b_mean"),
        "difference": cell(r, "diff"),
        "95% interval": "" if "ci" not in r else f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]",
        "Holm p": cell(r, "p_holm"), "floor": cell(r, "floor"), "finding": r["finding"]} for r in judged]
    ).set_index("claim")


def plot(judged: list[dict], rows: list[dict], base_metrics: dict | None = None, axes=None):
    """One panel per judged claim: both methods' means with their intervals as bands, the
    metric's chance, floor and ceiling as lines, and the finding as the title."""
    import matplotlib.pyplot as plt

    shown = [r for r in judged if r["finding"] != "not run"]
    if axes is None:
        fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(2.9 * max(1, len(shown)), 3.0), squeeze=False)
        axes = axes[0]
    for ax, r in zip(axes, shown):
        lev = stats.levels(r["metric"], base_metrics, sorted({x["concept"] for x in rows}))
        for i, (m, mean, ci) in enumerate(((r["a"], r["a_mean"], r["a_ci"]), (r["b"], r["b_mean"], r["b_ci"]))):
            ax.fill_between([i - 0.3, i + 0.3], ci[0], ci[1], color=f"C{i}", alpha=0.3, lw=0)
            ax.plot([i - 0.3, i + 0.3], [mean, mean], color=f"C{i}", lw=2)
        for name, style in (("chance", ":"), ("floor", "--"), ("ceiling", "-.")):
            if lev[name] is not None:
                ax.axhline(lev[name], color="0.35", ls=style, lw=1, label=f"{name} {lev[name]:.2f}")
        ax.set_xticks([0, 1], [r["a"], r["b"]], rotation=15, fontsize=8)
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel(r["metric"])
        ax.set_title(f"({r['claim']}) {r['finding']}", fontsize=9)
        ax.legend(fontsize=6, loc="upper right")
    fig = axes[0].figure if len(axes) else None
    if fig is not None:
        fig.tight_layout()
    return fig



def plot_interference(curves: list[dict], base_metrics: dict | None = None,
                      metrics: Sequence[str] = ("rec", "rec_hard", "text_qa")):
    """Claim (c) as curves: per metric, each layout's understanding score against the generation
    and editing steps trained after it (rows of ``interference.measure_interference``, with ``seed``),
    the concept-unit bootstrap interval (seeds nested) as a band, chance, floor and ceiling as lines."""
    import matplotlib.pyplot as plt

    concepts = sorted({r["concept"] for r in curves})
    layouts = list(dict.fromkeys(r["layout"] for r in curves))
    steps = sorted({r["step"] for r in curves})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, layout in enumerate(layouts):
            cells = [{**r, "method": f"{layout}@{r['step']}"} for r in curves if r["layout"] == layout]
            ivs = [stats.interval(cells, f"{layout}@{s}", metric) for s in steps]
            ax.fill_between(steps, [v["lo"] for v in ivs], [v["hi"] for v in ivs], color=f"C{i}", alpha=0.25, lw=0)
            ax.plot(steps, [v["mean"] for v in ivs], color=f"C{i}", marker="o", label=layout)
        lev = stats.levels(metric, base_metrics, concepts)
        for name, style in (("chance", ":"), ("floor", "--"), ("ceiling", "-.")):
            if lev[name] is not None:
                ax.axhline(lev[name], color="0.35", ls=style, lw=1, label=f"{name} {lev[name]:.2f}")
        ax.set(xlabel="generation + editing steps", ylabel=metric, ylim=(-0.03, 1.03), title=metric)
        ax.legend(fontsize=6, loc="lower left")
    n_seeds = len({r.get("seed", 0) for r in curves})
    fig.suptitle(f"understanding while generation and editing train: {len(concepts)} concept(s), "
                 f"{n_seeds} seed(s) each; bands: 95% intervals, concept as the unit", fontsize=9)
    fig.tight_layout()
    return fig


def interference_change(curves: list[dict], metrics: Sequence[str] = ("rec", "rec_hard", "text_qa")):
    """Per layout and metric, the change from the first to the last measurement of
    ``interference.measure_interference`` (paired within each concept and seed), as "mean [lo, hi]"
    with the concept-unit bootstrap interval; a DataFrame indexed by layout."""
    import pandas as pd

    first, last = min(r["step"] for r in curves), max(r["step"] for r in curves)
    at = {(r["layout"], r["concept"], r.get("seed", 0), r["step"]): r for r in curves}
    changes = [{"method": lay, "concept": c, "seed": sd,
                **{m: at[(lay, c, sd, last)][m] - r[m] for m in metrics}}
               for (lay, c, sd, step), r in at.items() if step == first and (lay, c, sd, last) in at]
    out = {}
    for layout in dict.fromkeys(r["method"] for r in changes):
        cells = {}
        for m in metrics:
            iv = stats.interval(changes, layout, m)
            cells[m] = f"{iv['mean']:+.3f} [{iv['lo']:+.3f}, {iv['hi']:+.3f}]"
        out[layout] = cells
    return pd.DataFrame(out).T


PAPERS_TABLE = Path(__file__).resolve().parent.parent / "data" / "papers" / "omnipbench.csv"
COMPARABLE = {  # the kit's metric -> the papers' column it corresponds to, and how far
    "rec": ("rec", "same definition (mean of positive and negative recall); real photos, 20 concepts"),
    "vqa": ("vqa", "the papers score free answers with BLEU and an LLM judge; the kit exact-matches one word"),
    "gen_identity": ("clip_i", "not comparable: CLIP-I is a similarity, the kit's identity is an exact match"),
    "parg": ("parg", "the papers' GPT-4o judge gives 0/0.5/1; the kit's judge checks the item exactly"),
    "edit": ("edit_avg", "not comparable: the papers average several edit scores"),
}


def papers_table():
    """OmniPBench as OmniPersona reports it (third-party transcription), as a DataFrame."""
    import pandas as pd

    return pd.read_csv(PAPERS_TABLE).set_index("method")
