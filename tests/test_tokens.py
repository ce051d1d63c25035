"""Concept tokens: only the new rows train, hooks substitute them everywhere, save/load is exact and safe."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from unikit import concepts as C
from unikit import model as M
from unikit import token_files
from unikit import tokens as T
from unikit import vq as V

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base():
    return M.build_model("smoke", seed=0)


@pytest.fixture(scope="module")
def bo_images():
    return C.concept_data(C.load_concept("bo")).images("train")


def fresh(base):
    """A pristine copy of the base model (no tokens, no hooks)."""
    return copy.deepcopy(base)


def snapshot(um) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in um.model.state_dict().items()}


QUESTION = "what colour is <bo>'s hat?"


def _losses(um, ct, codes):
    und = M.understanding_loss(um, None, [ct.understanding_prompt(QUESTION)] * 2, ["yellow", "yellow"])
    gen = M.t2i_loss(um, [ct.generation_prompt("a photo of <bo>")] * 2, codes, caption_dropout=0.0)
    return und, gen


def test_only_new_rows_train(base):
    um = fresh(base)
    ct = T.add_concept(um, "bo", groups={"shared": 2, "understanding": 1, "generation": 1, "editing": 1})
    before = snapshot(um)
    editing_before = [p.detach().clone() for p in ct.parameters(groups=("editing",))]
    trained = ("identifier", "shared", "understanding", "generation")
    params = ct.parameters(groups=trained)
    assert len(params) == 8 and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for p in um.model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    codes = torch.randint(um.codebook_size, (2, um.gen_grid, um.gen_grid), generator=torch.Generator().manual_seed(0))
    curve = []
    for _ in range(8):
        und, gen = _losses(um, ct, codes)
        loss = und + gen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in trained:  # every token of every trained group got a gradient, input and output rows
            for p in ct.rows[g]:
                assert p.grad is not None and bool((p.grad.abs().sum(1) > 0).all()), g
        opt.step()
        curve.append(float(loss.detach()))
    assert curve[-1] < curve[0]
    after = snapshot(um)
    assert all(torch.equal(before[k], after[k]) for k in before)  # every weight, every row of embedding and head
    assert all(p.grad is None for p in um.model.parameters())
    for p, q in zip(ct.parameters(groups=("editing",)), editing_before):
        assert torch.equal(p, q)  # it may hold a gradient, but no optimizer step touched it
    D = um.model.config.text_config.hidden_size
    sizes = ct.sizes()
    shapes = {(k, D) for g, k in sizes.items() if g in trained}
    for p, state in opt.state.items():
        for name, t in state.items():
            assert t.dim() == 0 or tuple(t.shape) in shapes, (name, t.shape)
    assert sum(t.numel() for s in opt.state.values() for t in s.values() if t.dim()) == 2 * 2 * D * 5


def test_hooks_substitute_rows_and_detach(base):
    um = fresh(base)
    bo = T.add_concept(um, "bo", groups={"shared": 2})
    kiki = T.add_concept(um, "kiki", groups={"shared": 1, "generation": 1})
    assert set(bo.tokens()).isdisjoint(kiki.tokens())
    with torch.no_grad():
        for ct, v in ((bo, 3.0), (kiki, -2.0)):
            for inp, out in ct.rows.values():
                inp.fill_(v)
                out.fill_(v / 2)
    ids = torch.tensor([bo.ids["shared"] + kiki.ids["generation"] + [5]])
    emb = um.model.get_input_embeddings()(ids)
    assert torch.equal(emb[0, 0], torch.full_like(emb[0, 0], 3.0))
    assert torch.equal(emb[0, 2], torch.full_like(emb[0, 2], -2.0))
    assert torch.equal(emb[0, 3], um.model.get_input_embeddings().weight[5])
    hidden = torch.randn(3, emb.shape[-1])
    logits = um.model.lm_head(hidden)
    for ct, v in ((bo, 1.5), (kiki, -1.0)):
        cols = logits[:, [i for g in ct.groups for i in ct.ids[g]]]
        assert torch.allclose(cols, (hidden.sum(1, keepdim=True) * v).expand_as(cols), atol=1e-5)
    # both concepts in one prompt: both get gradients
    prompts = [bo.understanding_prompt("is <kiki> " + kiki.text("shared") + " with <bo>?")]
    M.understanding_loss(um, None, prompts, ["no"]).backward()
    assert bo.rows["shared"][0].grad.abs().sum() > 0 and kiki.rows["shared"][0].grad.abs().sum() > 0
    # detach: the model's own rows again; write_into: the model's rows equal the trained ones
    bo.detach()
    assert torch.equal(um.model.get_input_embeddings()(ids)[0, 0], um.model.get_input_embeddings().weight[ids[0, 0]])
    assert not torch.equal(um.model.get_input_embeddings()(ids)[0, 0], emb[0, 0])
    bo.write_into(um)
    assert torch.equal(um.model.get_input_embeddings()(ids)[0, 0], emb[0, 0])
    assert torch.equal(um.model.lm_head.weight[bo.ids["shared"][0]], bo.rows["shared"][1][0].detach())
    bo.attach(um)
    assert bo.attached and len(um.model.get_input_embeddings()._forward_hooks) == 2


def test_hooks_reach_generation(base):
    um = fresh(base)
    ct = T.add_concept(um, "bo", groups={"shared": 2, "generation": 1})
    prompt = ct.generation_prompt("a photo of <bo>")
    _, a = M.generate_images(um, [prompt], guidance=2.0, temperature=0, return_codes=True)
    with torch.no_grad():
        for inp, _ in ct.rows.values():
            inp.mul_(-50.0)
    _, b = M.generate_images(um, [prompt], guidance=2.0, temperature=0, return_codes=True)
    assert not torch.equal(a, b)
    ct.detach()
    _, c = M.generate_images(um, [prompt], guidance=2.0, temperature=0, return_codes=True)
    assert torch.equal(a, c)  # the model's rows still hold the initial values


def test_prompts_and_tokenization(base):
    um = fresh(base)
    ct = T.add_concept(um, "bo", groups={"shared": 2})
    assert ct.identifier == "<bo>" and ct.concept == "bo"
    assert ct.understanding_prompt("is <bo> here?") == "<bo> is <bo_s0> <bo_s1>. is <bo> here?"
    ct.add_group(um, "generation", 1)
    assert ct.text("shared", "generation") == "<bo_s0> <bo_s1> <bo_g0>"
    assert ct.generation_prompt("a photo of <bo>") == "a photo of <bo_s0> <bo_s1> <bo_g0> <bo>"
    assert ct.generation_prompt("<bo> and <bo>", groups=("editing",)) == "<bo> and <bo>"
    assert ct.tokens() == ["<bo>", "<bo_s0>", "<bo_s1>", "<bo_g0>"]
    assert ct.sizes() == {"identifier": 1, "shared": 2, "generation": 1}
    text = ct.generation_prompt("put <bo>'s hat on it.")
    M.check_vocabulary(um.tokenizer, [text])
    toks = um.tokenizer.tokenize(text)
    assert toks == ["put", "<bo_s0>", "<bo_s1>", "<bo_g0>", "<bo>", "'s", "hat", "on", "it", "."]
    ids = um.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[1:5] == ct.ids["shared"] + ct.ids["generation"] + ct.ids["identifier"]
    bare = T.add_concept(um, "kiki", groups={})
    assert bare.understanding_prompt("hello?") == "hello?" and bare.tokens() == ["<kiki>"]


def test_initialisation(base, bo_images):
    um = fresh(base)
    card = C.load_concept("bo")
    ct = T.add_concept(um, card, groups={"shared": 3, "understanding": 2},
                       init={"shared": "kmeans_images", "understanding": "mean"}, images=bo_images)
    word = um.tokenizer.convert_tokens_to_ids(card.shape)
    emb, head = um.model.get_input_embeddings().weight, um.model.lm_head.weight
    assert torch.equal(ct.rows["identifier"][0][0], emb[word]) and torch.equal(ct.rows["identifier"][1][0], head[word])
    n = T.base_vocab_size(um)
    assert torch.allclose(ct.rows["understanding"][0][0], emb[:n].mean(0))
    # k-means over the image tokens' embeddings: the centroids lie among them, and are reproducible
    with torch.no_grad():
        vectors = um.model.prepare_embeddings_for_image_generation(V.vq_encode(um, bo_images).flatten(1))
        vectors = vectors.reshape(-1, vectors.shape[-1])
    centroids = ct.rows["shared"][0].detach()
    assert (centroids >= vectors.min(0).values - 1e-5).all() and (centroids <= vectors.max(0).values + 1e-5).all()
    assert torch.equal(centroids, T.kmeans(vectors, 3, seed=0))
    assert torch.equal(ct.rows["shared"][1][0], head[word])  # output rows from the class word
    codes = V.vq_encode(um, bo_images)
    ct.add_group(um, "generation", 3, init="kmeans_codes", codes=codes)
    assert torch.equal(ct.rows["generation"][0], ct.rows["shared"][0])
    with pytest.raises(T.ConceptTokenError, match="images="):
        ct.add_group(um, "editing", 1, init="kmeans_images")
    with pytest.raises(T.ConceptTokenError, match="unknown init"):
        ct.add_group(um, "editing", 1, init="random")


def test_words_initialisation(base):
    """init="words": one row per token of the card's words, in order, the identifier's own row where
    the words name the concept, the class word past their end; the prompt then reads as the card."""
    um = fresh(base)
    card = C.load_concept("bo")
    words = T.card_words(card)
    assert words.startswith("a plain orange circle. <bo> has") and "<bo> is" not in words
    ct = T.add_concept(um, card, groups={})
    ids = um.tokenizer(words, add_special_tokens=False)["input_ids"]
    ct.add_group(um, "shared", len(ids) + 2, init="words", words=words)
    emb, head = um.model.get_input_embeddings().weight, um.model.lm_head.weight
    rows = ct.rows["shared"][0]
    me = ct.ids["identifier"][0]
    for i, t in enumerate(ids):
        want = ct.rows["identifier"][0][0] if t == me else emb[t]
        assert torch.equal(rows[i], want), f"row {i} is not the embedding of {um.tokenizer.convert_ids_to_tokens(t)}"
    assert me in ids
    word = um.tokenizer.convert_tokens_to_ids(card.shape)
    assert torch.equal(rows[-1], emb[word]) and torch.equal(ct.rows["shared"][1][0], head[word])
    short = T.add_concept(fresh(base), card, groups={"shared": 3}, init="words")  # the card's own words
    assert torch.equal(short.rows["shared"][0], emb[ids[:3]])
    with pytest.raises(T.ConceptTokenError, match="needs words="):
        ct.add_group(um, "editing", 1, init="words")


def test_kmeans():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres[:, None] + 0.1 * torch.randn(3, 50, 2, generator=g)).reshape(-1, 2)
    found = T.kmeans(x, 3, seed=0)
    assert torch.equal(found, T.kmeans(x, 3, seed=0))
    order = found[:, 0] * 100 + found[:, 1]  # sort to compare with the true centres
    assert torch.allclose(found[order.argsort()], centres[[0, 2, 1]], atol=0.1)
    assert T.kmeans(torch.ones(4, 2), 3).shape == (3, 2)  # equal points still give k rows
    with pytest.raises(T.ConceptTokenError, match="2 points cannot make 3 clusters"):
        T.kmeans(x[:2], 3)


def test_save_load_exact(base, tmp_path):
    um = fresh(base)
    ct = T.add_concept(um, "bo", groups={"shared": 2, "understanding": 1, "generation": 1})
    with torch.no_grad():
        for p in ct.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    codes = torch.randint(um.codebook_size, (2, um.gen_grid, um.gen_grid), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        und, gen = _losses(um, ct, codes)
        batch = M.understanding_inputs(um, None, [ct.understanding_prompt(QUESTION)])
        hidden = M.run_language_model(um, M.embed(um, batch["input_ids"]), batch["attention_mask"]).last_hidden_state
        logits = um.model.lm_head(hidden[:, -1])
    path = token_files.save_concept_tokens(ct, tmp_path / "bo.safetensors", extra={"method": "test", "stage": 1})

    um2 = fresh(base)
    ct2 = token_files.load_concept_tokens(um2, path)
    assert ct2.groups == ct.groups and ct2.ids == ct.ids and ct2.extra == {"method": "test", "stage": 1}
    with torch.no_grad():
        und2, gen2 = _losses(um2, ct2, codes)
        hidden2 = M.run_language_model(um2, M.embed(um2, batch["input_ids"]), batch["attention_mask"]).last_hidden_state
        logits2 = um2.model.lm_head(hidden2[:, -1])
    assert torch.equal(und, und2) and torch.equal(gen, gen2) and torch.equal(logits, logits2)
    assert M.answer(um, None, [ct.understanding_prompt(QUESTION)]) == \
        M.answer(um2, None, [ct2.understanding_prompt(QUESTION)])

    with pytest.raises(T.ConceptTokenError, match="already exist.*fresh copy"):
        token_files.load_concept_tokens(um2, path)
    other = M.build_model("smoke", seed=1)
    assert T.base_model_hash(other) != T.base_model_hash(base)
    with pytest.raises(T.ConceptTokenError, match=f"{ct.base_hash}.*{T.base_model_hash(other)}.*personalize"):
        token_files.load_concept_tokens(other, path)


def test_unreadable_files(base, tmp_path):
    um = fresh(base)
    with pytest.raises(T.ConceptTokenError, match="no concept-token file"):
        token_files.load_concept_tokens(um, tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 not safetensors at all")
    with pytest.raises(T.ConceptTokenError, match="corrupt"):
        token_files.load_concept_tokens(um, junk)
    ct = T.add_concept(fresh(base), "bo", groups={"shared": 2})
    good = token_files.save_concept_tokens(ct, tmp_path / "bo.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(T.ConceptTokenError, match="truncated or corrupt"):
        token_files.load_concept_tokens(um, cut)
    assert "<bo>" not in um.tokenizer.get_vocab()  # nothing half-added


def test_base_hash_ignores_tokens_and_survives_save_load(base, tmp_path):
    um = fresh(base)
    h = T.base_model_hash(um)
    ct = T.add_concept(um, "bo", groups={"shared": 2})
    with torch.no_grad():
        ct.rows["shared"][0].add_(1.0)
    ct.write_into(um)
    assert T.base_model_hash(um) == h == ct.base_hash
    M.save_model(um, path=tmp_path / "with_tokens")
    loaded = M.load_model(tmp_path / "with_tokens")
    assert T.base_model_hash(loaded) == h
    del loaded.info["base_vocab_size"]  # a model saved without the record: counted from the tokenizer
    assert T.base_model_hash(loaded) == h
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight[0].add_(1.0)
    assert T.base_model_hash(loaded) != h


def test_errors(base):
    um = fresh(base)
    T.add_concept(um, "bo", groups={})
    with pytest.raises(T.ConceptTokenError, match="<bo> already exists.*fresh copy"):
        T.add_concept(um, "bo", groups={})
    pad = dataclasses.replace(C.load_concept("kiki"), name="pad")
    with pytest.raises(T.ConceptTokenError, match="<pad> already exists.*rename"):
        T.add_concept(um, pad, groups={})
    for groups, pattern in (({"shared": 0}, "size 0"), ({"shared": -2}, "size -2"),
                            ({"style": 2}, "unknown token group 'style'; valid groups: shared, understanding")):
        with pytest.raises(T.ConceptTokenError, match=pattern):
            T.add_concept(um, "kiki", groups=groups)
    ct = T.add_concept(um, "kiki", groups={"shared": 1})
    with pytest.raises(T.ConceptTokenError, match="already has shared"):
        ct.add_group(um, "shared", 1)
    with pytest.raises(T.ConceptTokenError, match="valid groups"):
        ct.parameters(groups=("shard",))
    assert isinstance(T.ConceptTokenError("x"), ValueError)
    assert np.all([t in um.tokenizer.get_vocab() for t in ct.tokens()])


def test_token_semantics_has_a_ground_truth(base):
    from unikit.semantics import word_rows, token_semantics

    um = fresh(base)
    card = C.load_concept("bo")
    ct = T.add_concept(um, card, groups={"shared": 2})

    def set_rows(words):
        with torch.no_grad():
            row = word_rows(um, words).mean(0)
            for g in ct.groups:
                ct.rows[g][0].copy_(row.expand_as(ct.rows[g][0]))
        return token_semantics(um, ct, card)

    assert set_rows([card.shape, card.colour, card.pattern])["tok_identity"] > 0.1
    assert set_rows([card.mark, card.mark_colour])["tok_mark"] > 0.1
    other_mark = next(m for m in ("top", "bottom", "sides", "band") if m != card.mark)
    assert set_rows([other_mark])["tok_mark"] < 0


def test_change_over_training_says_what_the_numbers_say():
    import pandas as pd
    from unikit.semantics import change_over_training

    def frame(mark_start, mark_end):
        return pd.DataFrame([{"order": o, "concept": c, "tok_identity": 0.3, "tok_mark": v}
                             for o, v in ((0, mark_start), (5, mark_end)) for c in ("bo", "kiki")])

    up = change_over_training(frame(0.0, 0.05))
    assert up["tok_mark"]["change"] == pytest.approx(0.05) and "toward" in up["tok_mark"]["sentence"]
    assert "did not move" in up["tok_identity"]["sentence"] and "given at the start" in up["tok_identity"]["sentence"]
    from unikit.profiles import GROUP_STARTS  # the sentence says how each group starts today
    assert all(f"{g}" in up["tok_identity"]["sentence"] for g in GROUP_STARTS)
    down = change_over_training(frame(0.05, 0.0))["tok_mark"]["sentence"]
    assert "away from" in down and "is learned" in down
    assert "did not move" in change_over_training(frame(0.02, 0.025))["tok_mark"]["sentence"]
