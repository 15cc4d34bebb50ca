"""Model loading and the tiny-model builder (CPU, seconds)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.published import (
    BLIP_FILES,
    CLIP_FILES,
    SD2_DEPTH_FILES,
    dpt_preprocessor_config,
    sd2_depth_unet_config,
    sd2_vae_config,
    write_sd2_depth_folder,
)
from fixtures.tiny import build_tiny_models, tiny_model_dir
from pipeline.errors import InputError
from pipeline.models.caption import FALLBACK_CAPTION, Captioner
from pipeline.models.depth import DepthEstimator, load_dpt_image_processor
from pipeline.models.loading import (
    DEFAULT_MODEL,
    DiffusionModels,
    load_diffusion_models,
    resolve_dtype,
    resolve_model,
)

DECODER_ATTN1 = [
    f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1" for b in (1, 2, 3) for a in (0, 1, 2)
]


def decoder_self_attention(unet: torch.nn.Module) -> list[str]:
    return [n for n, _ in unet.named_modules() if n.startswith("up_blocks.") and n.endswith(".attn1")]


def frames(n: int = 3, h: int = 48, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_models(tiny_model_dir: Path) -> DiffusionModels:
    return load_diffusion_models(str(tiny_model_dir), device="cpu")


# --- the tiny folder -----------------------------------------------------------------------------


def files_of(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_tiny_folder_has_the_published_file_set(tiny_model_dir: Path) -> None:
    """Exactly the files of the real checkpoints (stabilityai/stable-diffusion-2-depth, and the
    published BLIP-large and CLIP ViT-L/14 for blip/ and clip/), nothing more, nothing less."""
    want = {"README.md", "model_index.json"}
    want |= {f"{sub}/{f}" for sub, names in SD2_DEPTH_FILES.items() if names for f in names}
    want |= {f"blip/{f}" for f in BLIP_FILES} | {f"clip/{f}" for f in CLIP_FILES}
    assert files_of(tiny_model_dir) == want
    assert "tokenizer/tokenizer.json" not in want  # SD2's tokenizer is the legacy file set


def test_tiny_folder_has_the_published_keys_and_values(tiny_model_dir: Path) -> None:
    d = tiny_model_dir
    index = read_json(d / "model_index.json")
    assert index["feature_extractor"] == ["transformers", "DPTImageProcessor"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    # The configs have the published keys, no more (widths aside, the values are the published ones).
    unet, vae = read_json(d / "unet" / "config.json"), read_json(d / "vae" / "config.json")
    assert set(unet) == set(sd2_depth_unet_config()) and "upcast_attention" not in unet
    assert set(vae) == set(sd2_vae_config()) and "scaling_factor" not in vae
    fe = read_json(d / "feature_extractor" / "preprocessor_config.json")
    assert fe == dpt_preprocessor_config(size=64)
    assert fe["image_processor_type"] == "DPTImageProcessor" and fe["resample"] == 2 and fe["do_rescale"] is True
    assert fe["size"] == {"height": 64, "width": 64} and fe["keep_aspect_ratio"] is False
    tok_cfg = read_json(d / "tokenizer" / "tokenizer_config.json")
    assert tok_cfg["pad_token"] == "<|endoftext|>" and tok_cfg["model_max_length"] == 77 and tok_cfg["do_lower_case"]
    assert read_json(d / "tokenizer" / "special_tokens_map.json")["pad_token"] == "!"
    text = read_json(d / "text_encoder" / "config.json")
    assert (text["bos_token_id"], text["eos_token_id"], text["pad_token_id"], text["hidden_act"]) == (0, 2, 1, "gelu")
    dpt = read_json(d / "depth_estimator" / "config.json")
    bb = dpt["backbone_config"]
    assert dpt["is_hybrid"] and dpt["use_auxiliary_head"] and dpt["reassemble_factors"] == [1, 1, 1, 0.5]
    assert (bb["layer_type"], bb["global_padding"], bb["embedding_dynamic_padding"]) == ("bottleneck", "SAME", True)
    assert bb["depths"] == [3, 4, 9] and dpt["backbone_featmap_shape"][0] == 1
    clip = read_json(d / "clip" / "config.json")
    assert clip["text_config"]["hidden_act"] == clip["vision_config"]["hidden_act"] == "quick_gelu"
    clip_pp = read_json(d / "clip" / "preprocessor_config.json")
    assert clip_pp["feature_extractor_type"] == "CLIPFeatureExtractor" and clip_pp["resample"] == 3
    assert isinstance(clip_pp["size"], int) and clip_pp["crop_size"] == clip_pp["size"]
    blip_pp = read_json(d / "blip" / "preprocessor_config.json")
    assert blip_pp["image_processor_type"] == "BlipImageProcessor" and blip_pp["resample"] == 3
    assert read_json(d / "blip" / "tokenizer_config.json")["model_max_length"] == 512
    size = sum(p.stat().st_size for p in tiny_model_dir.rglob("*") if p.is_file())
    assert size < 10 * 2**20, f"tiny folder is {size / 2**20:.1f} MB"


def test_resolve_model(tiny_model_dir: Path) -> None:
    assert Path(resolve_model("tiny")) == tiny_model_dir
    assert resolve_model(DEFAULT_MODEL) == DEFAULT_MODEL
    assert resolve_model("/some/folder") == "/some/folder"


def test_tiny_build_is_deterministic(tmp_path: Path, tiny_model_dir: Path) -> None:
    a, b = build_tiny_models(tmp_path / "a"), build_tiny_models(tmp_path / "b")
    assert digest(a) == digest(b)
    # ...and equal to the cached copy built earlier in this session (another call, same bytes)
    assert digest(a) == digest(tiny_model_dir)


def test_tiny_model_dir_reuses_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that loses the rename race uses the folder that is already in place."""
    import fixtures.tiny as tiny

    monkeypatch.setenv("PIX2VIDEO_CACHE", str(tmp_path))
    winner = tmp_path / tiny.cache_name()
    real_build = tiny.build_tiny_models
    calls: list[Path] = []

    def racing_build(folder):  # another process finishes first, while we are still building
        calls.append(Path(folder))
        if not winner.exists():
            real_build(winner)
        return real_build(folder)  # our rename onto the winner's complete folder fails

    monkeypatch.setattr(tiny, "build_tiny_models", racing_build)
    path = tiny_model_dir()
    assert calls == [winner] and path == winner and (path / "model_index.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [winner.name], "the loser's temporary folder must be removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    monkeypatch.setattr(tiny, "build_tiny_models", lambda folder: pytest.fail("rebuilt a cached folder"))
    assert tiny_model_dir() == path


# --- loading -------------------------------------------------------------------------------------


def test_load_tiny_diffusion_models(tiny_models: DiffusionModels) -> None:
    m = tiny_models
    assert m.unet.config.in_channels == 5 and m.unet.config.out_channels == 4
    assert decoder_self_attention(m.unet) == DECODER_ATTN1
    assert 2 ** (len(m.vae.config.block_out_channels) - 1) == 8
    assert m.vae.config.latent_channels == 4 and m.vae.config.scaling_factor == pytest.approx(0.18215)
    assert m.tokenizer.model_max_length == 77
    assert m.text_encoder.config.hidden_size == m.unet.config.cross_attention_dim
    assert m.device == torch.device("cpu") and m.dtype == torch.float32
    for module in (m.unet, m.vae, m.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


def test_tiny_outputs_are_non_degenerate(tiny_models: DiffusionModels) -> None:
    m = tiny_models
    ids = m.tokenizer(
        ["a photo of a cat", "van gogh style"],
        padding="max_length",
        max_length=77,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    assert ids.shape == (2, 77)
    with torch.no_grad():
        emb = m.text_encoder(ids)[0]
        assert not torch.allclose(emb[0], emb[1])
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(2, 4, 8, 8, generator=gen)
        depth = torch.randn(2, 1, 8, 8, generator=gen)
        eps = m.unet(torch.cat([z, depth], 1), 500, encoder_hidden_states=emb).sample
        assert eps.shape == (2, 4, 8, 8) and torch.isfinite(eps).all()
        assert eps.std() > 1e-2 and not torch.allclose(eps[0], eps[1])
        # ε still depends on the latent (damped on purpose for invertibility, not switched off)
        eps_z = m.unet(torch.cat([-z, depth], 1), 500, encoder_hidden_states=emb).sample
        assert (eps_z - eps).abs().max() > 1e-4
        image = m.vae.decode(z / m.vae.config.scaling_factor).sample
        assert image.shape == (2, 3, 64, 64) and image.std() > 1e-2
        latent = m.vae.encode(image.clamp(-1, 1)).latent_dist.mean
        assert latent.shape == (2, 4, 8, 8) and latent.std() > 1e-3


def test_load_in_half_precision(tiny_model_dir: Path) -> None:
    m = load_diffusion_models(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert m.dtype == torch.bfloat16
    assert next(m.unet.parameters()).dtype == torch.bfloat16
    assert next(m.text_encoder.parameters()).dtype == torch.bfloat16


def test_load_by_name_tiny(tiny_model_dir: Path) -> None:
    m = load_diffusion_models("tiny", device="cpu")
    assert m.source == "tiny" and decoder_self_attention(m.unet) == DECODER_ATTN1


def test_bad_dtype_is_input_error() -> None:
    with pytest.raises(InputError, match="float64"):
        resolve_dtype("float64")


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument:UserWarning")  # diffusers' call
def test_unknown_hub_id_is_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE once at import: patch the constant as well as the env.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError) as info:
        load_diffusion_models("foo-org/no-such-model", device="cpu")
    msg = str(info.value)
    assert "'foo-org/no-such-model'" in msg and "--model tiny" in msg and "\n" not in msg
    with pytest.raises(InputError, match="foo-org/no-such-dpt"):
        DepthEstimator.from_model("foo-org/no-such-dpt", device="cpu")
    with pytest.raises(InputError, match="foo-org/no-such-blip"):
        Captioner.from_model("foo-org/no-such-blip", device="cpu")


def test_folder_missing_component_is_input_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "sd2"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(folder / "unet")
    with pytest.raises(InputError) as info:
        load_diffusion_models(str(folder), device="cpu")
    assert str(folder) in str(info.value) and "unet/" in str(info.value)


# --- depth and captions --------------------------------------------------------------------------


def test_depth_estimator_on_tiny(tiny_model_dir: Path) -> None:
    est = DepthEstimator.from_model(str(tiny_model_dir), device="cpu")
    x = frames(5)
    x[1] = 128  # a flat frame must still give a usable (not all-zero) map
    depth = est(x, batch_size=2)
    assert depth.dtype == np.float32 and depth.shape == (5, 64, 64)
    assert np.isfinite(depth).all()
    assert (depth.max(axis=(1, 2)) > depth.min(axis=(1, 2))).all(), "each map must vary (min-max norm)"
    assert not np.allclose(depth[0], depth[2])
    # batching does not change results
    np.testing.assert_allclose(est(x, batch_size=8), depth, rtol=1e-5, atol=1e-5)
    assert DepthEstimator.from_model("tiny", device="cpu")(x[:1]).shape == (1, 64, 64)


def test_depth_estimator_standalone_dpt_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A DPT checkpoint on its own (config.json + preprocessor at the root, like Intel/dpt-hybrid-midas)."""
    folder = tmp_path / "dpt"
    shutil.copytree(tiny_model_dir / "depth_estimator", folder)
    shutil.copy(tiny_model_dir / "feature_extractor" / "preprocessor_config.json", folder)
    depth = DepthEstimator.from_model(str(folder), device="cpu")(frames(2))
    assert depth.shape == (2, 64, 64)


@pytest.mark.parametrize("style", ["published", "old DPTFeatureExtractor"])
def test_real_dpt_preprocessor_config_loads(tmp_path: Path, style: str) -> None:
    """The published SD2-depth preprocessor config (384x384, bilinear, rescale then mean = std = 0.5),
    and the older snapshot's DPTFeatureExtractor format (a class gone in transformers 5, integer size)."""
    (tmp_path / "feature_extractor").mkdir()
    config = dpt_preprocessor_config()
    if style != "published":
        config = {k: v for k, v in config.items() if k not in ("image_processor_type", "do_rescale", "rescale_factor")}
        config.update(feature_extractor_type="DPTFeatureExtractor", size=384, resample=3)
    (tmp_path / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(config))
    proc = load_dpt_image_processor(str(tmp_path), "feature_extractor")
    assert int(proc.resample) == (2 if style == "published" else 3)
    pixels = proc(images=list(frames(2)), return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (2, 3, 384, 384)
    assert -1.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0 and float(pixels.min()) < -0.9


def test_real_sd2_tokenizer_file_set_loads(tiny_model_dir: Path) -> None:
    """vocab.json + merges.txt + legacy tokenizer_config.json + special_tokens_map.json, no
    tokenizer.json: the pad token is special_tokens_map's "!" (id 0), as diffusers sees it."""
    m = load_diffusion_models(str(tiny_model_dir), device="cpu")
    tok = m.tokenizer
    assert (tok.pad_token, tok.pad_token_id, tok.model_max_length) == ("!", 0, 77)
    ids = tok(["a red car"], padding="max_length", max_length=77, truncation=True).input_ids[0]
    assert ids[0] == tok.bos_token_id and ids[4] == tok.eos_token_id and set(ids[5:]) == {0}
    assert tok.convert_ids_to_tokens(ids[1:4]) == ["a</w>", "red</w>", "car</w>"]


def test_write_sd2_depth_folder_round_trips(tmp_path: Path, tiny_models: DiffusionModels) -> None:
    """The writer's folder loads back to the same modules (same outputs), in the published file set,
    atomically: a target that exists and is not empty is refused and left as it was."""
    from fixtures.tiny import tiny_dpt

    m = tiny_models
    kwargs = dict(unet=m.unet, vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer)
    out = write_sd2_depth_folder(tmp_path / "sd2", **kwargs, depth_estimator=tiny_dpt())
    assert {p.split("/")[0] for p in files_of(out)} == set(SD2_DEPTH_FILES)
    again = load_diffusion_models(str(out), device="cpu")
    def ids_of(tok):
        return tok(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids

    ids = ids_of(m.tokenizer)
    assert torch.equal(ids_of(again.tokenizer), ids)
    with torch.no_grad():
        emb = m.text_encoder(ids)[0]
        torch.testing.assert_close(again.text_encoder(ids)[0], emb, rtol=0, atol=0)
        x = torch.randn(1, 5, 8, 8, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(again.unet(x, 10, emb).sample, m.unet(x, 10, emb).sample, rtol=0, atol=0)
    assert again.vae.config.scaling_factor == pytest.approx(0.18215)  # diffusers' default, the key is absent
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_sd2_depth_folder(tmp_path / "full", **kwargs, depth_estimator=tiny_dpt())
    assert files_of(tmp_path / "full") == {"keep.txt"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_writer_keeps_a_non_default_key(tmp_path: Path, tiny_models: DiffusionModels) -> None:
    """A key the published file leaves out is written when the module's value is not the default."""
    from diffusers import AutoencoderKL

    from fixtures.tiny import tiny_dpt, tiny_vae_config

    vae = AutoencoderKL(**{k: v for k, v in tiny_vae_config().items() if not k.startswith("_")}, scaling_factor=0.5)
    m = tiny_models
    out = write_sd2_depth_folder(
        tmp_path / "sd2", unet=m.unet, vae=vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer,
        depth_estimator=tiny_dpt(), dtype=torch.float16,
    )
    assert read_json(out / "vae" / "config.json")["scaling_factor"] == 0.5
    again = load_diffusion_models(str(out), device="cpu", dtype="float16")
    assert again.vae.config.scaling_factor == 0.5 and next(again.unet.parameters()).dtype == torch.float16


def test_folder_without_depth_estimator_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="depth_estimator/"):
        DepthEstimator.from_model(str(tmp_path), device="cpu")


def test_captioner_on_tiny(tiny_model_dir: Path) -> None:
    cap = Captioner.from_model("tiny", device="cpu")
    out = cap(frames(3))
    assert len(out) == 3 and all(isinstance(c, str) and c and c == c.strip() for c in out)
    assert cap(list(frames(3))) == out, "greedy decoding is deterministic; lists and arrays agree"


def test_captioner_never_returns_empty(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = Captioner.from_model(str(tiny_model_dir / "blip"), device="cpu")
    monkeypatch.setattr(cap.tokenizer, "batch_decode", lambda ids, **kw: ["  "] * len(ids))
    assert cap(frames(2)) == [FALLBACK_CAPTION] * 2


def test_clip_folder_loads(tiny_model_dir: Path) -> None:
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(tiny_model_dir / "clip").eval()
    tok = CLIPTokenizer.from_pretrained(tiny_model_dir / "clip")
    ids = tok(["a cat", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        text = model.get_text_features(**ids)
        image = model.get_image_features(pixel_values=torch.randn(1, 3, 32, 32))
    text = text if isinstance(text, torch.Tensor) else text.pooler_output
    image = image if isinstance(image, torch.Tensor) else image.pooler_output
    assert text.shape[-1] == image.shape[-1] and not torch.allclose(text[0], text[1])


# --- real-size configs ---------------------------------------------------------------------------


def test_real_size_configs_have_published_numbers() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    u = sd2_depth_unet_config()
    assert u["block_out_channels"] == [320, 640, 1280, 1280]
    assert u["attention_head_dim"] == [5, 10, 20, 20]
    assert (u["cross_attention_dim"], u["in_channels"], u["out_channels"]) == (1024, 5, 4)
    assert u["use_linear_projection"] is True and u["sample_size"] == 32 and u["layers_per_block"] == 2
    assert "upcast_attention" not in u
    v = sd2_vae_config()
    assert v["block_out_channels"] == [128, 256, 512, 512]
    assert v["sample_size"] == 256 and "scaling_factor" not in v and v["latent_channels"] == 4
    with torch.device("meta"):  # real size, no memory, no download
        unet = UNet2DConditionModel(**{k: w for k, w in u.items() if not k.startswith("_")})
        AutoencoderKL(**{k: w for k, w in v.items() if not k.startswith("_")})
    assert decoder_self_attention(unet) == DECODER_ATTN1
    widths = [unet.get_submodule(n).to_q.in_features for n in DECODER_ATTN1]
    assert widths == [1280] * 3 + [640] * 3 + [320] * 3
    assert 850e6 < sum(p.numel() for p in unet.parameters()) < 880e6


def test_random_real_size_models_on_meta(tiny_model_dir: Path) -> None:
    from fixtures.tiny import build_random_real_size_models

    m = build_random_real_size_models(device="meta")
    assert list(m.unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert m.text_encoder.config.hidden_size == 1024 == m.unet.config.cross_attention_dim
    assert decoder_self_attention(m.unet) == DECODER_ATTN1
