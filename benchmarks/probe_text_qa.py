"""Probe: train one method on a few concepts and print every text-only fact question, the card's
answer and the model's, so a change to the stages can be judged by what the tokens say.

    UNIKIT_THREADS=1 python benchmarks/probe_text_qa.py --concepts bo mochi rumi [--set stage3_steps=240]
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="unictokens")
    ap.add_argument("--concepts", nargs="+", default=["bo"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="teach")
    ap.add_argument("--base", default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=INT", help="schedule overrides (profiles.Schedule)")
    args = ap.parse_args()
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            ap.error(f"--set {item!r}: write KEY=INT, e.g. stage3_steps=240")
        overrides[key] = int(value)
    from unikit import model as M
    from unikit import runtime
    from unikit.concepts import concept_data, load_concept
    from unikit.evaluate import answers
    from unikit.methods import personalize

    runtime.setup(args.seed, "cpu")
    um = M.load_model(args.base)
    pers = personalize(um, args.concepts, args.method, profile=args.profile, seed=args.seed, **overrides)
    right = total = 0
    for name in args.concepts:
        qa = concept_data(load_concept(name)).text_qa
        got = answers(um, [None] * len(qa), [pers.understanding_prompt(name, q["question"]) for q in qa])
        for q, a in zip(qa, got):
            right, total = right + (a == q["answer"]), total + 1
            print(f"{name:>6}  {q['question']:<40} card: {q['answer']:<12} model: {a}", flush=True)
    print(f"text_qa {right}/{total} = {right / total:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
