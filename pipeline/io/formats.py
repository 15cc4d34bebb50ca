"""The file kinds video IO reads and writes, by extension: light (no PyAV), for the manifest and the
command line, which check names before any video is opened."""

from __future__ import annotations

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
)
# Containers that take H.264 directly. webm needs VP8/VP9/AV1 and gif a palette, so we refuse those
# rather than silently write something other than what the extension promises.
WRITABLE_VIDEO_EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
