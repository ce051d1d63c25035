"""Figures for the lessons: image grids, and seeing inside the model.

Every function returns the matplotlib ``Figure`` it drew, so a notebook shows it and a
test can check it.

**Embedding maps.** Concept tokens are rows of the language model's input embedding
(``[k, D]`` per group). :func:`token_map` projects them to 2-D together with the model's own
vectors (word rows, and the VQ image tokens as the generation path embeds them) by PCA,
UMAP or t-SNE; :func:`plot_token_map` colours them by concept, group or stage. A
:class:`~unikit.trajectory.TokenRecorder` passed as ``on_step`` to the training functions keeps
snapshots (every UniCTokens run keeps one as ``trajectory``), so :func:`plot_token_trajectories`
draws each token's path through the stages.
:func:`nearest_neighbours` lists the closest words and image tokens of every learned token;
:func:`cosine_heatmap` and its helpers compare groups, concepts, stages and token sets.

**Attention maps** (eager attention). :func:`generation_attention` draws an image and
measures, for each of its 8x8 image tokens, how much attention went to the concept tokens
(per group, layer and head); :func:`understanding_attention` measures where an answer looked
in the input image. :func:`attention_rollout` (Abnar & Zuidema) follows attention through
the layers; :func:`attention_share_by_layer` summarises. Interactive versions:
:mod:`unikit.widgets`.

The package: :mod:`.images` (image grids, the tokenizer at work, pretraining curves),
:mod:`.embeddings` (maps, trajectories, neighbours, similarity), :mod:`.attention` (attention
capture, rollout and its figures).
"""

from __future__ import annotations

from ..trajectory import TokenRecorder, TokenSnapshot  # noqa: F401
from .images import (judge_titles, plot_pretraining_curves, plot_token_grids, show_images,
                     show_rows, VizError)  # noqa: F401
from .embeddings import (cosine_heatmap, cosine_matrix, image_token_rows, nearest_neighbours,
                         plot_concept_similarity, plot_group_similarity,
                         plot_similarity_side_by_side, plot_stage_similarity, plot_token_map,
                         plot_token_trajectories, project_2d, PROJECTIONS, stage_similarity,
                         TOKEN_KINDS, token_map, vocabulary_rows)  # noqa: F401
from .attention import (attention_rollout, attention_share_by_layer, AttentionIndexError,
                        eager_attention, generation_attention, GenerationAttention,
                        plot_attention_comparison, plot_attention_share_by_layer,
                        plot_generation_attention, plot_rollout, plot_understanding_attention,
                        understanding_attention, UnderstandingAttention)  # noqa: F401
