"""The method's named steps on their own (pipeline/method/steps.py): classifier-free guidance, the
latent update at every latent size, and the table of injection sources the reference and the engine
share. No model: plain tensors."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import InputError
from pipeline.method.editor import EditConfig
from pipeline.method.engine import INJECTIONS, EngineSettings
from pipeline.method.sources import ANCHOR, INJECTION_SOURCES, PREVIOUS, RANDOM_EARLIER
from pipeline.method.steps import REFERENCE_LATENT_ELEMENTS, classifier_free_guidance, latent_update


def _tensors(size: int, count: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, size, size, generator=g) for _ in range(count)]


def test_guidance_interpolates_and_extrapolates():
    eps_u, eps_c = _tensors(8, 2)
    assert torch.equal(classifier_free_guidance(eps_u, eps_c, 0.0), eps_u)
    torch.testing.assert_close(classifier_free_guidance(eps_u, eps_c, 1.0), eps_c)
    torch.testing.assert_close(classifier_free_guidance(eps_u, eps_c, 7.5), eps_u + 7.5 * (eps_c - eps_u))


def test_latent_update_at_64x64_is_the_published_formula_exactly():
    """At SD2's 512² (latents 4x64x64) the update is the published one, n = the latent's own count."""
    z, x0, x0_prev = _tensors(64)
    n = x0[0].numel()
    assert n == REFERENCE_LATENT_ELEMENTS == 4 * 64 * 64
    for weight in (100.0, 37.5):
        assert torch.equal(latent_update(z, x0, x0_prev, weight), z - weight * (2.0 / n) * (x0 - x0_prev))


@pytest.mark.parametrize("size", [8, 16, 32, 48, 96])
def test_latent_update_moves_each_element_as_at_64x64(size):
    """The same differences x̂0 - x̂0_prev give the same per-element step at every latent size: the
    step at a size's cells equals the 64x64 step at the same cells (crops of one 96x96 field)."""
    z, x0, x0_prev = _tensors(96)
    at_64 = latent_update(z[..., :64, :64], x0[..., :64, :64], x0_prev[..., :64, :64], 100.0) - z[..., :64, :64]
    crop = min(size, 64)
    step = latent_update(z[..., :size, :size], x0[..., :size, :size], x0_prev[..., :size, :size], 100.0)
    step = step - z[..., :size, :size]
    assert torch.equal(step[..., :crop, :crop], at_64[..., :crop, :crop])


def test_default_weight_at_16x16_is_the_old_toy_override():
    """λ = 100 now gives at 16x16 latents exactly what the toy world's override λ = 100·(16·16)/(64·64)
    gave with the published division by the latent's own count."""
    z, x0, x0_prev = _tensors(16)
    old = z - (100.0 * 16 * 16 / (64 * 64)) * (2.0 / x0[0].numel()) * (x0 - x0_prev)
    assert torch.equal(latent_update(z, x0, x0_prev, 100.0), old)


def test_latent_update_only_where_asked():
    z, x0, x0_prev = _tensors(8)
    out = latent_update(z, x0, x0_prev, 100.0, where=torch.tensor([False, True]))
    assert torch.equal(out[0], z[0])
    assert torch.equal(out[1], latent_update(z, x0, x0_prev, 100.0)[1])


def test_one_table_of_injection_sources():
    """The variants the engine and the config accept are the table's; what each reads, in K/V order."""
    assert INJECTIONS == tuple(INJECTION_SOURCES) == ("anchor+prev", "anchor", "prev", "random", "none")
    assert INJECTION_SOURCES["anchor+prev"] == (ANCHOR, PREVIOUS)
    assert INJECTION_SOURCES["random"] == (ANCHOR, RANDOM_EARLIER)
    assert INJECTION_SOURCES["none"] == ()
    for name, sources in INJECTION_SOURCES.items():
        s = EngineSettings(injection=name)
        assert s.uses_anchor == (ANCHOR in sources)
        assert s.uses_prev == bool({PREVIOUS, RANDOM_EARLIER} & set(sources))
        # The processor concatenates the anchor's features before the previous (or random) frame's.
        assert list(sources) == sorted(sources, key=[ANCHOR, PREVIOUS, RANDOM_EARLIER].index)
    with pytest.raises(InputError, match="sideways"):
        EditConfig(injection="sideways").validate()
