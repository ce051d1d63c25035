"""The model layer every lesson uses: a small Janus (``JanusForConditionalGeneration``).

Janus reads images for *understanding* through a SigLIP-style vision encoder (+ an
aligner), and writes images for *generation* as VQ codes through a separate
generation head: decoupled visual encoding. The kit builds tiny Janus models for the
32x32 world (:func:`build_model`), or loads any Janus checkpoint (:func:`load_model`).

Prompt formats (token ids, built here and the same in training and inference;
``N`` = understanding placeholders per image, ``T`` = VQ codes per image):

- understanding: ``<bos> [<begin_of_image> <image_placeholder>*N <end_of_image>]*k question <sep> answer <eos>``
  (one bracket per image, k = 0, 1, 2, ...; the loss covers ``answer <eos>``);
- text-to-image: ``<bos> prompt <begin_of_image>`` then T image codes;
- editing: ``<bos> <begin_of_image> <image_placeholder>*N <end_of_image> instruction <begin_of_image>`` then T codes.

Classifier-free guidance (Janus's way): the unconditional prompt replaces every token
but ``<bos>`` and ``<begin_of_image>`` by ``<pad>`` (so an edit's unconditional prompt
has no source image either); caption dropout in training does the same.

Batches are left-padded with an attention mask. Images are ``uint8[B, 32, 32, 3]``
numpy arrays (or lists of arrays / PIL images).

The package: :mod:`.vocabulary` (tokenizer, processor), :mod:`.janus` (configs, the
:class:`UnifiedModel` bundle, build, load, save), :mod:`.inputs` (prompt batches, embeddings),
:mod:`.tasks` (answer, generate, edit and their losses), :mod:`.attention` (attention maps).
"""

from __future__ import annotations

from ..formats import check_vocabulary, OutOfVocabularyError  # noqa: F401
from .vocabulary import (base_words, build_processor, build_tokenizer, EXTRA_WORDS, SPECIAL,  # noqa: F401
                         SPLIT_PATTERN)
from .janus import (base_metrics, build_model, DEFAULT_MODEL_DIR, INFO_FILE, load_model,
                    make_config, MAKE_DEFAULT, ModelError, move_to_vocabulary, parameter_table,
                    PROFILES, quiet_transformers, save_model, UnifiedModel, VQ_ADAPTED)  # noqa: F401
from .inputs import (check_length, embed, EmbedHook, generation_inputs, ImageResized, kv_cache,
                     pixel_values, run_language_model, unconditional_ids, understanding_inputs)  # noqa: F401
from .tasks import (answer, decode_images, DEFAULT_SAMPLING, edit_image, edit_loss, generate_images,
                    sample_image_codes, sampling, t2i_loss, understanding_loss)  # noqa: F401
from .attention import (attention_maps, AttentionMaps, ensure_eager_attention)  # noqa: F401
