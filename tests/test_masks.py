"""Masked (local) edits: mask inputs and their checks, the feathered blending, and a masked edit that
keeps every pixel farther than the feather from the mask exactly as the input."""

from __future__ import annotations

import io
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.clips import moving_shapes, write_sample_frames
from jobs.cli import main
from pipeline.errors import InputError
from pipeline.io.masks import read_mask
from pipeline.io.video import write_video
from pipeline.method.blend import composite, feather, latent_mask, pixel_mask
from pipeline.method.editor import EditConfig, Pix2Video


def box(num_frames: int, size: int = 64, lo: int = 16, hi: int = 40) -> np.ndarray:
    mask = np.zeros((num_frames, size, size), dtype=bool)
    for i in range(num_frames):
        mask[i, lo + i : hi + i, lo:hi] = True
    return mask


def write_masks(folder: Path, mask: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(mask):
        Image.fromarray((m * 255).astype(np.uint8)).save(folder / f"{i:06d}.png")
    return folder


def test_folder_of_pngs(tmp_path):
    mask = box(3)
    folder = write_masks(tmp_path / "m", mask)
    assert (read_mask(folder, num_frames=3, size=(64, 64)) == mask).all()
    half = read_mask(folder, num_frames=3, size=(64, 64), working_size=(32, 32))
    assert half.shape == (3, 32, 32) and half.dtype == bool
    assert (half == mask[:, ::2, ::2]).mean() > 0.97


def test_mask_video_and_remote_folder(tmp_path):
    mask = box(4)
    frames = [np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=-1) for m in mask]
    video = tmp_path / "mask.mp4"
    write_video(video, frames, 8.0, width=64, height=64)
    got = read_mask(video, num_frames=4, size=(64, 64))  # H.264 rings at the edges: still black and white
    assert (got == mask).mean() > 0.99

    fs = fsspec.filesystem("memory")
    for i, m in enumerate(mask):
        buf = io.BytesIO()
        Image.fromarray((m * 255).astype(np.uint8)).save(buf, format="PNG")
        fs.pipe(f"/masks-test/{i:06d}.png", buf.getvalue())
    assert (read_mask("memory://masks-test", num_frames=4, size=(64, 64)) == mask).all()
    with pytest.raises(InputError, match="^memory://nothing-here: no such mask"):
        read_mask("memory://nothing-here", num_frames=4, size=(64, 64))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("missing", "mask has 3 frame(s) but the clip has 4"),
        ("size", "mask is 64x48 but the clip is 64x64"),
        ("empty", "mask is empty"),
        ("grey", "not black and white"),
    ],
)
def test_bad_masks_are_one_line_naming_the_mask(tmp_path, damage, words):
    mask = box(4)
    if damage == "missing":
        mask = mask[:3]
    elif damage == "size":
        mask = mask[:, :48]
    elif damage == "empty":
        mask = np.zeros_like(mask)
    folder = write_masks(tmp_path / "masks", mask)
    if damage == "grey":  # a photograph, not a mask
        noise = np.random.default_rng(0).integers(40, 215, (64, 64), dtype=np.uint8)
        Image.fromarray(noise).save(folder / "000001.png")
    with pytest.raises(InputError) as e:
        read_mask(folder, num_frames=4, size=(64, 64))
    message = str(e.value)
    assert str(folder) in message and words in message and "\n" not in message


def test_feather_grows_outwards_only():
    m = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    m[0, 0, 4, 4] = True
    f = feather(m, 2)[0, 0]
    assert f[4, 4] == 1 and f[4, 5] == pytest.approx(2 / 3) and f[2, 2] == pytest.approx(1 / 3)
    assert f[1, 4] == 0 and f[4, 7] == 0
    lat = latent_mask(box(1), vae_factor=8)  # 24x24 pixels -> cells 2..4 covered, feathered by one cell
    assert lat.shape == (1, 1, 8, 8) and lat[0, 0, 2:5, 2:5].min() == 1 and lat[0, 0, 1, 3] == 0.5
    assert lat[0, 0, 0].max() == 0


def test_composite_is_the_input_where_the_weight_is_zero():
    inp = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    out = 255 - inp
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 4:8, 4:8] = True
    soft = pixel_mask(mask, 2)
    mixed = np.stack(list(composite(out, inp, soft)))
    assert (mixed[soft == 0] == inp[soft == 0]).all()
    assert (mixed[mask] == out[mask]).all()


@pytest.fixture(scope="module")
def editor(tiny_model_dir) -> Pix2Video:
    from pipeline.models.loading import load_diffusion_models

    return Pix2Video(load_diffusion_models(str(tiny_model_dir), device="cpu"))


def test_masked_edit_keeps_the_input_outside_the_feather(editor):
    frames = moving_shapes(4, 64, 64, seed=5)
    ramp = np.linspace(0, 1, 32, dtype=np.float32)[None, :]
    depth = [ramp + f[::2, ::2].mean(-1).astype(np.float32) / 255 for f in frames]
    mask = box(4)
    config = EditConfig(steps=3, mask_feather=4)
    video = editor.prepare(frames, depth, mask=mask)
    zT = editor.invert(video, "shapes", config)
    (latents,) = editor.edit(video, zT, ["a red ball"], config)
    out = np.stack(list(editor.decode(latents, video=video, config=config)))
    outside = pixel_mask(mask, 4) == 0
    assert (out[outside] == frames[outside]).all()  # farther than 4 pixels from the mask: the input, exactly
    assert (out[mask] != frames[mask]).any(axis=-1).mean() > 0.5  # inside: the edit
    # In the latent the blend keeps everything beyond one cell of the mask at the inversion's z0.
    beyond = (latent_mask(mask, editor.sizes.vae_factor) == 0).expand_as(latents)
    torch.testing.assert_close(latents[beyond], video.latents[beyond])
    plain = editor.prepare(frames, depth)
    with pytest.raises(InputError, match="trajectory"):  # a zT without its trajectory cannot blend
        editor.edit(video, editor.invert(plain, "shapes", config), ["a red ball"], config)


def test_edit_cli_with_a_mask(tmp_path, capsys):
    folder = tmp_path / "frames"
    write_sample_frames(folder, num_frames=3, width=64, height=64, seed=1)
    masks = write_masks(tmp_path / "masks", box(3))
    out = tmp_path / "edited"
    fast = ["--model", "tiny", "--steps", "2", "--size", "64x64", "--no-progress", "--source-prompt", "s"]
    argv = ["edit", str(folder), "-o", str(out), "--prompt", "a red car", "--mask", str(masks), *fast]
    assert main([*argv, "--mask-feather", "3"]) == 0
    edited = np.stack([np.asarray(Image.open(p)) for p in sorted(out.iterdir())])
    source = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.iterdir())])
    outside = pixel_mask(box(3), 3) == 0
    assert (edited[outside] == source[outside]).all()
    capsys.readouterr()

    (masks / "000002.png").unlink()  # a missing mask frame: one line, exit 2, nothing written
    out2 = tmp_path / "edited2"
    assert main(["edit", str(folder), "-o", str(out2), "--prompt", "x", "--mask", str(masks), *fast]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(masks) in err and "2 frame(s) but the clip has 3" in err
    assert not out2.exists()
