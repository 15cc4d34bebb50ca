"""The paper's per-frame baseline, SDEdit (`Pix2Video.sdedit`), on the tiny model (CPU, float32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.clips import moving_shapes
from pipeline.errors import InputError
from pipeline.method.editor import EditConfig, Pix2Video, sdedit_noise
from pipeline.method.injection import FeatureStore

STEPS = 6
PROMPT = ["a red ball"]


@pytest.fixture(scope="module")
def editor(tiny_model_dir) -> Pix2Video:
    from pipeline.models.loading import load_diffusion_models

    return Pix2Video(load_diffusion_models(str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def video(editor):
    frames = moving_shapes(num_frames=3, width=64, height=64, seed=5)
    depth = [f.mean(-1).astype(np.float32) for f in frames]
    return editor.prepare(frames, depth, video_id="clip")


def _timesteps(editor: Pix2Video, run) -> tuple[object, list[int]]:
    """Run `run()` and return its result and the timestep of every UNet call."""
    seen: list[int] = []
    hook = editor.models.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(int(torch.as_tensor(args[1]).flatten()[0])), with_kwargs=True
    )
    try:
        return run(), seen
    finally:
        hook.remove()


def test_strength_zero_returns_the_clean_latents(editor, video):
    (z,), seen = _timesteps(editor, lambda: editor.sdedit(video, PROMPT, EditConfig(steps=STEPS), strength=0.0))
    assert seen == []
    assert torch.equal(z, video.latents)  # decoded, the VAE's round trip of the input


def test_strength_sets_the_first_step(editor, video):
    """Strength 1 noises to τ_0 and runs all S steps; 0.5 runs the last ⌊S/2⌋ from their first."""
    config = EditConfig(steps=STEPS)
    (full,), seen = _timesteps(editor, lambda: editor.sdedit(video, PROMPT, config, strength=1.0))
    assert seen == [(STEPS - 1 - k) * (1000 // STEPS) for k in range(STEPS)]  # τ_0 … τ_{S-1}
    (half,), seen = _timesteps(editor, lambda: editor.sdedit(video, PROMPT, config, strength=0.5))
    assert seen == [(STEPS - 1 - k) * (1000 // STEPS) for k in range(STEPS // 2, STEPS)]
    # Strength 1 leaves the clean latent far behind, 0.5 less far.
    far, near = (full - video.latents).abs().mean(), (half - video.latents).abs().mean()
    assert far > near > 0


def test_same_seed_same_frames_and_every_frame_alone(editor, video):
    config = EditConfig(steps=STEPS, seed=3)
    (a,) = editor.sdedit(video, PROMPT, config)
    (b,) = editor.sdedit(video, PROMPT, config)
    assert torch.equal(a, b)
    (other,) = editor.sdedit(video, PROMPT, EditConfig(steps=STEPS, seed=4))
    assert (other - a).abs().max() > 1e-3
    # Fresh noise per frame, drawn from (seed, video id, frame index): frame 0's noise is the same in
    # a shorter clip and differs from frame 1's.
    noise = sdedit_noise(video, 3)
    assert not torch.equal(noise[0], noise[1])
    short = editor.prepare(np.zeros((1, 64, 64, 3), np.uint8), [np.zeros((8, 8), np.float32)], video_id="clip")
    assert torch.equal(sdedit_noise(short, 3)[0], noise[0])


def test_identical_frames_get_different_noise(editor):
    """What makes per-frame SDEdit flicker: two copies of one frame come out different (Pix2Video's
    edits of identical frames are identical, tests/test_method.py)."""
    frame = moving_shapes(num_frames=1, width=64, height=64, seed=1)
    depth = [frame[0].mean(-1).astype(np.float32)] * 2
    video = editor.prepare(np.concatenate([frame, frame]), depth, video_id="twins")
    (z,) = editor.sdedit(video, PROMPT, EditConfig(steps=STEPS))
    assert (z[0] - z[1]).abs().max() > 1e-3


def test_never_reads_the_feature_store(editor, video, monkeypatch):
    """No injection: no plan is set, and the store's recorded features are never touched."""

    def touched(*_a, **_k):
        raise AssertionError("SDEdit touched the feature store")

    class Untouchable(dict):
        __getitem__ = get = __contains__ = touched

    monkeypatch.setattr(FeatureStore, "anchor_buffer", touched)
    monkeypatch.setattr(FeatureStore, "prev_buffer", touched)
    monkeypatch.setattr(editor.store, "anchor", Untouchable())
    monkeypatch.setattr(editor.store, "prev", Untouchable())
    plans = []
    hook = editor.models.unet.register_forward_pre_hook(lambda *_: plans.append(editor.store.plan))
    try:
        (z,) = editor.sdedit(video, PROMPT, EditConfig(steps=STEPS))
    finally:
        hook.remove()
    assert plans and all(p is None for p in plans) and torch.isfinite(z).all()


def test_several_prompts_and_bad_strength(editor, video):
    config = EditConfig(steps=2)
    both = editor.sdedit(video, ["a red ball", "snow"], config)
    (alone,) = editor.sdedit(video, ["snow"], config)
    torch.testing.assert_close(both[1], alone, atol=1e-5, rtol=1e-5)  # same noise for every prompt
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="strength"):
            editor.sdedit(video, PROMPT, config, strength=bad)
