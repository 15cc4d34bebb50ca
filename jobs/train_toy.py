"""Render the toy world and train its models (VAE, UNet + text encoder, DPT, BLIP, CLIP) from scratch.

    pix2video train-toy --output toy-work/          # about 2 hours on a 2-core CPU; resumable
    pix2video edit clip.mp4 -o out.mp4 --model toy-work/model --prompt "..."

Seeded and resumable: every component checkpoints as it goes, so running the same command again after
a stop goes on where it was, and a finished component is loaded rather than retrained. The result,
OUTPUT/model/, is a folder in the published stable-diffusion-2-depth layout (plus blip/ and clip/)
that every verb loads with --model, --caption-model and --clip-model. The committed `--model toy` is
such a folder. OUTPUT/figures.json holds the held-out figures of each component.
"""

from __future__ import annotations

import argparse
import json

from jobs import _common


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


def run(args: argparse.Namespace) -> int:
    # torch and the toy world's trainers here, not at the top: `--help` and a usage error do not wait for them.
    import torch

    from toyworld.build import train_toy

    _common.check_positive("scale", args.scale)
    if args.threads is not None:
        _common.check_positive("threads", args.threads)
        torch.set_num_threads(args.threads)
    folder = train_toy(args.output, scale=args.scale)
    print(json.dumps(json.loads((folder.parent / "figures.json").read_text()), indent=2))
    print(f"model: {folder}  (use it with --model {folder})")
    return 0


if __name__ == "__main__":
    _common.main_for("train-toy")
