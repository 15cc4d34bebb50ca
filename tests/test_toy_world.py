"""The toy world's renderer and its ground-truth measures (no models)."""

from __future__ import annotations

import numpy as np
import pytest

from toyworld.measures import outside_psnr, score_edit, structure_iou, warp_error
from toyworld.trainer import Trainer
from toyworld.world import COLOURS, FLOORS, RADIUS, SHAPES, SIZE, TEXTURES, colour_of, random_scene, render


@pytest.fixture(scope="module")
def clip():
    return render(random_scene(1_000_003, frames=4))


def test_same_seed_same_clip_and_different_seed_differs(clip):
    again = render(random_scene(1_000_003, frames=4))
    assert np.array_equal(clip.frames, again.frames) and np.array_equal(clip.flow, again.flow)
    other = render(random_scene(1_000_004, frames=1))
    assert not np.array_equal(clip.frames, other.frames)


def test_ground_truth_shapes_and_ranges(clip):
    n, h, w, _ = clip.frames.shape
    assert (n, h, w) == (4, 128, 128) and clip.frames.dtype == np.uint8
    assert clip.depth.shape == (n, h, w) and clip.flow.shape == (n - 1, h, w, 2)
    assert clip.masks.shape == (n, len(clip.scene.objects), h, w)
    assert (clip.depth > 0).all() and np.isfinite(clip.disparity).all()
    # objects are nearer than the backdrop behind them
    for i in range(len(clip.scene.objects)):
        assert clip.masks[:, i].any()
        assert clip.depth[clip.masks[:, i]].max() < clip.depth.max()


def test_caption_follows_the_grammar(clip):
    words = set(" ".join(clip.captions).split())
    known = set(COLOURS) | set(FLOORS) | set(SHAPES) | set(TEXTURES) | {"a", "and", "on", "floor"}
    assert words <= known and "plain" not in words
    for o in clip.scene.objects:
        assert o.colour in clip.caption and o.shape in clip.caption
    assert clip.caption.endswith(f"on a {clip.scene.floor} floor")


def test_texture_parameters_are_not_in_the_caption():
    """Two scenes that differ only in stripe phase have one caption and different pixels: text and
    depth do not determine appearance (what makes per-frame editing inconsistent)."""
    scene = random_scene(7, objects=1, frames=2)
    scene.objects[0].texture = "striped"
    other = scene.with_object(0)
    along, across = other.objects[0].phase
    other.objects[0].phase = ((along + 0.5) % 1.0, across)  # half a period: the stripes swap colours
    a, b = render(scene), render(other)
    assert a.captions == b.captions and np.array_equal(a.depth, b.depth)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() > 50


def test_true_flow_maps_pixels_onto_the_same_surface(clip):
    """Warping frame t+1 back by the true flow matches frame t far better than no warp does."""
    obj = 0
    zero = np.zeros_like(clip.flow)
    moved = warp_error(clip.frames, clip.masks, clip.ids, clip.flow, obj)
    still = warp_error(clip.frames, clip.masks, clip.ids, zero, obj)
    assert moved < 0.5 * still


def test_colour_reading_and_structure_iou():
    scene = random_scene(11, objects=1, frames=3)
    scene.objects[0].texture = "striped"
    target = next(c for c in COLOURS if c != scene.objects[0].colour)
    edited = render(scene.with_object(0, colour=target))
    original = render(scene)
    m = edited.masks[0, 0]
    assert colour_of(edited.frames[0][m]) == target
    assert colour_of(original.frames[0][m]) == scene.objects[0].colour
    assert structure_iou(edited.frames[0], m, target) > 0.8
    assert structure_iou(original.frames[0], m, target) < 0.1
    score = score_edit(edited.frames, edited.masks, edited.ids, edited.flow, 0, target, original.frames)
    assert score.accuracy == 1.0 and score.iou > 0.8
    assert score.outside > 45  # only the object changed
    unchanged = score_edit(original.frames, original.masks, original.ids, original.flow, 0, target, original.frames)
    assert unchanged.accuracy == 0.0 and unchanged.outside == pytest.approx(10 * np.log10(255**2 / 1e-6))


def test_outside_psnr_ignores_the_dilated_mask_only():
    frames = np.full((2, 32, 32, 3), 100, np.uint8)
    mask = np.zeros((2, 32, 32), bool)
    mask[:, 10:20, 10:20] = True
    edited = frames.copy()
    edited[:, 8:22, 8:22] = 0  # inside the mask dilated by 2: not counted
    assert outside_psnr(edited, frames, mask, dilate=2) > 100
    edited[:, 0, 0] = 90  # outside: counted
    assert 40 < outside_psnr(edited, frames, mask, dilate=2) < 60


def test_objects_are_large_and_patterns_span_latent_cells():
    """A third to a half of the frame's height, and a pattern period of at least two cells of the 4x
    latent (8 pixels), so the latent can hold the texture the caption names."""
    radii, periods = [], []
    for seed in range(40):
        scene = random_scene(seed, frames=1)
        for o in scene.objects:
            r = RADIUS * SIZE / o.z0
            radii.append(r)
            periods.append(o.period * r)
    diameters = 2 * np.array(radii) / SIZE
    assert diameters.min() >= 0.33 and diameters.max() <= 0.6, (diameters.min(), diameters.max())
    assert min(periods) >= 2 * 4


def test_appearance_the_caption_leaves_free_is_shared_inside_a_frame():
    """What a denoiser can copy from one region to another: the objects of a scene share the pattern's
    angle, period and shade (and dotted ones one motif of dots), and the wallpaper repeats its motif
    along the wall, so a shift by one period maps the wall onto itself."""
    from toyworld.world import _paper

    for seed in range(20):
        scene = random_scene(seed, frames=1, objects=2)
        a, b = scene.objects
        assert (a.angle, a.period, a.shade, a.dots) == (b.angle, b.period, b.shade, b.dots)
        assert a.phase != b.phase  # where the pattern sits is each object's own
        angle, period = scene.paper
        assert angle == a.angle
        y, x = np.mgrid[0:64, 0:64].astype(np.float32)
        shifted = _paper(scene, x + period * np.cos(angle), y + period * np.sin(angle))
        assert np.mean(shifted == _paper(scene, x, y)) > 0.99
    scenes = [random_scene(seed, frames=1) for seed in range(10)]
    assert len({s.objects[0].dots for s in scenes}) == 10 and len({s.paper_dots for s in scenes}) == 10


def test_trainer_resumes_where_it_stopped(tmp_path):
    """A run stopped after its first checkpoint and resumed ends with the same weights as one that
    never stopped (batches are drawn from (seed, step), the optimizer state is restored)."""
    import torch

    def make():
        torch.manual_seed(0)
        m = torch.nn.Linear(3, 1)
        return m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    def step_fn(m, opt):
        def step(i):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(8, 3, generator=g)
            loss = ((m(x) - x.sum(1, keepdim=True)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.item()

        return step

    m1, o1 = make()
    Trainer("a", tmp_path, {"m": m1}, o1, 10, checkpoint_every=5).run(step_fn(m1, o1))

    m2, o2 = make()
    t = Trainer("b", tmp_path, {"m": m2}, o2, 10, checkpoint_every=5)
    calls = []

    def stop_after_6(i):
        if i == 6:
            raise KeyboardInterrupt
        calls.append(i)
        return step_fn(m2, o2)(i)

    with pytest.raises(KeyboardInterrupt):
        t.run(stop_after_6)
    m3, o3 = make()  # a fresh process: new modules, state from the checkpoint at step 5
    t3 = Trainer("b", tmp_path, {"m": m3}, o3, 10, checkpoint_every=5)
    t3.run(step_fn(m3, o3))
    assert t3.start == 5 and t3.done
    assert torch.allclose(m1.weight, m3.weight, atol=1e-6)
    assert (tmp_path / "b" / "loss.png").exists()
