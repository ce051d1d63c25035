"""The VQ image tokenizer of a Janus model, trained from scratch by running its parts.

``JanusVQVAE.forward`` cannot train a tokenizer: it decodes from the chosen code *ids*,
so no straight-through gradient reaches the encoder (and its ``__init__`` calls
``eval()``). This module runs the parts instead::

    z  = quant_conv(encoder(x))            # [B, e, g, g]
    q  = nearest codebook entry of z       # cosine nearest: z and entries L2-normalised
    x' = decoder(post_quant_conv(z + (q - z).detach()))   # straight-through

Both ``z`` and the codebook are L2-normalised before the nearest-entry search, like
Janus's original tokenizer (LlamaGen, ``codebook_l2_norm``) and like
``JanusVQVAE.decode``, which normalises the entries it looks up: so ids from
:func:`vq_encode` decode with ``model.decode_image_tokens`` to what training saw.
(``JanusVQVAE.encode`` searches *un*-normalised vectors: do not use it for ids.)

``embedding_loss`` uses the usual weighting: codebook term ``|sg[z] - q|^2`` weight
1.0, commitment term ``|z - sg[q]|^2`` weight ``beta`` = 0.25 (transformers'
quantizer has the two weights swapped).

Images are ``uint8[B, H, W, 3]`` (numpy, a list of arrays or PIL images) or a float
tensor ``[B, 3, H, W]`` already in [-1, 1]. Code ids are ``LongTensor[B, g, g]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["adapt_for_flat_images", "is_adapted", "get_vq", "images_to_unit", "unit_to_uint8", "vq_encode", "vq_decode", "vq_loss",
           "restart_dead_codes", "code_usage", "vq_image_size", "vq_grid"]


class AffineNorm(torch.nn.Module):
    """A ``GroupNorm``'s learned scale and shift, without removing per-image statistics.

    Keeps the ``weight``/``bias`` parameters (same state-dict keys and shapes), so a
    checkpoint still loads into ``JanusVQVAE``; only the behaviour differs.
    """

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def adapt_for_flat_images(vq, reinit: bool = False):
    """The kit's one change to ``JanusVQVAE``: its encoder's and decoder's ``norm_out`` become affine-only.

    Janus's VQ uses ``GroupNorm(32, C)``; with the 32-64 channels a CPU can afford, that is a
    per-channel *instance* norm. Inside residual branches it is harmless, but ``norm_out``
    sits on the main path just before the latent and just before the RGB output, where it
    erases each image's channel means: for flat-coloured images the normalised value of an
    object then depends on its area, not its colour (docs/notes/2026-12-04-init-and-readout.md).

    ``reinit`` re-initialises the tokenizer's convolutions with PyTorch's defaults (Janus
    draws them from N(0, 0.02), which relies on those norms to restore the signal's scale);
    use it when training from scratch. Returns ``vq``. Idempotent.
    """
    vq = get_vq(vq)
    if reinit:
        for m in vq.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.reset_parameters()
    for part in (vq.encoder, vq.decoder):
        if isinstance(part.norm_out, torch.nn.GroupNorm):
            part.norm_out = AffineNorm(part.norm_out)
    return vq


def is_adapted(vq) -> bool:
    return isinstance(get_vq(vq).decoder.norm_out, AffineNorm)


def get_vq(obj):
    """The ``JanusVQVAE`` inside a :class:`~unikit.model.UnifiedModel`, a Janus model, or itself."""
    model = getattr(obj, "model", obj)  # UnifiedModel -> JanusForConditionalGeneration
    for path in (("model", "vqmodel"), ("vqmodel",), ()):
        cur = model
        try:
            for name in path:
                cur = getattr(cur, name)
        except AttributeError:
            continue
        if hasattr(cur, "quantize") and hasattr(cur, "decoder"):
            return cur
    raise TypeError(f"expected a UnifiedModel, a JanusForConditionalGeneration or a JanusVQVAE, got {type(obj).__name__}")


def vq_grid(vq) -> int:
    """Side of the code grid (e.g. 8 for an 8x8 grid)."""
    return int(vq.quantize.quant_state_dims[0])


def vq_image_size(vq) -> int:
    """Image side the tokenizer reads and writes: grid * 2**(number of downsamplings)."""
    return vq_grid(vq) * 2 ** (len(vq.config.channel_multiplier) - 1)


def images_to_unit(images, size: int | None = None, device=None) -> torch.Tensor:
    """uint8 images (``[B,H,W,3]`` array, list of arrays or PIL images) -> float ``[B,3,H,W]`` in [-1, 1].

    A float tensor is returned as is (assumed ``[B,3,H,W]`` in [-1, 1]). With ``size``,
    images of another size are resized (nearest, like the world's own scaling).
    """
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        return images if device is None else images.to(device)
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    arrays = []
    for im in images:
        if not isinstance(im, np.ndarray):  # PIL
            from PIL import Image
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.NEAREST)
            im = np.asarray(im.convert("RGB"))
        elif size is not None and im.shape[:2] != (size, size):
            from PIL import Image
            im = np.asarray(Image.fromarray(im).resize((size, size), Image.NEAREST))
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"expected uint8 RGB images [H, W, 3], got {im.dtype} {list(im.shape)}")
        arrays.append(im)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x if device is None else x.to(device)


def unit_to_uint8(x: torch.Tensor, channels_last: bool = False) -> np.ndarray:
    """Float pixels in about [-1, 1] -> ``uint8[B, H, W, 3]`` (input ``[B,3,H,W]`` unless ``channels_last``)."""
    x = x.detach().float()
    if not channels_last:
        x = x.permute(0, 2, 3, 1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def _latents(vq, x: torch.Tensor) -> torch.Tensor:
    """Encoder + quant_conv, normalised: ``[B, g, g, e]``."""
    z = vq.quant_conv(vq.encoder(x))
    return F.normalize(z.permute(0, 2, 3, 1), dim=-1)


def _nearest(vq, z: torch.Tensor):
    """Cosine-nearest codebook entries of normalised ``z [..., e]``: (entries, ids)."""
    codebook = F.normalize(vq.quantize.embedding.weight, dim=-1)
    flat = z.reshape(-1, z.shape[-1])
    ids = (flat @ codebook.t()).argmax(dim=-1)
    return codebook[ids].view(z.shape), ids.view(z.shape[:-1])


@torch.no_grad()
def vq_encode(um_or_vq, images) -> torch.LongTensor:
    """Images -> code ids ``LongTensor[B, g, g]`` (g = 8 for the kit's models)."""
    vq = get_vq(um_or_vq)
    x = images_to_unit(images, vq_image_size(vq), device=vq.quant_conv.weight.device)
    _, ids = _nearest(vq, _latents(vq, x))
    return ids


def _decode_float(vq, ids: torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long, device=vq.quant_conv.weight.device)
    return vq.decode(ids.reshape(ids.shape[0], -1))


@torch.no_grad()
def vq_decode(um_or_vq, ids) -> np.ndarray:
    """Code ids ``[B, g, g]`` or ``[B, g*g]`` -> ``uint8[B, S, S, 3]``."""
    return unit_to_uint8(_decode_float(get_vq(um_or_vq), ids))


def vq_loss(vq, images, recon_loss: str = "mse", beta: float = 0.25, stats: dict | None = None):
    """One training loss of the tokenizer. Returns ``(loss, recon)``.

    ``loss`` = reconstruction (``"mse"`` or ``"l1"``, on [-1, 1] pixels) + embedding loss
    (codebook + ``beta`` * commitment). ``recon`` is ``float[B, 3, S, S]`` in about [-1, 1]
    (use :func:`unit_to_uint8` to view it). Put the tokenizer in train mode yourself
    (``vq.train()``; ``JanusVQVAE.__init__`` leaves it in eval mode).

    Pass a dict as ``stats`` to receive ``recon_loss``, ``embedding_loss`` (floats),
    ``latents`` (normalised encoder outputs ``[B*g*g, e]``, detached: feed them to
    :func:`restart_dead_codes`) and ``ids`` (``[B, g, g]``).
    """
    vq = get_vq(vq)
    x = images_to_unit(images, vq_image_size(vq), device=vq.quant_conv.weight.device)
    z = _latents(vq, x)
    q, ids = _nearest(vq, z)
    embedding_loss = F.mse_loss(q, z.detach()) + beta * F.mse_loss(z, q.detach())
    z_q = (z + (q - z).detach()).permute(0, 3, 1, 2)
    recon = vq.decoder(vq.post_quant_conv(z_q))
    if recon_loss == "mse":
        rec = F.mse_loss(recon, x)
    elif recon_loss == "l1":
        rec = F.l1_loss(recon, x)
    else:
        raise ValueError(f"recon_loss={recon_loss!r}; choose 'mse' or 'l1'")
    if stats is not None:
        stats.update(recon_loss=float(rec.detach()), embedding_loss=float(embedding_loss.detach()),
                     latents=z.detach().reshape(-1, z.shape[-1]), ids=ids.detach())
    return rec + embedding_loss, recon


def code_usage(ids, codebook_size: int) -> torch.Tensor:
    """How often each code occurs in ``ids``: ``LongTensor[codebook_size]``."""
    return torch.bincount(torch.as_tensor(ids).reshape(-1).cpu(), minlength=codebook_size)


@torch.no_grad()
def restart_dead_codes(vq, encoder_outputs: torch.Tensor, usage_counts, min_usage: int = 1,
                       noise: float = 0.01, generator: torch.Generator | None = None) -> int:
    """Re-seed codebook entries used fewer than ``min_usage`` times from random encoder outputs.

    ``encoder_outputs``: normalised latents ``[N, e]`` (``stats["latents"]`` of
    :func:`vq_loss`, possibly from several steps); ``usage_counts``: ``[K]`` counts since
    the last restart (:func:`code_usage`). Returns how many entries were restarted.
    Reset your optimizer's state for the codebook (or accept stale Adam moments).
    """
    vq = get_vq(vq)
    weight = vq.quantize.embedding.weight
    dead = (torch.as_tensor(usage_counts) < min_usage).nonzero().flatten().to(weight.device)
    if len(dead) == 0 or len(encoder_outputs) == 0:
        return 0
    pick = torch.randint(len(encoder_outputs), (len(dead),), generator=generator)
    new = encoder_outputs[pick].to(weight)
    new = new + noise * torch.randn(new.shape, generator=generator).to(weight)
    weight[dead] = F.normalize(new, dim=-1)
    return int(len(dead))
