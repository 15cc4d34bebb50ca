"""The steps beyond the paper (docs/METHOD.md, "Beyond the paper"): the input's flow at the latent size
(pipeline/io/flow.py), the warp, the flow-aware latent update and the fusion (steps.py), in the batched
engine against the plain reference loop, and the paper's method untouched while they are off.

Tiny model, CPU, float32, few steps (as tests/test_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.clips import moving_shapes
from pipeline.errors import InputError
from pipeline.io.flow import CHANNELS, TO_NEXT, TO_PREV, flow_in_order, pair_flow, video_flow
from pipeline.method.editor import EditConfig, Pix2Video
from pipeline.method.reference import reference_edit
from pipeline.method.steps import REFERENCE_LATENT_ELEMENTS, flow_fusion, latent_update, warp_latent

STEPS = 4
SOURCE = "shapes on a gradient"
ATOL = 2e-4  # as tests/test_reference.py: batched float order moves latents by about 6e-5
OPTIONS = {
    "flow update": {"flow_update": True},
    "fusion": {"fusion_steps": 2, "fusion_weight": 0.5},
    "both": {"flow_update": True, "fusion_steps": 2, "fusion_weight": 0.8, "fusion_tolerance": 0.5},
    "fusion, update off": {"latent_update": False, "fusion_steps": 3},
}


def _textured(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture (uint8 [size,size,3]) that flow can lock on to."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (size // 4, size // 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- flow


def test_flow_of_a_shift_is_the_shift_in_latent_cells():
    """A picture moved 4 pixels right: frame 1's flow towards frame 0 is −1 cell at factor 4, valid
    away from the border the shift uncovers; frame 0's flow towards frame 1 is +1 cell."""
    big = _textured(96)
    frames = np.stack([big[16:80, 16:80], big[16:80, 12:76]])  # frame 1 shows the scene 4 px to the right
    flow = video_flow(frames, factor=4)
    assert flow.shape == (2, CHANNELS, 16, 16) and flow.dtype == np.float32
    inner = (slice(3, -3), slice(3, -3))
    dx_prev, dy_prev, valid_prev = flow[1, TO_PREV]
    assert np.abs(dx_prev[inner] + 1).max() < 0.1 and np.abs(dy_prev[inner]).max() < 0.1
    assert valid_prev[inner].min() > 0.9
    assert np.abs(flow[0, TO_NEXT][0][inner] - 1).max() < 0.1
    # no neighbour: zero flow, zero validity
    assert not flow[0, TO_PREV].any() and not flow[1, TO_NEXT].any()


def test_flow_of_one_frame_is_empty_and_finite():
    flow = video_flow(_textured(32)[None], factor=8)
    assert flow.shape == (1, CHANNELS, 4, 4) and not flow.any()


@pytest.mark.parametrize("estimator", ["dis", "farneback"])
def test_estimators_follow_the_toy_worlds_true_flow(estimator):
    """On a held-out toy clip the estimated flow is closer to the renderer's true flow than no motion."""
    from toyworld.world import random_scene, render

    clip = render(random_scene(2_000_103, frames=3))
    for t in range(2):
        forward, _ = pair_flow(clip.frames[t], clip.frames[t + 1], estimator)
        error = np.linalg.norm(forward - clip.flow[t], axis=-1).mean()
        still = np.linalg.norm(clip.flow[t], axis=-1).mean()
        assert error < 0.6 * still


def test_bad_flow_input_is_named():
    with pytest.raises(InputError, match="multiple of the latent factor"):
        video_flow(np.zeros((2, 30, 32, 3), np.uint8), factor=8)
    with pytest.raises(InputError, match="estimator"):
        pair_flow(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), "lucas-kanade")


def test_flow_in_order_looks_back_in_edit_order():
    flow = np.arange(2 * CHANNELS).reshape(2, CHANNELS, 1, 1).astype(np.float32)
    assert flow_in_order(flow, reverse=False)[:, :, 0, 0].tolist() == [[0, 1, 2], [6, 7, 8]]
    assert flow_in_order(flow, reverse=True)[:, :, 0, 0].tolist() == [[3, 4, 5], [9, 10, 11]]


# --------------------------------------------------------------------------------------------- steps


def test_warp_by_whole_cells_moves_the_latent():
    x = torch.randn(1, 4, 8, 8)
    flow = torch.zeros(1, 3, 8, 8)
    torch.testing.assert_close(warp_latent(x, flow), x)
    flow[:, 0] = 2.0  # out(p) = x(p + 2 cells right)
    torch.testing.assert_close(warp_latent(x, flow)[..., :6], x[..., 2:])
    torch.testing.assert_close(warp_latent(x, flow)[..., 6:], x[..., 7:].expand(-1, -1, -1, 2))  # the border


def test_flow_aware_update_is_the_paper_update_scaled_by_validity():
    g = torch.Generator().manual_seed(1)
    z, x0, prev = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    ones, zeros = torch.ones(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    torch.testing.assert_close(latent_update(z, x0, prev, 100.0, valid=ones), latent_update(z, x0, prev, 100.0))
    assert torch.equal(latent_update(z, x0, prev, 100.0, valid=zeros), z)
    half = latent_update(z, x0, prev, 100.0, valid=ones / 2)
    torch.testing.assert_close(half, z - 50.0 * 2 / REFERENCE_LATENT_ELEMENTS * (x0 - prev))


def test_fusion_moves_x0_and_z_together():
    g = torch.Generator().manual_seed(2)
    z, x0, warped = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
    valid = torch.zeros(1, 1, 8, 8)
    valid[..., :4] = 1
    sqrt_b = torch.tensor(0.9)
    z_f, x0_f = flow_fusion(z, x0, warped, valid, 0.25, sqrt_b)
    torch.testing.assert_close(x0_f[..., :4], 0.75 * x0[..., :4] + 0.25 * warped[..., :4])
    assert torch.equal(x0_f[..., 4:], x0[..., 4:]) and torch.equal(z_f[..., 4:], z[..., 4:])
    torch.testing.assert_close(z_f - z, sqrt_b * (x0_f - x0))


def test_fusion_tolerance_pulls_where_the_frames_agree():
    """With a tolerance the pull fades with the difference: full where x̂0 already equals the warped
    previous one, a fraction exp(-(d/τ)²) of it elsewhere, none at all where they differ by far more."""
    x0 = torch.zeros(1, 4, 2, 2)
    warped = torch.tensor([0.0, 0.1, 0.5, 5.0]).view(1, 1, 2, 2).expand(1, 4, 2, 2)
    ones, sqrt_b = torch.ones(1, 1, 2, 2), torch.tensor(1.0)
    _, plain = flow_fusion(x0, x0, warped, ones, 0.5, sqrt_b)
    _, gated = flow_fusion(x0, x0, warped, ones, 0.5, sqrt_b, tolerance=0.5)
    torch.testing.assert_close(plain, 0.5 * warped)
    gate = torch.exp(-((torch.tensor([0.0, 0.1, 0.5, 5.0]) / 0.5) ** 2)).view(1, 1, 2, 2)
    torch.testing.assert_close(gated, 0.5 * gate * warped)
    assert gated[0, 0, 1, 1].abs() < 1e-20 < plain[0, 0, 1, 1].abs()


@pytest.mark.parametrize(
    ("field", "value"),
    [("fusion_weight", 1.5), ("fusion_weight", -0.1), ("fusion_steps", -1), ("fusion_tolerance", -1.0)],
)
def test_bad_options_are_named(field, value):
    with pytest.raises(InputError, match=field.replace("_", "-")):
        EditConfig(**{field: value}).validate()


# ----------------------------------------------------------------------------- engine and reference


@pytest.fixture(scope="module")
def editor(tiny_model_dir) -> Pix2Video:
    from pipeline.models.loading import load_diffusion_models

    return Pix2Video(load_diffusion_models(str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, list[np.ndarray]]:
    frames = moving_shapes(num_frames=5, width=64, height=64, seed=3)
    ramp = np.linspace(0, 1, 32, dtype=np.float32)[None, :]
    return frames, [ramp + f[::2, ::2].mean(-1).astype(np.float32) / 255 for f in frames]


def _engine(editor, clip, config, flow=None):
    frames, depth = clip
    video = editor.prepare(frames, depth, video_id="clip", flow=flow)
    return editor.edit(video, editor.invert(video, SOURCE, config), ["a red ball", "snow"], config)


def _reference(editor, clip, config):
    frames, depth = clip
    cond = editor.prepare(frames, depth).depth
    return reference_edit(editor.models, frames, cond, SOURCE, ["a red ball", "snow"], config, video_id="clip")


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize(("schedule", "reverse"), [("sequential", False), ("wavefront", False), ("wavefront", True)])
def test_engine_equals_reference_with_the_options_on(editor, clip, option, schedule, reverse):
    config = EditConfig(steps=STEPS, schedule=schedule, max_batch=3, reverse=reverse, **OPTIONS[option])
    got, want = _engine(editor, clip, config), _reference(editor, clip, config)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-4)


def test_the_options_change_the_edit(editor, clip):
    """Each option moves the latents by far more than the engine's float tolerance (the test above can fail)."""
    paper = _engine(editor, clip, EditConfig(steps=STEPS))[0]
    for fields in OPTIONS.values():
        assert (_engine(editor, clip, EditConfig(steps=STEPS, **fields))[0] - paper).abs().max() > 50 * ATOL


def test_with_the_options_off_the_flow_is_never_read(editor, clip):
    """The paper's method: the same frames whatever flow the video carries (the same code path)."""
    frames, _ = clip
    cells = 64 // editor.sizes.vae_factor
    wild = np.random.default_rng(0).normal(0, 5, (len(frames), CHANNELS, cells, cells)).astype(np.float32)
    config = EditConfig(steps=STEPS)
    for a, b in zip(_engine(editor, clip, config), _engine(editor, clip, config, flow=wild), strict=True):
        assert torch.equal(a, b)
    # with the flow-aware update on, that flow matters
    on = EditConfig(steps=STEPS, flow_update=True)
    assert not torch.equal(_engine(editor, clip, on)[0], _engine(editor, clip, on, flow=wild)[0])


def test_one_frame_clips_and_shots_edit_without_flow(editor, clip):
    frames, depth = clip
    config = EditConfig(steps=STEPS, flow_update=True, fusion_steps=2)
    video = editor.prepare(frames[:1], depth[:1])
    assert video.flow is None
    (latents,) = editor.edit(video, editor.invert(video, SOURCE, config), ["a red ball"], config)
    assert torch.isfinite(latents).all()
    # shots of 1 and 4 frames of one clip, each edited as a video of its own, with the flow sliced
    whole = editor.prepare(frames, depth)
    pieces = editor.invert_shots(whole, [0, 1], [SOURCE, SOURCE], config)
    (edited,) = editor.edit_shots([[(shot, zT, ["a red ball"]) for shot, zT in pieces]], config)
    assert edited[0].shape[0] == len(frames) and torch.isfinite(edited[0]).all()
    alone = editor.prepare(frames[1:], depth[1:])
    (want,) = editor.edit(alone, editor.invert(alone, SOURCE, config), ["a red ball"], config)
    torch.testing.assert_close(edited[0][1:], want, atol=ATOL, rtol=1e-4)


def test_a_flow_of_the_wrong_shape_is_named(editor, clip):
    frames, depth = clip
    with pytest.raises(InputError, match="flow"):
        editor.prepare(frames, depth, flow=np.zeros((len(frames), CHANNELS, 3, 3), np.float32))


def test_the_precompute_stage_stores_the_flow_beside_the_depth(tmp_path, tiny_model_dir):
    """flow.npy in the store: `video_flow` of the stored frames at the model's latent grid, what the edit
    stage hands to `prepare` (so the editor never estimates it)."""
    from fixtures.clips import write_sample_video
    from pipeline.dataset.storage import StorageOptions
    from pipeline.models.sizes import read_model_sizes
    from pipeline.stages.options import PrecomputeSpec
    from pipeline.stages.precompute import PrecomputeStage
    from pipeline.stages.store import load_array

    opts = StorageOptions()
    path = tmp_path / "a.mp4"
    write_sample_video(path, num_frames=3, width=64, height=64)
    spec = PrecomputeSpec(output=str(tmp_path / "out"), model="tiny", caption_model="tiny", size=(64, 64), device="cpu")
    record = PrecomputeStage(spec, opts).run("a", str(path), True)
    assert record["status"] == "ok" and record["flow"].endswith("flow.npy")
    stored = load_array(record["flow"], opts)
    factor = read_model_sizes(str(tiny_model_dir)).vae_factor
    np.testing.assert_array_equal(stored, video_flow(load_array(record["frames"], opts), factor))


# ------------------------------------------------------------------------ the edit stage and the store
# The store's flow in `run`'s edit stage (pipeline/stages/edit.py), without Ray: PrecomputeStage fills
# the store, EditStage edits from it, as on the cluster.

FLOW_ON = {"flow_update": True, "fusion_steps": 5, "fusion_weight": 0.5}


def _store(tmp_path, clips: dict[str, tuple[int, list[int] | None]], **config):
    """Precomputed records of sample clips (name -> (frames, shots)) and the stage's EditSpec."""
    from runs import tiny_options

    from fixtures.clips import write_sample_video
    from pipeline.dataset.storage import StorageOptions
    from pipeline.stages.precompute import PrecomputeStage

    opts = tiny_options(tmp_path / "out", config=EditConfig(steps=5, **config))
    metas = {}
    for name, (frames, shots) in clips.items():
        path = tmp_path / f"{name}.mp4"
        write_sample_video(path, num_frames=frames, width=64, height=64)
        metas[name] = PrecomputeStage(opts.precompute_spec(), StorageOptions()).run(
            name, str(path), False, False, shots
        )
    return metas, opts.edit_spec()


def _edit(metas, spec, shots=None) -> dict[str, dict]:
    from pipeline.dataset.manifest import Unit
    from pipeline.stages.edit import EditStage

    units = [
        (meta, [Unit(n, n, meta.video, "a red car", "shapes", i, f"{n}__a", shots=(shots or {}).get(n))])
        for i, (n, meta) in enumerate(metas.items())
    ]
    rows = EditStage("tiny").edit_videos(units, spec, [1] * len(units))["rows"]
    return {r["id"]: r for r in rows}


def _frames(row: dict) -> np.ndarray:
    from pipeline.io.video import read_frames

    return read_frames(row["output"]).frames


def test_a_one_frame_clip_and_a_one_frame_shot_are_edited_without_flow(tmp_path, tiny_model_dir):
    """Issue 27: with --flow-update --fusion-steps 5 a clip of one frame (the store holds no flow) and a
    clip whose last shot is one frame (manifest `shots`) are edited, without NaN: the one-frame shot is
    its shot's anchor, which never reads the flow, and the clip's other shot gets the flow sliced."""
    from pipeline.stages.edit import EditStage

    metas, spec = _store(tmp_path, {"one": (1, None), "cut": (4, [0, 3])}, **FLOW_ON)
    assert metas["one"].flow is None and metas["cut"].flow and metas["cut"].shots == [0, 3]
    rows = _edit(metas, spec, shots={"cut": (0, 3)})
    assert rows["one"]["status"] == "ok" and rows["cut"]["status"] == "ok", rows
    assert rows["cut"]["shots"] == [0, 3] and len(_frames(rows["cut"])) == 4 and len(_frames(rows["one"])) == 1
    # the latents themselves, before decoding could hide a NaN
    from pipeline.dataset.storage import StorageOptions
    from pipeline.stages.store import load_array

    stage, opts = EditStage("tiny"), StorageOptions()
    for name, meta in metas.items():
        frames, depth = load_array(meta.frames, opts), load_array(meta.depth, opts)
        flow = None if meta.flow is None else load_array(meta.flow, opts)
        clip = stage.prepare(
            frames, depth, meta.shots or [0], ["shapes"] * len(meta.shots or [0]), spec.config, flow=flow
        )
        (latents,) = stage.edit([(clip, [["a red car"] * len(meta.shots or [0])])], spec.config)[0]
        assert latents.shape[0] == len(frames) and torch.isfinite(latents).all(), name


@pytest.mark.parametrize("damage", ["wrong shape", "not an array"])
def test_a_bad_stored_flow_never_fails_the_paper_and_is_estimated_again_with_the_options(
    tmp_path, tiny_model_dir, caplog, damage
):
    """With the options off the stored flow is not read at all (a damaged flow.npy fails nothing and the
    edit is the same); with them on, a flow.npy that does not fit the clip or cannot be read is estimated
    again from the stored frames (a warning names it), giving the edit a good flow.npy gives."""
    import logging

    good = {}
    for options in ({}, FLOW_ON):
        metas, spec = _store(tmp_path / ("on" if options else "off") / "good", {"v": (3, None)}, **options)
        good[bool(options)] = _frames(_edit(metas, spec)["v"])
        metas, spec = _store(tmp_path / ("on" if options else "off") / "bad", {"v": (3, None)}, **options)
        path = metas["v"].flow
        if damage == "wrong shape":
            np.save(path, np.zeros((2, CHANNELS, 3, 3), np.float32))
        else:
            with open(path, "wb") as f:
                f.write(b"not a numpy file")
        with caplog.at_level(logging.WARNING, logger="pipeline.stages.edit"):
            caplog.clear()
            row = _edit(metas, spec)["v"]
        assert row["status"] == "ok", row
        np.testing.assert_array_equal(_frames(row), good[bool(options)])
        warned = [r.getMessage() for r in caplog.records if "flow.npy" in r.getMessage()]
        if options:
            assert len(warned) == 1 and "estimated again" in warned[0], warned
            assert ("(3, 6" in warned[0]) if damage == "wrong shape" else ("cannot be read" in warned[0])
        else:
            assert warned == []  # never read
    assert not np.array_equal(good[True], good[False])  # the options do change this edit
