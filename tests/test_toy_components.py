"""The toy world's depth estimator, captioner and metric CLIP (toyworld/train_{depth,caption,clip}.py):
a few training steps on 16 frames, the saved folders load through the project's loaders, a run stopped
part-way resumes from its checkpoint and ends where an uninterrupted one ends, and the measures mean what
their docstrings say."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from toyworld.data import training_set
from toyworld.trainer import TrainSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return training_set(tmp_path_factory.mktemp("toydata"), clips=2)  # 2 scenes x 8 frames, 128x128


def _train(name):
    from toyworld import train_caption, train_clip, train_depth

    module, batch = {"depth": (train_depth, 2), "caption": (train_caption, 4), "clip": (train_clip, 4)}[name]
    return lambda d, w, **kw: getattr(module, f"train_{name}")(d, w, TrainSettings(batch=batch, **kw))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name", ["depth", "caption", "clip"])
def test_resumed_run_continues_from_its_checkpoint(frames, tmp_path, monkeypatch, name):
    train = _train(name)
    whole = _state(train(frames, tmp_path / "whole", steps=5))

    # Stop the second run inside step 3 (each step clips gradients once); the checkpoint of step 2 stays.
    real_clip = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def clip_then_stop(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Stop
        return real_clip(*a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_then_stop)
    with pytest.raises(_Stop):
        train(frames, tmp_path / "cut", steps=5, checkpoint_every=2)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    ckpt = torch.load(tmp_path / "cut" / name / "ckpt.pt", weights_only=False)
    assert ckpt["step"] == 2
    resumed = _state(train(frames, tmp_path / "cut", steps=5, checkpoint_every=2))
    with open(tmp_path / "cut" / name / "loss.csv") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f)]
    # The stopped run logged steps 0-2 (step 2 after its checkpoint, so lost); the resumed one 2-4.
    assert logged == [0, 1, 2, 2, 3, 4]
    assert (tmp_path / "cut" / name / "done").exists()
    for k, v in whole.items():
        torch.testing.assert_close(resumed[k], v, msg=f"{name}: {k} differs after resume")
    # A finished run is loaded, not retrained and not left at its random initialisation.
    again = _state(train(frames, tmp_path / "cut", steps=5))
    for k, v in whole.items():
        torch.testing.assert_close(again[k], v)


def test_depth_folder_loads_through_depth_estimator(frames, tmp_path):
    from pipeline.models.depth import DepthEstimator
    from toyworld.train_depth import evaluate_depth, predict_depth, save_depth, train_depth

    model = train_depth(frames, tmp_path, TrainSettings(steps=2, batch=2))
    folder = save_depth(model, None, tmp_path / "toy")
    assert (folder / "depth_estimator" / "config.json").is_file()
    assert (folder / "feature_extractor" / "preprocessor_config.json").is_file()
    est = DepthEstimator.from_model(str(folder), device="cpu")
    assert est.model.config.is_hybrid and est.model.config.backbone_config.model_type == "bit"
    depth = est(frames.frames[:3])
    assert depth.shape == (3, 128, 128)
    np.testing.assert_allclose(depth, predict_depth(model, frames.frames[:3]), rtol=1e-4, atol=1e-5)
    figs = evaluate_depth(model, frames)
    assert 0.0 <= figs["ordinal_accuracy"] <= 1.0


def test_caption_folder_loads_through_captioner(frames, tmp_path):
    from pipeline.models.caption import Captioner
    from toyworld.train_caption import caption_processor, evaluate_caption, save_caption, train_caption

    model = train_caption(frames, tmp_path, TrainSettings(steps=2, batch=4))
    folder = save_caption(model, caption_processor(), tmp_path / "blip")
    cap = Captioner.from_model(str(folder), device="cpu")
    assert cap.image_processor.size == {"height": 128, "width": 128}
    out = cap(frames.frames[:2])
    assert len(out) == 2 and all(isinstance(c, str) and c for c in out)
    figs = evaluate_caption(None, frames, folder=folder)
    assert figs["frames"] == len(frames) and 0.0 <= figs["all_attributes"] <= 1.0
    assert evaluate_caption(model, frames)["all_attributes"] == figs["all_attributes"]


def test_clip_folder_loads_through_clip_scorer(frames, tmp_path):
    from pipeline.quality.clip import ClipScorer
    from toyworld.train_clip import clip_processor, evaluate_clip, save_clip, train_clip

    model = train_clip(frames, tmp_path, TrainSettings(steps=2, batch=4))
    assert model.config.vision_config.hidden_act == "quick_gelu" == model.config.text_config.hidden_act
    folder = save_clip(model, clip_processor(), tmp_path / "clip_model")
    scorer = ClipScorer.from_model(str(folder), device="cpu")
    emb = scorer.image_embeddings(frames.frames[:3])
    assert emb.shape == (3, model.config.projection_dim)
    assert scorer.text_embedding(frames.captions[0]).shape == (model.config.projection_dim,)
    figs = evaluate_clip(None, frames, folder=folder, gallery_size=2, galleries=3)
    assert figs["gallery_size"] == 2 and 0.0 <= figs["t2i_top1"] <= 1.0
    assert evaluate_clip(model, frames)["gallery_size"] == 2  # 2 distinct captions: galleries of 2, not 32


def test_training_pixels_are_the_saved_processors(frames):
    from toyworld.train_caption import caption_processor, pixel_values
    from toyworld.train_clip import clip_processor

    for proc in (caption_processor(), clip_processor()):
        want = proc.image_processor(images=list(frames.frames[:2]), return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(pixel_values(proc.image_processor, frames.frames[:2]), want)


def test_ordinal_accuracy():
    from toyworld.train_depth import ordinal_accuracy

    rng = np.random.default_rng(0)
    d = rng.uniform(0.1, 1.0, (2, 16, 16)).astype(np.float32)
    assert ordinal_accuracy(2 * d + 3, d) == 1.0  # any increasing map of disparity is perfect
    assert ordinal_accuracy(-d, d) == 0.0  # depth instead of disparity: every order reversed
    assert ordinal_accuracy(np.zeros_like(d), d) == 0.0  # ties are wrong
    small = np.kron(d, np.ones((2, 2), np.float32))  # a prediction at another resolution is resized
    assert ordinal_accuracy(d, small) > 0.9


def test_caption_scores():
    from toyworld.train_caption import caption_scores, parse_caption

    truth = "a red striped ball and a yellow cube on a gray floor"
    assert parse_caption(truth) == ([("red", "striped", "ball"), ("yellow", "plain", "cube")], "gray")
    assert parse_caption("a red red") is None
    s = caption_scores([truth, "a red striped ball on a gray floor", "nonsense"], [truth] * 3)
    assert s["all_attributes"] == pytest.approx(1 / 3)
    assert s["floor"] == pytest.approx(2 / 3)
    assert s["colour"] == pytest.approx(3 / 6)  # 6 object slots: 2 + 2 (one missing) + 2 (unparsed)


def test_retrieval_galleries_have_distinct_captions():
    from toyworld.train_clip import retrieval_galleries

    captions = [f"c{i // 3}" for i in range(60)]  # 20 captions, 3 frames each
    galleries = retrieval_galleries(captions, size=8, count=5)
    assert len(galleries) == 5
    for g in galleries:
        assert len(g) == 8 and len({captions[i] for i in g}) == 8
    assert galleries == retrieval_galleries(captions, size=8, count=5)
    with pytest.raises(ValueError):
        retrieval_galleries(captions, size=21)


def test_augment_mirrors_frames_and_captions(frames):
    from toyworld.train_caption import augment, format_caption, mirrored_caption, parse_caption

    c = "a red striped ball and a yellow cube on a gray floor"
    assert mirrored_caption(c) == "a yellow cube and a red striped ball on a gray floor"
    assert mirrored_caption(mirrored_caption(c)) == c
    assert all(format_caption(*parse_caption(t)) == t for t in frames.captions)
    out, ids, flips = augment(frames.frames[:8], np.random.default_rng(0), shift=0, ids=frames.ids[:8])
    assert out.shape == frames.frames[:8].shape and out.dtype == np.uint8 and flips.any() and not flips.all()
    np.testing.assert_array_equal(out[flips], frames.frames[:8][flips][:, :, ::-1])
    np.testing.assert_array_equal(out[~flips], frames.frames[:8][~flips])
    np.testing.assert_array_equal(ids[flips], frames.ids[:8][flips][:, :, ::-1])
    shifted, none, _ = augment(frames.frames[:8], np.random.default_rng(0), shift=4)
    assert none is None
    assert shifted.shape == frames.frames[:8].shape
