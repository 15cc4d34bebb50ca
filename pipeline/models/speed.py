"""Speed options: how the UNet and VAE run, never what they compute.

Four switches, each a flag of `edit`, `run`, `augment` and `bench` (`--channels-last`, `--attention`,
`--compile`, `--cuda-graphs`) and a field of `SpeedOptions`, which `load_diffusion_models(speed=...)`
applies to the loaded modules (`apply_speed_options`):

- channels-last: the UNet's and VAE's 4-D weights in NHWC memory order (`Module.to(memory_format=...)`);
  convolutions then run NHWC kernels (cuDNN's fast path on tensor cores).
- attention backend: which kernel `F.scaled_dot_product_attention` may use inside the UNet, through
  `torch.nn.attention.sdpa_kernel` ('auto' leaves PyTorch's own choice, which takes flash attention
  wherever the inputs allow it; our injection processor's queries, keys and values are laid out so
  that they do, see `pipeline/method/injection.py`).
- compile: `torch.compile` of the UNet's forward with static shapes. The engine's batches vary in size
  (a wavefront ramps up and down), so each call is padded to the next power of two rows
  (`static_batch_size`): at most a handful of shapes, one compiled graph each, instead of a recompile
  for every size. Padding rows copy the last real row, are neither recorded in nor read from the
  feature store (`InjectionPlan.rows`), and are cut off the output; rows of a UNet batch never mix.
  The injection processor stays outside the graphs (it reads and writes the store, Python state that
  changes every call): the encoder and middle compile whole, the decoder block by block around it.
- CUDA graphs: `torch.compile(mode="reduce-overhead")`, which replays each compiled region of each
  static shape as a CUDA graph (implies compile). On a CPU torch skips the graphs: plain compile.

Every switch takes auto | on | off; auto means the default of the device type, `DEFAULTS` below. Each
option gives the same frames as none within float-order noise (tests/test_speed.py measures it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from pipeline.errors import InputError
from pipeline.models.names import ATTENTION_BACKENDS, SWITCHES

# What `auto` means per device type. CPU: measured on against off side by side on the project's 2-core
# machine (BENCHMARKS.md, "Speed options"): channels-last gains nothing there, PyTorch's own attention
# choice (its CPU flash kernel) beats math, and compiling pays per frame but costs minutes per batch
# shape. CUDA: nothing has been measured on a GPU yet, so each option stays off (PyTorch's own attention
# choice) until `benchmarks/gpu_check.sh` has measured it on and off; public figures for SD UNets
# (diffusers' and PyTorch's own write-ups) are for other GPUs, plain pipelines and other batch shapes,
# not for this engine's injected attention.
DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"channels_last": False, "attention": "auto", "compile": False, "cuda_graphs": False},
    "cuda": {"channels_last": False, "attention": "auto", "compile": False, "cuda_graphs": False},
}
_FALLBACK = DEFAULTS["cpu"]  # other device types (mps, xpu): nothing measured, nothing on

_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


@dataclass(frozen=True)
class SpeedOptions:
    """The speed switches as given (auto | on | off; attention: auto or a backend)."""

    channels_last: str = "auto"
    attention: str = "auto"
    compile: str = "auto"
    cuda_graphs: str = "auto"

    def validate(self) -> None:
        for name in ("channels_last", "compile", "cuda_graphs"):
            value = getattr(self, name)
            if value not in SWITCHES:
                flag = name.replace("_", "-")
                raise InputError(f"--{flag} must be one of {', '.join(SWITCHES)}, got {value!r}")
        if self.attention not in ATTENTION_BACKENDS:
            raise InputError(f"--attention must be one of {', '.join(ATTENTION_BACKENDS)}, got {self.attention!r}")

    def resolve(self, device: torch.device | str) -> ResolvedSpeed:
        """The switches for `device`: auto replaced by the device type's default."""
        self.validate()
        defaults = DEFAULTS.get(torch.device(device).type, _FALLBACK)

        def switch(name: str) -> bool:
            value = getattr(self, name)
            return bool(defaults[name]) if value == "auto" else value == "on"

        cuda_graphs = switch("cuda_graphs")
        return ResolvedSpeed(
            channels_last=switch("channels_last"),
            attention=defaults["attention"] if self.attention == "auto" else self.attention,
            compile=switch("compile") or cuda_graphs,  # CUDA graphs come through torch.compile
            cuda_graphs=cuda_graphs,
        )


@dataclass(frozen=True)
class ResolvedSpeed:
    """The switches in force on one device (what `DiffusionModels.speed` reports)."""

    channels_last: bool = False
    attention: str = "auto"
    compile: bool = False
    cuda_graphs: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def static_batch_size(rows: int) -> int:
    """The padded batch a compiled UNet runs `rows` rows in: the next power of two. A wavefront of
    `--max-batch 8` with guidance (2..16 rows) needs four shapes: 2, 4, 8, 16."""
    return 1 << max(rows - 1, 0).bit_length()


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """`sdpa_kernel` for a backend name of `ATTENTION_BACKENDS`; 'auto' changes nothing."""
    if name == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, _BACKENDS[name])]):
        yield


class SpeedForward:
    """Replaces `unet.forward` (an instance attribute, so the module, its name, config, hooks and
    attention processors stay as they are): runs the original forward under the attention backend
    and, when compiled, pads the batch to a static size outside the compiled region."""

    def __init__(self, forward: Callable[..., Any], speed: ResolvedSpeed) -> None:
        self.original = forward
        self.speed = speed
        self.compiled: Callable[..., Any] | None = None
        if speed.compile:
            # dynamic=False: one graph per padded batch size, so shapes are static (CUDA graphs need
            # that) and every kernel is specialised to its size.
            _raise_recompile_limits()
            mode = "reduce-overhead" if speed.cuda_graphs else None
            self.compiled = torch.compile(forward, dynamic=False, mode=mode)

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args, **kwargs):
        with attention_backend(self.speed.attention):
            if self.compiled is None:
                return self.original(sample, timestep, encoder_hidden_states, *args, **kwargs)
            return self._padded(sample, timestep, encoder_hidden_states, *args, **kwargs)

    def _padded(self, sample, timestep, encoder_hidden_states, *args, return_dict: bool = True, **kwargs):
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        rows = sample.shape[0]
        size = static_batch_size(rows)
        # A Python int timestep would be a constant of the graph (a recompile per step): make it a
        # per-row tensor, as the UNet itself does (`timesteps.expand(batch)`), with the same values.
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], dtype=torch.float64 if isinstance(timestep, float) else torch.long)
        timestep = timestep.reshape(-1).to(sample.device).expand(rows)
        # Contiguous inputs (an `expand`ed prompt embedding has stride 0), so that guards see one
        # layout per shape; values are unchanged.
        inputs = [_pad_rows(x, size) for x in (sample, timestep, encoder_hidden_states)]
        if self.speed.cuda_graphs:
            # Each UNet call is a new step: earlier outputs may be overwritten by the next replay.
            torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*inputs, *args, return_dict=False, **kwargs)[0][:rows]
        if self.speed.cuda_graphs:
            out = out.clone()  # out of the graph's memory pool, which the next replay reuses
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


RECOMPILE_LIMIT = 64  # static shapes one block code object may hold (torch's default: 8)


def _raise_recompile_limits() -> None:
    """The injection processor runs outside the graph, and its graph break lies inside the decoder's
    loops, so Dynamo compiles the decoder block by block (each ResnetBlock2D, BasicTransformerBlock, ...
    as its own frame). One block class appears at several widths and resolutions, times the padded batch
    sizes: more static shapes per code object than torch's default limit of 8, past which the rest would
    run uncompiled. Process-wide (Dynamo's config), and only ever raised."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the second is the first's older name
        if getattr(config, name, RECOMPILE_LIMIT) < RECOMPILE_LIMIT:
            setattr(config, name, RECOMPILE_LIMIT)
    if getattr(config, "accumulated_recompile_limit", 1024) < 1024:
        config.accumulated_recompile_limit = 1024


def _pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """`x` with rows appended up to `size`, each a copy of the last real row (finite, realistic values),
    as one contiguous tensor."""
    extra = size - x.shape[0]
    if extra == 0:
        return x.contiguous()
    return torch.cat([x, x[-1:].expand(extra, *x.shape[1:])]).contiguous()


def apply_speed_options(models: Any, speed: SpeedOptions | ResolvedSpeed | None = None) -> ResolvedSpeed:
    """Apply the switches to a `DiffusionModels` (UNet and VAE, in place) and record them on
    `models.speed`. Call once, before the first UNet call (the editor's attention processors may be
    installed before or after). Returns the switches in force."""
    if speed is None:
        speed = SpeedOptions()
    resolved = speed if isinstance(speed, ResolvedSpeed) else speed.resolve(models.device)
    unet, vae = models.unet, models.vae
    if isinstance(unet.__dict__.get("forward"), SpeedForward):
        raise ValueError("speed options are already applied to this UNet")
    if resolved.channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    if resolved.compile or resolved.attention != "auto":
        unet.forward = SpeedForward(unet.forward, resolved)
    models.speed = resolved
    return resolved


def warm_up(models: Any, rows: Iterable[int], height: int, width: int, vae_factor: int = 8) -> None:
    """Run the UNet once at each padded batch size that `rows` needs, so that compiling (and CUDA graph
    recording) happens here rather than inside a timed or user-visible run. No-op without compile."""
    forward = models.unet.__dict__.get("forward")
    if not isinstance(forward, SpeedForward) or forward.compiled is None:
        return
    unet = models.unet
    channels = unet.config.in_channels
    context = unet.config.cross_attention_dim
    h, w = height // vae_factor, width // vae_factor
    generator = torch.Generator().manual_seed(0)
    # CUDA graph trees run a new shape once plainly, record it at the second call, replay from the third.
    calls = 3 if forward.speed.cuda_graphs else 1
    with torch.no_grad():
        for size in sorted({static_batch_size(r) for r in rows}):
            sample = torch.randn((size, channels, h, w), generator=generator).to(models.device, models.dtype)
            emb = torch.randn((size, 77, context), generator=generator).to(models.device, models.dtype)
            for _ in range(calls):
                unet(sample, torch.full((size,), 500, dtype=torch.long), emb)
