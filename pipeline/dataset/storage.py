"""Storage through fsspec URLs: atomic writes, storage options, and keeping secrets out of text.

Every URL the dataset pipeline touches (manifest, videos, precompute store, outputs, markers) goes
through here, so "local path or s3://" is decided in one place. Writes are atomic: on a local disk a
temporary sibling is renamed over the target (rename is atomic within a filesystem); on an object
store the object is written with one PUT (or one multipart upload, which also becomes visible only
when complete), so a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import fsspec
from fsspec.utils import get_protocol

from pipeline.errors import InputError, first_line
from pipeline.io.atomic import TEMP_NAME, atomic_path, write_bytes_atomic

LOCAL_PROTOCOLS = ("file", "local")
# Option names whose values are credentials (storage options, environment variables, submit's
# --env): never printed, redacted from any text we emit. The one such pattern.
SECRET_NAME = re.compile(r"(key|secret|token|password|passwd|credential|session)", re.IGNORECASE)
# Environment variables that hold credentials (s3fs/botocore read them itself; we only redact them).
_SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "HF_TOKEN",
)


@dataclass(frozen=True)
class StorageOptions:
    """fsspec keyword arguments for remote URLs (local paths take none).

    `endpoint_url` and `profile` are spelled as s3fs spells them; `extra` holds any other
    `KEY=VALUE` given by flag or config. The repr hides values, so logging the object is safe.
    """

    endpoint_url: str | None = None
    profile: str | None = None
    anon: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show values: they may be credentials
        keys = [k for k in ("endpoint_url", "profile") if getattr(self, k)] + sorted(self.extra)
        return f"StorageOptions(keys={keys}, anon={self.anon})"

    __str__ = __repr__

    def for_url(self, url: str) -> dict[str, Any]:
        """The keyword arguments to open `url`'s filesystem with."""
        protocol = get_protocol(url)
        if protocol in LOCAL_PROTOCOLS:
            return {}
        opts: dict[str, Any] = dict(self.extra)
        if protocol in ("s3", "s3a"):
            if self.endpoint_url:
                opts.setdefault("endpoint_url", self.endpoint_url)
            if self.profile:
                opts.setdefault("profile", self.profile)
            if self.anon:
                opts.setdefault("anon", True)
        return opts

    def secrets(self) -> list[str]:
        """Values that must never appear in logs, errors or tables."""
        values = [str(v) for k, v in self.extra.items() if SECRET_NAME.search(k) and v]
        values += [os.environ[k] for k in _SECRET_ENV if os.environ.get(k)]
        return values


def parse_storage_options(
    endpoint_url: str | None = None,
    profile: str | None = None,
    anon: bool = False,
    pairs: Iterable[str] | Mapping[str, Any] | None = None,
) -> StorageOptions:
    """Build options from flags; `pairs` are `KEY=VALUE` strings (or a mapping, from a config file).

    The AWS endpoint from the environment (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`) is resolved here
    on the driver and passed on explicitly, so workers on other nodes use the same endpoint. Credentials
    from the environment are not passed on: each worker uses its own credential chain (instance
    profile, its own environment), which keeps secrets out of task arguments.
    """
    extra: dict[str, Any] = {}
    if isinstance(pairs, Mapping):
        extra.update(pairs)
    else:
        for pair in pairs or ():
            key, sep, value = str(pair).partition("=")
            if not sep or not key.strip():
                raise InputError(f"storage option {key.strip() or pair!r} must be written KEY=VALUE")
            extra[key.strip()] = _coerce(value.strip())
    for key, value in extra.items():
        # fsspec's nested options (s3fs client_kwargs, config_kwargs, s3_additional_kwargs, ...) are
        # mappings: a text here fails deep inside the filesystem at its first request, as a traceback.
        if str(key).endswith("_kwargs") and not isinstance(value, Mapping):
            raise InputError(
                f"storage option {key!r} takes a mapping of options, not {type(value).__name__}; "
                f"give it in a --config file, e.g. storage_option: {{{key}: {{region_name: us-east-1}}}}"
            )
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return StorageOptions(endpoint_url=endpoint or None, profile=profile or None, anon=anon, extra=extra)


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    return value


def redact(text: str, storage: StorageOptions | None = None) -> str:
    """`text` with every known secret value replaced by `***`, and the credentials of every URL in it
    (`user:password@`, signatures and tokens in the query) too (see `redact_url`)."""
    secrets = storage.secrets() if storage is not None else [os.environ[k] for k in _SECRET_ENV if os.environ.get(k)]
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:  # very short values would redact ordinary words
            text = text.replace(secret, "***")
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


# A URL inside free text (an error message, a log line): scheme://, then anything but space and quotes.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# Query parameters whose values are credentials: presigned S3 (X-Amz-Signature, X-Amz-Credential,
# X-Amz-Security-Token), GCS (X-Goog-Signature), Azure SAS (sig), and the usual token/key names.
_SECRET_PARAM = re.compile(r"(sig|signature|token|key|secret|credential|password|passwd|pwd|auth|session|policy)", re.I)
REDACTED = "***"


def is_redacted(url: str) -> bool:
    """Whether `url` is one `redact_url` changed (its credentials, or its whole host part, are `***`):
    it cannot be read again as it is written, only with the manifest's own URL."""
    if "://" not in url:
        return False
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED in url
    userinfo = parts.netloc.rpartition("@")[0]
    query = parse_qsl(parts.query, keep_blank_values=True)
    return parts.netloc == REDACTED or userinfo.endswith(REDACTED) or any(v == REDACTED for _, v in query)


def redact_url(url: str) -> str:
    """`url` as it may be written or shown: the password of `user:password@` (or a lone user name,
    which is often a token) and the values of credential query parameters (signatures, tokens, keys)
    become `***`; scheme, host, path and every other parameter stay, so the URL still says which file
    it is and reads again with credentials given another way (storage options, the environment).
    Text without `://` (a local path) is returned as it is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced [ in the host: show scheme and path only
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{REDACTED}/{rest.partition('/')[2]}" if "@" in rest.partition("/")[0] else url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if sep else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = "&".join(
                f"{quote(k, safe='-_.~')}={REDACTED if _SECRET_PARAM.search(k) else quote(v, safe='-_.~/:')}"
                for k, v in pairs
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def filesystem(url: str, storage: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for `url` and the path inside it; an unknown protocol, or one whose package
    is not installed, is one line naming the URL (InputError)."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage.for_url(url))
    except ValueError as e:
        if "protocol not known" not in str(e).lower():
            raise
        raise InputError(
            f"{url}: unknown protocol {get_protocol(url)!r}; use a local path, s3:// or another fsspec protocol"
        ) from None
    except ImportError as e:
        raise InputError(f"{url}: the {get_protocol(url)}:// protocol needs a package: {first_line(e)}") from None
    return fs, path


def is_local(url: str) -> bool:
    return get_protocol(url) in LOCAL_PROTOCOLS


def normalize(url: str) -> str:
    """Local paths become absolute (Ray workers do not share the driver's working directory);
    remote URLs lose a trailing slash."""
    if is_local(url):
        path = url[len("file://") :] if url.startswith("file://") else url
        return os.path.abspath(os.path.expanduser(path))
    return url.rstrip("/")


def is_under(url: str, folder: str) -> bool:
    """Is `url` inside `folder` (or `folder` itself)? Local paths compare as real paths (links and
    `..` resolved), remote URLs by prefix."""
    if is_local(url) != is_local(folder):
        return False
    if is_local(url):
        a, b = os.path.realpath(normalize(url)), os.path.realpath(normalize(folder))
    else:
        a, b = normalize(url), normalize(folder)
    return a == b or a.startswith(b.rstrip("/") + "/")


def join(base: str, *parts: str) -> str:
    """`base/part/part`; parts are our own safe names (see manifest.safe_name), never user paths."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def remove_stale_temporaries(folder_url: str) -> int:
    """Delete temporaries that a killed process left under a local `folder_url` (object stores have
    none: they are written with one PUT). Returns how many were removed."""
    if not is_local(folder_url) or not os.path.isdir(folder_url):
        return 0
    removed = 0
    for dirpath, _, files in os.walk(folder_url):
        for name in files:
            if TEMP_NAME.match(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def write_bytes(url: str, data: bytes, storage: StorageOptions) -> None:
    """Write `data` to `url` atomically."""
    fs, path = filesystem(url, storage)
    if is_local(url):
        write_bytes_atomic(path, data)  # readers never see half a file; a failed write leaves the old one
    else:
        fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all


def put_file(local_path: str, url: str, storage: StorageOptions) -> None:
    """Copy a finished local file to `url` atomically."""
    fs, path = filesystem(url, storage)
    if is_local(url):
        with atomic_path(path) as tmp:
            shutil.copyfile(local_path, tmp)
    else:
        fs.put_file(local_path, path)


def read_bytes(url: str, storage: StorageOptions) -> bytes:
    fs, path = filesystem(url, storage)
    return fs.cat_file(path)


def exists(url: str, storage: StorageOptions) -> bool:
    fs, path = filesystem(url, storage)
    return fs.exists(path)


def list_names(folder_url: str, storage: StorageOptions) -> list[str]:
    """Base names of the files directly in `folder_url` ([] when it does not exist).

    One listing instead of one existence check per item: thousands of HEAD requests would dominate
    the start of a rerun on S3.
    """
    fs, path = filesystem(folder_url, storage)
    fs.invalidate_cache(path)  # s3fs caches listings; other processes have written since
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]


def read_many(urls: list[str], storage: StorageOptions) -> dict[str, bytes]:
    """Read many small files; on object stores fsspec fetches them concurrently."""
    if not urls:
        return {}
    fs, _ = filesystem(urls[0], storage)
    paths = [filesystem(u, storage)[1] for u in urls]
    data = fs.cat(paths, on_error="omit")
    by_path = dict(zip(paths, urls, strict=True))
    return {by_path[p]: v for p, v in data.items() if p in by_path}
