"""Tiny random-weight models in the published stable-diffusion-2-depth layout, built offline.

TINY MODELS GIVE NOISE-LIKE PICTURES. They exist for tests, demos and benchmarks: they have the real
architectures (the same classes, the same block topology, the same nine decoder self-attention layers
that Pix2Video injects into) at toy widths and with random weights, so every code path of the method
runs end to end in seconds on a CPU without downloading anything. Nothing they produce means anything.

`build_tiny_models(folder)` writes them through the writers of `pipeline.models.published`, so the
folder has the published file set and config keys of stabilityai/stable-diffusion-2-depth
(`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`, `depth_estimator/`,
`feature_extractor/`), widths aside, plus `blip/` (a captioner for source prompts, in BLIP-large's
layout) and `clip/` (a CLIPModel for quality metrics, in CLIP ViT-L/14's layout): the real loaders
meet what they will meet on the real checkpoints. `tiny_model_dir()` builds it once into a per-user
cache folder, atomically, and returns its path; `pipeline.models.loading.resolve_model("tiny")` is the
same thing.

Also here: `build_random_real_size_models()`, which instantiates the real-size UNet and VAE (published
configs) with random weights for speed/memory benchmarks without any download.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pipeline.io.atomic import atomic_path
from pipeline.models.published import (
    _write_clip_tokenizer_files,
    dpt_hybrid_midas_config,
    sd2_depth_unet_config,
    sd2_special_tokens_map,
    sd2_text_encoder_config,
    sd2_tokenizer_config,
    sd2_vae_config,
    write_blip_folder,
    write_clip_folder,
    write_sd2_depth_folder,
)
from pipeline.models.published import dpt_preprocessor_config as dpt_feature_extractor_config  # noqa: F401 (pipeline/toy)

# Bump when the tiny architecture or file layout changes: the cache folder name carries it, so an old
# cached folder is never mistaken for a current one.
TINY_VERSION = 3  # 3: the published file set and config keys (issue 9)
SEED = 0

log = logging.getLogger(__name__)

# --- tiny sizes (kept in one place so tests and docs can refer to them) ---------------------------
TINY_TEXT_HIDDEN = 32  # CLIP text width = UNet cross_attention_dim
TINY_IMAGE_SIZE = 64  # pixels; the tiny DPT and VAE are sized around it (latent 8x8)
TINY_DPT_SIZE = 64  # DPT input resolution (the published one is 384)
TINY_BLIP_SIZE = 32  # BLIP / CLIP vision input resolution (the published ones are 384 / 224)
LATENT_INPUT_DAMPING = 0.03  # UNet conv_in weights on the 4 latent channels (see _tiny_unet)

# Words the tiny tokenizers know as whole tokens; anything else falls back to characters (CLIP) or
# [UNK]/characters (BERT). Only needed so that prompts tokenize into a sane number of tokens.
_WORDS = (
    "a an the of in on with and at to is photo picture painting video frame of by style "
    "man woman person people dog cat car bird horse tree trees house street road sky water sea "
    "red green blue white black yellow orange gray brown dark bright small large big old new "
    "walking running sitting standing flying driving swimming jumping dancing riding "
    "van gogh watercolor oil cartoon anime sketch pencil drawing snow winter summer night day "
    "sunset forest city mountain beach field grass flower flowers "
    # the toy world's grammar (pipeline/toy/world.py), so its captions are whole-word tokens
    "purple cyan striped dotted checkered ball cube cone floor"
).split()
_WORDS = tuple(dict.fromkeys(_WORDS))  # unique, order kept


# --------------------------------------------------------------------------------------------------
# Tiny configurations
# --------------------------------------------------------------------------------------------------


def tiny_unet_config() -> dict[str, Any]:
    """SD2-depth's UNet topology at toy widths: same block types, 2 layers per block, linear
    projections, 5 input channels; hence the same nine decoder self-attention layers."""
    cfg = sd2_depth_unet_config()
    cfg.update(
        # Widths grow like SD2's (the decoder attention layers see two different channel counts) but
        # stay small: ~0.8M parameters, ~3.3 MB.
        block_out_channels=[16, 32, 32, 32],
        attention_head_dim=[2, 2, 2, 2],  # heads per block (SD2's naming), 2 so multi-head code is exercised
        norm_num_groups=8,  # divides every width
        cross_attention_dim=TINY_TEXT_HIDDEN,
        sample_size=TINY_IMAGE_SIZE // 8,
    )
    return cfg


def tiny_vae_config() -> dict[str, Any]:
    """Four levels (three downsamplings: latent = image / 8), 4 latent channels, SD's scaling factor."""
    cfg = sd2_vae_config()
    cfg.update(
        block_out_channels=[16, 16, 32, 32],
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE,
    )
    return cfg


# --------------------------------------------------------------------------------------------------
# Offline tokenizers
# --------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character map (byte-level BPE's base alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small CLIP-style BPE vocabulary: the 256 byte symbols, each also with the end-of-word
    marker `</w>`, left-to-right merges that build each word of `_WORDS`, then the two specials
    (in the same order as the real CLIP vocabulary, which ends with them)."""
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for sym in alphabet + [s + "</w>" for s in alphabet]:
        vocab[sym] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            merged = pair[0] + pair[1]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
            symbols = [merged] + symbols[2:]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def clip_tokenizer(pad_token: str = "!") -> Any:
    """The tiny CLIP tokenizer (vocabulary and merges of `_clip_vocab_and_merges`), in memory.

    SD2's tokenizer pads with "!" (id 0; OpenCLIP pads with zeros), OpenAI CLIP's with <|endoftext|>.
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)


def _write_clip_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> Any:
    """Write the tiny CLIP tokenizer in SD2's published file set (vocab.json, merges.txt, legacy
    tokenizer_config.json, special_tokens_map.json) into `folder`; returns it loaded from there."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    special = sd2_special_tokens_map(pad_token=pad_token)
    _write_clip_tokenizer_files(folder, clip_tokenizer(pad_token), sd2_tokenizer_config(), special, with_json=False)
    return CLIPTokenizer.from_pretrained(folder)


def _bert_vocab() -> list[str]:
    """A small BERT WordPiece vocabulary: specials, lowercase letters and digits (so any text
    tokenizes), their `##` continuations, the words of `_WORDS`, and BLIP's `[DEC]` start token."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,'-!?")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    vocab += [w for w in _WORDS if w not in set(vocab)]
    vocab.append("[DEC]")
    return vocab


def bert_tokenizer() -> Any:
    """The tiny BLIP tokenizer (vocabulary of `_bert_vocab`), in memory. BLIP starts captions with
    [DEC] (its bos token), as the published BLIP tokenizer does; model_max_length 512 as published."""
    from transformers import BertTokenizer

    words = _bert_vocab()
    return BertTokenizer(vocab={w: i for i, w in enumerate(words)}, bos_token="[DEC]", model_max_length=512)


# --------------------------------------------------------------------------------------------------
# Weight initialisation
# --------------------------------------------------------------------------------------------------


def _make_non_degenerate(model: torch.nn.Module, seed: int) -> None:
    """Give every all-zero weight tensor small random values.

    Some layers start at zero on purpose (for training stability: e.g. DPT's cls token and position
    embeddings, output projections in some versions). In a random-weight model that makes outputs
    constant or exactly zero, which would let tests pass for the wrong reason. Biases stay zero.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or not p.is_floating_point() or p.numel() == 0:
                continue
            if torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * 0.02)


def _seeded(seed: int) -> None:
    """Seed the global RNG right before constructing a model: model constructors initialise their
    weights from it, so each component is reproducible on its own, independent of build order."""
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Builders per component
# --------------------------------------------------------------------------------------------------


def _tiny_unet() -> Any:
    from diffusers import UNet2DConditionModel

    _seeded(SEED + 1)
    cfg = {k: v for k, v in tiny_unet_config().items() if not k.startswith("_")}
    unet = UNet2DConditionModel(**cfg)
    _make_non_degenerate(unet, SEED + 1)
    # DDIM inversion can be undone only if ε changes slowly along the trajectory (ε(z_t, t) ≈
    # ε(z_t+Δ, t+Δ)); a trained model has that property, a random one does not: its ε jumps with
    # every change of z, and inversion followed by denoising ends ~2x farther from z0 than z0 is
    # from zT. Damping the 4 latent input channels makes ε depend on z smoothly (relative
    # reconstruction error ~1% on the method tests' clip) while ε keeps its size (std ~0.3) and
    # still varies with z, depth, text and t, so ALGORITHM.md's reconstruction property can be
    # tested on the tiny model. The depth channel (index 4) is left as is.
    with torch.no_grad():
        unet.conv_in.weight[:, :4].mul_(LATENT_INPUT_DAMPING)
    return unet


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    _seeded(SEED + 2)
    cfg = {k: v for k, v in tiny_vae_config().items() if not k.startswith("_")}
    vae = AutoencoderKL(**cfg)
    _make_non_degenerate(vae, SEED + 2)
    return vae


def _tiny_clip_text_config(
    vocab_size: int, hidden: int = TINY_TEXT_HIDDEN, hidden_act: str = "gelu", pad_token_id: int = 1
) -> Any:
    """SD2's text-encoder config (bos 0, eos 2, pad 1 as published) at toy widths. `hidden_act`:
    SD2's OpenCLIP tower uses exact gelu, OpenAI's CLIP quick_gelu."""
    from transformers import CLIPTextConfig

    cfg = sd2_text_encoder_config()
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        projection_dim=hidden,
        bos_token_id=cfg["bos_token_id"],
        eos_token_id=cfg["eos_token_id"],
        pad_token_id=pad_token_id,
    )


def _tiny_text_encoder(tok: Any) -> Any:
    from transformers import CLIPTextModel

    _seeded(SEED + 3)
    model = CLIPTextModel(_tiny_clip_text_config(len(tok)))
    _make_non_degenerate(model, SEED + 3)
    return model


def tiny_dpt_config(depths: tuple[int, int, int] = (3, 4, 9)) -> Any:
    """Intel/dpt-hybrid-midas's config (ViT on a BiT ResNet, as bundled in SD2-depth) at toy widths:
    the published keys and values (hybrid, BiT bottleneck layers with SAME padding and dynamic
    embedding padding, depths [3, 4, 9], reassemble factors [1, 1, 1, 0.5], auxiliary head on), with
    narrow layers, 4 ViT layers and a TINY_DPT_SIZE input.

    The BiT backbone config is given inline, so nothing is downloaded. BiT reduces the image 16x
    (stem 4x, stages 1/2/2), which must equal the ViT patch size for the position-embedding grid.
    """
    from transformers import BitConfig, DPTConfig

    published = dpt_hybrid_midas_config()
    bb = {k: v for k, v in published.pop("backbone_config").items() if k != "model_type"}
    bb.update(embedding_size=8, hidden_sizes=[16, 32, 64], depths=list(depths), num_groups=4)
    grid = TINY_DPT_SIZE // 16
    keep = ("auxiliary_loss_weight", "head_in_index", "hidden_act", "is_hybrid", "layer_norm_eps", "neck_ignore_stages")
    keep += ("patch_size", "qkv_bias", "readout_type", "reassemble_factors", "use_auxiliary_head")
    return DPTConfig(
        **{k: published[k] for k in keep},
        backbone_config=BitConfig(**bb),
        backbone_featmap_shape=[1, 64, grid, grid],
        backbone_out_indices=[0, 1, 2, 3],
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=TINY_DPT_SIZE,
        neck_hidden_sizes=[16, 32, 32, 32],
        fusion_hidden_size=16,
    )


def _calibrate_dpt_head(model: Any, seed: int) -> None:
    """Rescale the depth head's last conv so a random DPT outputs depth of order 1 that varies.

    With random weights DPT's activations shrink layer by layer and its final ReLU zeroes ~95% of
    the map (max ~1e-5): a depth that is almost constant zero, whose per-frame min-max
    normalisation would divide by ~0. We standardise the last conv's output on a fixed calibration
    batch to mean 3, std 1, so after the ReLU nearly every pixel is positive and the map varies with
    the image, like real (relative inverse) depth does.
    """
    conv = model.head.head[-2]
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((2, 3, TINY_DPT_SIZE, TINY_DPT_SIZE), generator=gen) * 2 - 1
    seen: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            model.eval()(pixel_values=images)
    finally:
        handle.remove()
    pre = seen[0]
    mean, std = pre.mean(), pre.std().clamp_min(1e-12)
    with torch.no_grad():
        conv.weight.div_(std)
        conv.bias.sub_(mean).div_(std).add_(3.0)


def _tiny_dpt() -> Any:
    from transformers import DPTForDepthEstimation

    _seeded(SEED + 4)
    model = DPTForDepthEstimation(tiny_dpt_config())
    _make_non_degenerate(model, SEED + 4)
    _calibrate_dpt_head(model, SEED + 4)
    return model


def _pil_image_processor(name: str) -> type:
    """The PIL/numpy variant of an image processor when this transformers has one.

    transformers 5 made torchvision the default image backend and falls back to `<Name>Pil` with a
    warning when torchvision is missing. We always take the PIL one: same results with or without
    torchvision installed, and the same resizing as the original (PIL-based) preprocessing.
    """
    import transformers

    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


def _tiny_blip() -> tuple[Any, Any]:
    from transformers import BlipConfig, BlipForConditionalGeneration

    tok = bert_tokenizer()
    cfg = BlipConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "encoder_hidden_size": 32,
            "intermediate_size": 64,
            "projection_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.sep_token_id,
            "sep_token_id": tok.sep_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "projection_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": TINY_BLIP_SIZE,
            "patch_size": 8,
            # The published default (1e-10) would make a random vision tower output ~nothing.
            "initializer_range": 0.02,
        },
        projection_dim=32,
        image_text_hidden_size=32,
    )
    _seeded(SEED + 5)
    model = BlipForConditionalGeneration(cfg)
    _make_non_degenerate(model, SEED + 5)
    return model, tok


def _tiny_clip() -> tuple[Any, Any]:
    """OpenAI CLIP's conventions (quick_gelu in both towers, pad <|endoftext|>) at toy widths."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    tok = clip_tokenizer(pad_token="<|endoftext|>")
    text_cfg = _tiny_clip_text_config(len(tok), hidden_act="quick_gelu")
    vision_cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_BLIP_SIZE,
        patch_size=8,
        projection_dim=32,
        hidden_act="quick_gelu",
    )
    cfg = CLIPConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict(), projection_dim=32)
    _seeded(SEED + 6)
    model = CLIPModel(cfg)
    _make_non_degenerate(model, SEED + 6)
    return model, tok


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Writing model shards" bars for a seconds-long build of a dozen one-shard files (Ray
    worker logs and test output would be full of them); restores the previous setting."""
    from transformers.utils import logging as tf_logging

    was_enabled = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            tf_logging.enable_progress_bar()


def build_tiny_models(folder: str | os.PathLike) -> Path:
    """Write the tiny models into `folder` (which must not exist or be empty) and return it as a Path:
    the published SD2-depth file set (`write_sd2_depth_folder`) plus blip/ and clip/ in the published
    BLIP and CLIP layouts, and a README saying what they are. Atomic: the folder appears complete or
    not at all.

    Deterministic: the same library versions write the same weights (and the same bytes) every time.
    """
    folder = Path(folder)
    start = time.perf_counter()
    # Each component seeds the global RNG itself; keep the caller's RNG state as it was.
    with atomic_path(folder, folder=True) as tmp, _quiet_progress(), torch.random.fork_rng(devices=[]):
        tok = clip_tokenizer(pad_token="!")
        write_sd2_depth_folder(
            tmp,
            unet=_tiny_unet(),
            vae=_tiny_vae(),
            text_encoder=_tiny_text_encoder(tok),
            tokenizer=tok,
            depth_estimator=_tiny_dpt(),
        )
        blip, blip_tok = _tiny_blip()
        write_blip_folder(tmp / "blip", model=blip, tokenizer=blip_tok)
        clip, clip_tok = _tiny_clip()
        write_clip_folder(tmp / "clip", model=clip, tokenizer=clip_tok)
        # A tiny model's weights are random; saying so next to them saves someone a confused afternoon.
        (tmp / "README.md").write_text(
            "Tiny random-weight models in the stable-diffusion-2-depth layout, built by pipeline/models/tiny.py.\n"
            "They give noise-like pictures and exist for tests, demos and benchmarks only.\n"
        )
    log.debug("built tiny models in %s in %.1fs", folder, time.perf_counter() - start)
    return folder


def cache_root() -> Path:
    """Where cached tiny models live: $PIX2VIDEO_CACHE, else ~/.cache/pix2video."""
    env = os.environ.get("PIX2VIDEO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pix2video"


def _cache_name() -> str:
    # Library versions are part of the name: save_pretrained's formats change between releases and
    # a folder written by another version must not be reused silently.
    import diffusers
    import transformers

    return f"tiny-v{TINY_VERSION}-diffusers{diffusers.__version__}-transformers{transformers.__version__}"


def tiny_model_dir() -> Path:
    """Path of the cached tiny-model folder, building it first if it is not there yet.

    Safe with concurrent processes (e.g. several Ray workers starting together): each builds into
    its own temporary folder next to the final one and renames it into place (`build_tiny_models`
    is atomic); a rename onto a complete folder fails, so exactly one build wins and the others
    use the winner's; nobody ever sees a half-written folder.
    """
    final = cache_root() / _cache_name()
    if (final / "model_index.json").is_file():
        return final
    try:
        build_tiny_models(final)
    except FileExistsError:
        if not (final / "model_index.json").is_file():
            raise
        # lost the race: the winner's folder is complete (it was renamed in whole)
    return final


def build_random_real_size_models(
    dtype: str | torch.dtype = "float32", device: str | torch.device | None = None
) -> Any:
    """A `DiffusionModels` with the real-size SD2-depth UNet and VAE, random weights, for benchmarks.

    Speed and memory of the editor are dominated by the UNet and VAE, so those have the published
    configs; the text encoder and tokenizer are the tiny ones with the text width raised to 1024 (the
    UNet's cross-attention width), which is all the UNet needs. Pictures are noise; only cost
    figures mean anything. Nothing is downloaded.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from pipeline.models.loading import DiffusionModels, resolve_device, resolve_dtype

    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    tiny = tiny_model_dir()
    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    # Build on the target device and in the target dtype directly (a real-size UNet is ~3.5 GB in
    # float32; no host copy, no float32 detour). Casting afterwards with .to(dtype) would also make
    # diffusers warn about modules it keeps in float32.
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(dev), torch.random.fork_rng(devices=[]):
            _seeded(SEED + 11)
            unet = UNet2DConditionModel(**{k: v for k, v in sd2_depth_unet_config().items() if k[0] != "_"})
            vae = AutoencoderKL(**{k: v for k, v in sd2_vae_config().items() if k[0] != "_"})
            text_encoder = CLIPTextModel(_tiny_clip_text_config(len(tokenizer), hidden=1024))
    finally:
        torch.set_default_dtype(previous_dtype)
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return DiffusionModels(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        device=dev,
        dtype=torch_dtype,
        source="random-real-size",
    )
