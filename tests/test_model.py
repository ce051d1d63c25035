"""The model layer: tokenizer, configs, losses, generation, load/save, Janus-Pro-style checkpoints."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from unikit import model as M
from unikit import vq as V
from unikit import world

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def um():
    return M.build_model("smoke", seed=0)


@pytest.fixture(scope="module")
def batch():
    scenes = world.generic_scenes(4, seed=3, item_prob=0.6)
    rng = random.Random(0)
    edits = [world.random_edit(s, rng) for s in scenes]
    return {
        "images": world.render_many(scenes),
        "questions": [world.vqa_pairs(s)[1][0] for s in scenes],
        "answers": [world.vqa_pairs(s)[1][1] for s in scenes],
        "captions": [world.caption(s) for s in scenes],
        "instructions": [e[0] for e in edits],
        "targets": world.render_many([e[1] for e in edits]),
    }


@pytest.fixture(scope="module")
def saved(um, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "smoke"
    M.save_model(um, path=path)
    return path


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_specials():
    tok = M.build_tokenizer()
    for text in ["a striped red circle wearing a yellow hat on a white background",
                 "what colour is the hat of the object?", "tell me about it."]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.tokenize("what is it's?") == ["what", "is", "it", "'s", "?"]
    assert tok.tokenize("A Photo.") == ["a", "photo", "."]
    for name in ("image_token", "boi_token", "eoi_token"):
        assert len(tok(getattr(tok, name), add_special_tokens=False)["input_ids"]) == 1
    assert {tok.bos_token, tok.eos_token, tok.pad_token, tok.sep_token} == {"<bos>", "<eos>", "<pad>", "<sep>"}


def test_out_of_vocabulary_words_are_listed(um):
    with pytest.raises(M.OutOfVocabularyError) as info:
        M.check_vocabulary(um.tokenizer, ["a photo of <zz>'s zebra", "a giraffe?"])
    assert info.value.words == ["<zz>", "giraffe", "zebra"]
    assert "unikit.tokens.add_concept" in str(info.value)
    with pytest.raises(M.OutOfVocabularyError):
        M.answer(um, None, ["what colour is the zebra?"])
    with pytest.raises(M.OutOfVocabularyError):
        M.generate_images(um, ["a zebra"])
    with pytest.raises(Exception):  # no <unk>: even the raw tokenizer refuses
        um.tokenizer("zebra")


def test_concept_tokens_through_the_model_layer(batch, tmp_path):
    from unikit.tokens import add_concept

    um = M.build_model("smoke", seed=1)
    emb_before = um.model.get_input_embeddings().weight.detach().clone()
    ct = add_concept(um, "bo", groups={"shared": 1})
    ids = ct.ids["identifier"] + ct.ids["shared"]
    tok = um.tokenizer
    assert tok.tokenize("is <bo>'s hat red? <bo>. <bo>?") == ["is", "<bo>", "'s", "hat", "red", "?", "<bo>", ".", "<bo>", "?"]
    emb = um.model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) == um.model.lm_head.weight.shape[0] == um.config.text_config.vocab_size
    assert torch.equal(emb[: emb_before.shape[0]], emb_before)
    assert torch.equal(emb[ids[0]], emb[tok.convert_tokens_to_ids("circle")])
    loss = M.understanding_loss(um, batch["images"][:2], ["is <bo> in this image?"] * 2, ["yes", "<bo>"])
    loss.backward()
    assert emb.grad is None and ct.rows["identifier"][0].grad.abs().sum() > 0  # the model is frozen; the rows learn
    ct.write_into(um)
    assert len(M.answer(um, None, ["what is <bo>'s toy?"])) == 1
    assert M.generate_images(um, ["<bo> wearing its hat"], seed=0).shape == (1, 32, 32, 3)
    um2 = M.load_model(M.save_model(um, path=tmp_path / "with-bo"))
    assert um2.tokenizer.tokenize("<bo>'s hat") == ["<bo>", "'s", "hat"]
    assert M.answer(um2, None, ["what is <bo>'s toy?"]) == M.answer(um, None, ["what is <bo>'s toy?"])


# --------------------------------------------------------------------------- configs


def test_configs_and_parameter_table(um):
    for profile in ("smoke", "teach"):
        cfg = M.make_config(profile)
        v, q, t = cfg.vision_config, cfg.vq_config, cfg.text_config
        assert v.projection_dim == q.projection_dim == q.image_token_embed_dim == t.hidden_size
        assert q.num_patches == v.image_size // v.patch_size == 8 and v.num_image_tokens == 64
        assert cfg.tie_word_embeddings is False
    table = M.parameter_table(um)
    parts = {k: n for k, n in table.items() if k != "total"}
    assert sum(parts.values()) == table["total"] == sum(p.numel() for p in um.model.parameters())
    assert um.num_image_tokens == um.num_gen_tokens == 64 and um.gen_grid == 8
    assert um.model.lm_head.weight.data_ptr() != um.model.get_input_embeddings().weight.data_ptr()
    with pytest.raises(M.ModelError):
        M.make_config("huge")


def test_pixel_values_fast_path_matches_processor(um, batch):
    fast = M.pixel_values(um, batch["images"])
    slow = um.processor.image_processor(images=list(batch["images"]), return_tensors="pt")["pixel_values"]
    assert torch.allclose(fast, slow, atol=1e-6)
    assert torch.allclose(fast, V.images_to_unit(batch["images"]), atol=1e-6)


# --------------------------------------------------------------------------- losses


def _train(um, loss_fn, steps=6, lr=3e-3):
    opt = torch.optim.Adam([p for p in um.model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_losses_decrease(batch):
    um = M.build_model("smoke", seed=2)
    um.model.train()
    codes = V.vq_encode(um, batch["images"])
    tgt = V.vq_encode(um, batch["targets"])
    assert codes.shape == (4, 8, 8) and codes.dtype == torch.long
    und = _train(um, lambda: M.understanding_loss(um, batch["images"], batch["questions"], batch["answers"]))
    t2i = _train(um, lambda: M.t2i_loss(um, batch["captions"], codes, caption_dropout=0.0))
    edit = _train(um, lambda: M.edit_loss(um, batch["images"], batch["instructions"], tgt))
    for name, ls in (("understanding", und), ("t2i", t2i), ("edit", edit)):
        assert all(np.isfinite(ls)) and ls[-1] < ls[0], (name, ls)
    # text-only QA and mixed batches, per-example losses, caption dropout
    per = M.understanding_loss(um, [batch["images"][0], None], ["what shape is the object?", "what colour is it?"],
                               ["circle", "red"], reduction="none")
    assert per.shape == (2,)
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(M.t2i_loss(um, batch["captions"], codes, caption_dropout=1.0, generator=g))
    assert torch.isfinite(M.edit_loss(um, batch["images"], batch["instructions"], tgt, caption_dropout=0.5, generator=g))


def test_several_images_per_example(um, batch):
    imgs = batch["images"]
    pairs = [np.stack([imgs[0], imgs[1]]), None, imgs[2]]
    b = M.understanding_inputs(um, pairs, ["is the object in both images the same?"] * 3, ["yes", "no", "no"])
    assert (b["input_ids"] == um.ids["image"]).sum(1).tolist() == [128, 0, 64]
    assert b["pixel_values"].shape == (3, 3, 32, 32)
    assert torch.isfinite(M.understanding_loss(um, pairs, ["describe the image."] * 3, ["a red circle", "no", "yes"]))
    two = [np.stack([imgs[0], imgs[1]])] * 2
    assert M.edit_image(um, two, ["remove the hat"] * 2, n=2).shape == (4, 32, 32, 3)


def test_embed_hook_is_applied(um, batch):
    codes = V.vq_encode(um, batch["images"][:2])
    calls = []

    def hook(ids, emb):
        calls.append(ids.shape)
        return emb * 0
    base = M.t2i_loss(um, batch["captions"][:2], codes, caption_dropout=0.0)
    hooked = M.t2i_loss(um, batch["captions"][:2], codes, caption_dropout=0.0, embed_hook=hook)
    assert calls and not torch.allclose(base, hooked)


def test_vq_loss_falls_and_dead_codes_restart(batch):
    um = M.build_model("smoke", seed=3)
    vq = um.vq.train()
    opt = torch.optim.Adam(vq.parameters(), lr=3e-3)
    images = np.concatenate([batch["images"], batch["targets"]])
    losses = []
    for _ in range(8):
        stats = {}
        loss, recon = V.vq_loss(vq, images, stats=stats)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert recon.shape == (8, 3, 32, 32) and losses[-1] < losses[0]
    usage = V.code_usage(stats["ids"], um.codebook_size)
    before = vq.quantize.embedding.weight.detach().clone()
    n = V.restart_dead_codes(vq, stats["latents"], usage, generator=torch.Generator().manual_seed(0))
    dead = usage == 0
    assert n == int(dead.sum()) > 0
    after = vq.quantize.embedding.weight.detach()
    assert torch.equal(after[~dead], before[~dead]) and not torch.equal(after[dead], before[dead])
    # ids decode through the model's own decoder the same way
    ids = V.vq_encode(vq, images)
    assert np.array_equal(V.vq_decode(vq, ids), M.decode_images(um, ids))
    assert V.vq_decode(um, ids).shape == (8, 32, 32, 3)


# --------------------------------------------------------------------------- inference


def test_answer_generate_edit_shapes_and_determinism(um, batch):
    answers = M.answer(um, batch["images"], batch["questions"], max_new_tokens=3)
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    assert M.answer(um, batch["images"], batch["questions"], max_new_tokens=3) == answers
    assert len(M.answer(um, None, ["what colour is the hat of the object?"])) == 1
    g = M.generate_images(um, batch["captions"][:2], n=2, seed=5)
    assert g.shape == (4, 32, 32, 3) and g.dtype == np.uint8
    assert np.array_equal(g, M.generate_images(um, batch["captions"][:2], n=2, seed=5))
    assert not np.array_equal(g, M.generate_images(um, batch["captions"][:2], n=2, seed=6))
    e = M.edit_image(um, batch["images"][:2], batch["instructions"][:2], seed=1)
    assert e.shape == (2, 32, 32, 3) and e.dtype == np.uint8
    assert np.array_equal(e, M.edit_image(um, batch["images"][:2], batch["instructions"][:2], seed=1))
    assert M.edit_image(um, batch["images"][:1], batch["instructions"][:1], n=3).shape == (3, 32, 32, 3)


def test_own_sampling_loop_matches_generate(um, batch):
    b = M.generation_inputs(um, batch["captions"][:2])
    codes, _ = M.sample_image_codes(um, b["input_ids"], b["attention_mask"], guidance=3.0, seed=7)
    _, ref = M.generate_images(um, batch["captions"][:2], guidance=3.0, seed=7, return_codes=True)
    assert torch.equal(codes.view(-1, 8, 8), ref)


def test_refusals(um, batch):
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError, match="guidance > 1"):
            M.generate_images(um, ["a red circle"], guidance=bad)
        with pytest.raises(ValueError, match="guidance > 1"):
            M.edit_image(um, batch["images"][:1], ["remove the hat"], guidance=bad)
    long = " ".join(["red"] * (um.context_length - 10))
    with pytest.raises(M.ModelError, match="context"):
        M.generate_images(um, [long])
    with pytest.raises(M.ModelError, match="context"):
        M.answer(um, None, [long], max_new_tokens=20)


def test_attention_maps_switch_sdpa_to_eager(saved, batch):
    um = M.load_model(saved, attn_implementation="sdpa")
    maps = M.attention_maps(um, batch["images"][:2], questions=batch["questions"][:2])
    L = maps.understanding[0].shape[-1]
    assert len(maps.understanding) == um.config.text_config.num_hidden_layers
    assert maps.understanding[0].shape[:2] == (2, um.config.text_config.num_attention_heads)
    assert len(maps.tokens[0]) == L and maps.tokens[0].count("<image_placeholder>") == 64
    gen = M.attention_maps(um, prompts=["a red circle"], steps=(0, 10))
    assert set(gen.generation) == {0, 10}
    assert gen.generation[10][0].shape[-1] == gen.generation[0][0].shape[-1] + 10
    assert gen.images.shape == (1, 32, 32, 3)
    assert um.model.config._attn_implementation == "sdpa"  # restored


# --------------------------------------------------------------------------- load / save


def test_save_load_round_trip(um, saved, batch):
    um2 = M.load_model(saved)
    assert um2.profile == "smoke" and um2.model.config._attn_implementation == "eager"
    assert M.answer(um2, batch["images"], batch["questions"]) == M.answer(um, batch["images"], batch["questions"])
    assert np.array_equal(M.generate_images(um2, batch["captions"][:2], seed=2),
                          M.generate_images(um, batch["captions"][:2], seed=2))
    with torch.no_grad():
        a = M.understanding_loss(um, batch["images"], batch["questions"], batch["answers"])
        b = M.understanding_loss(um2, batch["images"], batch["questions"], batch["answers"])
    assert torch.equal(a, b)


def test_janus_pro_style_checkpoint(tmp_path, batch):
    """A plain JanusConfig model (other sizes: patch 8 -> 16 placeholders, 4x4 VQ grid) saved by
    transformers itself goes through load_model and the kit's functions."""
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    tok = M.build_tokenizer()
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                               patch_size=8, projection_dim=32, num_image_tokens=16)
    vqc = JanusVQVAEConfig(embed_dim=4, num_embeddings=32, latent_channels=32, base_channels=32,
                           channel_multiplier=[1, 1, 1, 1], num_res_blocks=1, projection_dim=32, image_token_embed_dim=32)
    cfg = JanusConfig(text_config=text, vision_config=vision, vq_config=vqc,
                      image_token_id=tok.convert_tokens_to_ids(tok.image_token))
    torch.manual_seed(0)
    model = JanusForConditionalGeneration(cfg).eval()
    model.save_pretrained(tmp_path / "pro")
    M.build_processor(tok, 32, 16).save_pretrained(tmp_path / "pro")
    um = M.load_model(tmp_path / "pro")
    assert (um.num_image_tokens, um.gen_grid, um.codebook_size) == (16, 4, 32)
    assert len(M.answer(um, batch["images"][:2], batch["questions"][:2])) == 2
    assert M.generate_images(um, ["a red circle"], n=2, seed=0).shape == (2, 32, 32, 3)
    assert M.edit_image(um, batch["images"][:1], ["remove the hat"], seed=0).shape == (1, 32, 32, 3)
    # tokenizer files only (no processor config): the processor is rebuilt from the model config
    for f in ("processor_config.json", "preprocessor_config.json"):
        (tmp_path / "pro" / f).unlink(missing_ok=True)
    assert M.load_model(tmp_path / "pro").processor.num_image_tokens == 16


def test_checkpoint_errors(saved, tmp_path, monkeypatch):
    import shutil

    with pytest.raises(M.ModelError, match="no checkpoint directory"):
        M.load_model(tmp_path / "nowhere")
    monkeypatch.setattr(M.janus, "DEFAULT_MODEL_DIR", tmp_path / "base_model")  # where load_model reads it
    with pytest.raises(M.ModelError, match="unikit pretrain --profile ship8 --workers 2 --out data/base_model"):
        M.load_model(None)
    with pytest.raises(M.ModelError, match="no network"):
        M.load_model("nobody-here/not-a-cached-model")
    for missing, word in (("model.safetensors", "weights"), ("config.json", "config"), ("tokenizer.json", "tokenizer")):
        part = tmp_path / f"no-{word}"
        shutil.copytree(saved, part)
        (part / missing).unlink()
        with pytest.raises(M.ModelError, match=word):
            M.load_model(part)
    other = tmp_path / "llama"
    shutil.copytree(saved, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(M.ModelError, match="not Janus"):
        M.load_model(other)
