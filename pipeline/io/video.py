"""Reading and writing videos and image folders (depth folders: `pipeline.io.depth`).

All video goes through PyAV (FFmpeg's libraries, no subprocess). Inputs are a local video file, a
folder of images, an fsspec URL of a video file, or an open binary file object (callers pass fsspec
files for ``s3://``). Every problem a user can fix becomes one :class:`InputError` line that names
the input.

Writers are atomic (`pipeline.io.atomic`): they write a hidden temporary sibling and rename
it into place, so a crash or an exception from the frame generator never leaves a half-written
output and never damages an output that was already there. Resume logic elsewhere relies on "the
output exists" meaning "the output is complete".

Supported:
    read:  video files of any container/codec FFmpeg decodes (VIDEO_EXTENSIONS lists the usual ones;
           the extension is not checked), and folders of IMAGE_EXTENSIONS images.
    write: WRITABLE_VIDEO_EXTENSIONS (.mp4, .m4v, .mov, .mkv), always H.264 yuv420p; or a PNG folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import fsspec
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image, ImageOps

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_path, temp_sibling
from pipeline.io.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, WRITABLE_VIDEO_EXTENSIONS

# A folder of images has no frame rate of its own; 8 fps is what the method's published
# examples use and what the outputs of an image folder get unless the caller says otherwise.
FOLDER_FPS = 8.0


DEFAULT_CRF = 18  # visually near-lossless; outputs are what people look at
_AVCOL_BT709 = 1  # AVCOL_SPC_BT709 == AVCOL_PRI_BT709 == AVCOL_TRC_BT709 in FFmpeg's enums


@dataclass
class Frames:
    """Decoded frames: uint8 ``[N, H, W, 3]`` RGB, the frame rate, and one name per frame."""

    frames: np.ndarray
    fps: float
    names: list[str]


# --------------------------------------------------------------------------------------- reading


def read_frames(src: str | os.PathLike | BinaryIO, *, max_frames: int | None = None) -> Frames:
    """Decode a video file, fsspec URL, binary file object, or folder of images.

    Folder: images sorted by name (digit runs compared as numbers, so ``f2`` comes before ``f10``;
    zero-padded names sort as usual), names are the file stems, fps is ``FOLDER_FPS``.
    Video: names are ``000000``, ``000001``, ...; fps is the stream's average rate; frames are
    rotated upright when the file carries a display rotation (phone videos).

    ``max_frames``: a longer input raises :class:`InputError` (it is never truncated silently).
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if not isinstance(src, str | os.PathLike):
        return _read_video(src, _describe(src), max_frames)
    label = os.fspath(src)
    if isinstance(label, bytes):
        label = os.fsdecode(label)
    if "://" in label and not label.startswith("file://"):
        try:
            fileobj = fsspec.open(label, "rb").open()
        except FileNotFoundError:
            raise InputError(f"{label}: no such file; check the URL") from None
        except (OSError, ValueError, ImportError) as exc:  # unknown protocol, missing driver, denied
            raise InputError(f"{label}: cannot open ({_reason(exc)}); check the URL") from None
        with fileobj:
            return _read_video(fileobj, label, max_frames)
    path = Path(label.removeprefix("file://"))
    if path.is_dir():
        return _read_folder(path, max_frames)
    if not path.exists():
        raise InputError(f"{label}: no such file or folder; check the path")
    return _read_video(path, label, max_frames)


def _describe(fileobj: object) -> str:
    """A human name for a file object: the fsspec URL if there is one, else its name."""
    fs, path = getattr(fileobj, "fs", None), getattr(fileobj, "path", None)
    if fs is not None and isinstance(path, str):
        with contextlib.suppress(Exception):
            return str(fs.unstrip_protocol(path))
    name = getattr(fileobj, "name", None)
    if isinstance(name, str):
        return name
    return f"<{type(fileobj).__name__}>"


def _fps_of(stream: av.VideoStream) -> float:
    # average_rate is frames/duration from the container; guessed_rate/base_rate cover containers
    # that do not record it. A stream with none of them gets the folder default.
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return FOLDER_FPS


def _upright(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    # Decoders hand frames over as stored; a display matrix says how a player turns them. Its angle
    # is counter-clockwise, as is np.rot90's. Frames whose size changes mid-stream are scaled to the
    # first frame's size so the result is one array.
    array = frame.to_ndarray(format="rgb24", width=width, height=height)
    turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(array, turns)) if turns else array


def _read_video(src: Path | BinaryIO, label: str, max_frames: int | None) -> Frames:
    try:
        container = av.open(src if not isinstance(src, Path) else str(src), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(
            f"{label}: not a readable video ({_reason(exc)}); check it is a complete video file"
        ) from None
    with container:
        if not container.streams:
            # e.g. an mp4 cut short inside its index (moov atom)
            raise InputError(f"{label}: no streams found; the file may be truncated, check it is complete")
        if not container.streams.video:
            raise InputError(f"{label}: has no video stream; give a video file or a folder of images")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared = stream.frames  # from the header; 0 when the container does not say
        if max_frames is not None and declared > max_frames:
            raise InputError(
                f"{label}: has {declared} frames, more than the limit of {max_frames}; "
                f"trim the video or raise the limit"
            )
        fps = _fps_of(stream)
        # Preallocate from the declared count so a long video is not held twice (list + stack).
        buffer: np.ndarray | None = None
        extra: list[np.ndarray] = []
        count = 0
        size: tuple[int, int] | None = None
        try:
            for frame in container.decode(stream):
                if size is None:
                    size = (frame.width, frame.height)
                array = _upright(frame, *size)
                count += 1
                if max_frames is not None and count > max_frames:
                    raise InputError(
                        f"{label}: has more than {max_frames} frames, the limit; "
                        f"trim the video or raise the limit"
                    )
                if buffer is None and declared > 0:
                    buffer = np.empty((declared, *array.shape), dtype=np.uint8)
                if buffer is not None and count <= len(buffer):
                    buffer[count - 1] = array
                else:
                    extra.append(array)
        except av.FFmpegError as exc:
            raise InputError(
                f"{label}: corrupt video, decoding failed after {count} frames ({_reason(exc)}); "
                f"re-encode or replace the file"
            ) from None
    if count == 0:
        raise InputError(f"{label}: video has no decodable frames; check the file is complete")
    if buffer is None:
        frames = np.stack(extra)
    elif extra:
        frames = np.concatenate([buffer, np.stack(extra)])
    elif count < len(buffer):
        frames = buffer[:count].copy()  # header over-counted (truncated file); do not pin the rest
    else:
        frames = buffer
    return Frames(frames=frames, fps=fps, names=[f"{i:06d}" for i in range(count)])


def _reason(exc: BaseException) -> str:
    # FFmpeg errors read "[Errno N] Invalid data found when processing input: 'path'"; keep the
    # words, drop the errno and the repeated path, and keep it to one line.
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def _load_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # phone JPEGs store orientation in EXIF
            return np.asarray(image.convert("RGB"))  # grayscale, palette, RGBA -> RGB
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise InputError(
            f"{path}: image could not be decoded ({_reason(exc)}); replace or remove it"
        ) from None


def _read_folder(folder: Path, max_frames: int | None) -> Frames:
    paths = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    if not paths:
        raise InputError(
            f"{folder}: folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
            f"add frames or give a video file"
        )
    paths.sort(key=lambda p: (_natural_key(p.name), p.name))
    if max_frames is not None and len(paths) > max_frames:
        raise InputError(
            f"{folder}: has {len(paths)} images, more than the limit of {max_frames}; "
            f"remove some or raise the limit"
        )
    names = [p.stem for p in paths]
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise InputError(
                f"{folder}: {seen[p.stem].name} and {p.name} have the same name; keep one of them"
            )
        seen[p.stem] = p
    first = _load_image(paths[0])
    frames = np.empty((len(paths), *first.shape), dtype=np.uint8)
    frames[0] = first
    for i, p in enumerate(paths[1:], start=1):
        image = _load_image(p)
        if image.shape != first.shape:
            raise InputError(
                f"{p}: is {image.shape[1]}x{image.shape[0]} but {paths[0].name} is "
                f"{first.shape[1]}x{first.shape[0]}; all images in a folder must have one size"
            )
        frames[i] = image
    return Frames(frames=frames, fps=FOLDER_FPS, names=names)


# --------------------------------------------------------------------------------------- writing


def _fps_fraction(fps: float | Fraction) -> Fraction:
    # Time bases must be rational. limit_denominator(1001) maps 29.97 -> 2997/100 and the float of
    # 30000/1001 back to 30000/1001, so NTSC rates round-trip.
    rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
    if not rate > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _check_frame(
    frame: np.ndarray, index: int, width: int | None = None, height: int | None = None
) -> np.ndarray:
    """A contiguous uint8 [H,W,3] view of ``frame``; ValueError for other dtypes, shapes or sizes."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index}: expected uint8 [H,W,3], got {frame.dtype} {frame.shape}")
    if width is not None and frame.shape[:2] != (height, width):
        raise ValueError(f"frame {index}: is {frame.shape[1]}x{frame.shape[0]}, expected {width}x{height}")
    return np.ascontiguousarray(frame)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    *,
    width: int | None = None,
    height: int | None = None,
    crf: int = DEFAULT_CRF,
) -> Path:
    """Encode uint8 ``[H, W, 3]`` RGB frames as H.264 yuv420p at ``fps``, atomically.

    ``frames`` is consumed one at a time (a generator is fine). ``width``/``height`` default to the
    first frame's size; every frame must have that size, and both must be even (yuv420p). The
    container follows the extension (.mp4/.m4v/.mov/.mkv; anything else is written as mp4).
    On any error the temporary file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    rate = _fps_fraction(fps)
    iterator: Iterator[np.ndarray] = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    first = _check_frame(first, 0)
    width = first.shape[1] if width is None else width
    height = first.shape[0] if height is None else height
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"{path}: H.264 yuv420p needs even width and height, got {width}x{height}")
    first = _check_frame(first, 0, width, height)

    container_format = WRITABLE_VIDEO_EXTENSIONS.get(path.suffix.lower(), "mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=path.suffix or ".mp4") as temp:
        _encode_h264(temp, container_format, first, iterator, rate, width, height, crf)
    return path


# x264's AVX-512 kernel of the macroblock-tree pass (mbtree_propagate_list, on by default) walks a row
# of macroblocks 8 at a time and does not mask the last group: where the width is not a multiple of
# 8 macroblocks (128 pixels) it reads past the row, in the bottom row past the end of x264's arrays
# into memory nobody wrote, and adds what it finds there to the reference frames' costs. The bits
# then depend on the heap (the file name's length, what ran before): measured on an AVX-512 CPU,
# 64x64 clips gave 4 different files for 7 MALLOC_PERTURB_ values. So the encoder sees every frame
# widened on the right to a multiple of ENCODE_COLUMNS, the last column repeated, and the stream's
# SPS crops it off again (H.264 frame cropping): decoders return the frame as given, the container
# records that size, and x264's kernels from SSSE3 to AVX-512 write the same bytes (tests/
# test_encode_determinism.py). A width that is already a multiple is encoded unwidened.
ENCODE_COLUMNS = 128
# x264's frame threads each search only the rows of their reference frames that are already encoded,
# so the bits depend on the thread count, which x264 (and FFmpeg) would otherwise take from the CPUs
# this process may use: a 512x512 clip gave other bytes with 1, 2, 3, 4 and 8 threads (8 and more
# alike). A fixed count gives the same bytes on a 1-core editor and a 64-core node; 4 costs little
# where fewer cores run them (2.84 s against 3.02 s for 2 threads and 3.32 s for 1, 16 frames at
# 512x512 on 2 cores) and lets a larger node encode in parallel.
X264_THREADS = 4


def encode_width(width: int) -> int:
    """The width x264 encodes for a frame `width` wide (see ENCODE_COLUMNS)."""
    return -(-width // ENCODE_COLUMNS) * ENCODE_COLUMNS


def _encode_h264(
    temp: Path,
    container_format: str,
    first: np.ndarray,
    rest: Iterator[np.ndarray],
    rate: Fraction,
    width: int,
    height: int,
    crf: int,
    x264_params: str = "",
) -> None:
    """Encode `first` and `rest` into `temp`. `x264_params`: further x264 options (tests restrict its
    instruction sets with `asm=...`, to write what a CPU with fewer of them writes)."""
    coded = encode_width(width)
    fixed = f"threads={X264_THREADS}:crop-rect=0,0,{coded - width},0"
    params = ":".join(p for p in (fixed, x264_params) if p)
    options = {"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}
    # The encoder's stream lives in a container in memory that gets a header only: the output's stream
    # is a copy of it (its SPS and PPS, colour tags, frame rate) at the cropped size, which the copy
    # can be told and an encoder's own stream cannot (it would say the widened size, and players
    # would stretch the picture to it).
    with (
        av.open(io.BytesIO(), mode="w", format=container_format) as scratch,
        av.open(str(temp), mode="w", format=container_format, options=options) as container,
    ):
        encoder = scratch.add_stream("libx264", rate=rate, options={"crf": str(crf), "x264-params": params})
        encoder.width, encoder.height, encoder.pix_fmt = coded, height, "yuv420p"
        codec = encoder.codec_context
        codec.time_base = 1 / rate  # pts counts frames
        # Convert and tag as BT.709 limited range (sRGB's primaries). Untagged streams get
        # BT.601 from swscale but BT.709 from most players, which shifts colours visibly.
        codec.colorspace = codec.color_primaries = codec.color_trc = _AVCOL_BT709
        codec.color_range = int(ColorRange.MPEG)

        def encode(array: np.ndarray | None, index: int) -> list[av.Packet]:
            frame = None
            if array is not None:
                if coded != width:
                    array = np.pad(array, ((0, 0), (0, coded - width), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(
                    format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
                )
                frame.pts = index
            return encoder.encode(frame)

        pending = encode(first, 0)  # opens the encoder: now its SPS and PPS exist
        scratch.start_encoding()  # copies them, and the encoder's settings, into its stream
        stream = container.add_stream_from_template(encoder, width=width, height=height)

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                packet.stream = stream
                container.mux(packet)

        mux(pending)
        for index, array in enumerate(rest, start=1):
            mux(encode(_check_frame(array, index, width, height), index))
        mux(encode(None, -1))  # flush the encoder's delayed frames


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"frame name {name!r} cannot be a file name")
    return name


def _foreign(folder: Path, names: Sequence[str] | None) -> list[str]:
    """Entries of an existing output `folder` that are not frames an edit writes: anything but
    `<name>.png` files, and with `names` known, any PNG not among them. Replacing the folder would
    delete those, so they make it the user's."""
    allowed = None if names is None else {f"{n}.png" for n in names}
    return sorted(
        e.name
        for e in folder.iterdir()
        if not (e.is_file() and e.suffix == ".png" and (allowed is None or e.name in allowed))
    )


def check_frames_folder(folder: str | os.PathLike, names: Sequence[str] | None = None) -> None:
    """Refuse to replace a folder that holds anything but the frames an edit is about to write
    (an earlier edit of the same frames): never delete what we did not write."""
    folder = Path(folder)
    shown = _foreign(folder, names) if folder.is_dir() else []
    if shown:
        raise InputError(
            f"{folder}: folder holds files that are not this edit's frames "
            f"({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}); nothing was written: "
            "choose a new or empty folder"
        )


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse, before any work, an output that `write_output` could not write or that would destroy
    something: an unwritable extension (.webm, .gif, .png ...), one of `inputs` (the video or frame
    folder read, a depth folder), a folder that holds files of the user's, a location under a file,
    or one that cannot be written (read-only, no permission). Probes writability with a temporary
    file next to where the output goes, removed at once."""
    text = str(os.fspath(path))
    if "://" in text:
        raise InputError(f"{text}: the output must be a local path, not a URL (for s3:// and other URLs use `run`)")
    path = Path(text)
    suffix = path.suffix.lower()
    is_video = suffix in WRITABLE_VIDEO_EXTENSIONS
    if not is_video and (suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS):
        raise InputError(
            f"{path}: cannot write {suffix} output; use one of "
            f"{', '.join(sorted(WRITABLE_VIDEO_EXTENSIONS))} or a folder path for PNG frames"
        )
    for source in inputs:
        if source is not None and _same_path(path, Path(source)):
            raise InputError(f"{path}: is the input {source}; writing it would destroy it, choose another output")
    if is_video and path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the video, or drop the extension for PNG frames")
    if not is_video:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder; remove it or choose another output")
        check_frames_folder(path)
    # The output is written as a temporary sibling in its parent folder, created if missing.
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{path}: {ancestor} is a file, not a folder; choose another output")
    probe = temp_sibling(ancestor / path.name)
    try:
        probe.open("xb").close()
    except OSError as exc:
        raise InputError(f"{path}: cannot write in {ancestor} ({_reason(exc)}); choose a writable location") from None
    probe.unlink(missing_ok=True)


def write_frames_folder(
    folder: str | os.PathLike, frames: Iterable[np.ndarray], names: Sequence[str]
) -> Path:
    """Write each frame as lossless ``<name>.png`` into ``folder``, atomically.

    The PNGs go into a hidden temporary sibling folder that replaces ``folder`` only once every
    frame is written; a previous ``folder`` survives any failure. ``frames`` may be a generator and
    must yield exactly ``len(names)`` frames.
    """
    folder = Path(folder)
    names = [_check_name(str(n)) for n in names]
    if not names:
        raise ValueError(f"{folder}: no frames to write")
    if len(set(names)) != len(names):
        raise ValueError(f"{folder}: frame names are not unique")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; remove it or choose another output")
    check_frames_folder(folder, names)  # never delete what we did not write
    with atomic_path(folder, folder=True, replace=True) as temp:
        shape: tuple[int, ...] | None = None
        count = 0
        for index, frame in enumerate(frames):
            if index >= len(names):
                raise ValueError(f"{folder}: got more frames than the {len(names)} names")
            if shape is None:
                shape = _check_frame(frame, index).shape
            frame = _check_frame(frame, index, shape[1], shape[0])
            # compress_level 1: PNG is lossless at every level; higher levels cost seconds per
            # video and save little on natural images.
            Image.fromarray(frame).save(temp / f"{names[index]}.png", format="PNG", compress_level=1)
            count += 1
        if count != len(names):
            raise ValueError(f"{folder}: got {count} frames for {len(names)} names")
    return folder


def write_output(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float | Fraction, names: Sequence[str]
) -> Path:
    """Write frames as a video when ``path`` has a writable video extension, else as a PNG folder.

    .mp4/.m4v/.mov/.mkv -> H.264 via :func:`write_video`. Other video or image extensions
    (.webm, .gif, .avi, .png, ...) raise :class:`InputError`. Anything else is a folder of
    ``<name>.png``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in WRITABLE_VIDEO_EXTENSIONS:
        return write_video(path, frames, fps)
    if suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS:
        raise InputError(
            f"{path}: cannot write {suffix} output; use one of "
            f"{', '.join(sorted(WRITABLE_VIDEO_EXTENSIONS))} or a folder path for PNG frames"
        )
    return write_frames_folder(path, frames, names)
