"""The batched engine against the plain reference loop (pipeline/method/reference.py), the oracle.

Tiny model, CPU, float32, few steps: every schedule, every injection variant, --reverse, several
prompts and several videos in one engine call; a masked edit (blended with the inversion trajectory)
beside an unmasked one, and the anchor refresh.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.clips import moving_shapes
from pipeline.method.blend import latent_mask
from pipeline.method.editor import EditConfig, Pix2Video
from pipeline.method.injection import random_sources
from pipeline.method.reference import reference_decode, reference_edit

STEPS = 4
SOURCE = "shapes on a gradient"
# (video id, number of frames, seed, prompts): two videos of one size, edited in one engine call.
VIDEOS = (("clip-a", 5, 3, ("a red ball", "a blue cube")), ("clip-b", 3, 7, ("snow",)))
# Batched arithmetic (other batch sizes, SDPA against a written-out softmax) moves the latents (|z| up
# to about 5) by at most about 6e-5 on the tiny model; a wrong feature, draw or update moves them by
# 1e-2 or more (test_the_reference_is_sensitive).
ATOL = 2e-4


@pytest.fixture(scope="module")
def editor(tiny_model_dir) -> Pix2Video:
    from pipeline.models.loading import load_diffusion_models

    return Pix2Video(load_diffusion_models(str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def clips() -> list[tuple[str, np.ndarray, list[np.ndarray], tuple[str, ...]]]:
    out = []
    for video_id, n, seed, prompts in VIDEOS:
        frames = moving_shapes(num_frames=n, width=64, height=64, seed=seed)
        ramp = np.linspace(0, 1, 32, dtype=np.float32)[None, :]
        depth = [ramp + f[::2, ::2].mean(-1).astype(np.float32) / 255 for f in frames]
        out.append((video_id, frames, depth, prompts))
    return out


def box_mask(num_frames: int) -> np.ndarray:
    """A box that moves one pixel a frame: white = edit."""
    mask = np.zeros((num_frames, 64, 64), dtype=bool)
    for i in range(num_frames):
        mask[i, 12 + i : 36 + i, 20:44] = True
    return mask


MASKS = {"clip-a": box_mask(5)}  # clip-a masked, clip-b not, in one engine call


def engine_edit(editor: Pix2Video, clips, config: EditConfig, masks: dict | None = None) -> list[list[torch.Tensor]]:
    videos = []
    for video_id, frames, depth, prompts in clips:
        video = editor.prepare(frames, depth, video_id=video_id, mask=(masks or {}).get(video_id))
        videos.append((video, editor.invert(video, SOURCE, config), list(prompts)))
    return editor.edit_many(videos, config)


def reference(editor: Pix2Video, clips, config: EditConfig, masks: dict | None = None) -> list[list[torch.Tensor]]:
    out = []
    for video_id, frames, depth, prompts in clips:
        cond = editor.prepare(frames, depth).depth  # the depth conditioning only; the rest is the reference's
        mask = (masks or {}).get(video_id)
        mask = None if mask is None else latent_mask(mask, editor.sizes.vae_factor)
        out.append(reference_edit(editor.models, frames, cond, SOURCE, prompts, config, video_id=video_id, mask=mask))
    return out


def assert_same(got: list[list[torch.Tensor]], want: list[list[torch.Tensor]]) -> None:
    assert len(got) == len(want)
    for video_got, video_want in zip(got, want, strict=True):
        for a, b in zip(video_got, video_want, strict=True):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-4)


@pytest.fixture(scope="module")
def references(editor, clips) -> dict:
    """The reference's latents per (injection, reverse), computed once for all schedules."""
    cache: dict = {}

    def get(injection: str, reverse: bool = False) -> list[list[torch.Tensor]]:
        if (injection, reverse) not in cache:
            config = EditConfig(steps=STEPS, injection=injection, reverse=reverse)
            cache[injection, reverse] = reference(editor, clips, config)
        return cache[injection, reverse]

    return get


SCHEDULES = [("sequential", 1), ("wavefront", 3), ("auto", 8), ("wavefront", 64)]  # auto, 8: the defaults


@pytest.mark.parametrize("injection", ["anchor+prev", "anchor", "prev", "random", "none"])
@pytest.mark.parametrize(("schedule", "max_batch"), SCHEDULES)
def test_engine_equals_reference(editor, clips, references, injection, schedule, max_batch):
    config = EditConfig(steps=STEPS, injection=injection, schedule=schedule, max_batch=max_batch)
    assert_same(engine_edit(editor, clips, config), references(injection))


@pytest.mark.parametrize(("schedule", "max_batch"), SCHEDULES)
def test_engine_equals_reference_reversed(editor, clips, references, schedule, max_batch):
    config = EditConfig(steps=STEPS, reverse=True, schedule=schedule, max_batch=max_batch)
    assert_same(engine_edit(editor, clips, config), references("anchor+prev", reverse=True))


@pytest.fixture(scope="module")
def variants(editor, clips) -> dict:
    """The reference's latents for the masked and anchor-refresh cases, computed once per config."""
    cache: dict = {}

    def get(masked: bool = False, **fields) -> list[list[torch.Tensor]]:
        key = (masked, tuple(sorted(fields.items())))
        if key not in cache:
            cache[key] = reference(editor, clips, EditConfig(steps=STEPS, **fields), MASKS if masked else None)
        return cache[key]

    return get


@pytest.mark.parametrize(("schedule", "max_batch", "reverse"), [("sequential", 1, False), ("wavefront", 8, True)])
def test_engine_equals_reference_masked(editor, clips, variants, schedule, max_batch, reverse):
    """Blended latent diffusion in both: outside the mask the inversion's latent at every step."""
    config = EditConfig(steps=STEPS, schedule=schedule, max_batch=max_batch, reverse=reverse)
    assert_same(engine_edit(editor, clips, config, MASKS), variants(True, reverse=reverse))


@pytest.mark.parametrize(
    ("injection", "schedule", "max_batch"),
    [
        ("anchor+prev", "sequential", 1),
        ("anchor+prev", "wavefront", 64),
        ("anchor", "wavefront", 3),
        ("random", "wavefront", 3),
    ],
)
def test_engine_equals_reference_with_anchor_refresh(editor, clips, variants, injection, schedule, max_batch):
    config = EditConfig(steps=STEPS, injection=injection, anchor_refresh=2, schedule=schedule, max_batch=max_batch)
    assert_same(engine_edit(editor, clips, config), variants(injection=injection, anchor_refresh=2))


def test_masks_and_refresh_change_the_edit(references, variants):
    """The two comparisons above can fail: a mask and a refresh each move the latents well past ATOL,
    and only where they act (the refresh from position 3 on, the first frame after frame 2)."""
    default = references("anchor+prev")
    masked = variants(True)
    assert (masked[0][0] - default[0][0]).abs().max() > 20 * ATOL
    torch.testing.assert_close(masked[1][0], default[1][0])  # the unmasked clip is untouched
    refreshed = variants(injection="anchor+prev", anchor_refresh=2)
    torch.testing.assert_close(refreshed[0][0][:3], default[0][0][:3])
    assert (refreshed[0][0][3:] - default[0][0][3:]).abs().max() > 20 * ATOL


# Step caching (step_cache.py): full steps 0, 1 and 3 (a warm-up of one step, then every 2nd), or 0 and
# 3, of 4, by step index for every frame; the wavefront's ticks mix full and cached items, which the
# engine runs as two UNet calls.
CACHING = [
    {"cache_interval": "2", "cache_warmup": 0.25},
    {"cache_interval": "3", "inversion_cache_interval": "2", "cache_depth": 1},
    {"inversion_cache_interval": "3", "cache_depth": 6},
]


@pytest.mark.parametrize("fields", CACHING)
@pytest.mark.parametrize(("schedule", "max_batch"), [("sequential", 1), ("wavefront", 3), ("wavefront", 64)])
def test_engine_equals_reference_with_step_caching(editor, clips, variants, fields, schedule, max_batch):
    config = EditConfig(steps=STEPS, schedule=schedule, max_batch=max_batch, **fields)
    assert_same(engine_edit(editor, clips, config), variants(**fields))


@pytest.mark.parametrize("fields", CACHING)
def test_step_caching_changes_the_edit(references, variants, fields):
    """The comparison above can fail: caching moves the latents well past ATOL."""
    assert (variants(**fields)[0][0] - references("anchor+prev")[0][0]).abs().max() > 20 * ATOL


def test_engine_equals_reference_without_update_and_guidance_one(editor, clips):
    config = EditConfig(steps=STEPS, latent_update=False, guidance_scale=1.0, schedule="wavefront", max_batch=64)
    assert_same(engine_edit(editor, clips, config), reference(editor, clips, config))


def test_the_reference_is_sensitive(editor, clips, references):
    """The comparison can fail: variants differ from each other by far more than the tolerance."""
    default = references("anchor+prev")
    for other in ("anchor", "prev", "none", "random"):
        diff = (references(other)[0][0][2:] - default[0][0][2:]).abs().max()
        assert diff > 20 * ATOL, other  # > 5x what assert_same lets through (atol + rtol * |z| ~ 7e-4)
    assert (references("anchor+prev", reverse=True)[0][0] - default[0][0]).abs().max() > 20 * ATOL


def test_decoded_frames_equal(editor, clips, references):
    config = EditConfig(steps=STEPS, schedule="wavefront", max_batch=64)
    got = engine_edit(editor, clips, config)[0][1]
    want = references("anchor+prev")[0][1]
    a = np.stack(list(editor.decode(got))).astype(int)
    b = reference_decode(editor.models, want).astype(int)
    assert a.shape == b.shape == (5, 64, 64, 3)
    assert np.abs(a - b).max() <= 1  # floor() may flip one grey level on a 1e-6 difference
    assert (a == b).mean() > 0.99


def test_random_draws_depend_on_seed_video_and_prompt_only():
    draws = random_sources(12, 0, "clip-a", "a red ball")
    assert draws == random_sources(12, 0, "clip-a", "a red ball")
    assert draws[:2] == [0, 0] and all(0 <= d < i for i, d in enumerate(draws) if i)
    assert draws != random_sources(12, 1, "clip-a", "a red ball")
    assert draws != random_sources(12, 0, "clip-b", "a red ball")
    assert draws != random_sources(12, 0, "clip-a", "a blue cube")


def test_random_ablation_ignores_job_position(editor, clips):
    """A (video, prompt) gets the same random frames whether it is the first job or the third."""
    video_id, frames, depth, _ = clips[0]
    config = EditConfig(steps=STEPS, injection="random", schedule="sequential")
    video = editor.prepare(frames, depth, video_id=video_id)
    zT = editor.invert(video, SOURCE, config)
    together = editor.edit(video, zT, ["snow", "a red ball", "a blue cube"], config)
    (alone,) = editor.edit(video, zT, ["a blue cube"], config)
    torch.testing.assert_close(together[2], alone, atol=1e-5, rtol=1e-5)
    other = editor.prepare(frames, depth, video_id="another-id")
    (renamed,) = editor.edit(other, editor.invert(other, SOURCE, config), ["a blue cube"], config)
    draws = [random_sources(len(frames), 0, v, "a blue cube") for v in (video_id, "another-id")]
    if draws[0] != draws[1]:
        assert not torch.allclose(renamed, alone, atol=1e-3)


def test_reference_restores_the_editors_processors(editor, clips):
    before = {k: type(p) for k, p in editor.models.unet.attn_processors.items()}
    video_id, frames, depth, _ = clips[1]
    reference_edit(editor.models, frames, editor.prepare(frames, depth).depth, SOURCE, ["x"], EditConfig(steps=1))
    assert {k: type(p) for k, p in editor.models.unet.attn_processors.items()} == before
