"""Model names, defaults and the help texts of the model flags: light (no torch), for the command line,
which builds its flags before any model code loads."""

from __future__ import annotations

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-depth"
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-large"
TINY = "tiny"
TOY = "toy"
BUILTIN = (TINY, TOY)  # model names that mean a folder of ours rather than a hub id

# Help text for a `--model` flag, shared by every verb that has one so they all say the same thing.
MODEL_HELP = (
    "diffusion model: a Hugging Face hub id or a local folder in the stable-diffusion-2-depth layout "
    f"(default {DEFAULT_MODEL}); 'tiny' = tiny random-weight models built locally without any download: "
    "they give noise-like pictures and exist for tests, demos and benchmarks only; 'toy' = our small models "
    "trained on the synthetic toy world (toyworld), committed in this layout: recognisable edits of toy "
    "clips, not SD2's quality"
)
CAPTION_MODEL_HELP = (
    "captioning model for the source prompt: a BLIP hub id or local folder "
    f"(default {DEFAULT_CAPTION_MODEL}); 'tiny' = a tiny random BLIP (meaningless captions, for tests); "
    "'toy' = the toy world's trained BLIP (captions of toy clips)"
)



def describe_model(name: str) -> str:
    """What a run's pictures come from, in a sentence, for the report: a reader must never take the toy
    or tiny models' pictures for Stable Diffusion 2's."""
    if name == TINY:
        return "tiny random-weight models built locally: noise-like pictures, for tests and demos only"
    if name == TOY:
        return "our small models trained on the synthetic toy world: toy clips' edits, not SD2's quality"
    if name == "random-sd2":
        return "SD2-depth's shapes with random weights: pictures of nothing, for timing only"
    return "the diffusion model at this hub id or folder"


DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
CLIP_MODEL_HELP = (
    f"CLIP model for the metrics: a hub id or local CLIPModel folder (default {DEFAULT_CLIP_MODEL}, "
    "the paper's); 'tiny' = a tiny random CLIP built locally (its metric values are meaningless, "
    "for tests only)"
)
DTYPES = ("float32", "float16", "bfloat16")  # the dtypes a model can load in (every --dtype flag's choices)

# The speed switches' values (`pipeline.models.speed`): every --channels-last, --compile, ... flag's choices.
SWITCHES = ("auto", "on", "off")
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
