"""Seeing inside: embedding maps, similarity heatmaps, attention maps and the explorers, on real model data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from unikit import model as M  # noqa: E402
from unikit import tokens as T  # noqa: E402
from unikit import viz as V  # noqa: E402
from unikit import widgets as W  # noqa: E402
from unikit import world  # noqa: E402
from unikit.concepts import load_concept  # noqa: E402

torch.set_num_threads(1)
PROMPT = "a photo of <bo>"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def setup():
    """A smoke model with <bo> (trained a few steps, recorded) and <kiki> (untouched)."""
    um = M.build_model("smoke", seed=0)
    bo, kiki = T.add_concept(um, "bo"), T.add_concept(um, "kiki")
    rec = V.TokenRecorder()
    rec.start(bo)
    image = world.render(load_concept("bo").scene())
    opt = torch.optim.AdamW(bo.parameters(groups=("identifier", "shared", "understanding")), lr=0.05)
    for stage in ("stage1", "stage3"):
        for step in range(3):
            loss = M.understanding_loss(um, image[None], [bo.understanding_prompt("what colour is <bo>?")], ["orange"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec(stage, step, float(loss.detach()), bo)
    return {"um": um, "bo": bo, "kiki": kiki, "rec": rec, "image": image}


@pytest.fixture(scope="module")
def ga(setup):
    return V.generation_attention(setup["um"], setup["bo"].generation_prompt(PROMPT), setup["bo"], seed=0)


# --------------------------------------------------------------------------- embeddings


def test_token_recorder_round_trips_through_safetensors(setup, tmp_path):
    rec = setup["rec"]
    rec.save(tmp_path / "trajectory.safetensors")
    back = V.TokenRecorder.load(tmp_path / "trajectory.safetensors")
    assert len(back) == len(rec) and back.stages() == rec.stages() == ["start", "stage1", "stage3"]
    for a, b in zip(rec.snapshots, back.snapshots):
        assert (a.order, a.stage, a.step, a.concept, a.names) == (b.order, b.stage, b.step, b.concept, b.names)
        assert all(torch.equal(a.rows[g], b.rows[g]) for g in a.rows)
    assert back.frame().equals(rec.frame())
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a token trajectory"):
        V.TokenRecorder.load(tmp_path / "other.safetensors")


def test_token_map_rows_kinds_and_determinism(setup):
    um, bo, kiki, rec = setup["um"], setup["bo"], setup["kiki"], setup["rec"]
    n_words = T.base_vocab_size(um) - len(set(um.tokenizer.all_special_tokens) & set(um.tokenizer.get_vocab()))
    df = V.token_map(um, [bo, kiki])
    assert list(df.columns) == ["x", "y", "kind", "concept", "group", "stage", "step", "label"]
    counts = df.kind.value_counts()
    assert counts["word"] == n_words and counts["image token"] == um.codebook_size
    assert counts["concept"] == sum(bo.sizes().values()) + sum(kiki.sizes().values())
    assert np.isfinite(df[["x", "y"]].to_numpy()).all()
    assert df[["x", "y"]].equals(V.token_map(um, [bo, kiki])[["x", "y"]])  # deterministic
    assert df.x.var() >= df.y.var()  # PCA: the first component carries the most variance
    # kiki never trained: its identifier sits exactly on its class word ("square")
    square = df[(df.kind == "word") & (df.label == "square")]
    ident = df[df.label == "<kiki>"]
    assert np.allclose(square[["x", "y"]].to_numpy(), ident[["x", "y"]].to_numpy(), atol=1e-9)
    with_snap = V.token_map(um, [bo], snapshots=rec, n_image_tokens=8, context_words=["circle", "square"])
    assert (with_snap.kind == "image token").sum() == 8 and (with_snap.kind == "word").sum() == 2
    assert set(with_snap.stage) == {"", "final", "start", "stage1", "stage3"}
    assert (with_snap.stage == "stage1").sum() == 3 * sum(bo.sizes().values())


def test_projections_and_bad_method(setup):
    um, bo = setup["um"], setup["bo"]
    df = V.token_map(um, [bo], method="tsne", n_image_tokens=16)
    assert len(df) == T.base_vocab_size(um) - 7 + 16 + sum(bo.sizes().values()) and np.isfinite(df.x).all()
    with pytest.raises(ValueError, match="pca, umap, tsne"):
        V.token_map(um, [bo], method="mds")


def test_recorder_keeps_detached_copies(setup):
    bo, rec = setup["bo"], setup["rec"]
    assert len(rec) == 7 and rec.stages() == ["start", "stage1", "stage3"]
    f = rec.frame()
    assert len(f) == 7 * sum(bo.sizes().values())
    first = f[f.order == 0]
    assert np.allclose(first.cos_to_first, 1.0, atol=1e-6)
    last = f[f.order == 6].set_index("token")
    assert (last.loc[bo.groups["shared"], "cos_to_first"] < 0.9999).all()  # trained groups turned
    assert np.allclose(last.loc[bo.groups["generation"], "cos_to_first"], 1.0, atol=1e-6)  # untrained did not
    assert torch.equal(rec.snapshots[-1].rows["shared"], bo.rows["shared"][0].detach())
    assert not rec.snapshots[-1].rows["shared"].requires_grad
    assert not torch.equal(rec.snapshots[0].rows["shared"], rec.snapshots[-1].rows["shared"])


def test_map_and_trajectory_figures(setup):
    um, bo, kiki, rec = setup["um"], setup["bo"], setup["kiki"], setup["rec"]
    df = V.token_map(um, [bo, kiki])
    fig = V.plot_token_map(df, color_by="group")
    n_points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert n_points == len(df)
    with pytest.raises(ValueError, match="concept, group or stage"):
        V.plot_token_map(df, color_by="size")
    fig = V.plot_token_trajectories(um, rec, n_image_tokens=16)
    arrows = [t for t in fig.axes[0].texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == sum(bo.sizes().values()) * (len(rec.stages()) - 1)


def test_nearest_neighbours(setup):
    um, bo, kiki = setup["um"], setup["bo"], setup["kiki"]
    nn = V.nearest_neighbours(um, [bo, kiki], k=3)
    assert len(nn) == sum(bo.sizes().values()) + sum(kiki.sizes().values())
    row = nn[nn.token == "<kiki>"].iloc[0]
    assert row.words[0] == "square" and row.word_cos[0] == pytest.approx(1.0, abs=1e-3)
    assert len(row.image_tokens) == 3 and row.image_cos == sorted(row.image_cos, reverse=True)
    trained = nn[nn.token == "<bo_s0>"].iloc[0]
    assert trained.word_cos[0] < 0.999  # it moved away from "circle"


def test_cosine_heatmaps(setup):
    bo, kiki, rec = setup["bo"], setup["kiki"], setup["rec"]
    sim, la, lb = V.cosine_matrix({"s": bo.rows["shared"][0], "u": bo.rows["understanding"][0]})
    assert sim.shape == (3, 3) and la == ["s[0]", "s[1]", "u"] and la == lb
    assert np.allclose(np.diag(sim), 1, atol=1e-5) and np.allclose(sim, sim.T, atol=1e-6)
    fig = V.plot_group_similarity(bo)
    n = sum(bo.sizes().values())
    assert fig.axes[0].collections[0].get_array().reshape(n, n).shape == (n, n)
    fig = V.plot_concept_similarity([bo, kiki], group="shared")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == bo.groups["shared"] + kiki.groups["shared"]
    with pytest.raises(ValueError, match="groups"):
        V.plot_concept_similarity([bo], group="nonsense")
    st = V.stage_similarity(rec)
    assert list(st.index) == ["start", "stage1", "stage3"] and np.allclose(np.diag(st), 1, atol=1e-5)
    assert st.loc["start", "stage3"] < st.loc["stage1", "stage3"] <= 1
    V.plot_stage_similarity(rec)
    assert len(V.plot_similarity_side_by_side(bo, kiki).axes) >= 2


# --------------------------------------------------------------------------- attention


def test_rollout_definition():
    torch.manual_seed(0)
    a = [torch.rand(1, 2, 4, 4).softmax(-1) for _ in range(3)]
    r = V.attention_rollout(a)
    assert r.shape == (3, 1, 4, 4)
    one = 0.5 * a[0].mean(1) + 0.5 * torch.eye(4)
    assert torch.allclose(r[0], one / one.sum(-1, keepdim=True))
    two = 0.5 * a[1].mean(1) + 0.5 * torch.eye(4)
    assert torch.allclose(r[1], (two / two.sum(-1, keepdim=True)) @ r[0])
    assert torch.allclose(r.sum(-1), torch.ones(3, 1, 4))


def test_generation_attention_shapes_and_mass(setup, ga):
    um, bo = setup["um"], setup["bo"]
    layers, heads, g = um.config.text_config.num_hidden_layers, um.config.text_config.num_attention_heads, um.gen_grid
    assert ga.image.shape == (32, 32, 3) and ga.codes.shape == (g, g)
    assert ga.groups[:4] == ["concept", "identifier", "shared", "generation"]
    for k, v in ga.mass.items():
        assert v.shape == (layers, heads, g, g) and (v >= 0).all()
        assert ga.rollout[k].shape == (layers, g, g)
    total = ga.mass["concept"] + ga.mass["words"] + ga.mass["special"] + ga.mass["image"]
    assert np.allclose(total, 1, atol=1e-5)
    parts = sum(ga.mass[k] for k in ("identifier", "shared", "generation"))
    assert np.allclose(parts, ga.mass["concept"], atol=1e-6)
    assert ga.mass["image"][:, :, 0, 0].max() == 0  # the first code has no earlier codes to look at
    assert [ga.labels[p] for p in ga.positions["shared"]] == bo.groups["shared"]
    # the cached sampling attentions equal a teacher-forced eager forward of prompt + drawn codes
    ids = M.generation_inputs(um, [ga.prompt])["input_ids"]
    codes = ga.codes.reshape(1, -1)
    with torch.no_grad():
        emb = torch.cat([M.embed(um, ids), um.model.prepare_embeddings_for_image_generation(codes[:, :-1])], 1)
        out = M.run_language_model(um, emb, torch.ones(emb.shape[:2], dtype=torch.long), output_attentions=True)
    P = ids.shape[1]
    full = torch.stack([a[0, :, P - 1:, ga.positions["concept"]].sum(-1) for a in out.attentions])
    assert np.allclose(full.numpy().reshape(layers, heads, g, g), ga.mass["concept"], atol=1e-5)
    assert ga.seconds < 2.0


def test_generation_attention_figures_and_bad_indices(ga):
    fig = V.plot_generation_attention(ga)
    heat = fig.axes[1].images[0].get_array()
    assert heat.shape == (8, 8) and np.allclose(heat, ga.mass["concept"].mean((0, 1)), atol=1e-6)
    fig = V.plot_generation_attention(ga, layer=1, head=0, group="shared")
    assert np.allclose(fig.axes[1].images[0].get_array(), ga.mass["shared"][1, 0])
    with pytest.raises(ValueError, match=r"layer 2 does not exist.*0\.\.1"):
        V.plot_generation_attention(ga, layer=2)
    with pytest.raises(ValueError, match=r"head -1 does not exist.*0\.\.1"):
        V.plot_generation_attention(ga, head=-1)
    with pytest.raises(ValueError, match="available: concept, identifier"):
        V.plot_generation_attention(ga, group="editing")
    share = V.attention_share_by_layer(ga)
    assert len(share) == 2 * len(ga.groups)
    assert np.allclose(share.groupby("layer").share.sum() - share[share.group.isin(
        ["identifier", "shared", "generation"])].groupby("layer").share.sum(), 1, atol=1e-5)
    assert len(V.plot_attention_share_by_layer(ga, ga, titles=["a", "b"]).axes) == 2
    assert len(V.plot_attention_comparison(ga, ga).axes) >= 6


def test_understanding_attention(setup):
    um, bo, image = setup["um"], setup["bo"], setup["image"]
    q = bo.understanding_prompt("what colour is <bo>?")
    ua = V.understanding_attention(um, image, q, answer_tokens="orange", tokens=bo)
    assert ua.answer == "orange" and ua.to_image.shape == (2, 2, 8, 8) and ua.rollout_to_image.shape == (2, 8, 8)
    total = sum(ua.to_groups[k] for k in ("concept", "words", "special", "image"))
    assert np.allclose(total, 1, atol=1e-5)
    assert np.allclose(ua.to_image.sum((2, 3)), ua.to_groups["image"], atol=1e-6)
    assert {"identifier", "shared", "understanding"} <= set(ua.groups)
    own = V.understanding_attention(um, image, q, tokens=bo)
    assert own.answer == M.answer(um, image[None], [q])[0]
    fig = V.plot_understanding_attention(ua, layer=0)
    assert np.allclose(fig.axes[1].images[0].get_array(), ua.to_image[0].mean(0))
    with pytest.raises(ValueError, match="valid heads are 0..1"):
        V.plot_understanding_attention(ua, head=5)
    assert set(V.attention_share_by_layer(ua).group) == set(ua.groups)


def test_sdpa_model_switches_to_eager_and_back():
    eager = M.build_model("smoke", seed=0)
    sdpa = M.build_model("smoke", seed=0, attn_implementation="sdpa")
    assert sdpa.model.config._attn_implementation == "sdpa"
    a = V.generation_attention(sdpa, "a photo of a red circle", focus_words=["circle"])
    b = V.generation_attention(eager, "a photo of a red circle", focus_words=["circle"])
    assert sdpa.model.config._attn_implementation == "sdpa"  # restored
    assert "'circle'" in a.groups and a.mass["words"].sum() > 0
    assert torch.equal(a.codes, b.codes)
    for k in b.mass:
        assert np.allclose(a.mass[k], b.mass[k], atol=1e-5) and np.allclose(a.rollout[k], b.rollout[k], atol=1e-5)
    image = world.render(load_concept("bo").scene())
    ua = V.understanding_attention(sdpa, image, "what colour is the object?", answer_tokens="orange")
    assert sdpa.model.config._attn_implementation == "sdpa" and ua.to_image.sum() > 0


# --------------------------------------------------------------------------- explorers


def test_attention_explorer_redraws_on_value_changes(setup, ga):
    ex = W.AttentionExplorer(setup["um"], ga)
    heat = lambda: ex.figure.axes[1].images[0].get_array().copy()  # noqa: E731
    before, png = heat(), ex.view.value
    assert png[:4] == b"\x89PNG" and np.allclose(before, ga.grid("concept"))
    ex.layer.value = 1
    assert np.allclose(heat(), ga.grid("concept", layer=1)) and not np.allclose(heat(), before)
    ex.head.value = 0
    ex.group.value = "shared"
    assert np.allclose(heat(), ga.grid("shared", 1, 0)) and ex.view.value != png and ex.redraws == 4
    assert ex.widget.children[0].children[0] is ex.layer


def test_token_map_explorer(setup):
    um, bo, kiki, rec = setup["um"], setup["bo"], setup["kiki"], setup["rec"]
    ex = W.TokenMapExplorer(um, {"both": [bo, kiki], "training": rec}, n_image_tokens=16)
    points = lambda: sum(len(c.get_offsets()) for c in ex.figure.axes[0].collections)  # noqa: E731
    all_points = points()
    ex.concept.value = "kiki"
    assert points() == all_points - sum(bo.sizes().values())
    ex.token_set.value = "training"
    ex.concept.value = "(all)"
    ex.stage.value = "stage1"
    assert "stage stage1" in ex.figure.axes[0].get_title()
    n_context = len(ex.frame()[ex.frame().kind != "concept"])
    assert points() == n_context + 3 * sum(bo.sizes().values())
    first = ex.frame()
    ex.method.value = "tsne"
    assert not np.allclose(ex.frame().x.to_numpy(), first.x.to_numpy())


def test_prompt_explorer_generates_and_reports_bad_words(setup):
    um, bo = setup["um"], setup["bo"]
    ex = W.PromptExplorer(um, bo, prompt="a photo of <bo>")
    assert ex.attention.prompt == bo.generation_prompt("a photo of <bo>")
    img = ex.figure.axes[0].images[0].get_array().copy()
    ex.seed.value = 3
    assert not np.array_equal(ex.figure.axes[0].images[0].get_array(), img)
    fig = ex.figure
    ex.prompt.value = "a photo of <bo> on the moonbeam"
    assert "moonbeam" in ex.message.value and ex.figure is fig  # message shown, figure kept
    ex.prompt.value = "a photo of <bo> wearing a red hat"
    assert ex.message.value == "" and ex.figure is not fig


def test_pretraining_curves_show_one_column_per_phase():
    history = {"vq": [[s, 1.0 / (s + 1), 0.1] for s in range(40)], "vision": [[s, 2.0 - s / 40] for s in range(40)],
               "lm": [[s, ("vqa", "t2i")[s % 2], 3.0 - s / 50] for s in range(60)]}
    fig = V.plot_pretraining_curves({"a run": history, "tokenizer only": {"vq": history["vq"]}})
    axes = np.asarray(fig.axes).reshape(2, 3)
    assert [len(a.lines) for a in axes[0]] == [1, 1, 2]  # tokenizer, encoder, one curve per task
    assert [len(a.lines) for a in axes[1]] == [1, 0, 0]
    assert "understanding encoder (40 steps)" in axes[0, 1].get_title()
