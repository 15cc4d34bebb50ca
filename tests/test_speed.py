"""The speed options (pipeline/models/speed.py) give the frames they give without them.

Each option is compared with all of them off on the tiny model (CPU, float32): 4 frames of 64², 4
steps, wavefront with `--max-batch 3` and 2 prompts, so UNet batches of 2, 4 and 6 rows (padded to 2,
4 and 8 when compiled), with the feature store read and written in every call. The tolerances sit a
little above the noise measured here (the figure beside each); frames must agree within one grey level.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import pytest
import torch

from fixtures.clips import moving_shapes
from pipeline.errors import InputError
from pipeline.method.editor import EditConfig, Pix2Video
from pipeline.models.speed import (
    DEFAULTS,
    ResolvedSpeed,
    SpeedForward,
    SpeedOptions,
    apply_speed_options,
    static_batch_size,
    warm_up,
)

CONFIG = EditConfig(steps=4, schedule="wavefront", max_batch=3)
PROMPTS = ["a red painting", "a blue painting"]


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, list[np.ndarray]]:
    frames = moving_shapes(num_frames=4, width=64, height=64, seed=5)
    return frames, [f.mean(-1).astype(np.float32) for f in frames]


def _editor(tiny_model_dir, speed: SpeedOptions | ResolvedSpeed | None = None) -> Pix2Video:
    from pipeline.models.loading import load_diffusion_models

    models = load_diffusion_models(str(tiny_model_dir), device="cpu")
    if speed is not None:  # load_diffusion_models applied the CPU defaults (all off): start again
        models.unet.__dict__.pop("forward", None)
        apply_speed_options(models, speed)
    return Pix2Video(models)


def _edit(editor: Pix2Video, clip, *, store: bool = False):
    """zT, the edited latents per prompt, the frames of prompt 0, and (store=True) a copy of the
    feature store as the engine left it after its last UNet call."""
    frames, depth = clip
    video = editor.prepare(frames, depth)
    zT = editor.invert(video, "shapes", CONFIG)
    kept: dict[str, torch.Tensor] = {}
    if store:
        # The engine resets the store when it finishes: copy its buffers at every frame's end.
        def keep(_job: int, _frame: int) -> None:
            for name, table in (("anchor", editor.store.anchor), ("prev", editor.store.prev)):
                for layer, t in table.items():
                    kept[f"{name}{layer}"] = t.clone()

        latents = editor.edit(video, zT, PROMPTS, CONFIG, on_frame_done=keep)
    else:
        latents = editor.edit(video, zT, PROMPTS, CONFIG)
    pixels = np.stack(list(editor.decode(latents[0])))
    return zT, latents, pixels, kept


@pytest.fixture(scope="module")
def baseline(tiny_model_dir, clip):
    return _edit(_editor(tiny_model_dir, SpeedOptions(channels_last="off", compile="off")), clip, store=True)


def _compare(result, baseline, latent_tol: float) -> float:
    zT, latents, pixels, _ = result
    zT0, latents0, pixels0, _ = baseline
    diff = max(
        [(zT - zT0).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(latents, latents0, strict=True)]
    )
    assert diff <= latent_tol, diff
    assert np.abs(pixels.astype(int) - pixels0.astype(int)).max() <= 1
    return diff


def test_defaults_per_device_type():
    for device, defaults in DEFAULTS.items():
        assert SpeedOptions().resolve(device).as_dict() == defaults
    # Nothing has been measured on a GPU yet (issue 19): every CUDA option is off until gpu_check says.
    assert SpeedOptions().resolve("cuda") == ResolvedSpeed()
    assert SpeedOptions(cuda_graphs="on").resolve("cpu").compile  # CUDA graphs come through torch.compile
    assert SpeedOptions(compile="on", channels_last="on").resolve("cuda") == ResolvedSpeed(True, "auto", True, False)
    with pytest.raises(InputError, match="--compile"):
        SpeedOptions(compile="yes").resolve("cpu")
    with pytest.raises(InputError, match="--attention"):
        SpeedOptions(attention="fast").validate()


def test_flags_reach_the_options():
    from jobs import _common
    from jobs.cli import build_parser

    for verb in ("edit", "run", "bench", "augment"):
        actions = {a.dest for a in build_parser(verb)._actions}
        assert {"channels_last", "attention", "compile", "cuda_graphs"} <= actions, verb
    args = build_parser("bench").parse_args(["--compile", "on", "--attention", "math"])
    assert _common.speed_options(args) == SpeedOptions(compile="on", attention="math")
    assert _common.speed_options(argparse.Namespace()) == SpeedOptions()  # a verb without the flags
    with pytest.raises(InputError, match="--channels-last"):  # a usage error: one line, exit 2
        build_parser("bench").parse_args(["--channels-last", "maybe"])


def test_static_batch_sizes():
    assert [static_batch_size(r) for r in (1, 2, 3, 4, 5, 6, 8, 9, 16)] == [1, 2, 4, 4, 8, 8, 8, 16, 16]


def test_channels_last_same_frames(tiny_model_dir, clip, baseline):
    editor = _editor(tiny_model_dir, SpeedOptions(channels_last="on"))
    assert editor.models.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    _compare(_edit(editor, clip), baseline, latent_tol=2.5e-4)  # measured 5.1e-5 (frames: 1 grey level)


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_attention_backend_same_frames(tiny_model_dir, clip, baseline, backend):
    # On the CPU "flash" is PyTorch's CPU flash kernel: forcing it proves the injected path (queries of
    # one frame against the concatenated keys and values of its sources) is eligible for it.
    editor = _editor(tiny_model_dir, SpeedOptions(attention=backend))
    _compare(_edit(editor, clip), baseline, latent_tol=2.5e-4)  # measured: math 3.9e-5, flash 0 (auto's own)


def test_injected_attention_inputs_suit_fused_kernels(tiny_model_dir, clip, monkeypatch):
    """What CUDA's flash and memory-efficient kernels ask of their inputs (PyTorch's sdp_utils): one
    dtype for query, key and value, a unit stride on the last dimension, no mask, 4-D [B, heads, L, d]."""
    import pipeline.method.injection as injection

    seen = []
    original = injection.F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype == k.dtype == v.dtype, q.stride(-1), k.stride(-1), v.stride(-1), q.dim(), k.shape[2]))
        assert kwargs.get("attn_mask") is None and (len(args) == 0 or args[0] is None)
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(injection.F, "scaled_dot_product_attention", spy)
    _edit(_editor(tiny_model_dir, SpeedOptions()), clip)
    assert seen and all(same and (sq, sk, sv) == (1, 1, 1) and dim == 4 for same, sq, sk, sv, dim, _ in seen)
    # Some calls attended to anchor + previous frame: twice the frame's own tokens as keys.
    assert len({kv for *_, kv in seen}) > 1


def test_padding_changes_no_real_row_nor_the_store(tiny_model_dir, clip, baseline):
    """The compiled path's padding alone (the compiled function replaced by the plain forward): every
    batch of 6 rows runs as 8, yet the real rows' results and the feature store are the baseline's."""
    editor = _editor(tiny_model_dir, ResolvedSpeed())
    unet = editor.models.unet
    padded = SpeedForward(unet.forward, ResolvedSpeed(compile=True))
    sizes = []

    def plain_forward(sample: torch.Tensor, *args, **kwargs):  # no torch.compile: the padding on its own
        sizes.append(sample.shape[0])
        return padded.original(sample, *args, **kwargs)

    padded.compiled = plain_forward
    unet.forward = padded
    result = _edit(editor, clip, store=True)
    assert 8 in sizes and 6 not in sizes  # batches of 6 rows ran padded to 8
    # Measured 0 here (bit for bit), but a CPU's GEMM and convolution kernels may block a batch of 8
    # differently from one of 6 (seen on the two-level UNet below: 3.1e-5), so float-order noise is allowed.
    _compare(result, baseline, latent_tol=2.5e-4)
    store, store0 = result[3], baseline[3]
    assert store.keys() == store0.keys()
    assert all(store[k].shape == store0[k].shape for k in store)  # no padding row was recorded
    assert max((store[k] - store0[k]).abs().max().item() for k in store) <= 2.5e-4  # measured 0


def _small_unet_editor(tiny_model_dir, unet: torch.nn.Module, speed: SpeedOptions) -> Pix2Video:
    """The tiny models with `unet` in place of theirs (a copy, so editors never share one)."""
    from pipeline.models.loading import load_diffusion_models

    models = load_diffusion_models(str(tiny_model_dir), device="cpu", speed=SpeedOptions())
    models.unet = copy.deepcopy(unet)
    apply_speed_options(models, speed)
    return Pix2Video(models)


def test_compiled_unet_same_frames(tiny_model_dir, clip, monkeypatch):
    """torch.compile through Dynamo with its 'eager' backend (the graphs inductor would compile, run by
    eager kernels: generating C++ for them takes many minutes on this machine) on a two-level UNet
    with the SD2 blocks (tracing the full topology takes minutes here too): the injection processor
    breaks the graph and runs outside it, static shapes, CUDA graphs' mode (skipped on a CPU). Padding
    is tested above; inductor's own noise is in BENCHMARKS.md."""
    from diffusers import UNet2DConditionModel

    from pipeline.method.injection import decoder_self_attention_names
    from pipeline.models.loading import load_diffusion_models

    config = dict(load_diffusion_models(str(tiny_model_dir), device="cpu").unet.config)
    config.update(
        block_out_channels=[16, 32],
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        attention_head_dim=[2, 2],
        layers_per_block=1,
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config).eval().requires_grad_(False)
    assert len(decoder_self_attention_names(unet)) == 2  # injected layers to break the graph at

    original = torch.compile
    modes = []

    def compile_without_codegen(fn, *, dynamic=None, mode=None, **kwargs):
        assert dynamic is False  # one static shape per padded batch size
        modes.append(mode)
        return original(fn, dynamic=dynamic, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_without_codegen)
    edit_config = EditConfig(steps=2, schedule="wavefront", max_batch=3)
    frames, depth = clip[0][:3], clip[1][:3]

    def edit(editor: Pix2Video) -> tuple[torch.Tensor, list[torch.Tensor]]:
        video = editor.prepare(frames, depth)
        zT = editor.invert(video, "shapes", edit_config)
        return zT, editor.edit(video, zT, PROMPTS, edit_config)

    def padded_only(editor: Pix2Video) -> Pix2Video:
        # The compiled path's padding with the plain forward: what compiling must reproduce exactly.
        forward = SpeedForward(editor.models.unet.forward, ResolvedSpeed(compile=False))
        forward.speed, forward.compiled = ResolvedSpeed(compile=True), forward.original
        editor.models.unet.forward = forward
        return editor

    def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))

    unpadded = edit(_small_unet_editor(tiny_model_dir, unet, SpeedOptions()))
    padded = edit(padded_only(_small_unet_editor(tiny_model_dir, unet, SpeedOptions())))
    # Padding alone: the same real rows within float-order noise (batch 8 vs 6 blocks the kernels
    # differently on this CPU: measured 3.1e-5).
    assert max_diff([padded[0], *padded[1]], [unpadded[0], *unpadded[1]]) <= 2.5e-4
    torch._dynamo.reset()
    try:
        editor = _small_unet_editor(tiny_model_dir, unet, SpeedOptions(compile="on"))
        warm_up(editor.models, {2, 3, 4, 6}, 64, 64)  # rows 2, 4, 6 -> 8 and the inversion's 3 -> 4
        zT, latents = edit(editor)
        # The graphs Dynamo captured, with the processor outside them, compute what the padded
        # eager forward computes: measured bit for bit.
        assert max_diff([zT, *latents], [padded[0], *padded[1]]) <= 1e-6
        assert max_diff([zT, *latents], [unpadded[0], *unpadded[1]]) <= 2.5e-4
        # CUDA graphs' mode: the same graphs (the eager backend takes no mode), so only what differs is
        # run: the mode asked for, and the warm-up's three calls a shape (record, then replay).
        editor = _small_unet_editor(tiny_model_dir, unet, SpeedOptions(cuda_graphs="on"))
        calls = []
        compiled = editor.models.unet.forward.compiled
        editor.models.unet.forward.compiled = lambda *a, **k: calls.append(a[0].shape[0]) or compiled(*a, **k)
        warm_up(editor.models, {2}, 64, 64)
        assert calls == [2, 2, 2]
    finally:
        torch._dynamo.reset()
    assert modes == [None, "reduce-overhead"]
    assert torch._dynamo.config.recompile_limit >= 64  # every block's static shapes stay compiled


def test_load_applies_speed_options(tiny_model_dir):
    from pipeline.models.loading import load_diffusion_models

    models = load_diffusion_models(str(tiny_model_dir), device="cpu", speed=SpeedOptions(attention="math"))
    assert models.speed == ResolvedSpeed(attention="math")
    assert isinstance(models.unet.forward, SpeedForward)
    with pytest.raises(ValueError, match="already"):
        apply_speed_options(models, SpeedOptions())
    plain = load_diffusion_models(str(tiny_model_dir), device="cpu")
    assert plain.speed == SpeedOptions().resolve("cpu")
    assert "forward" not in plain.unet.__dict__  # all off: the module is untouched
    with pytest.raises(InputError):
        load_diffusion_models(str(tiny_model_dir), device="cpu", speed=SpeedOptions(compile="sometimes"))


def test_processor_pads_with_zeros_and_records_real_rows_only():
    """A plan for 3 rows on a batch of 5: rows 3-4 are padding, leave the layer as zeros, and never
    reach the store; rows 0-2 get exactly what they get in a batch of 3."""
    from diffusers.models.attention_processor import Attention

    from pipeline.method.injection import FeatureStore, InjectionPlan, InjectionProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    first, second = torch.randn(3, 10, 16), torch.randn(5, 10, 16)

    def run(batch: torch.Tensor) -> tuple[torch.Tensor, FeatureStore]:
        store = FeatureStore()
        store.reset(num_jobs=3, steps=1, branches=1)
        processor = InjectionProcessor(store, layer=0)
        every = torch.tensor([0, 1, 2])
        store.plan = InjectionPlan(n_plain=3, record_anchor=every, record_prev_plain=every)  # three anchors
        processor(attn, first)
        two = torch.tensor([0, 1])  # a new anchor for job 2; jobs 0 and 1 attend to their sources
        store.plan = InjectionPlan(
            n_plain=1,
            record_anchor=torch.tensor([2]),
            record_prev_plain=torch.tensor([2]),
            read_anchor=two,
            read_prev=two,
            write_prev=two,
        )
        assert store.plan.rows == 3
        return processor(attn, batch), store

    padded, store = run(second)
    exact, store0 = run(second[:3])
    assert torch.equal(padded[:3], exact)
    assert torch.equal(padded[3:], torch.zeros_like(padded[3:]))
    assert torch.equal(store.anchor[0], store0.anchor[0]) and torch.equal(store.prev[0], store0.prev[0])
