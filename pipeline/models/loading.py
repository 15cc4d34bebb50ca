"""Loading Stable Diffusion 2 depth, component by component.

`load_diffusion_models(model)` takes a Hugging Face hub id (default `stabilityai/stable-diffusion-2-depth`)
or a local folder in that checkpoint's published layout (`unet/`, `vae/`, `text_encoder/`,
`tokenizer/`, ...) and returns the four pieces the editor needs. It deliberately does not go through
`DiffusionPipeline.from_pretrained`: that would also load the depth estimator and its preprocessor
(the depth is computed elsewhere, `pipeline.models.depth`) and a `PNDMScheduler` we do not use (our
DDIM is computed from fixed constants, see docs/METHOD.md), so the scheduler is not loaded at all. The
published file set and config values are in `fixtures.published`; the tokenizer is the legacy
file set (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json: pad "!").

`model="tiny"` means the tiny random-weight models of `fixtures.tiny`, built locally on first use.
Tiny models give noise-like pictures; they exist for tests, demos and benchmarks. Such names ('tiny',
'toy') are found through the registry of named model folders (`pipeline.models.registry`), so this
module imports neither `fixtures` nor `toyworld`.

Every failure a user can fix (no such folder, folder missing a component, hub id not reachable) is an
`InputError` with one line that names the model and says what to give instead.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import torch

from pipeline.errors import InputError, first_line
from pipeline.models.names import DEFAULT_MODEL
from pipeline.models.registry import resolve_model
from pipeline.models.speed import ResolvedSpeed, SpeedOptions, apply_speed_options

# The components the editor loads (the published folder also has scheduler/, depth_estimator/ and
# feature_extractor/; the depth estimator is loaded separately by pipeline.models.depth).
DIFFUSION_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
T = TypeVar("T")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' | 'float16' | 'bfloat16' (or a torch.dtype of those) -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise InputError(f"dtype {dtype} is not supported: use one of {', '.join(_DTYPES)}")
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise InputError(f"dtype {dtype!r} is not supported: use one of {', '.join(_DTYPES)}") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> 'cuda' when a GPU is visible, else 'cpu'."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a torch device: use e.g. cpu, cuda or cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: no CUDA GPU is visible here (or torch was built without CUDA); use cpu")
    return dev


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "could not get it from the hub". Nearly all are OSError
    (diffusers and transformers re-raise hub problems as OSError; offline mode raises a
    ConnectionError); a malformed id is a ValueError (HFValidationError); raw HTTP errors from
    huggingface_hub or httpx can slip through some code paths."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors.append(HfHubHTTPError)
    except ImportError:  # pragma: no cover - depends on huggingface_hub version
        pass
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def is_local(model: str) -> bool:
    """A model given as an existing local folder (anything else is treated as a hub id)."""
    return os.path.isdir(os.path.expanduser(model))


def hub_error(model: str, e: BaseException, what: str = "the stable-diffusion-2-depth layout") -> InputError:
    """The one-line error for a model that is not a local folder and could not be fetched."""
    return InputError(
        f"model {model!r} is not a local folder and could not be loaded from the Hugging Face hub "
        f"(offline?): give a folder in {what}, or --model tiny [{type(e).__name__}: {first_line(e, 200)}]"
    )


def require_subfolders(folder: str, subfolders: tuple[str, ...], layout: str) -> None:
    """Raise InputError naming `folder` and the first missing subfolder."""
    for sub in subfolders:
        if not os.path.isdir(os.path.join(folder, sub)):
            raise InputError(
                f"model folder {folder!r} has no {sub}/ subfolder: it must be in {layout} "
                f"({', '.join(s + '/' for s in subfolders)}), or use --model tiny"
            )


def load_pretrained(
    load: Callable[..., T],
    model: str,
    *,
    subfolder: str | None = None,
    layout: str = "the stable-diffusion-2-depth layout",
    **kwargs: Any,
) -> T:
    """Call `load(model, subfolder=..., **kwargs)` (a `from_pretrained`), turning "cannot get it"
    into an InputError. Used by every loader in pipeline/ so all report problems the same way."""
    if subfolder is not None:
        kwargs["subfolder"] = subfolder
    local = is_local(model)
    path = os.path.expanduser(model) if local else model
    try:
        return load(path, **kwargs)
    except _hub_errors() as e:
        if local:
            where = f"{subfolder}/ in model folder {model!r}" if subfolder else f"model folder {model!r}"
            raise InputError(f"could not load {where}: {first_line(e, 200)}") from e
        raise hub_error(model, e, layout) from e


@dataclass(frozen=True)
class LoadTarget:
    """Where a model's weights come from and where they go: the folder or hub id that `resolve_model`
    made of the name, and the device and dtype (`load_target`)."""

    path: str
    device: torch.device
    dtype: torch.dtype


def load_target(
    model: str,
    *,
    part: str | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
) -> LoadTarget:
    """The preamble of every model loader (depth, captions, CLIP): dtype and device checked (one line
    each when wrong, before anything loads), then the model name resolved (`resolve_model(model, part)`)."""
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    return LoadTarget(path=resolve_model(model, part), device=dev, dtype=torch_dtype)


class LoadedModel:
    """What the helper models (DepthEstimator, Captioner, ClipScorer) share: one network in eval mode
    without gradients on one device and dtype, and the name it was loaded from (`source`, shown in
    results and reports). `from_model` runs the one loader preamble (`load_target`: dtype and device
    checked, the name resolved, a model folder's `part` subfolder taken) and hands the target to the
    subclass's `_load`, which knows its checkpoint's layout."""

    part: ClassVar[str | None] = None  # subfolder of a model folder ('blip', 'clip'), None: the folder
    default_model: ClassVar[str]  # what `from_model()` loads without a name

    def __init__(self, model: Any, *, device: torch.device, dtype: torch.dtype, source: str = "") -> None:
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.device = device
        self.dtype = dtype
        self.source = source

    @classmethod
    def from_model(
        cls, model: str | None = None, *, dtype: str | torch.dtype = "float32", device: str | torch.device | None = None
    ) -> Self:
        """A hub id or local folder (or a registered name such as 'tiny' or 'toy'); default `default_model`."""
        name = cls.default_model if model is None else model
        return cls._load(load_target(name, part=cls.part, dtype=dtype, device=device), name)

    @classmethod
    def _load(cls, target: LoadTarget, model: str) -> Self:
        raise NotImplementedError


def pil_image_processor(name: str) -> type:
    """transformers' image processor class `name` with its PIL backend (`<name>Pil`) where this
    transformers has one. transformers 5 made torchvision the default image backend and falls back to
    the PIL one, with a warning, when torchvision is missing; we always take the PIL one: the same
    pixels, depth, captions and scores with or without torchvision, and the PIL resize the published
    checkpoints' preprocessing was written for."""
    import transformers  # lazy: transformers takes seconds to import, and most callers never load a model

    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


class ImageTextModel(LoadedModel):
    """A LoadedModel with an image processor and a tokenizer (BLIP, CLIP): `network` (the transformers
    class name), `image_processor_class` (its processor's class name) and `layout` (what a folder must hold,
    for the error message) say what to load; each of the three loads through `load_pretrained`."""

    network: ClassVar[str]
    image_processor_class: ClassVar[str]
    layout: ClassVar[str]

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        *,
        device: torch.device,
        dtype: torch.dtype,
        source: str = "",
    ) -> None:
        super().__init__(model, device=device, dtype=dtype, source=source)
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def _load(cls, target: LoadTarget, model: str) -> Self:
        import transformers  # lazy, as in pil_image_processor

        path, layout = target.path, cls.layout
        network = getattr(transformers, cls.network)
        net = load_pretrained(network.from_pretrained, path, layout=layout, dtype=target.dtype)
        processor = pil_image_processor(cls.image_processor_class)
        image_processor = load_pretrained(processor.from_pretrained, path, layout=layout)
        tokenizer = load_pretrained(transformers.AutoTokenizer.from_pretrained, path, layout=layout)
        return cls(net, image_processor, tokenizer, device=target.device, dtype=target.dtype, source=model)


def _diffusers_kwargs() -> dict[str, Any]:
    # Without `accelerate`, diffusers falls back to low_cpu_mem_usage=False anyway but prints a
    # warning on every load; say it ourselves so logs stay clean. With accelerate, the default
    # (True: no random init before loading) is faster and halves peak host memory.
    if importlib.util.find_spec("accelerate") is None:
        return {"low_cpu_mem_usage": False}
    return {}


@dataclass
class DiffusionModels:
    """What the editor needs from SD2-depth. All modules are in eval mode with requires_grad False,
    on `device`, in `dtype`. `source` is the model as given (hub id, folder, or 'tiny')."""

    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    device: torch.device
    dtype: torch.dtype
    source: str
    speed: ResolvedSpeed | None = None  # the speed switches in force, once applied


def _prepare(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    # dtype was already applied by from_pretrained (which also honours modules a model keeps in
    # float32); casting again with .to(dtype) makes diffusers warn about exactly that, so move only.
    module.to(device=device)
    module.eval()
    module.requires_grad_(False)
    return module


def load_diffusion_models(
    model: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
    speed: SpeedOptions | None = None,
) -> DiffusionModels:
    """Load UNet, VAE, CLIP text encoder and tokenizer of SD2-depth from a hub id or local folder
    ('tiny' -> the tiny random models). device None = cuda if available, else cpu. `speed`: a
    `pipeline.models.speed.SpeedOptions` (None: every switch auto, the device type's defaults)."""
    # Here, not at the top: diffusers and transformers take seconds to import, and every verb's parser
    # imports this module (its model names and help).
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    resolved_speed = (speed or SpeedOptions()).resolve(dev)  # a bad switch fails before the weights load
    path = resolve_model(model)
    if is_local(path):
        # Check the layout up front: one clear message instead of a stack trace from the 3rd loader.
        require_subfolders(
            os.path.expanduser(path), DIFFUSION_COMPONENTS, "the stable-diffusion-2-depth layout"
        )

    dkw = _diffusers_kwargs()
    # The UNet first: for a hub id it is the load that tells us whether the id is reachable at all.
    unet = load_pretrained(
        UNet2DConditionModel.from_pretrained, path, subfolder="unet", torch_dtype=torch_dtype, **dkw
    )
    vae = load_pretrained(
        AutoencoderKL.from_pretrained, path, subfolder="vae", torch_dtype=torch_dtype, **dkw
    )
    text_encoder = load_pretrained(
        CLIPTextModel.from_pretrained, path, subfolder="text_encoder", dtype=torch_dtype
    )
    tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, path, subfolder="tokenizer")
    if unet.config.in_channels != 5:
        raise InputError(
            f"model {model!r} is not a depth model: its UNet takes {unet.config.in_channels} input channels, "
            "not 5 (4 latent + 1 depth); use stabilityai/stable-diffusion-2-depth or a fine-tune of it"
        )
    log.info("loaded %s (%s, %s)", model, dev, str(torch_dtype).removeprefix("torch."))
    models = DiffusionModels(
        unet=_prepare(unet, dev),
        vae=_prepare(vae, dev),
        text_encoder=_prepare(text_encoder, dev),
        tokenizer=tokenizer,
        device=dev,
        dtype=torch_dtype,
        source=model,
    )
    apply_speed_options(models, resolved_speed)
    return models
