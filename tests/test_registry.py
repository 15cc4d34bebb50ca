"""The registry of named model folders (pipeline/models/registry.py): a registered name resolves to
its folder through its entry point; any other name passes through unchanged (a hub id or a folder)."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from pipeline.models import registry
from pipeline.models.registry import resolve_model
from toyworld import toy_model_dir


def test_our_names_are_registered() -> None:
    assert {"tiny", "toy"} <= set(registry.registered())
    assert Path(resolve_model("toy")) == toy_model_dir()
    assert Path(resolve_model("toy", "clip")) == toy_model_dir() / "clip"


def test_a_registered_name_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = EntryPoint(name="mine", value="toyworld:toy_model_dir", group=registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [mine] if group == registry.GROUP else [])
    assert registry.registered() == {"mine": mine}
    assert registry.model_folder("mine") == toy_model_dir()
    assert Path(resolve_model("mine", "blip")) == toy_model_dir() / "blip"
    assert resolve_model("toy") == "toy"  # no longer registered: a name like any other


def test_an_unregistered_name_passes_through() -> None:
    assert registry.model_folder("stabilityai/stable-diffusion-2-depth") is None
    for name in ("stabilityai/stable-diffusion-2-depth", "/some/folder", "not-a-registered-name"):
        assert resolve_model(name) == name
        assert resolve_model(name, "clip") == name  # `part` applies to registered folders only
