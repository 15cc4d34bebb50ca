"""The per-video precompute record: what a video's precompute store holds, as one typed object.

The precompute stage (`pipeline/stages/precompute.py`) writes it as `meta.json`, last, into the
video's store folder (it is the folder's completion marker), and returns it, ok or failed; the
dispatcher groups videos by its size, the edit stage reads the store's files through it and copies
its sizes and timings into the results rows, relabel turns it into a row of the labels table.

On disk it is the same JSON as before it had a type: the same keys with the same values, so stores
written earlier are reused as they are. Keys this version does not know (a meta.json written by
another version) are kept in `extra` and written back; `caption_of` is left out while there is no
caption, as it always was, and the shot fields while the store has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.dataset.tables import FAILED, OK

# Not stored: `cached` is this run's news (found in the store or made now), `extra` holds unknown keys,
# `read_order` the order of the keys it was read with.
_NOT_STORED = ("cached", "extra", "read_order")
_OMITTED_WHEN_NONE = ("caption_of", "shots", "shots_of", "shot_captions", "flow")


@dataclass
class PrecomputeRecord:
    """One video's precompute. Every field but the name may be missing from a failed record (a failed
    one carries `name`, `video`, `status`, `error` and the timings; one whose task died has only
    `status` and `error`)."""

    name: str | None = None  # the video's name in the manifest (unique per run)
    video: str | None = None  # its URL
    spec: dict[str, Any] | None = None  # PrecomputeSpec.identity(): what the stored values depend on
    store: str | None = None  # the store's URL, and the two arrays in it:
    frames: str | None = None  # uint8 [N,H,W,3] at the working size
    depth: str | None = None  # float32 [N,h,w] raw depth
    # float32 [N,6,H/f,W/f]: the input's optical flow at the latent size (pipeline/io/flow.py), for the
    # options beyond the paper; absent from stores written before it (the editor then estimates it).
    flow: str | None = None
    num_frames: int | None = None
    fps: float | None = None
    width: int | None = None  # working size
    height: int | None = None
    src_width: int | None = None  # the video's own size
    src_height: int | None = None
    caption: str | None = None  # of the anchor frame, when one was asked for (the first shot's)
    caption_of: list[Any] | None = None  # what made the caption (model, anchor, dtype, device kind)
    # Shot cuts (pipeline/io/shots.py): the first frame of every shot, how they were found (`shots_of`:
    # ["auto", detector], ["off"] or ["given"]), and the caption of each shot's anchor frame when
    # captions were asked for (shot_captions[0] == caption). Absent from stores written before shots.
    shots: list[int] | None = None
    shots_of: list[Any] | None = None
    shot_captions: list[str] | None = None
    status: str | None = None  # "ok" or "failed"
    error: str | None = None  # one line, when failed
    seconds_decode: float = 0.0  # what this run spent on each stage (0 when the store had it)
    seconds_depth: float = 0.0
    seconds_caption: float = 0.0
    cached: bool | None = None  # True: found in the store; False: made by this run; None: failed
    extra: dict[str, Any] = field(default_factory=dict)  # keys of meta.json this version does not know
    read_order: tuple[str, ...] = field(default=(), repr=False, compare=False)  # meta.json's keys, as read

    @property
    def ok(self) -> bool:
        return self.status == OK

    @classmethod
    def failed(
        cls, error: str, *, name: str | None = None, video: str | None = None, **timings: float
    ) -> PrecomputeRecord:
        """A failed record: the video is data, with a one-line error."""
        return cls(name=name, video=video, status=FAILED, error=error, **timings)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrecomputeRecord:
        """From the parsed meta.json (a dict); keys this version does not know go to `extra`."""
        if not isinstance(data, dict):
            raise ValueError(f"a precompute record is a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)} - set(_NOT_STORED)
        return cls(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known},
            read_order=tuple(data),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object of meta.json: the stored fields (`caption_of` only when set) and the unknown
        keys it was read with; keys it was read with keep their places, new ones follow in field order
        (so a store's meta.json is rewritten exactly as the dict it was before had it)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _NOT_STORED:
                continue
            value = getattr(self, f.name)
            if value is None and f.name in _OMITTED_WHEN_NONE:
                continue
            values[f.name] = value
        values |= {k: v for k, v in self.extra.items() if k not in values}
        order = [k for k in self.read_order if k in values] + [k for k in values if k not in self.read_order]
        return {k: values[k] for k in order}

    def dumps(self) -> bytes:
        """meta.json's bytes."""
        return json.dumps(self.to_json()).encode()

    def __getitem__(self, key: str) -> Any:
        """Read by meta.json's key (`record["status"]`, and `record["cached"]`), as the JSON it is;
        code uses the attributes."""
        if key != "extra" and key in _FIELDS:
            return getattr(self, key)
        return self.extra[key]


_FIELDS = frozenset(f.name for f in fields(PrecomputeRecord))
