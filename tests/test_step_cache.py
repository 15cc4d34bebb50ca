"""Step caching (pipeline/method/step_cache.py) and the UNet work counter (pipeline/method/flops.py).

Tiny model on the CPU. The engine against the reference loop with caching on is in test_reference.py;
here: the options, off = the frames of before, what a cached step runs and skips, the inversion's key,
and the FLOP counts.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from fixtures.clips import moving_shapes
from pipeline.errors import InputError
from pipeline.method.cache_schedule import AUTO_INTERVAL, ON_INTERVAL, CacheSchedule, parse_interval
from pipeline.method.editor import EditConfig, Pix2Video
from pipeline.method.flops import RowCounter, row_flops
from pipeline.method.step_cache import StepCache, split_items

CONFIG = EditConfig(steps=4, schedule="wavefront", max_batch=3)
PROMPTS = ["a red painting", "a blue painting"]


def _editor(tiny_model_dir) -> Pix2Video:
    from pipeline.models.loading import load_diffusion_models

    return Pix2Video(load_diffusion_models(str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def editor(tiny_model_dir) -> Pix2Video:
    return _editor(tiny_model_dir)


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, list[np.ndarray]]:
    frames = moving_shapes(num_frames=4, width=64, height=64, seed=5)
    return frames, [f.mean(-1).astype(np.float32) for f in frames]


def _edit(editor: Pix2Video, clip, config: EditConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
    frames, depth = clip
    video = editor.prepare(frames, depth)
    zT = editor.invert(video, "shapes", config)
    return zT, editor.edit(video, zT, PROMPTS, config)


def test_interval_values():
    assert parse_interval("auto", "cache_interval", "edit") == AUTO_INTERVAL["edit"]
    assert parse_interval("auto", "inversion_cache_interval", "inversion") == AUTO_INTERVAL["inversion"]
    assert parse_interval("on", "cache_interval", "edit") == ON_INTERVAL > 1
    assert parse_interval("off", "cache_interval", "edit") == 0
    assert parse_interval("4", "cache_interval", "edit") == parse_interval(4, "cache_interval", "edit") == 4
    for bad in ("sometimes", "2.5", "-1", -1, True, 2.0, None):
        with pytest.raises(InputError, match="--cache-interval"):
            parse_interval(bad, "cache_interval", "edit")
    with pytest.raises(InputError, match="--inversion-cache-interval"):
        EditConfig(inversion_cache_interval="x").validate()
    with pytest.raises(InputError, match="--cache-depth"):
        EditConfig(cache_depth=0).validate()
    assert not CacheSchedule(1).active and not CacheSchedule(0).active
    assert [CacheSchedule(3).full(k) for k in range(7)] == [True, False, False, True, False, False, True]
    # A warm-up: the first steps all whole, the interval counted from the first step after them.
    assert [CacheSchedule(3, warmup=2).full(k) for k in range(7)] == [True, True, True, False, False, True, False]
    assert CacheSchedule(3, 2).identity() == ("step-cache", 3, 2)  # keys from before the warm-up existed
    assert CacheSchedule(3, 2, 2).identity() == ("step-cache", 3, 2, "warmup", 2)
    assert CacheSchedule(0, warmup=5).identity() == ()
    assert EditConfig(steps=50, cache_interval="3", cache_warmup=0.3).edit_cache() == CacheSchedule(3, 3, 15)
    assert EditConfig(steps=50, inversion_cache_interval="3", cache_warmup=0.3).inversion_cache().warmup == 0
    for bad in (1.0, -0.1, "0.3", True):
        with pytest.raises(InputError, match="--cache-warmup"):
            EditConfig(cache_warmup=bad).validate()


def test_flags_reach_the_config():
    from jobs import _common
    from jobs.cli import build_parser

    flags = ["--cache-interval", "4", "--inversion-cache-interval", "on", "--cache-depth", "2", "--cache-warmup", ".2"]
    for verb in ("edit", "run", "augment"):
        required = ["in.mp4", "-o", "o.mp4", "--prompt", "x"] if verb == "edit" else ["--manifest", "m", "--output=o"]
        args = build_parser(verb).parse_args([*flags, *required])
        config = _common.edit_config(args)
        assert config.edit_cache() == CacheSchedule(4, 2, warmup=10), verb  # 0.2 of the default 50 steps
        assert config.inversion_cache() == CacheSchedule(ON_INTERVAL, 2), verb
        assert config.engine_settings().cache == CacheSchedule(4, 2, warmup=10)


def test_off_gives_the_frames_of_before(tiny_model_dir, clip):
    """Intervals 0 and 1 (and auto while it means off) compute what a UNet without the hooks computes,
    bit for bit: with no plan, every hook calls its module's own forward."""
    zT, before = _edit(_editor(tiny_model_dir), clip, CONFIG)
    hooked = _editor(tiny_model_dir)
    StepCache.attach(hooked.models.unet)
    for interval in ("off", "0", "1", "auto"):
        if interval == "auto" and AUTO_INTERVAL["edit"] > 1:
            continue
        config = replace(CONFIG, cache_interval=interval, inversion_cache_interval=interval)
        zT_after, after = _edit(hooked, clip, config)
        assert torch.equal(zT, zT_after), interval
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), interval


def _unet_inputs(unet: torch.nn.Module, rows: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn((rows, unet.config.in_channels, 8, 8), generator=g)
    emb = torch.randn((rows, 77, unet.config.cross_attention_dim), generator=g)
    return sample, torch.tensor([500] * rows), emb


@torch.no_grad()
def test_cached_step_on_the_same_input_is_the_full_step(editor):
    """The deep layers' output depends only on the input: replayed for the same input and timestep,
    a cached step gives the full step's prediction, at every depth."""
    unet = editor.models.unet
    cache = StepCache.attach(unet)
    sample, t, emb = _unet_inputs(unet)
    plain = unet(sample, t, emb).sample
    slots = ["a", "b"]
    for depth in range(1, cache.max_depth + 1):
        schedule = CacheSchedule(interval=2, depth=depth)
        with cache.step(schedule, 0, slots):
            full = unet(sample, t, emb).sample
        with cache.step(schedule, 1, slots, last=True):
            cached = unet(sample, t, emb).sample
        torch.testing.assert_close(full, plain, atol=0, rtol=0)
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
        assert not cache.features  # `last` dropped the slots
        # A different input on the cached step: a different prediction (the outer layers do run).
        with cache.step(schedule, 0, slots):
            unet(sample, t, emb)
        with cache.step(schedule, 1, slots, last=True):
            other = unet(sample + 1, t, emb).sample
        assert (other - full).abs().max() > 1e-3


@torch.no_grad()
def test_cached_step_runs_the_outer_layers_only(editor):
    """At depth L a cached step computes the last L up-path resnets and at most the first L - 1 down-path
    ones; the middle block and every other layer (decoder self-attention among them) computes nothing.
    (A skipped module is still called, and returns a placeholder: its inner layers show what ran.)"""
    unet = editor.models.unet
    cache = StepCache.attach(unet)
    ran: list[str] = []
    inner = re.compile(r"^(.*resnets\.\d+)\.conv1$|^(.*\.attn1)\.to_q$")

    def watch(module: torch.nn.Module, name: str):
        return module.register_forward_pre_hook(lambda _m, _i: ran.append(name))

    hooks = [watch(m, match[1] or match[2]) for name, m in unet.named_modules() if (match := inner.match(name))]
    up_resnets = [n for n, _ in unet.named_modules() if re.match(r"^up_blocks\.\d+\.resnets\.\d+$", n)]
    try:
        sample, t, emb = _unet_inputs(unet, rows=1)
        for depth in (1, 2, 3):
            schedule = CacheSchedule(interval=2, depth=depth)
            with cache.step(schedule, 0, ["x"]):
                unet(sample, t, emb)
            full, ran[:] = list(ran), []
            with cache.step(schedule, 1, ["x"], last=True):
                unet(sample, t, emb)
            assert any(n.startswith("mid_block") for n in full)
            assert not any(n.startswith("mid_block") for n in ran)
            assert [n for n in ran if n.startswith("up_blocks") and ".resnets." in n] == up_resnets[-depth:]
            assert len([n for n in ran if n.startswith("down_blocks") and ".resnets." in n]) <= depth - 1
            attn1 = [n for n in ran if n.endswith("attn1")]
            assert 0 < len(attn1) < len([n for n in full if n.endswith("attn1")])
            assert all(n.startswith("up_blocks.3") or n.startswith("down_blocks.0") for n in attn1)
            ran.clear()
    finally:
        for hook in hooks:
            hook.remove()
        cache.reset()


def test_inversion_with_caching_is_its_own(editor, clip):
    """The inversion under step caching is another zT (the video's cache keys it apart); off keeps
    the key of before."""
    frames, depth = clip
    video = editor.prepare(frames, depth)
    plain = editor.invert(video, "shapes", CONFIG)
    cached_cfg = replace(CONFIG, inversion_cache_interval="2")
    cached = editor.invert(video, "shapes", cached_cfg)
    assert ("inversion", "shapes", CONFIG.steps) in video.cache
    assert cached is not plain and (cached - plain).abs().max() > 1e-3
    assert editor.invert(video, "shapes", cached_cfg) is cached


def test_caching_changes_the_edit_and_leaves_nothing_behind(editor, clip):
    _, plain = _edit(editor, clip, CONFIG)
    _, cached = _edit(editor, clip, replace(CONFIG, cache_interval="2"))
    assert max((a - b).abs().max().item() for a, b in zip(plain, cached, strict=True)) > 1e-3
    assert not StepCache.attach(editor.models.unet).features


def test_depth_beyond_the_unet_is_a_clear_error(editor, clip):
    cache = StepCache.attach(editor.models.unet)
    config = replace(CONFIG, cache_interval="2", cache_depth=cache.max_depth + 1)
    with pytest.raises(InputError, match="--cache-depth"):
        _edit(editor, clip, config)


def test_split_items_keeps_one_kind_per_call():
    items = [(0, 0, 3), (0, 1, 2), (1, 0, 3), (0, 2, 1), (0, 3, 0)]
    assert split_items(items, CacheSchedule(0)) == [items]
    assert split_items(items, CacheSchedule(3)) == [[(0, 0, 3), (1, 0, 3), (0, 3, 0)], [(0, 1, 2), (0, 2, 1)]]
    assert split_items([(0, 1, 2)], CacheSchedule(3)) == [[(0, 1, 2)]]


def test_flops_per_row_and_the_row_counter(editor, clip):
    unet = editor.models.unet
    per_row = row_flops(unet, 64, 64, depth=3)
    assert per_row[False, 0] == per_row[False, 1] > 0  # one recorded frame: as many keys as its own
    assert per_row[False, 2] > per_row[False, 0]  # two: twice the keys and values
    for sources in (0, 1, 2):
        assert 0 < per_row[True, sources] < per_row[False, sources]
    assert row_flops(unet, 64, 64, depth=1)[True, 0] < per_row[True, 0]
    counter = RowCounter(unet, editor.store)
    try:
        frames, depth = clip
        for interval in ("off", "2"):
            counter.reset()
            config = replace(CONFIG, cache_interval=interval, inversion_cache_interval=interval)
            video = editor.prepare(frames, depth)
            counter.phase = "inversion"
            zT = editor.invert(video, "shapes", config)
            counter.phase = "edit"
            editor.edit(video, zT, PROMPTS, config)
            n, steps = len(frames), CONFIG.steps
            assert counter.rows("inversion") == n * steps
            assert counter.rows("edit") == n * steps * 2 * len(PROMPTS)
            cached = sum(v for (_, c, _), v in counter.counts.items() if c)
            assert cached == (0 if interval == "off" else counter.rows() // 2)
            # anchors (and the inversion) attend to themselves, later frames to the anchor and the previous
            assert counter.counts["edit", False, 2] + counter.counts["edit", True, 2] == (n - 1) * steps * 2 * 2
            if interval == "off":
                assert counter.flops(per_row) == counter.full_flops(per_row)
            else:
                assert counter.flops(per_row) < counter.full_flops(per_row)
    finally:
        counter.remove()
