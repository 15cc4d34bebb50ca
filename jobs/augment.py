"""Make edited copies of a dataset from prompt templates; writes OUTPUT/augmented.parquet.

    pix2video augment --manifest clips.csv --output s3://bucket/aug/ \\
        --prompt "{caption}, in the snow" --prompt "{caption}, watercolor painting" --variants 1

Each video gets `--variants K` new clips (default: one per template), each from a different template,
chosen per video with a seed taken from its id (so reruns choose the same). `{caption}` in a template
is the video's source prompt: the manifest's `source_prompt`, else a BLIP caption of its anchor frame.

augmented.parquet has one row per new clip that was made, ready to train on: `id` (of the new clip),
`video` (its mp4), `source_id`, `source_video`, `prompt` (the text used), `augmentation` (the
template), `variant`, `caption`, frame count, fps, size, and the source's label columns. Every
attempt, failed ones included, is in OUTPUT/results.parquet as with `pix2video run`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pyarrow as pa

from jobs import _common, evaluate
from pipeline.errors import InputError

AUGMENTED = "augmented.parquet"

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("video", pa.string()),
        ("source_id", pa.string()),
        ("source_video", pa.string()),
        ("prompt", pa.string()),
        ("augmentation", pa.string()),
        ("variant", pa.int32()),
        ("caption", pa.string()),
        ("num_frames", pa.int32()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_io_arguments(parser, prompts=False)
    p = parser.add_argument_group("augmentations")
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEMPLATE",
        help="prompt template (repeatable); '{caption}' becomes the video's source prompt",
    )
    p.add_argument(
        "--prompts", metavar="FILE", help="file of templates: one per line (# comments), or a JSON/YAML list"
    )
    p.add_argument("--variants", type=int, metavar="K", help="new clips per video (default: one per template)")
    _common.add_model_arguments(parser)
    _common.add_edit_arguments(parser)
    _common.add_cluster_arguments(parser)
    _common.add_storage_arguments(parser)
    evaluate.add_metrics_arguments(parser, filtering=True)
    parser.add_argument("--overwrite", action="store_true", help="redo everything, even what is done")
    parser.add_argument(
        "--max-failures",
        type=int,
        default=0,
        metavar="N",
        help="exit 0 when at most N clips failed (default 0)",
    )


def read_templates(prompts: list[str], prompts_file: str | None) -> list[str]:
    """Templates from flags and/or a file, in order, without repeats."""
    out = [p for p in prompts if p.strip()]
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise InputError(f"--prompts {prompts_file!r}: no such file")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".json", ".yaml", ".yml"):
            import yaml  # YAML is a superset of JSON

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                raise InputError(f"--prompts {prompts_file!r}: not valid JSON/YAML") from None
            if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
                raise InputError(f"--prompts {prompts_file!r}: must hold a list of strings")
            out += [x for x in data if x.strip()]
        else:
            out += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out = list(dict.fromkeys(out))
    if not out:
        raise InputError("no prompt templates: give --prompt TEXT (repeatable) or --prompts FILE")
    return out


def choose(templates: list[str], video_id: str, k: int) -> list[str]:
    """K distinct templates for one video, the same on every run (seeded by the id).

    Distinct, because editing is deterministic given (video, prompt): two variants with one
    template would be the same clip twice.
    """
    if k >= len(templates):
        return list(templates)
    rng = random.Random(json.dumps(["augment", video_id]))
    picked = set(rng.sample(range(len(templates)), k))
    return [t for i, t in enumerate(templates) if i in picked]


def run(args: argparse.Namespace) -> int:
    from actors import storage
    from actors.manifest import Manifest, Unit, load_manifest, unit_key
    from actors.results import write_table
    from jobs.run import execute, print_summary

    templates = read_templates(args.prompt, args.prompts)
    k = args.variants if args.variants is not None else len(templates)
    if not 1 <= k <= len(templates):
        raise InputError(
            f"--variants {k}: must be between 1 and the number of templates ({len(templates)}); "
            "each variant of a video uses a different template"
        )
    opts = _common.storage_options(args)
    run_opts = _common.run_options(args, opts)
    source = load_manifest(args.manifest, opts, require_prompts=False, use_manifest_prompts=False)
    units: list[Unit] = []
    variant_of: dict[str, int] = {}
    for job in source.videos():
        first = job.units[0]
        for template in choose(templates, job.id, k):
            key = unit_key(job.name, template)
            units.append(Unit(first.id, first.name, first.video, template, first.source_prompt, first.row, key))
            variant_of[key] = templates.index(template)
    clash = sorted(set(source.carried.column_names) & set(SCHEMA.names))
    if clash:
        raise InputError(f"manifest {args.manifest}: column(s) {', '.join(clash)} clash with augmented.parquet's")
    manifest = Manifest(units=units, carried=source.carried, source=source.source)
    summary = execute(args, manifest, run_opts)
    print_summary("augment", summary)
    # --metrics / --min-clip-text / --max-pixel-mse: score, and mark clips outside the bounds 'filtered'.
    for key in evaluate.after_run(args, opts, "augment"):
        if key in summary.rows:
            summary.rows[key]["status"] = evaluate.FILTERED

    rows, carried_rows = [], []
    for u in manifest.units:
        r = summary.rows.get(u.key)
        if not r or r.get("status") != "ok":
            continue
        rows.append(
            {
                "id": u.key,
                "video": r["output"],
                "source_id": u.id,
                "source_video": u.video,
                "prompt": r["prompt"],
                "augmentation": u.prompt,
                "variant": variant_of[u.key],
                "caption": r.get("source_prompt"),
                **{c: r.get(c) for c in ("num_frames", "fps", "width", "height")},
            }
        )
        carried_rows.append(u.row)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    carried = manifest.carried_rows(carried_rows)
    for name in carried.column_names:
        table = table.append_column(carried.schema.field(name), carried.column(name))
    url = storage.join(storage.normalize(args.output), AUGMENTED)
    write_table(table, url, opts)
    print(f"augmented: {url} ({len(rows)} new clips)")
    return 0 if summary.failed <= args.max_failures else 1


if __name__ == "__main__":
    _common.main_for("augment")
