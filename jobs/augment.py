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

`--format webdataset` also writes tar shards for video training pipelines, OUTPUT/shards/NNNNNN.tar
(`--shard-size N` clips each): `<key>.mp4` and `<key>.json` (its augmented.parquet row) per clip, each
shard with an NNNNNN_stats.json; a rerun writes only the shards that are missing or changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs import _common, _format, _metrics
from pipeline.dataset import shards, storage
from pipeline.dataset import stats as run_stats
from pipeline.dataset.datasets import augment_manifest, augmented_table
from pipeline.dataset.manifest import check_text, load_manifest
from pipeline.dataset.tables import AUGMENTED, FILTERED, RESULTS, write_table
from pipeline.errors import InputError


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
    _common.add_shots_argument(parser)
    _common.add_cluster_arguments(parser)
    _common.add_storage_arguments(parser)
    _metrics.add_metrics_arguments(parser, filtering=True)
    _format.add_format_arguments(parser, AUGMENTED)
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
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"--prompts {prompts_file!r}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
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
    for template in out:  # a lone surrogate (a JSON "\ud800", argv bytes that are not UTF-8): one line
        check_text(template, f"--prompts {prompts_file!r}" if prompts_file else "--prompt")
    if not out:
        raise InputError("no prompt templates: give --prompt TEXT (repeatable) or --prompts FILE")
    return out


def run(args: argparse.Namespace) -> int:
    _format.check_format_arguments(args)
    templates = read_templates(args.prompt, args.prompts)
    k = args.variants if args.variants is not None else len(templates)
    if not 1 <= k <= len(templates):
        raise InputError(
            f"--variants {k}: must be between 1 and the number of templates ({len(templates)}); "
            "each variant of a video uses a different template"
        )
    opts = _common.storage_options(args)
    run_opts = _common.run_options(args, opts)
    source = load_manifest(
        args.manifest,
        opts,
        require_prompts=False,
        use_manifest_prompts=False,
        tables=(RESULTS, AUGMENTED),
        output=args.output,
    )
    manifest, variant_of = augment_manifest(source, templates, k)
    # --metrics / --min-clip-text / --max-pixel-mse: scored, and clips outside the bounds marked 'filtered'.
    summary, filtered = _common.execute(args, manifest, run_opts, "augment")
    if filtered:  # the run's rows are Arrow columns (actors.runner.RunSummary): set, not edited in place
        summary.rows = summary.rows.with_status(filtered, FILTERED)
    table = augmented_table(manifest, summary.rows, variant_of)
    output = storage.normalize(args.output)
    if filtered:  # the run's stats.json counted these as ok
        run_stats.refresh(output, opts)
    url = storage.join(output, AUGMENTED)
    write_table(table, url, opts)
    print(f"augmented: {url} ({table.num_rows} new clips)")
    if args.format == "webdataset":
        _format.write_shards(args, shards.augmented_samples(table, output, opts), output, opts, "clips")
    return 0 if summary.failed <= args.max_failures else 1


if __name__ == "__main__":
    _common.main_for("augment")
