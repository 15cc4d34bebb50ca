"""Model loading and the tiny-model builder (CPU, seconds)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

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
from pipeline.models.tiny import (
    build_tiny_models,
    sd2_depth_unet_config,
    sd2_vae_config,
    tiny_model_dir,
)

DECODER_ATTN1 = [
    f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1" for b in (1, 2, 3) for a in (0, 1, 2)
]
PUBLISHED_LAYOUT = {
    "model_index.json": None,
    "unet": ["config.json", "diffusion_pytorch_model.safetensors"],
    "vae": ["config.json", "diffusion_pytorch_model.safetensors"],
    "text_encoder": ["config.json", "model.safetensors"],
    "tokenizer": ["vocab.json", "merges.txt", "tokenizer_config.json"],
    "scheduler": ["scheduler_config.json"],
    "depth_estimator": ["config.json", "model.safetensors"],
    "feature_extractor": ["preprocessor_config.json"],
}


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


def test_tiny_folder_has_published_layout(tiny_model_dir: Path) -> None:
    for name, files in PUBLISHED_LAYOUT.items():
        path = tiny_model_dir / name
        if files is None:
            assert path.is_file(), name
        for f in files or []:
            assert (path / f).is_file(), f"{name}/{f}"
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["feature_extractor"] == ["transformers", "DPTFeatureExtractor"]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    fe = json.loads((tiny_model_dir / "feature_extractor" / "preprocessor_config.json").read_text())
    assert fe["feature_extractor_type"] == "DPTFeatureExtractor"
    assert (tiny_model_dir / "blip" / "config.json").is_file()
    assert (tiny_model_dir / "clip" / "config.json").is_file()
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
    import pipeline.models.tiny as tiny

    monkeypatch.setenv("PIX2VIDEO_CACHE", str(tmp_path))
    built: list[Path] = []
    real_build = tiny.build_tiny_models

    def racing_build(folder):  # another process finishes first, while we are still building
        winner = tmp_path / tiny._cache_name()
        if not winner.exists():
            real_build(winner)
        built.append(real_build(folder))
        return built[-1]

    monkeypatch.setattr(tiny, "build_tiny_models", racing_build)
    path = tiny_model_dir()
    assert path == tmp_path / tiny._cache_name() and (path / "model_index.json").is_file()
    assert not built[0].exists(), "the loser's temporary folder must be removed"
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


def test_dpt_feature_extractor_config_loads(tmp_path: Path) -> None:
    """The published SD2-depth preprocessor config names DPTFeatureExtractor (gone in transformers 5)."""
    (tmp_path / "feature_extractor").mkdir()
    published = {
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "DPTFeatureExtractor",
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 3,
        "size": 384,
    }
    (tmp_path / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(published))
    proc = load_dpt_image_processor(str(tmp_path), "feature_extractor")
    pixels = proc(images=list(frames(2)), return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (2, 3, 384, 384)
    assert -1.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0


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
    assert u["use_linear_projection"] is True and u["sample_size"] == 96 and u["layers_per_block"] == 2
    v = sd2_vae_config()
    assert v["block_out_channels"] == [128, 256, 512, 512]
    assert v["sample_size"] == 768 and v["scaling_factor"] == 0.18215 and v["latent_channels"] == 4
    with torch.device("meta"):  # real size, no memory, no download
        unet = UNet2DConditionModel(**{k: w for k, w in u.items() if not k.startswith("_")})
        AutoencoderKL(**{k: w for k, w in v.items() if not k.startswith("_")})
    assert decoder_self_attention(unet) == DECODER_ATTN1
    widths = [unet.get_submodule(n).to_q.in_features for n in DECODER_ATTN1]
    assert widths == [1280] * 3 + [640] * 3 + [320] * 3
    assert 850e6 < sum(p.numel() for p in unet.parameters()) < 880e6


def test_random_real_size_models_on_meta(tiny_model_dir: Path) -> None:
    from pipeline.models.tiny import build_random_real_size_models

    m = build_random_real_size_models(device="meta")
    assert list(m.unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert m.text_encoder.config.hidden_size == 1024 == m.unet.config.cross_attention_dim
    assert decoder_self_attention(m.unet) == DECODER_ATTN1
