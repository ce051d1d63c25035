"""Statistics over bench rows: intervals, paired comparisons, levels, power and verdicts.

A bench row is ``{"method", "concept", "seed", <metric>: float | None, ...}`` (see
:mod:`unikit.evaluate`). The unit of analysis is the concept; seeds are nested in it.

* :func:`interval`: a method's mean on a metric with a hierarchical bootstrap interval
  (resample concepts with replacement, then seeds within each drawn concept).
* :func:`compare` / :func:`compare_claims`: paired differences on the (concept, seed) pairs two
  methods share, a bootstrap interval and a sign-flip permutation p-value over concepts;
  Holm's correction (:func:`holm`) across the claims a lesson makes.
* :func:`levels` (from :mod:`unikit.levels`): chance, floor and ceiling of a metric; a
  comparison of two methods both at the floor is "not measurable here".
* :func:`power_note`: the smallest paired difference the bench can detect at its size.
* :func:`sentence`: the printed interpretation, computed from a comparison's numbers.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np

from .evaluate import INFERENCE_VARIANTS, METRICS
from .levels import StatsError, levels  # noqa: F401  (levels: part of this API)

REPLAY_METRICS = ("gen_identity", "gen_similarity", "parg", "parg_identity", "edit")
"""The metrics where replay acts: ``evaluate._generation_metrics`` and the ``edit`` score, the code
that calls ``Personalized.request``. An inference variant
(:data:`~unikit.evaluate.INFERENCE_VARIANTS`) scores its base method's numbers on the rest."""

N_BOOT = 2000


# --------------------------------------------------------------------------- rows


def _cells(rows: list[dict], method: str, metric: str) -> dict[tuple[str, int], float]:
    """``{(concept, seed): value}`` for ``method``; None/NaN dropped, repeated cells averaged."""
    if metric not in METRICS:
        raise StatsError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    got: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        v = r.get(metric)
        if r["method"] == method and v is not None and not math.isnan(v):
            got.setdefault((r["concept"], r.get("seed", 0)), []).append(float(v))
    return {k: float(np.mean(v)) for k, v in got.items()}


def _groups(cells: dict[tuple[str, int], np.ndarray]) -> tuple[list[str], list[np.ndarray], int]:
    """Cells ``{(concept, seed): float[k]}`` -> (concepts, one ``float[n_seeds_c, k]`` per concept,
    number of distinct seeds)."""
    by: dict[str, list] = {}
    for c, s in sorted(cells, key=lambda cs: (str(cs[0]), cs[1])):
        by.setdefault(c, []).append(cells[(c, s)])
    groups = [np.array(v, float).reshape(len(v), -1) for v in by.values()]
    return list(by), groups, len({s for _, s in cells})


def _point(groups: list[np.ndarray]) -> np.ndarray:
    """Mean over concepts of each concept's mean over seeds: ``float[k]``."""
    return np.mean([g.mean(0) for g in groups], axis=0)


def _bootstrap(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Hierarchical bootstrap of :func:`_point`: draw concepts with replacement, then seeds with
    replacement within each drawn concept. ``groups``: per concept ``float[n_seeds_c, k]``
    -> ``float[n_boot, k]``. The k columns share every draw (pairs stay paired)."""
    n_c, k = len(groups), groups[0].shape[1]
    counts = np.array([len(g) for g in groups])
    width = counts.max()
    table = np.zeros((n_c, width, k))
    for i, g in enumerate(groups):
        table[i, :len(g)] = g
    ci = rng.integers(0, n_c, size=(n_boot, n_c))  # [B, C] drawn concepts
    n = counts[ci]  # [B, C] seeds each drawn concept has
    si = np.floor(rng.random((n_boot, n_c, width)) * n[..., None]).astype(int)  # [B, C, S]
    used = np.arange(width) < n[..., None]  # [B, C, S]: draw as many seeds as the concept has
    vals = table[ci[..., None], si] * used[..., None]  # [B, C, S, k]
    return (vals.sum(2) / n[..., None]).mean(1)


def _sign_flip_p(d: np.ndarray, rng: np.random.Generator, exact_up_to: int = 16) -> float:
    """Two-sided p-value of ``mean(d) == 0`` by flipping the sign of whole concepts.
    ``d``: ``float[C]`` per-concept mean differences. Exact (all 2^C flips) up to
    ``exact_up_to`` concepts, else 65536 random flips."""
    n_c = len(d)
    t = abs(d.mean())
    if n_c <= exact_up_to:
        signs = 1 - 2 * ((np.arange(2 ** n_c)[:, None] >> np.arange(n_c)) & 1)  # [2^C, C]
        flipped = np.abs(signs @ d) / n_c
        return float(np.mean(flipped >= t * (1 - 1e-9) - 1e-12))
    signs = rng.choice([-1.0, 1.0], size=(65536, n_c))
    flipped = np.abs(signs @ d) / n_c
    return float((1 + np.sum(flipped >= t * (1 - 1e-9) - 1e-12)) / (1 + len(signs)))


def _quantiles(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def interval(rows: list[dict], method: str, metric: str, level: float = 0.95, n_boot: int = N_BOOT,
             seed: int = 0) -> dict:
    """``method``'s mean ``metric`` (mean over concepts of the mean over seeds) with a hierarchical
    bootstrap interval: ``{"mean", "lo", "hi", "n_concepts", "n_seeds", "n_rows"}``.
    Deterministic in ``seed``."""
    cells = _cells(rows, method, metric)
    if not cells:
        raise StatsError(f"no row of {method!r} has a {metric} value")
    _, groups, n_seeds = _groups({k: np.array([v]) for k, v in cells.items()})
    lo, hi = _quantiles(_bootstrap(groups, n_boot, np.random.default_rng(seed)), level)
    return {"mean": float(_point(groups)[0]), "lo": float(lo[0]), "hi": float(hi[0]), "n_concepts": len(groups),
            "n_seeds": n_seeds, "n_rows": len(cells)}


# --------------------------------------------------------------------------- comparisons


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def detectable(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest paired difference a two-sided test at ``alpha`` finds with probability
    ``power``: ``(z_{1 - alpha/2} + z_{power}) * se``."""
    return (_z(1 - alpha / 2) + _z(power)) * se


def proportion_change(delta: float, n: int, level: float = 0.95) -> tuple[str, float]:
    """Whether a change ``delta`` between two proportions, each measured on ``n`` independent
    trials, is beyond the difference's half-width at ``level`` where it is widest (both at 0.5):
    ``("fell" | "rose" | "within", half_width)``."""
    if n < 1:
        raise StatsError(f"n={n}: a change needs at least one trial on each side")
    half = _z(0.5 + level / 2) * math.sqrt(2 * 0.25 / n)
    return ("fell" if delta < -half else "rose" if delta > half else "within"), half


def _base_of(method: str) -> str:
    return INFERENCE_VARIANTS.get(method, method)


def _check_replay(a: str, b: str, metric: str) -> None:
    """Raise when ``a`` and ``b`` share their tokens and ``metric`` is not one replay changes."""
    if a != b and _base_of(a) == _base_of(b) and metric not in REPLAY_METRICS:
        variant = a if a in INFERENCE_VARIANTS else b
        raise StatsError(
            f"{a} and {b} share their tokens ({variant} is an inference variant of {_base_of(a)}: "
            f"evaluate.INFERENCE_VARIANTS), so their {metric} is the same result counted twice; compare them "
            f"on a metric replay changes ({', '.join(REPLAY_METRICS)}), or compare {_base_of(a)} with another "
            f"method on {metric}")


def _claim_key(a: str, b: str, metric: str) -> tuple:
    """Claims that are one result share a key (outside REPLAY_METRICS a variant is its base method)."""
    if metric not in REPLAY_METRICS:
        a, b = _base_of(a), _base_of(b)
    return metric, frozenset((a, b))


def _paired(rows, a, b, metric, base_metrics, alpha, power, level, n_boot, seed) -> dict:
    """The numbers of a paired comparison, before Holm and the verdict."""
    _check_replay(a, b, metric)
    ca, cb = _cells(rows, a, metric), _cells(rows, b, metric)
    shared = ca.keys() & cb.keys()
    if not shared:
        raise StatsError(f"no (concept, seed) has a {metric} value for both {a!r} and {b!r}; run both "
                         f"methods on the same concepts and seeds")
    rng = np.random.default_rng(seed)
    concepts, groups, n_seeds = _groups({k: np.array([ca[k], cb[k], ca[k] - cb[k]]) for k in shared})
    point = _point(groups)
    boot = _bootstrap(groups, n_boot, rng)
    lo, hi = _quantiles(boot, level)
    se = float(boot[:, 2].std(ddof=1))
    lev = levels(metric, base_metrics, concepts)
    bases = (_base_of(a), _base_of(b))
    same = bases if metric not in REPLAY_METRICS and bases != (a, b) else None
    return {"a": a, "b": b, "metric": metric, "a_mean": float(point[0]), "b_mean": float(point[1]),
            "diff": float(point[2]), "a_ci": (float(lo[0]), float(hi[0])), "b_ci": (float(lo[1]), float(hi[1])),
            "ci": (float(lo[2]), float(hi[2])), "p": _sign_flip_p(np.array([g[:, 2].mean() for g in groups]), rng),
            "se": se, "mde": detectable(se, alpha, power), "alpha": alpha, "level": level,
            "p_min": 2 / 2 ** len(concepts) if len(concepts) <= 16 else 1 / 65537,
            "n_concepts": len(concepts), "n_pairs": len(shared), "seeds": n_seeds,
            "floor": lev["floor"], "ceiling": lev["ceiling"], "same_as": same}


def _decide(res: dict, p_holm: float, k: int) -> dict:
    """Set ``p_holm``, ``k``, ``verdict`` and ``sentence`` on a :func:`_paired` result."""
    floor, a, b = res["floor"], res["a"], res["b"]
    if floor is not None and max(res["a_ci"][0], res["b_ci"][0]) <= floor + 1e-9:
        verdict = "not measurable here"
    elif p_holm < res["alpha"] and res["diff"] > 0:
        verdict = f"{a} > {b}"
    elif p_holm < res["alpha"] and res["diff"] < 0:
        verdict = f"{a} < {b}"
    else:
        verdict = "no clear difference"
    res.update(p_holm=float(p_holm), k=int(k), verdict=verdict)
    res["sentence"] = sentence(res)
    return res


def compare(rows: list[dict], a: str, b: str, metric: str, base_metrics: dict | None = None,
            alpha: float = 0.05, power: float = 0.8, level: float = 0.95, n_boot: int = N_BOOT,
            seed: int = 0) -> dict:
    """Does ``a`` beat ``b`` on ``metric``, paired on the (concept, seed) cells both have?

    Per pair, ``a - b``; the mean over concepts of each concept's mean difference, with a
    hierarchical bootstrap interval (``ci``) and a two-sided p-value from flipping the sign of
    whole concepts (exact up to 16 concepts). ``verdict``: "not measurable here" when both
    methods' intervals reach down to the floor (:func:`levels`), else "a > b" / "a < b" when
    p < ``alpha``, else "no clear difference". Returns ``{"a", "b", "metric", "a_mean", "b_mean",
    "diff", "ci", "a_ci", "b_ci", "p", "p_holm", "k", "se", "mde", "floor", "ceiling",
    "n_concepts", "n_pairs", "seeds", "same_as", "verdict", "sentence", ...}``; ``mde`` is the
    smallest difference detectable at this size (:func:`detectable`), ``p_min`` the smallest
    p-value the sign flips can give (2 / 2^C: with 5 concepts or fewer none is below 0.05).
    Raises :class:`StatsError` for an inference variant and its base method on a metric replay
    does not change.
    """
    res = _paired(rows, a, b, metric, base_metrics, alpha, power, level, n_boot, seed)
    return _decide(res, res["p"], 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of k p-values (same order): the i-th smallest becomes
    ``max_{j <= i} min(1, (k - j + 1) p_(j))``."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p, kind="stable")
    k = len(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((k - np.arange(k)) * p[order]))
    out = np.empty(k)
    out[order] = adjusted
    return out.tolist()


def compare_claims(rows: list[dict], claims: Sequence[tuple[str, str, str]], base_metrics: dict | None = None,
                   alpha: float = 0.05, power: float = 0.8, level: float = 0.95, n_boot: int = N_BOOT,
                   seed: int = 0) -> list[dict]:
    """:func:`compare` for each ``(a, b, metric)`` claim, with Holm's correction over the k
    distinct results (outside :data:`REPLAY_METRICS` an inference variant scores its base method's
    numbers, so "decoupled_replay vs coupled_replay" and "decoupled vs coupled" count once)."""
    results = [_paired(rows, a, b, m, base_metrics, alpha, power, level, n_boot, seed) for a, b, m in claims]
    keys = [_claim_key(a, b, m) for a, b, m in claims]
    first = {}
    for key, res in zip(keys, results):
        first.setdefault(key, res["p"])
    adjusted = dict(zip(first, holm(list(first.values()))))
    return [_decide(res, adjusted[key], len(first)) for key, res in zip(keys, results)]


# --------------------------------------------------------------------------- words


def _num(x: float, signed: bool = False) -> str:
    x = round(x, 2) + 0.0  # no "-0.00"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _level(x: float) -> str:
    return f"{x:.2f}" if x == 0 or abs(x) >= 0.01 else f"{x:.1g}"


def sentence(res: dict) -> str:
    """A comparison (:func:`compare`) in one line, e.g. ``"parg: unictokens 0.41 [0.33, 0.49] vs
    text_prompt 0.62 [0.55, 0.70]; paired difference -0.21 [-0.30, -0.12] over 12 concepts
    (36 pairs), Holm p=0.003 over 3 comparisons -> unictokens < text_prompt"``."""
    a, b, p = res["a"], res["b"], res.get("p_holm", res["p"])
    k = res.get("k", 1)
    p_text = "p<0.001" if p < 0.001 else f"p={p:.3f}"
    if k > 1:
        p_text = f"Holm {p_text} over {k} comparisons"
    verdict = res.get("verdict", "")
    if verdict == "not measurable here":
        verdict += f" (both at the floor {_level(res['floor'])})"
    elif verdict == "no clear difference" and k * res["p_min"] >= res["alpha"]:
        verdict += (f" (with {res['n_concepts']} concepts no {'Holm ' if k > 1 else ''}p can fall below "
                    f"{min(1.0, k * res['p_min']):.2g}: more concepts needed)")
    elif verdict == "no clear difference":
        verdict += f" (the bench detects {_num(res['mde'])} or more)"
    text = (f"{res['metric']}: {a} {_num(res['a_mean'])} [{_num(res['a_ci'][0])}, {_num(res['a_ci'][1])}] vs "
            f"{b} {_num(res['b_mean'])} [{_num(res['b_ci'][0])}, {_num(res['b_ci'][1])}]; paired difference "
            f"{_num(res['diff'], True)} [{_num(res['ci'][0], True)}, {_num(res['ci'][1], True)}] over "
            f"{res['n_concepts']} concepts ({res['n_pairs']} pairs), {p_text} -> {verdict}")
    if res.get("same_as"):
        text += (f" (replay does not change {res['metric']}: the same result as "
                 f"{res['same_as'][0]} vs {res['same_as'][1]})")
    return text


# --------------------------------------------------------------------------- the bench at a glance


def power_note(rows: list[dict], metrics: Sequence[str] | None = None, alpha: float = 0.05, power: float = 0.8,
               n_boot: int = N_BOOT, seed: int = 0) -> dict[str, dict]:
    """Per metric, the smallest paired difference the bench detects at its size:
    ``{metric: {"mde", "se", "pairs", "n_concepts", "n_seeds", "sentence"}}``. ``se`` is the median,
    over every pair of methods with shared cells, of the bootstrap SE of the paired mean
    difference; ``mde = (z_{1 - alpha/2} + z_{power}) * se``. Pairs of a replay variant and its
    base are left out outside :data:`REPLAY_METRICS` (their difference is 0 by construction).
    ``mde`` is infinite when there are too few concepts for any p-value below ``alpha``."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = {}
    for metric in metrics or METRICS:
        ses, sizes = [], set()
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                if _base_of(a) == _base_of(b) and metric not in REPLAY_METRICS:
                    continue
                ca, cb = _cells(rows, a, metric), _cells(rows, b, metric)
                shared = ca.keys() & cb.keys()
                if not shared:
                    continue
                _, groups, n_seeds = _groups({kk: np.array([ca[kk] - cb[kk]]) for kk in shared})
                boot = _bootstrap(groups, n_boot, np.random.default_rng(seed))
                ses.append(float(boot[:, 0].std(ddof=1)))
                sizes.add((len(groups), n_seeds))
        if not ses:
            continue
        se = float(np.median(ses))
        mde = detectable(se, alpha, power)
        n_c, n_s = max(sizes)
        size = f"{metric}: with {n_c} concepts x {n_s} seeds"
        if n_c <= 16 and 2 / 2 ** n_c >= alpha:  # the sign flips cannot reach alpha
            out[metric] = {"mde": math.inf, "se": se, "pairs": len(ses), "n_concepts": n_c, "n_seeds": n_s,
                           "sentence": f"{size} no p-value can fall below {2 / 2 ** n_c:.2g}: the bench cannot "
                                       f"detect any difference; add concepts"}
            continue
        text = (f"{size} the bench detects a paired difference of {_num(mde)} or more (alpha {alpha:g}, "
                f"power {power:g}; median over {len(ses)} method pairs); below that, 'no clear difference' "
                f"says nothing either way" if se > 0 else
                f"{size} most of the {len(ses)} method pairs never differ on any concept or seed (median "
                f"SE 0): the bench cannot tell methods apart on it")
        out[metric] = {"mde": mde, "se": se, "pairs": len(ses), "n_concepts": n_c, "n_seeds": n_s,
                       "sentence": text}
    return out


def summary(rows: list[dict], base_metrics: dict | None = None, metrics: Sequence[str] = METRICS,
            level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``{method: {metric: {"mean", "lo", "hi", "n_concepts", "n_seeds", "n_rows", "floor",
    "ceiling", "at_floor"}}}``: :func:`interval` for every method and metric with values, with the
    metric's :func:`levels` (``at_floor``: the interval reaches down to the floor)."""
    concepts = {r["concept"] for r in rows}
    lev = {m: levels(m, base_metrics, concepts) for m in metrics}
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        out[method] = {}
        for m in metrics:
            if not _cells(rows, method, m):
                continue
            iv = interval(rows, method, m, level, n_boot, seed)
            floor = lev[m]["floor"]
            out[method][m] = {**iv, "floor": floor, "ceiling": lev[m]["ceiling"],
                              "at_floor": floor is not None and iv["lo"] <= floor + 1e-9}
    return out


def table(summ: dict, metrics: Sequence[str] = ("rec", "rec_hard", "vqa", "text_qa", "gen_identity",
                                                 "gen_similarity", "parg", "edit")) -> str:
    """A :func:`summary` as a Markdown table (the cells of :func:`frame`), for the terminal."""
    cells = frame(summ, metrics)
    lines = ["| method | " + " | ".join(cells.columns) + " |", "|---" * (len(cells.columns) + 1) + "|"]
    for method, row in cells.iterrows():
        name = f"*{method}*" if method in ("floor", "ceiling") else method
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def frame(summ: dict, metrics: Sequence[str] = ("rec", "rec_hard", "vqa", "text_qa", "gen_identity",
                                                 "gen_similarity", "parg", "edit")):
    """A :func:`summary` as a pandas DataFrame for notebooks: ``mean [lo, hi]`` per cell, one row
    per method, then the floor and ceiling rows."""
    import pandas as pd

    metrics = [m for m in metrics if any(m in v for v in summ.values())]
    cells = {method: {m: f"{_num(v['mean'])} [{_num(v['lo'])}, {_num(v['hi'])}]" if (v := vals.get(m)) else ""
                      for m in metrics} for method, vals in summ.items()}
    for name in ("floor", "ceiling"):
        cells[name] = {}
        for m in metrics:
            x = next(v[m][name] for v in summ.values() if m in v)
            cells[name][m] = "" if x is None else _level(x)
    return pd.DataFrame.from_dict(cells, orient="index", columns=metrics)


def per_concept(rows: list[dict], metric: str):
    """``metric`` per concept (rows) and method (columns), the mean over seeds: a DataFrame."""
    import pandas as pd

    if metric not in METRICS:
        raise StatsError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    frame = pd.DataFrame([{"concept": r["concept"], "method": r["method"], metric: r[metric]} for r in rows
                          if r.get(metric) is not None])
    methods = list(dict.fromkeys(r["method"] for r in rows))
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    return frame.pivot_table(index="concept", columns="method", values=metric, aggfunc="mean") \
        .reindex(index=concepts, columns=methods)
