"""Sizes from the model, not from SD2's constants (pipeline/models/sizes.py): the VAE's scale factor,
the size multiple (VAE factor x 2^UNet downsamplings) and the folder's working size, read from config
files before any weights are loaded; a tiny model with a 4x VAE end to end; `--model toy` at its own
128² by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.clips import moving_shapes, write_sample_video
from fixtures.published import dump_json, sd2_depth_unet_config, sd2_model_index, sd2_vae_config
from jobs.cli import main
from pipeline.errors import InputError
from pipeline.io.frames import default_size, parse_size
from pipeline.io.video import read_frames
from pipeline.models.sizes import WORKING_SIZE_KEY, ModelSizes, read_model_sizes

EDIT = ["--source-prompt", "shapes", "--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def tiny4_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny models with a 4x VAE (three levels): latent = frame / 4, sides multiples of 32."""
    from fixtures.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny4") / "model", vae_factor=4)


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def loaded(*_a, **_k):
        raise AssertionError("a model was loaded before the bad size was refused")

    monkeypatch.setattr("pipeline.models.loading.load_diffusion_models", loaded)


def test_sizes_come_from_the_folders_configs(tmp_path, tiny_model_dir, tiny4_model_dir):
    assert read_model_sizes(str(tiny_model_dir)) == ModelSizes(vae_factor=8, unet_downsamplings=3, working_size=64)
    four = read_model_sizes(str(tiny4_model_dir))
    assert (four.vae_factor, four.multiple, four.working_size) == (4, 32, 64)
    # The published SD2-depth configs, no working-size key: SD2's 8x, 64 and 512 (not unet sample_size 32).
    dump_json(tmp_path / "sd2" / "vae" / "config.json", sd2_vae_config())
    dump_json(tmp_path / "sd2" / "unet" / "config.json", sd2_depth_unet_config())
    dump_json(tmp_path / "sd2" / "model_index.json", sd2_model_index())
    assert read_model_sizes(str(tmp_path / "sd2")) == ModelSizes() == ModelSizes(8, 3, 512)
    assert ModelSizes().multiple == 64
    # Hub ids: the published one by its known values, others SD2's when the hub is out of reach (offline here).
    assert read_model_sizes("stabilityai/stable-diffusion-2-depth") == ModelSizes()
    assert read_model_sizes("someone/unreachable-depth-model") == ModelSizes()
    with pytest.raises(InputError, match="vae/config.json"):
        read_model_sizes(str(tmp_path))


def test_bad_working_size_key_is_refused(tmp_path, tiny_model_dir):
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index[WORKING_SIZE_KEY] == 64
    with pytest.raises(InputError, match="_working_size"):
        ModelSizes.from_configs(sd2_vae_config(), sd2_depth_unet_config(), {WORKING_SIZE_KEY: "big"})


def test_diffusers_ignores_the_private_key(tiny_model_dir):
    """A folder with "_working_size" still loads as diffusers' own depth2img pipeline (keys starting with
    "_" are dropped by ConfigMixin.extract_init_dict), and the key reaches no component."""
    from diffusers import DiffusionPipeline, StableDiffusionDepth2ImgPipeline

    pipe = DiffusionPipeline.from_pretrained(str(tiny_model_dir))
    assert isinstance(pipe, StableDiffusionDepth2ImgPipeline)
    assert pipe.vae_scale_factor == 8 and "working_size" not in pipe.config
    assert "working_size" not in pipe.unet.config and "working_size" not in pipe.vae.config


def test_sizes_with_multiple_and_working_size():
    assert parse_size("96x64", 32) == (96, 64)
    with pytest.raises(InputError, match="multiples of 32"):
        parse_size("80x64", 32)
    with pytest.raises(InputError, match="multiples of 64"):
        parse_size("96x64")
    assert default_size(200, 100, short_side=64, multiple=32) == (128, 64)
    assert ModelSizes(4, 3, 128).default_size(256, 128) == (256, 128)
    assert ModelSizes(4, 3, 128).latent_size(128, 96) == (32, 24)


def test_4x_vae_end_to_end_through_the_editor(tiny4_model_dir):
    """96x96 frames, 24x24 latents: encode, depth at the latent size, invert, edit (engine = reference),
    decode back to 96x96; 80x80 is refused (not a multiple of 32)."""
    from pipeline.method.editor import EditConfig, Pix2Video
    from pipeline.method.reference import reference_edit
    from pipeline.models.loading import load_diffusion_models

    editor = Pix2Video(load_diffusion_models(str(tiny4_model_dir), device="cpu"))
    assert (editor.sizes.vae_factor, editor.sizes.multiple) == (4, 32)
    frames = moving_shapes(num_frames=3, width=96, height=96, seed=2)
    depth = [f.mean(-1).astype(np.float32) for f in frames]
    video = editor.prepare(frames, depth, video_id="v")
    assert video.latents.shape == (3, 4, 24, 24) and video.depth.shape == (3, 1, 24, 24)
    config = EditConfig(steps=3)
    (latents,) = editor.edit(video, editor.invert(video, "shapes", config), ["a red ball"], config)
    (want,) = reference_edit(editor.models, frames, video.depth, "shapes", ["a red ball"], config, video_id="v")
    torch.testing.assert_close(latents, want, atol=2e-4, rtol=1e-4)
    out = np.stack(list(editor.decode(latents)))
    assert out.shape == (3, 96, 96, 3) and out.dtype == np.uint8
    (sdedit,) = editor.sdedit(video, ["a red ball"], config)
    assert sdedit.shape == (3, 4, 24, 24)
    with pytest.raises(InputError, match="multiples of 32"):
        editor.prepare(moving_shapes(num_frames=1, width=80, height=80), [np.zeros((8, 8), np.float32)])


def test_4x_vae_end_to_end_through_the_cli(tmp_path, tiny4_model_dir):
    clip = write_sample_video(tmp_path / "clip.mp4", num_frames=2, width=96, height=96)
    out = tmp_path / "edited.mp4"
    argv = ["edit", str(clip), "-o", str(out), "--prompt", "x", "--model", str(tiny4_model_dir), *EDIT]
    assert main([*argv, "--size", "96x96"]) == 0
    assert read_frames(out).frames.shape == (2, 96, 96, 3)
    out.unlink()
    assert main(argv) == 0  # no --size: the folder's working size, 64 on the short side
    assert read_frames(out).frames.shape == (2, 64, 64, 3)


def test_a_size_off_the_models_multiple_is_refused_before_loading(tmp_path, capsys, tiny4_model_dir, no_models):
    clip = write_sample_video(tmp_path / "clip.mp4", num_frames=2, width=96, height=96)
    for model, size, multiple in ((str(tiny4_model_dir), "80x80", 32), ("tiny", "96x96", 64)):
        argv = ["edit", str(clip), "-o", str(tmp_path / "o.mp4"), "--prompt", "x", "--model", model, "--size", size]
        assert main([*argv, *EDIT]) == 2
        err = capsys.readouterr().err
        assert f"multiples of {multiple}" in err and len(err.strip().splitlines()) == 1


def test_default_size_follows_the_folder(tmp_path):
    """No --size: the tiny models work at 64 (their folder says so), the toy models at 128 (theirs),
    through `edit` and through the dataset pipeline's precompute task."""
    from pipeline.dataset.storage import StorageOptions
    from pipeline.stages.options import PrecomputeSpec
    from pipeline.stages.precompute import PrecomputeStage

    clip = write_sample_video(tmp_path / "clip.mp4", num_frames=2, width=128, height=128)
    for model, side in (("tiny", 64), ("toy", 128)):
        out = tmp_path / f"{model}.mp4"
        assert main(["edit", str(clip), "-o", str(out), "--prompt", "a red ball", "--model", model, *EDIT]) == 0
        assert read_frames(out).frames.shape == (2, side, side, 3)
    spec = PrecomputeSpec(output=str(tmp_path / "run"), model="toy", caption_model="toy", device="cpu")
    record = PrecomputeStage(spec, StorageOptions()).run("clip", str(clip), False)
    assert (record.status, record.width, record.height) == ("ok", 128, 128)
