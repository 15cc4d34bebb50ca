"""Render the toy world and train its models (VAE, UNet + text encoder, DPT, BLIP, CLIP and the
texture reader of the measures) from scratch.

    pix2video train-toy --output toy-work/          # many hours on a 2-core CPU (BENCHMARKS.md); resumable
    pix2video edit clip.mp4 -o out.mp4 --model toy-work/model --prompt "..."

    # two cores, two processes: the UNet in one, everything it does not need in the other, then a last
    # call (every part done) that writes the folder
    pix2video train-toy --output toy-work/ --parts vae --threads 2
    pix2video train-toy --output toy-work/ --parts unet --threads 1 &
    pix2video train-toy --output toy-work/ --parts vae-decoder,texture,depth,caption,clip --threads 1
    pix2video train-toy --output toy-work/

Seeded and resumable: every part checkpoints as it goes, so running the same command again after a
stop goes on where it was, and a finished part is loaded rather than retrained. The result,
OUTPUT/model/, is a folder in the published stable-diffusion-2-depth layout (plus blip/, clip/ and
texture/) that every verb loads with --model, --caption-model and --clip-model. The committed
`--model toy` is such a folder. OUTPUT/figures.json holds the held-out figures of each part, and
OUTPUT/unet/monitor.csv the text-to-image accuracy every 1000 UNet steps.
"""

from __future__ import annotations

import argparse
import json

from jobs import _common
from pipeline.errors import InputError
from toyworld import PARTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default="toy-work", metavar="DIR", help="work and result folder (default toy-work/)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every component's training steps (default 1; e.g. 0.01 for a smoke run)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--parts",
        default=None,
        metavar="A,B",
        help=f"train only these parts (of {', '.join(PARTS)}; default all, then write the model folder); "
        "the folder is written by a call that finds every part done",
    )


def run(args: argparse.Namespace) -> int:
    # torch and the toy world's trainers here, not at the top: `--help` and a usage error do not wait for them.
    import torch

    from toyworld.build import train_toy

    _common.check_positive("scale", args.scale)
    if args.threads is not None:
        _common.check_positive("threads", args.threads)
        torch.set_num_threads(args.threads)
    parts = None if args.parts is None else [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts or () if p not in PARTS]
    if unknown or parts == []:
        raise InputError(f"--parts {args.parts!r}: choose among {', '.join(PARTS)}")
    folder = train_toy(args.output, scale=args.scale, parts=parts)
    if folder is None:
        print(f"trained: {', '.join(parts or PARTS)}; run again without --parts once every part is done")
        return 0
    print(json.dumps(json.loads((folder.parent / "figures.json").read_text()), indent=2))
    print(f"model: {folder}  (use it with --model {folder})")
    return 0


if __name__ == "__main__":
    _common.main_for("train-toy")
