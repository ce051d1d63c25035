"""Pretraining the kit's base model on the world's generic objects.

Four phases, each resumable from its last checkpoint:

1. **The image tokenizer** (``JanusVQVAE``), trained from scratch by running its parts
   (:mod:`unikit.vq`), with dead-code restarts. Its reconstructions cap what generation
   can ever show, so a gate (:func:`gate_tokenizer`) stops the run if the judge reads too
   few of them right.
2. **The understanding encoder** (vision model + aligner) on the renderer's attribute
   labels (:func:`train_vision`): the stand-in for the pretrained SigLIP encoder Janus-Pro
   starts from, so that the language model reads features that already show the object.
3. **Everything else** (vision encoder, aligners, language model, heads) on a mixture of
   tasks, the tokenizer frozen and the corpus's VQ codes cached once; understanding tasks
   alone for the first ``perception_steps``:

   - understanding: captioning, VQA, yes/no recognition ("is there a red circle in this
     image?") and *same object?* on image pairs (the pairs differ by the mark alone half
     the time, so the understanding path learns to see the mark);
   - text-to-image: caption -> VQ codes through the generation head, with caption dropout
     matching the unconditional prompt ``generate`` builds for guidance;
   - instruction editing: source image through the understanding path + instruction ->
     target codes ("make the hat blue", "remove the toy").
4. **Facts stated first** (``facts_steps``; :mod:`unikit.preamble`): the same mixture plus
   requests and questions after sentences such as "the red circle has a blue hat.", which the
   request must use ("a red circle wearing its hat") or ignore: the format in which
   personalization states what only words carry.

Held-out shape+colour pairs (:data:`unikit.world.HELDOUT_PAIRS`) never appear in any task.

Modules: :mod:`.config` (settings, profiles), :mod:`.data` (task examples, corpus,
batches), :mod:`.phases` (phase bookkeeping, checkpoints, reusable phase files),
:mod:`.training` (each phase's loop), :mod:`.quality` (judged metrics, calibration, re-check),
:mod:`.run` (a whole run, re-scoring), :mod:`.replicates` (the shipped recipe's run-to-run spread).

Output directory: the model (``save_pretrained``, safetensors) with its processor,
``metrics.json`` (judge-scored quality on held-out data), ``history.json`` (loss curves)
and ``MODEL_CARD.md`` (config, seed, command, wall time).
"""

from .config import (TASKS, GENERATION_TASKS, CAPTION_Q, SAME_Q, PretrainConfig, CONFIGS, PretrainError,  # noqa: F401
    recorded_config, pretrain_config, VISION_INITS, LM_INITS, VISION_READS, FACT_TASKS)
from .data import (YESNO_ORDER, attribute_question, attribute_example, yesno_attributes, recognition_question,  # noqa: F401
    recognition_example, t2i_prompt, same_object_pair, Corpus, build_corpus, task_batch, fact_ask_base, task_loss,
    shard_batch)
from .phases import (PHASES, LATE_PHASES, PHASE_CLOCK, VISION_SETTINGS, PHASE_SETTINGS, PHASE_FILES, VISION_SIZES, PHASE_SIZES, world_version,  # noqa: F401
    phase_settings, recorded_phase_settings, setting_differences, checkpoint_dir, save_checkpoint, load_checkpoint,
    PHASE_MODULES, phase_state, save_phase_weights, record_phase, load_phase_state, load_phase_weights)
from .training import (train_vq, VISION_ATTRIBUTES, init_vision_fan_in, init_language_fan_in, vision_parameters,  # noqa: F401
    train_vision, ALIGN_WORDS, train_align, lm_parameters,
    late_phase_config, train_lm)
from .quality import (encoder_features, encoder_probe, all_right, tokenizer_quality, evaluate_base, evaluate_facts,  # noqa: F401
    EVAL_TASKS, FACT_KEYS, TARGETS, SAMPLING_GRID, CALIBRATION_SEED, calibrate_sampling, calibrate_and_score,
    judge_hash_of, QUALITY_KEYS, quality_check)
from .run import (pretrain, finished_model, plan_run, rescore, gate_tokenizer, model_card)  # noqa: F401
from .replicates import REPLICATES_DIR, load_replicates, spread_table, spread_sentences, wall_minutes  # noqa: F401
