"""The published files of the checkpoints we use, and writers of folders in exactly their layout.

What the real repositories hold (stabilityai/stable-diffusion-2-depth, commit "Add Diffusers Weights",
Dec 2022; Intel/dpt-hybrid-midas, bundled in it; openai/clip-vit-large-patch14;
Salesforce/blip-image-captioning-large): the file set, the config keys and their values. The tiny
builder (`pipeline.models.tiny`) and the toy builder (`pipeline.toy`) write their models through the
writers here, so every folder we load in tests has the real file set and the real keys and values,
widths aside, and the loaders are exercised on what they will meet.

Writers (each atomic: the folder is written as a hidden temporary sibling and renamed into place; the
target must not exist or be an empty folder):

- `write_sd2_depth_folder(folder, unet=, vae=, text_encoder=, tokenizer=, depth_estimator=)`
- `write_clip_folder(folder, model=, tokenizer=)`  (the metrics' CLIPModel)
- `write_blip_folder(folder, model=, tokenizer=)`  (the captioner)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.io.atomic import atomic_path

# --------------------------------------------------------------------------------------------------
# stabilityai/stable-diffusion-2-depth
# --------------------------------------------------------------------------------------------------

SD2_DEPTH_FILES = {
    "model_index.json": None,
    "unet": ("config.json", "diffusion_pytorch_model.safetensors"),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("config.json", "model.safetensors"),
    "tokenizer": ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"),
    "scheduler": ("scheduler_config.json",),
    "depth_estimator": ("config.json", "model.safetensors"),
    "feature_extractor": ("preprocessor_config.json",),
}
CLIP_FILES = (
    "config.json",
    "merges.txt",
    "model.safetensors",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
)
BLIP_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)
_DIFFUSERS_VERSION = "0.10.0.dev0"


def sd2_model_index() -> dict[str, Any]:
    """model_index.json as published (component name -> [library, class])."""
    return {
        "_class_name": "StableDiffusionDepth2ImgPipeline",
        "_diffusers_version": _DIFFUSERS_VERSION,
        "depth_estimator": ["transformers", "DPTForDepthEstimation"],
        "feature_extractor": ["transformers", "DPTImageProcessor"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def sd2_depth_unet_config() -> dict[str, Any]:
    """unet/config.json as published: no `upcast_attention` key, `sample_size` 32 (diffusers'
    defaults fill the rest). `attention_head_dim` is, as in every SD2 config, really the number of
    heads per block (320/5 = 640/10 = 1280/20 = 64 channels per head); diffusers keeps the old name."""
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": _DIFFUSERS_VERSION,
        "act_fn": "silu",
        "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 5,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "sample_size": 32,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": True,
    }


def sd2_vae_config() -> dict[str, Any]:
    """vae/config.json as published: `sample_size` 256 and no `scaling_factor` key (so diffusers'
    default, 0.18215, applies)."""
    return {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": _DIFFUSERS_VERSION,
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 256,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }


def sd2_scheduler_config() -> dict[str, Any]:
    """scheduler/scheduler_config.json as published. Written for layout fidelity only: the editor's
    DDIM is computed from fixed constants (see ALGORITHM.md), never from this file."""
    return {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": _DIFFUSERS_VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    }


def sd2_text_encoder_config() -> dict[str, Any]:
    """text_encoder/config.json as published (OpenCLIP ViT-H/14's text tower): exact gelu, and the
    legacy special-token ids bos 0, eos 2, pad 1 (not the tokenizer's; the model never reads them on
    our path, which takes `last_hidden_state`)."""
    return {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_size": 1024,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4096,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 23,
        "pad_token_id": 1,
        "projection_dim": 512,
        "torch_dtype": "float32",
        "transformers_version": "4.25.0.dev0",
        "vocab_size": 49408,
    }


def _added_token(content: str, legacy: bool) -> dict[str, Any]:
    token = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **token} if legacy else token


def sd2_tokenizer_config() -> dict[str, Any]:
    """tokenizer/tokenizer_config.json as published: the legacy (slow-tokenizer) format. Its pad
    `<|endoftext|>` is overridden by special_tokens_map.json's "!" when loaded."""
    return {
        "add_prefix_space": False,
        "bos_token": _added_token("<|startoftext|>", legacy=True),
        "do_lower_case": True,
        "eos_token": _added_token("<|endoftext|>", legacy=True),
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "stabilityai/stable-diffusion-2-depth",
        "pad_token": "<|endoftext|>",
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _added_token("<|endoftext|>", legacy=True),
    }


def sd2_special_tokens_map(pad_token: str = "!") -> dict[str, Any]:
    """tokenizer/special_tokens_map.json as published: pad "!" (id 0; OpenCLIP pads with zeros)."""
    return {
        "bos_token": _added_token("<|startoftext|>", legacy=False),
        "eos_token": _added_token("<|endoftext|>", legacy=False),
        "pad_token": pad_token,
        "unk_token": _added_token("<|endoftext|>", legacy=False),
    }


def dpt_preprocessor_config(size: int = 384) -> dict[str, Any]:
    """feature_extractor/preprocessor_config.json as published: DPTImageProcessor, 384x384, bilinear
    (resample 2), rescale by 1/255, then normalise with mean = std = 0.5 (to [-1, 1])."""
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "ensure_multiple_of": 1,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "DPTImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "keep_aspect_ratio": False,
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": size, "width": size},
    }


def dpt_hybrid_midas_config() -> dict[str, Any]:
    """depth_estimator/config.json as published (Intel/dpt-hybrid-midas): ViT-hybrid on a BiT
    ResNet backbone given inline (nothing is downloaded to build it)."""
    return {
        "architectures": ["DPTForDepthEstimation"],
        "attention_probs_dropout_prob": 0.0,
        "auxiliary_loss_weight": 0.4,
        "backbone_config": {
            "depths": [3, 4, 9],
            "drop_path_rate": 0.0,
            "embedding_dynamic_padding": True,
            "embedding_size": 64,
            "global_padding": "SAME",
            "hidden_act": "relu",
            "hidden_sizes": [256, 512, 1024, 2048],
            "layer_type": "bottleneck",
            "model_type": "bit",
            "num_channels": 3,
            "num_groups": 32,
            "out_features": ["stage1", "stage2", "stage3"],
            "output_stride": 32,
            "width_factor": 1,
        },
        "backbone_featmap_shape": [1, 1024, 24, 24],
        "backbone_out_indices": [2, 5, 8, 11],
        "fusion_hidden_size": 256,
        "head_in_index": -1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 768,
        "image_size": 384,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "is_hybrid": True,
        "layer_norm_eps": 1e-12,
        "model_type": "dpt",
        "neck_hidden_sizes": [256, 512, 768, 768],
        "neck_ignore_stages": [0, 1],
        "num_attention_heads": 12,
        "num_channels": 3,
        "num_hidden_layers": 12,
        "patch_size": 16,
        "qkv_bias": True,
        "readout_type": "project",
        "reassemble_factors": [1, 1, 1, 0.5],
        "semantic_classifier_dropout": 0.1,
        "semantic_loss_ignore_index": 255,
        "torch_dtype": "float32",
        "transformers_version": "4.26.0.dev0",
        "use_auxiliary_head": True,
        "use_batch_norm_in_fusion_residual": False,
    }


# --------------------------------------------------------------------------------------------------
# openai/clip-vit-large-patch14 and Salesforce/blip-image-captioning-large
# --------------------------------------------------------------------------------------------------

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def clip_preprocessor_config(size: int = 224) -> dict[str, Any]:
    """preprocessor_config.json of openai/clip-vit-large-patch14: the old CLIPFeatureExtractor
    format (integer size = shortest edge, integer crop), bicubic (resample 3)."""
    return {
        "crop_size": size,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
        "size": size,
    }


def blip_preprocessor_config(size: int = 384) -> dict[str, Any]:
    """preprocessor_config.json of Salesforce/blip-image-captioning-large: BlipImageProcessor,
    384x384, bicubic, CLIP's mean and std."""
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "BlipImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "BlipProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": size, "width": size},
    }


def blip_tokenizer_config() -> dict[str, Any]:
    """tokenizer_config.json of BLIP-large: bert-base-uncased's, model_max_length 512."""
    return {
        "cls_token": "[CLS]",
        "do_basic_tokenize": True,
        "do_lower_case": True,
        "mask_token": "[MASK]",
        "model_max_length": 512,
        "name_or_path": "bert-base-uncased",
        "never_split": None,
        "pad_token": "[PAD]",
        "processor_class": "BlipProcessor",
        "sep_token": "[SEP]",
        "special_tokens_map_file": None,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    }


def blip_special_tokens_map() -> dict[str, Any]:
    """special_tokens_map.json of BLIP-large: BERT's, and `[DEC]` (the caption decoder's start) as bos."""
    return {
        "bos_token": "[DEC]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }


def clip_tokenizer_config() -> dict[str, Any]:
    """tokenizer_config.json of openai/clip-vit-large-patch14 (legacy format, pad <|endoftext|>)."""
    cfg = sd2_tokenizer_config()
    cfg["name_or_path"] = "openai/clip-vit-large-patch14"
    return cfg


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def _dump(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)  # tuples and lists compare equal


def _published_keys(actual: dict[str, Any], published: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The published file's keys with the module's values (its `_`-metadata as published), plus any
    other key whose value is not the library's default: nothing about the module is lost by leaving
    a key out, and a folder of a module at the published values has exactly the published keys."""
    out = {k: v if k.startswith("_") else actual.get(k, v) for k, v in published.items()}
    for k, v in actual.items():
        if k not in out and not k.startswith("_") and k in defaults and _jsonable(defaults[k]) != _jsonable(v):
            out[k] = v
    return out


def _init_defaults(cls: type) -> dict[str, Any]:
    """A diffusers model's config defaults: its constructor's keyword defaults."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}


def _save_diffusers(module: Any, folder: Path, published: dict[str, Any], dtype: torch.dtype | None) -> None:
    from safetensors.torch import save_file

    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
        for k, v in module.state_dict().items()
    }
    folder.mkdir(parents=True)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    _dump(folder / "config.json", _published_keys(dict(module.config), published, _init_defaults(type(module))))


def _save_transformers(model: Any, folder: Path, published: dict[str, Any] | None, dtype: torch.dtype | None) -> None:
    """save_pretrained (weights as model.safetensors), then config.json with the published keys."""
    if dtype is not None:
        model = _cast_copy(model, dtype)
    model.save_pretrained(folder)
    for extra in ("generation_config.json",):
        (folder / extra).unlink(missing_ok=True)
    if published is None:
        return
    actual = model.config.to_dict()
    defaults = type(model.config)().to_dict()
    cfg = _published_keys(actual, published, defaults)
    cfg["torch_dtype"] = str(dtype or model.dtype).removeprefix("torch.")
    cfg.pop("dtype", None)
    if "backbone_config" in published:
        backbone = actual["backbone_config"]
        from transformers import AutoConfig

        bdefaults = AutoConfig.for_model(backbone["model_type"]).to_dict()
        cfg["backbone_config"] = _published_keys(backbone, published["backbone_config"], bdefaults)
    _dump(folder / "config.json", cfg)


def _cast_copy(model: Any, dtype: torch.dtype) -> Any:
    import copy

    return copy.deepcopy(model).to(dtype)


def _bpe_vocab_and_merges(tokenizer: Any) -> tuple[dict[str, int], list[str]]:
    """vocab.json and merges.txt contents of a (fast, byte-level BPE) CLIP tokenizer."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    vocab = dict(model["vocab"])
    for token, index in tokenizer.get_vocab().items():  # specials added on top of the BPE model
        vocab.setdefault(token, index)
    return dict(sorted(vocab.items(), key=lambda kv: kv[1])), merges


def _write_clip_tokenizer_files(
    folder: Path, tokenizer: Any, config: dict[str, Any], special: dict[str, Any], with_json: bool
) -> None:
    vocab, merges = _bpe_vocab_and_merges(tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    _dump(folder / "tokenizer_config.json", config)
    _dump(folder / "special_tokens_map.json", special)
    if with_json:
        tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))


def write_sd2_depth_folder(
    folder: str | os.PathLike,
    *,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    depth_estimator: Any,
    image_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a complete stabilityai/stable-diffusion-2-depth folder from the given modules, atomically.

    Writes exactly `SD2_DEPTH_FILES`: model_index.json (as published); unet/ and vae/ (config.json
    with the published keys and the modules' values, plus any key whose value is not diffusers'
    default; weights as diffusion_pytorch_model.safetensors); text_encoder/ and depth_estimator/
    (config.json with the published keys and the models' values; model.safetensors); tokenizer/
    (vocab.json and merges.txt from `tokenizer`, a CLIPTokenizer, the legacy tokenizer_config.json
    and special_tokens_map.json with the tokenizer's pad token; no tokenizer.json); scheduler/
    (the published PNDM config, which the editor never reads); feature_extractor/
    preprocessor_config.json (DPTImageProcessor at `image_size`, default the DPT's
    `config.image_size`). `dtype` casts the weights on the way out (e.g. torch.float16). `folder`
    must not exist or be empty; it appears complete or not at all. Returns it as a Path.
    """
    folder = Path(folder)
    with atomic_path(folder, folder=True) as tmp:
        _dump(tmp / "model_index.json", sd2_model_index())
        _save_diffusers(unet, tmp / "unet", sd2_depth_unet_config(), dtype)
        _save_diffusers(vae, tmp / "vae", sd2_vae_config(), dtype)
        _save_transformers(text_encoder, tmp / "text_encoder", sd2_text_encoder_config(), dtype)
        _write_clip_tokenizer_files(
            tmp / "tokenizer",
            tokenizer,
            sd2_tokenizer_config(),
            sd2_special_tokens_map(pad_token=str(tokenizer.pad_token)),
            with_json=False,
        )
        _dump(tmp / "scheduler" / "scheduler_config.json", sd2_scheduler_config())
        _save_transformers(depth_estimator, tmp / "depth_estimator", dpt_hybrid_midas_config(), dtype)
        size = image_size or int(depth_estimator.config.image_size)
        _dump(tmp / "feature_extractor" / "preprocessor_config.json", dpt_preprocessor_config(size))
    return folder


def write_clip_folder(
    folder: str | os.PathLike,
    *,
    model: Any,
    tokenizer: Any,
    image_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a CLIPModel folder in openai/clip-vit-large-patch14's layout, atomically: exactly
    `CLIP_FILES` (config.json as save_pretrained writes it; model.safetensors; the old-format
    CLIPFeatureExtractor preprocessor_config.json at `image_size`, default the vision tower's; the
    tokenizer as vocab.json, merges.txt, tokenizer.json, legacy tokenizer_config.json and
    special_tokens_map.json, pad <|endoftext|>). `folder` must not exist or be empty."""
    folder = Path(folder)
    size = image_size or int(model.config.vision_config.image_size)
    with atomic_path(folder, folder=True) as tmp:
        _save_transformers(model, tmp, None, dtype)
        _write_clip_tokenizer_files(
            tmp,
            tokenizer,
            clip_tokenizer_config(),
            sd2_special_tokens_map(pad_token=str(tokenizer.pad_token)),
            with_json=True,
        )
        _dump(tmp / "preprocessor_config.json", clip_preprocessor_config(size))
    return folder


def write_blip_folder(
    folder: str | os.PathLike,
    *,
    model: Any,
    tokenizer: Any,
    image_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a BlipForConditionalGeneration folder in Salesforce/blip-image-captioning-large's layout,
    atomically: exactly `BLIP_FILES` (config.json as save_pretrained writes it; model.safetensors;
    BlipImageProcessor preprocessor_config.json at `image_size`, default the vision tower's, bicubic;
    the BERT tokenizer as vocab.txt, tokenizer.json, tokenizer_config.json with model_max_length 512
    and special_tokens_map.json with bos [DEC]). `tokenizer`: a BertTokenizer whose vocabulary holds
    [DEC]. `folder` must not exist or be empty."""
    folder = Path(folder)
    size = image_size or int(model.config.vision_config.image_size)
    with atomic_path(folder, folder=True) as tmp:
        _save_transformers(model, tmp, None, dtype)
        words = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        if [i for _, i in words] != list(range(len(words))) or "[DEC]" not in dict(words):
            raise ValueError("the BLIP tokenizer's vocabulary must be ids 0..n-1 and hold [DEC]")
        (tmp / "vocab.txt").write_text("".join(w + "\n" for w, _ in words), encoding="utf-8")
        _dump(tmp / "tokenizer_config.json", blip_tokenizer_config())
        _dump(tmp / "special_tokens_map.json", blip_special_tokens_map())
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        _dump(tmp / "preprocessor_config.json", blip_preprocessor_config(size))
    return folder
