"""Before training: the peak memory and the time per step a personalization run needs.

:func:`plan` reads a Janus config (a loaded model's, or ``config.json`` alone: parameters are
counted on the meta device, no weights are read) and a schedule, and estimates:

- **weights**: every parameter at the run's dtype; the concept rows and their AdamW state in fp32;
- **activations**: what autograd keeps for the backward pass through the frozen language model
  (gradients reach the concept rows through every layer): per token and layer
  ``6 D + 2 D_kv + 4 I`` values (norm inputs, q/k/v, attention output, the MLP's four
  intermediates), plus ``2 H L`` attention scores per token with eager attention, for the
  sequences of every task a step trains (understanding, generation, editing);
- **logits**: the fp32 scores the losses keep (answer tokens x vocabulary, image tokens x codebook);
- **time**: forward FLOPs ``2 N_lm`` per token plus attention, times 2 for the backward pass to
  the inputs (the frozen weights get no gradient), divided by a matmul throughput measured on
  the device at the run's dtype, times an efficiency calibrated on this kit's CPU runs.

:func:`check` refuses a plan that does not fit the device's memory and names the change that
would make it fit. The estimates are estimates: ``benchmarks/bench_planner.py`` prints them
beside measured steps.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import torch

from .runtime import parse_dtype
from .profiles import GROUP_SIZES

BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}
# the share of the measured matmul throughput a whole training step reaches (small kernels,
# norms, softmax, Python), from benchmarks/bench_planner.py on the teach model, 2 CPU cores: steps
# ran 1.32x slower than estimated at 0.35, and 0.86x at 0.27 in a second run whose matmul probe
# read 100 instead of 143 GFLOP/s (the probe varies that much run to run on this machine)
EFFICIENCY = 0.27
# the tasks each method's heaviest stage trains at once (their graphs are alive together)
TASKS = {"text_prompt": (), "oracle_text": (), "understanding_only": ("understanding",),
         "generation_only": ("generation",), "separate": ("generation",), "unictokens": ("understanding", "generation"),
         "unictokens_stage1": ("understanding",)}
JOINT_TASKS = ("understanding", "generation", "editing")
PROMPT_WORDS = 40  # text tokens around the image in a prompt (question, concept tokens, answer)


class PlanError(ValueError):
    """A run that will not fit the device; the message names the setting to change."""


@dataclass(frozen=True)
class Shape:
    """The sizes the estimates need, read from a ``JanusConfig``."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    image_tokens: int  # placeholders per understanding image
    gen_tokens: int  # codes per generated image
    codebook: int
    lm_parameters: int
    parameters: int

    @classmethod
    def of(cls, config) -> "Shape":
        from transformers import JanusForConditionalGeneration

        with torch.device("meta"):
            model = JanusForConditionalGeneration(config)
        lm = sum(p.numel() for p in model.model.language_model.parameters())
        total = sum(p.numel() for p in model.parameters())
        tc, vc, qc = config.text_config, config.vision_config, config.vq_config
        grid = vc.image_size // vc.patch_size
        return cls(hidden=tc.hidden_size, intermediate=tc.intermediate_size, layers=tc.num_hidden_layers,
                   heads=tc.num_attention_heads, kv_heads=tc.num_key_value_heads or tc.num_attention_heads,
                   vocab=tc.vocab_size, image_tokens=grid * grid, gen_tokens=qc.num_patches ** 2,
                   codebook=qc.num_embeddings, lm_parameters=lm, parameters=total)


@dataclass
class Plan:
    """A run's estimated needs (bytes, FLOPs, seconds) and the device's memory."""

    device: str
    dtype: str
    method: str
    sequences: dict  # task -> (sequences per step, tokens per sequence)
    weights: int
    trainable_rows: int
    optimizer: int
    activations: int
    logits: int
    peak: int
    available: int | None
    flops_per_step: float
    throughput: float  # FLOP/s the device's matmuls reached at this dtype
    seconds_per_step: float
    steps: int
    inputs: dict = dataclasses.field(default_factory=dict, repr=False)  # what :func:`plan` was given

    @property
    def fits(self) -> bool:
        return self.available is None or self.peak <= self.available

    @property
    def seconds(self) -> float:
        return self.seconds_per_step * self.steps

    def lines(self) -> list[str]:
        gib = 2 ** 30
        seqs = ", ".join(f"{t} {n} x {L} tokens" for t, (n, L) in self.sequences.items()) or "nothing trains"
        avail = "unknown" if self.available is None else f"{self.available / gib:.2f} GiB"
        return [f"plan for {self.method} on {self.device} ({self.dtype}): {seqs} per step",
                f"  weights {self.weights / gib:.2f} GiB, concept rows {self.trainable_rows:,} values, "
                f"optimizer {self.optimizer / 2**20:.1f} MiB",
                f"  activations {self.activations / gib:.2f} GiB, logits {self.logits / gib:.2f} GiB",
                f"  peak ~{self.peak / gib:.2f} GiB of {avail} available: {'fits' if self.fits else 'DOES NOT FIT'}",
                f"  ~{self.flops_per_step / 1e9:.1f} GFLOP per step at {self.throughput / 1e9:.1f} GFLOP/s measured "
                f"-> ~{self.seconds_per_step:.2f} s per step, ~{self.seconds / 60:.1f} min for {self.steps} steps"]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def available_memory(device) -> int | None:
    """Bytes the device can still give: free CUDA memory, MPS's recommended limit, or the
    machine's available RAM for the CPU (None when it cannot be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory())
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def measure_throughput(device, dtype, n: int = 256, k: int = 512, repeats: int = 5) -> float:
    """FLOP/s of ``[n, k] @ [k, 4k]`` matmuls on ``device`` at ``dtype`` (best of ``repeats``)."""
    device, dtype = torch.device(device), parse_dtype(dtype)
    a = torch.randn(n, k, device=device, dtype=dtype)
    b = torch.randn(k, 4 * k, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n * k * 4 * k / best


def _sequences(shape: Shape, method: str, batch: int, concepts: int) -> dict:
    tasks = TASKS.get(method, JOINT_TASKS)
    per = batch * concepts
    lengths = {"understanding": shape.image_tokens + PROMPT_WORDS,
               "generation": PROMPT_WORDS + shape.gen_tokens,
               "editing": shape.image_tokens + PROMPT_WORDS + shape.gen_tokens}
    return {t: (per, lengths[t]) for t in tasks}


def plan(config, sched, method: str = "unictokens", concepts: int = 1, device="cpu", dtype="float32",
         attn_implementation: str = "eager", group_sizes: dict | None = None, available: int | None = -1,
         throughput: float | None = None) -> Plan:
    """Estimate a personalization run of ``method`` (its heaviest stage) on ``concepts`` concepts.

    ``config``: a ``JanusConfig`` (``um.model.config``) or a checkpoint directory. ``sched``: a
    ``profiles.Schedule``. ``available``: bytes free (default: read from the device; None: unknown).
    ``throughput``: FLOP/s (default: measured on the device, about a second).
    """
    inputs = dict(config=config, sched=sched, method=method, concepts=concepts, device=device, dtype=dtype,
                  attn_implementation=attn_implementation, group_sizes=group_sizes)
    if isinstance(config, (str, os.PathLike)):
        from transformers import JanusConfig
        config = JanusConfig.from_pretrained(config, local_files_only=True)
    dt = parse_dtype(dtype)
    b = BYTES[dt]
    shape = Shape.of(config)
    seqs = _sequences(shape, method, sched.batch, concepts)
    D, I, H, Lyr = shape.hidden, shape.intermediate, shape.heads, shape.layers
    d_kv = D * shape.kv_heads // H
    eager = attn_implementation == "eager" or torch.device(device).type == "cpu"
    act = 0
    flops = 0.0
    logits = 0
    for task, (n, L) in seqs.items():
        per_token = 6 * D + 2 * d_kv + 4 * I + (2 * H * L if eager else 0)
        act += n * L * Lyr * per_token * b + n * L * D * 4 * 2  # + fp32 norm copies at the ends
        fwd = 2 * shape.lm_parameters * n * L + 4 * Lyr * n * L * L * D
        flops += 2 * fwd  # forward + backward to the inputs
        answer = 4 if task == "understanding" else 0
        logits += n * (answer * shape.vocab + (shape.gen_tokens * shape.codebook if task != "understanding" else 0)) * 4 * 2
    sizes = group_sizes or GROUP_SIZES["gpu"]
    rows = concepts * (1 + sum(sizes.values())) * D * 2  # input and output rows per token
    optimizer = rows * 4 * 3  # the rows' gradient and AdamW's two moments, fp32
    weights = shape.parameters * b + rows * 4
    peak = int(weights + optimizer + act + logits)
    if available == -1:
        available = available_memory(device)
    if throughput is None:
        throughput = measure_throughput(device, dt)
    steps = {"understanding_only": sched.stage1_steps, "generation_only": sched.stage2_steps,
             "separate": sched.stage1_steps + sched.stage2_steps, "unictokens_stage1": sched.stage1_steps,
             "unictokens": sched.stage1_steps + sched.stage2_steps + sched.stage3_steps,
             "text_prompt": 0, "oracle_text": 0}.get(method, sched.stage1_steps + sched.joint_steps)
    sec = flops / (throughput * EFFICIENCY) if flops else 0.0
    inputs.update(available=available, throughput=throughput)
    return Plan(str(torch.device(device)), str(dt).replace("torch.", ""), method, seqs, int(weights), rows,
                optimizer, int(act), int(logits), peak, available, flops, throughput, sec, steps, inputs)


def check(p: Plan) -> Plan:
    """Return ``p`` if it fits the device; else raise :class:`PlanError` naming the first single
    change that fits (bf16 weights, a smaller batch, sdpa attention), re-planned, or saying none does."""
    if p.fits:
        return p
    gib = 2 ** 30
    sched = p.inputs["sched"]
    trials = []
    if p.dtype == "float32":
        trials.append(("DTYPE='bfloat16' (the concept rows stay fp32)", {"dtype": "bfloat16"}))
    for smaller in sorted({sched.batch // 2, sched.batch // 4, 1} - {0, sched.batch}, reverse=True):
        trials.append((f"batch={smaller} (examples per concept per task; the schedule has {sched.batch})",
                       {"sched": dataclasses.replace(sched, batch=smaller)}))
    if p.inputs["attn_implementation"] == "eager" and not p.device.startswith("cpu"):
        trials.append(("attn_implementation='sdpa' (no attention maps)", {"attn_implementation": "sdpa"}))
    hint = ("no single change fits: personalize fewer concepts per run (--concept one at a time), use a "
            "smaller model, or a device with more memory")
    for words, change in trials:
        q = plan(**{**p.inputs, **change})
        if q.fits:
            hint = f"with {words} it needs ~{q.peak / gib:.2f} GiB and fits"
            break
    raise PlanError(f"{p.method} on {p.device} needs ~{p.peak / gib:.2f} GiB at peak but only "
                    f"{p.available / gib:.2f} GiB is available; {hint}")
