"""Probe: does the base model still draw and recognise a concept when its facts come first?

    python benchmarks/probe_preamble.py [--base DIR] [--concepts bo kiki luna sol] [--n 8]

The word baselines (``text_prompt``, ``oracle_text``) put the card's facts before the request
("the plain orange circle with a blue top has a yellow hat. ... a photo of a plain orange circle
with a blue top"). This asks the base model the oracle's words with and without that preamble,
side by side: the share of drawings the judge identifies as the concept (``gen_identity``'s
check) and the share of the concept's test images it says "yes" to (``rec_pos``).
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=None)
    ap.add_argument("--concepts", nargs="+", default=["bo", "kiki", "luna", "sol"])
    ap.add_argument("--n", type=int, default=8, help="drawings per prompt")
    args = ap.parse_args()
    import numpy as np

    from unikit import judge as J
    from unikit import model as M
    from unikit import world
    from unikit.concepts import concept_data, load_concept

    um, judge = M.load_model(args.base), J.load_judge(progress=False)
    print(f"sampling: {M.sampling(um)}")
    print(f"{'concept':>8} {'prompt':>10} {'identity (plain)':>17} {'identity (preamble)':>20} "
          f"{'yes to own images (plain)':>26} {'(preamble)':>11}")
    for name in args.concepts:
        card = load_concept(name)
        data = concept_data(card)
        preamble = " ".join(card.in_words(f, "the", True) for f in card.facts()) + " "
        for prompt in ("a photo of <c>", "<c> on a green background"):
            request = card.in_words(prompt.replace("<c>", card.token), "a", True)
            ident = []
            for text in (request, preamble + request):
                drawn = M.generate_images(um, [text], n=args.n, seed=0)
                ident.append(np.mean([x == card.name for x in judge.identify(drawn, [card])]))
            question = card.in_words(f"is {card.token} in this image?", "the", True)
            images = world.render_many(data.test_scenes[:8])
            yes = [np.mean([a == "yes" for a in M.answer(um, images, [q] * len(images), max_new_tokens=2)])
                   for q in (question, preamble + question)]
            print(f"{name:>8} {prompt[:10]:>10} {ident[0]:>17.2f} {ident[1]:>20.2f} {yes[0]:>26.2f} {yes[1]:>11.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
