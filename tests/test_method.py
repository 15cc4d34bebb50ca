"""The properties docs/METHOD.md says must stay true, on the tiny model (CPU, float32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from fixtures.clips import moving_shapes
from pipeline.method.ddim import DDIMSchedule
from pipeline.method.editor import EditConfig, Pix2Video
from pipeline.method.injection import FeatureStore, InjectionPlan, InjectionProcessor
from pipeline.method.steps import REFERENCE_LATENT_ELEMENTS

STEPS = 6


@pytest.fixture(scope="module")
def editor(tiny_model_dir) -> Pix2Video:
    from pipeline.models.loading import load_diffusion_models

    return Pix2Video(load_diffusion_models(str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, list[np.ndarray]]:
    frames = moving_shapes(num_frames=5, width=64, height=64, seed=3)
    # Depth: a ramp plus the brightness of the frame, at a resolution unlike the frames'.
    ramp = np.linspace(0, 1, 32, dtype=np.float32)[None, :]
    depth = [ramp + f[::2, ::2].mean(-1).astype(np.float32) / 255 for f in frames]
    return frames, depth


def run(editor, frames, depth, prompts, **cfg):
    config = EditConfig(steps=STEPS, **cfg)
    video = editor.prepare(frames, depth)
    zT = editor.invert(video, "shapes on a gradient", config)
    return video, zT, editor.edit(video, zT, prompts, config)


def test_schedule_matches_reference_constants():
    sched = DDIMSchedule.create(50)
    assert [sched.denoise_timestep(k) for k in (0, 1, 49)] == [980, 960, 0]
    assert [sched.invert_timestep(k) for k in (0, 1, 49)] == [0, 20, 980]
    ref = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.equal(sched.alphas, ref.alphas_cumprod)
    assert sched.alpha(-20) == sched.alpha(0)


def _attention(dim=32, heads=4) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=dim, heads=heads, dim_head=dim // heads).eval()


def test_processor_matches_hand_written_attention():
    attn = _attention()
    store = FeatureStore()
    store.reset(num_jobs=1, steps=1, branches=1)
    proc = InjectionProcessor(store, layer=0)
    anchor, prev, current = torch.randn(3, 1, 10, 32).unbind(0)
    # Record anchor and previous-frame features, then inject them into the current frame.
    store.plan = InjectionPlan(n_plain=1, record_anchor=torch.tensor([0]))
    proc(attn, anchor)
    store.plan = InjectionPlan(n_plain=1, record_prev_plain=torch.tensor([0]))
    proc(attn, prev)
    store.plan = InjectionPlan(
        n_plain=0, read_anchor=torch.tensor([0]), read_prev=torch.tensor([0]), write_prev=torch.tensor([0])
    )
    got = proc(attn, current)
    with torch.no_grad():
        kv = torch.cat([anchor, prev], dim=1)
        q, k, v = attn.to_q(current), attn.to_k(kv), attn.to_v(kv)
        split = lambda x: x.view(1, -1, 4, 8).transpose(1, 2)  # noqa: E731
        w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / 8**0.5, dim=-1)
        want = attn.to_out[0]((w @ split(v)).transpose(1, 2).reshape(1, -1, 32))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # The current frame's features replaced the previous frame's in the rolling slot.
    assert torch.equal(store.prev[0][0], current[0])


def test_injecting_own_features_reproduces_ordinary_attention():
    attn = _attention()
    store = FeatureStore()
    store.reset(num_jobs=1, steps=1, branches=1)
    proc = InjectionProcessor(store, layer=0)
    h = torch.randn(1, 16, 32)
    store.plan = InjectionPlan(n_plain=1, record_anchor=torch.tensor([0]))
    proc(attn, h)
    store.plan = InjectionPlan(n_plain=0, read_anchor=torch.tensor([0]))
    torch.testing.assert_close(proc(attn, h), AttnProcessor2_0()(attn, h), atol=1e-6, rtol=1e-6)


def test_frame_injected_with_itself_as_anchor_equals_anchor(editor, clip):
    frames, depth = clip
    same = np.stack([frames[2]] * 2)
    _, _, (z,) = run(
        editor, same, [depth[2]] * 2, ["a red ball"], injection="anchor", latent_update=False, schedule="sequential"
    )
    torch.testing.assert_close(z[1], z[0], atol=1e-5, rtol=1e-5)


def test_no_injection_no_update_is_per_frame_depth2img(editor, clip):
    """Against diffusers' own DDIM scheduler and an untouched attention path, frame by frame."""
    frames, depth = clip
    video, zT, (z,) = run(editor, frames[:3], depth[:3], ["a red ball"], injection="none", latent_update=False)
    unet = editor.models.unet
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, set_alpha_to_one=False, steps_offset=0,
    )
    scheduler.set_timesteps(STEPS)
    cond = torch.cat([editor.encode_text([""]), editor.encode_text(["a red ball"])])
    for i in range(3):
        x = zT[i : i + 1]
        for t in scheduler.timesteps:
            inp = torch.cat([x, video.depth[i : i + 1]], dim=1).repeat(2, 1, 1, 1)
            with torch.no_grad():
                eu, ec = unet(inp, t, cond).sample.chunk(2)
            x = scheduler.step(eu + 7.5 * (ec - eu), t, x).prev_sample
        torch.testing.assert_close(z[i : i + 1], x, atol=1e-4, rtol=1e-4)


def test_inversion_then_denoising_reconstructs(editor, clip):
    """DDIM inversion is a first-order scheme: the round trip's error shrinks with the step size.

    A trained UNet reconstructs closely at 50 steps; the tiny random one is no denoiser (its latent
    input is damped so that ε varies slowly with z, as a trained model's does), so convergence is
    checked along with closeness.
    """
    frames, depth = clip
    video = editor.prepare(frames[:1], depth[:1])
    errors = []
    for steps in (20, 80):
        config = EditConfig(steps=steps, guidance_scale=1.0, injection="none", latent_update=False)
        zT = editor.invert(video, "shapes on a gradient", config)
        (z,) = editor.edit(video, zT, ["shapes on a gradient"], config)
        errors.append(float((z - video.latents).abs().mean() / video.latents.abs().mean()))
        moved = float((zT - video.latents).abs().mean() / video.latents.abs().mean())
    assert errors[1] < 0.5 * errors[0], errors
    assert errors[1] < 0.02 * moved, (errors, moved)  # zT is far from z0, the round trip comes back


def test_identical_frames_give_identical_outputs(editor, clip):
    frames, depth = clip
    same = np.stack([frames[1]] * 4)
    _, _, (z,) = run(editor, same, [depth[1]] * 4, ["a red ball"])
    out = np.stack(list(editor.decode(z)))
    for i in range(1, 4):
        assert np.abs(out[i].astype(int) - out[0].astype(int)).max() <= 1


def test_same_run_twice_is_bit_identical(editor, clip):
    frames, depth = clip
    _, _, (a,) = run(editor, frames, depth, ["a red ball"])
    _, _, (b,) = run(editor, frames, depth, ["a red ball"])
    assert torch.equal(a, b)


def test_latent_update_is_the_published_per_element_step(editor, clip):
    """z moves by exactly -λ·(2/n_ref)·(x̂0 - x̂0_prev) at steps 0..K_u after the anchor, never otherwise:
    the published step of SD2's 64x64 latents (n_ref = 4·64·64), here at the tiny model's 8x8."""
    frames, depth = clip
    records = []
    config = EditConfig(steps=STEPS, update_weight=100.0)
    video = editor.prepare(frames[:3], depth[:3])
    zT = editor.invert(video, "shapes", config)
    editor.edit(video, zT, ["a red ball"], config, trace=records.append)
    x0 = {(r.frame, r.step): r.x0 for r in records}
    assert x0[0, 0].numel() == 4 * 8 * 8
    n = REFERENCE_LATENT_ELEMENTS
    last = STEPS // 2
    for r in records:
        delta = r.z - r.z_ddim
        if r.frame == 0 or r.step > last:
            assert torch.equal(delta, torch.zeros_like(delta)), (r.frame, r.step)
        else:
            want = -100.0 * (2.0 / n) * (r.x0 - x0[r.frame - 1, r.step])
            torch.testing.assert_close(delta, want, atol=1e-6, rtol=1e-4)
            assert delta.abs().max() > 0


def test_changing_a_frame_leaves_earlier_frames_unchanged(editor, clip):
    frames, depth = clip
    _, _, (a,) = run(editor, frames, depth, ["a red ball"])
    changed = frames.copy()
    changed[3] = 255 - changed[3]
    _, _, (b,) = run(editor, changed, depth, ["a red ball"])
    assert torch.equal(a[:3], b[:3])
    assert not torch.equal(a[3], b[3])


@pytest.mark.parametrize("max_batch", [2, 64])  # shorter and longer than the video's anti-diagonals
def test_wavefront_and_prompt_batching_equal_sequential(editor, clip, max_batch):
    frames, depth = clip
    prompts = ["a red ball", "a blue cube"]
    _, _, seq = run(editor, frames, depth, prompts, schedule="sequential")
    _, _, fast = run(editor, frames, depth, prompts, schedule="wavefront", max_batch=max_batch)
    for a, b in zip(seq, fast, strict=True):
        pa, pb = (np.stack(list(editor.decode(z))).astype(int) for z in (a, b))
        assert np.abs(pa - pb).max() <= 1


def test_prompts_in_one_call_equal_separate_calls(editor, clip):
    frames, depth = clip
    # Sequential: one item per UNet call, so batch composition cannot change the arithmetic.
    _, _, together = run(editor, frames, depth, ["a red ball", "a blue cube"], schedule="sequential")
    _, _, (alone,) = run(editor, frames, depth, ["a blue cube"], schedule="sequential")
    torch.testing.assert_close(together[1], alone, atol=1e-5, rtol=1e-5)


def test_reverse_edits_from_the_last_frame(editor, clip):
    frames, depth = clip
    _, _, (rev,) = run(editor, frames, depth, ["a red ball"], reverse=True)
    _, _, (fwd_of_reversed,) = run(editor, frames[::-1].copy(), depth[::-1], ["a red ball"])
    # Not bit-equal: the VAE and inversion batches hold other frames in another order.
    torch.testing.assert_close(rev, fwd_of_reversed.flip(0), atol=2e-3, rtol=1e-3)
    assert not torch.allclose(rev, run(editor, frames, depth, ["a red ball"])[2][0], atol=1e-2)


@pytest.mark.parametrize("injection", ["anchor", "prev", "random", "none"])
def test_ablations_differ_from_default_and_are_deterministic(editor, clip, injection):
    frames, depth = clip
    _, _, (default,) = run(editor, frames, depth, ["a red ball"])
    _, _, (a,) = run(editor, frames, depth, ["a red ball"], injection=injection)
    _, _, (b,) = run(editor, frames, depth, ["a red ball"], injection=injection)
    assert torch.equal(a, b)
    torch.testing.assert_close(a[0], default[0])  # the anchor is edited the same way in every variant
    assert not torch.allclose(a[2:], default[2:])


def test_feature_store_does_not_grow_with_video_length(editor, clip):
    frames, depth = clip
    sizes, rows = [], set()

    def look(_):
        for table in (editor.store.anchor, editor.store.prev):
            rows.update(t.shape[0] for t in table.values())

    for n in (2, 5):
        config = EditConfig(steps=STEPS, max_batch=4)
        video = editor.prepare(frames[:n], depth[:n])
        editor.edit(video, editor.invert(video, "shapes", config), ["a red ball"], config, trace=look)
        sizes.append(editor.last_engine.store_bytes)
    assert sizes[0] == sizes[1] > 0
    # Anchor and one rolling previous-frame slot per (step, branch), nine decoder layers each.
    assert rows == {STEPS * 2}
    assert len(editor.store.anchor) == 0  # released after each edit


def test_videos_edited_together_equal_videos_edited_alone(editor, clip):
    frames, depth = clip
    config = EditConfig(steps=STEPS, schedule="wavefront", max_batch=64)
    short = editor.prepare(frames[:2], depth[:2])
    long = editor.prepare(frames[::-1].copy(), depth[::-1])
    zs, zl = editor.invert(short, "shapes", config), editor.invert(long, "shapes", config)
    together = editor.edit_many([(short, zs, ["a red ball"]), (long, zl, ["a blue cube", "snow"])], config)
    assert editor.last_engine.unet_calls == STEPS + 5 - 1  # one call per anti-diagonal of the longer video
    alone = [editor.edit(short, zs, ["a red ball"], config), editor.edit(long, zl, ["a blue cube", "snow"], config)]
    for got, want in zip(together, alone, strict=True):
        for a, b in zip(got, want, strict=True):
            pa, pb = (np.stack(list(editor.decode(z))).astype(int) for z in (a, b))
            assert np.abs(pa - pb).max() <= 1
