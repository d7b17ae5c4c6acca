"""Raster sources: local paths, HTTP(S) and S3 URLs, GDAL ``/vsi…`` paths and STAC items.

Everywhere geobind takes a raster (the accessor's ``open_raster``, :func:`~geobind.embed_to_zarr`,
``geobind embed``, training scenes) it takes any of:

- a local path (``scene.tif``, ``mosaic.vrt``);
- an ``http(s)://`` URL of a Cloud-Optimised GeoTIFF, read with Range requests (GDAL's
  ``/vsicurl/``);
- an ``s3://bucket/key`` URL (GDAL's ``/vsis3/``), ``gs://`` and ``az://`` likewise;
- a GDAL virtual path (``/vsicurl/…``, ``/vsizip/…``) or VRT XML;
- a STAC Item, ItemCollection or catalogue (:mod:`geobind.stac`), one source per item.

Credentials and endpoints come from the standard environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_NO_SIGN_REQUEST``, GDAL's
own ``GDAL_HTTP_*`` options …) and, in Python, a ``storage_options=`` mapping (fsspec's names:
``endpoint_url``, ``key``, ``secret``, ``region``, ``anon``; or GDAL option names in capitals).

A source's **identity** (what a store records to resume safely) is the SHA-256 of a local file, and
for a remote one its URL with the server's ETag, size and modification time: hashing it would mean
downloading it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from geobind.errors import InputDataError, one_line

__all__ = [
    "Source",
    "gdal_env",
    "gdal_path",
    "is_remote",
    "object_and_key",
    "object_store",
    "open_dataset",
    "options_tuple",
    "public_url",
    "resolve_source",
    "resolve_sources",
]

# URL schemes and the GDAL virtual file systems that read them
_VSI = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# fsspec-style storage_options → GDAL config options (credentials go through a rasterio Session)
_OPTION_NAMES = {
    "key": "AWS_ACCESS_KEY_ID",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret": "AWS_SECRET_ACCESS_KEY",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "token": "AWS_SESSION_TOKEN",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "session_token": "AWS_SESSION_TOKEN",
    "region": "AWS_REGION",
    "region_name": "AWS_REGION",
    "endpoint": "AWS_S3_ENDPOINT",
}
_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


@dataclass(frozen=True)
class Source:
    """One raster to read: what rasterio opens, the name it is known by, and its identity.

    Attributes:
        path: what ``rasterio.open`` takes (a local path, a GDAL ``/vsi…`` path or VRT XML).
        label: how it is shown and recorded (the path or URL the user gave; for a STAC item,
            its ``self`` href and id).
        name: a short name (the file stem, the STAC item id): a store's group name.
        identity: the SHA-256 (hex) of a local file, or ``"<url> etag=… size=… mtime=…"`` of a
            remote one; a STAC item's combines its assets'. A changed identity means changed
            pixels. (Other GDAL paths, e.g. ``/vsizip/…``, and VRT XML are known by their text
            only: a change of the pixels behind them is not seen.)
        storage_options: credentials and endpoint options used to read it (never recorded).

    Example:
        >>> src = resolve_source("https://example.com/a/scene.tif?sig=abc", identity=False)
        >>> src.path
        '/vsicurl/https://example.com/a/scene.tif?sig=abc'
        >>> src.label, src.name  # recorded without the query (a presigned URL's signature)
        ('https://example.com/a/scene.tif', 'scene')
    """

    path: str
    label: str
    name: str
    identity: str
    storage_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    def __fspath__(self) -> str:  # so code that takes a path takes a Source
        return self.path


def _scheme(source: str) -> str | None:
    match = _SCHEME.match(source)
    return match[1].lower() if match else None


def is_remote(source: Any) -> bool:
    """Whether ``source`` is read over the network (an HTTP(S)/S3/GS/Azure URL or ``/vsi…`` path).

    Example:
        >>> is_remote("https://example.com/scene.tif"), is_remote("/vsis3/bucket/a.tif")
        (True, True)
        >>> is_remote("scene.tif"), is_remote("file:///data/scene.tif")
        (False, False)
    """
    if isinstance(source, Source):
        return is_remote(source.label)
    text = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    if _scheme(text) in _VSI:
        return True
    return text.startswith(("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls"))


def gdal_path(source: str | os.PathLike[str]) -> str:
    """The path GDAL opens for ``source``: URLs become ``/vsicurl/``, ``/vsis3/``, ``/vsigs/`` or
    ``/vsiaz/`` paths, ``file://`` URLs and local paths absolute paths; GDAL paths stay.

    Example:
        >>> gdal_path("s3://bucket/scenes/a.tif")
        '/vsis3/bucket/scenes/a.tif'
        >>> gdal_path("https://example.com/a.tif?x=1")
        '/vsicurl/https://example.com/a.tif?x=1'
    """
    text = os.fspath(source)
    scheme = _scheme(text)
    if scheme in ("http", "https"):
        return _VSI[scheme] + text
    if scheme in _VSI:
        return _VSI[scheme] + text.split("://", 1)[1]
    if scheme == "file":
        return urlsplit(text).path
    if scheme is not None or text.startswith("/vsi") or text.lstrip().startswith("<"):
        return text  # another GDAL path, or VRT XML
    return str(Path(text).expanduser().resolve())


def _endpoint_options(url: str) -> dict[str, str]:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return {
        "AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/"),
        "AWS_HTTPS": "NO" if parts.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",  # path-style: what custom endpoints (MinIO, moto) expect
    }


def gdal_options(
    storage_options: Mapping[str, Any] | None = None, *, remote: bool = False
) -> dict[str, str]:
    """GDAL config options for reading remote rasters: the standard environment's S3 endpoint
    (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, which GDAL does not read itself) and
    ``storage_options`` (fsspec's names, or GDAL option names in capitals).

    Credentials in the environment are read by GDAL directly; those in ``storage_options`` are
    returned here too (:func:`gdal_env` hands them to GDAL through a rasterio session).
    ``remote=True`` (a URL or ``/vsi…`` path is opened) also skips GDAL's directory listing per
    open; a local file keeps it, or its ``.msk``/``.aux.xml`` sidecars would go unseen.

    Example:
        >>> opts = gdal_options({"endpoint_url": "http://127.0.0.1:9000", "anon": True})
        >>> opts["AWS_S3_ENDPOINT"], opts["AWS_HTTPS"], opts["AWS_NO_SIGN_REQUEST"]
        ('127.0.0.1:9000', 'NO', 'YES')
    """
    options = {"GDAL_HTTP_MAX_RETRY": "2", "GDAL_HTTP_RETRY_DELAY": "0.5"}
    if remote:  # no directory listing per open (a local file's .msk/.aux.xml sidecars count)
        options["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "AWS_S3_ENDPOINT" not in os.environ:
        options.update(_endpoint_options(endpoint))
    for key, value in dict(storage_options or {}).items():
        if key in ("endpoint_url", "endpoint") and "://" in str(value):
            options.update(_endpoint_options(str(value)))
        elif key == "anon":
            if value:
                options["AWS_NO_SIGN_REQUEST"] = "YES"
        elif key in _OPTION_NAMES:
            options[_OPTION_NAMES[key]] = str(value)
        elif key.isupper():
            options[key] = str(value)
        # other names (obstore's client_options …) are for the store's client, not GDAL
    return options


def _session(credentials: dict[str, str]) -> Any:
    """A rasterio session handing explicit credentials to GDAL (rasterio refuses them as plain
    config options and would need boto3 for its own AWS session)."""
    from rasterio.session import Session

    class _Credentials(Session):
        def get_credential_options(self) -> dict[str, str]:
            return dict(credentials)

    return _Credentials()


@contextlib.contextmanager
def gdal_env(
    storage_options: Mapping[str, Any] | None = None, *, remote: bool = False
) -> Iterator[None]:
    """A ``rasterio.Env`` configured for remote reads (:func:`gdal_options`).

    Example:
        >>> import rasterio
        >>> with gdal_env({"region": "eu-west-1"}):
        ...     rasterio.env.getenv()["AWS_REGION"]
        'eu-west-1'
    """
    import rasterio

    options = gdal_options(storage_options, remote=remote)
    credentials = {k: options.pop(k) for k in _CREDENTIALS & set(options)}
    session = _session(credentials) if credentials else None
    with rasterio.Env(session=session, **options):
        yield


def _read_error(label: str, err: BaseException) -> InputDataError:
    """One line saying why a source could not be read (missing, refused, unreachable …)."""
    text = one_line(err)
    low = re.sub(r"\S*://\S*|/vsi\S*", "", text).lower()  # classify the words, not the URL
    if "404" in low or "does not exist" in low or "no such file" in low or "nosuchkey" in low:
        why = "not found (a 404, or no such file or key)"
    elif "403" in low or "signature" in low or "accessdenied" in low or "invalidaccesskey" in low:
        why = (
            "access refused: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "storage_options) and the endpoint (AWS_ENDPOINT_URL)"
        )
    elif "connect" in low or "resolve" in low or "timed out" in low or "timeout" in low:
        why = "the server could not be reached"
    else:
        why = "not a raster GDAL can read, or the transfer failed"
    return InputDataError(f"cannot read {label}: {why} ({text})")


@contextlib.contextmanager
def open_dataset(source: Any, storage_options: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Open a local or remote raster with rasterio, reads included in the remote configuration.

    Raises:
        InputDataError: a missing file or URL (404), refused credentials, an unreachable server,
            or a file GDAL cannot read: one line naming the source.

    Example:
        >>> with open_dataset("https://127.0.0.1:9/missing.tif") as src:
        ...     pass
        Traceback (most recent call last):
        geobind.errors.InputDataError: cannot read https://127.0.0.1:9/missing.tif: ...
    """
    import rasterio

    label = source.label if isinstance(source, Source) else public_url(os.fspath(source))
    path = source.path if isinstance(source, Source) else gdal_path(source)
    options = dict(source.storage_options) if isinstance(source, Source) else {}
    options.update(storage_options or {})
    with gdal_env(options, remote=is_remote(path)):
        try:
            src = rasterio.open(path)
        except rasterio.errors.RasterioError as err:
            raise _read_error(label, err) from None
        with src:
            yield src


# fsspec's names for S3 options → obstore's
_S3_ALIASES = {
    "endpoint_url": "endpoint",
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "region_name": "region",
    "anon": "skip_signature",
}


def _http_endpoint(options: Mapping[str, Any]) -> bool:
    endpoint = options.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3")
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
    return str(endpoint or "").lower().startswith("http://")


def object_store(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """An obstore store rooted at ``url`` (``s3://bucket/prefix``, ``gs://…``, ``az://…``,
    ``http(s)://host/dir/``), configured from the environment and ``storage_options`` (obstore's
    names or fsspec's; GDAL's capitalised options are left to GDAL). Plain ``http://`` endpoints
    (MinIO, moto) are allowed when the endpoint says ``http://``.

    Example:
        >>> type(object_store("s3://bucket/scenes", {"region_name": "eu-west-1"})).__name__
        'S3Store'
    """
    from obstore.store import from_url

    scheme = _scheme(url) or ""
    config = {k: v for k, v in (storage_options or {}).items() if not k.isupper()}
    client = dict(config.pop("client_options", None) or {})
    config.pop("client_kwargs", None)
    if scheme in ("s3", "s3a"):
        config = {_S3_ALIASES.get(k, k): v for k, v in config.items()}
        if "skip_signature" in config:
            config["skip_signature"] = bool(config["skip_signature"])
        if _http_endpoint(config):
            client.setdefault("allow_http", True)
    elif scheme in ("http", "https"):
        config = {}  # credentials are for object stores; GDAL_HTTP_* options are GDAL's
        if scheme == "http":
            client.setdefault("allow_http", True)
    return from_url(url, client_options=client or None, **config)


def object_and_key(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The obstore store of ``url``'s bucket (``s3://``, ``gs://``, ``az://``) and the key in it.

    Example:
        >>> store, key = object_and_key("s3://bucket/stac/item.json")
        >>> key
        'stac/item.json'
    """
    scheme, rest = url.split("://", 1)
    bucket, _, key = rest.partition("/")
    return object_store(f"{scheme}://{bucket}", storage_options), key


def public_url(url: str) -> str:
    """``url`` without credentials or a query string (a presigned URL's signature changes with
    every request): what a store records and resumes by.

    Example:
        >>> public_url("https://user:pw@host.example/a.tif?X-Amz-Signature=abc")
        'https://host.example/a.tif'
    """
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def _http_identity(url: str) -> dict[str, Any]:
    """ETag, size and mtime of an HTTP(S) object from a one-byte ranged GET of the URL as given
    (a presigned URL signs GET, not HEAD)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            headers = response.headers
    except (urllib.error.URLError, OSError) as err:
        raise _read_error(public_url(url), err) from None
    size = headers.get("Content-Range", "").rpartition("/")[2] or headers.get("Content-Length")
    return {"e_tag": headers.get("ETag"), "size": size, "mtime": headers.get("Last-Modified")}


def _remote_identity(url: str, storage_options: Mapping[str, Any] | None) -> str:
    """``"<url> etag=… size=… mtime=…"`` of a remote object (the URL without its query)."""
    import obstore

    scheme = _scheme(url)
    if scheme is None:  # a /vsicurl/ or /vsis3/ path: back to its URL where we can
        for name, vsi in _VSI.items():
            if url.startswith(vsi):
                rest = url[len(vsi) :]
                url = rest if vsi == "/vsicurl/" else f"{name}://{rest}"
                break
        scheme = _scheme(url)
    if scheme not in _VSI:
        raise InputDataError(f"cannot tell whether {url} changed: not an http(s)/s3/gs/az URL")
    if scheme in ("http", "https"):
        head = _http_identity(url)
    else:
        try:
            head = obstore.head(*object_and_key(url, storage_options))
        except Exception as err:  # obstore's typed errors
            raise _read_error(url, err) from None
        modified = head.get("last_modified")
        head = {**head, "mtime": modified.isoformat() if modified else None}
    return f"{public_url(url)} etag={head.get('e_tag')} size={head['size']} mtime={head['mtime']}"


def _stem(label: str) -> str:
    tail = label.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return os.path.splitext(tail)[0] or "scene"


def options_tuple(storage_options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """``storage_options`` as a sorted tuple of items (values kept as they are: ``anon=False``
    stays ``False``), for frozen dataclasses and pickled jobs.

    Example:
        >>> options_tuple({"region": "eu-west-1", "anon": False})
        (('anon', False), ('region', 'eu-west-1'))
    """
    return tuple(sorted((storage_options or {}).items(), key=lambda kv: str(kv[0])))


def resolve_source(
    source: Any, storage_options: Mapping[str, Any] | None = None, *, identity: bool = True
) -> Source:
    """One path or URL as a :class:`Source` (checked to exist; identity computed if asked).

    Raises:
        InputDataError: a local file that does not exist, a URL that answers 404, refused
            credentials, an unreachable server.

    Example:
        >>> p = getfixture("tmp_path") / "scene.tif"
        >>> _ = p.write_bytes(b"abc")
        >>> src = resolve_source(p)
        >>> src.name, src.identity[:12]
        ('scene', 'ba7816bf8f01')
        >>> resolve_source("s3://bucket/scene.tif", identity=False).path
        '/vsis3/bucket/scene.tif'
    """
    from geobind._hashing import sha256_file

    if isinstance(source, Source):
        return source
    text = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    options = options_tuple(storage_options)
    if is_remote(text):
        ident = _remote_identity(text, storage_options) if identity else ""
        return Source(gdal_path(text), public_url(text), _stem(public_url(text)), ident, options)
    if text.startswith("/vsi") or text.lstrip().startswith("<"):  # /vsizip/…, VRT XML
        import hashlib

        digest = hashlib.sha256(text.encode()).hexdigest()  # the path's, not the pixels'
        return Source(text, text, _stem(text), f"path-sha256:{digest}", options)
    path = Path(gdal_path(text))
    if not path.is_file():
        raise InputDataError(f"source {text} does not exist (or is not a file)")
    return Source(str(path), str(path), path.stem, sha256_file(path) if identity else "", options)


def _is_stac(item: Any) -> bool:
    from geobind.stac import is_stac

    return is_stac(item)


def resolve_sources(
    sources: Any, storage_options: Mapping[str, Any] | None = None, *, identity: bool = True
) -> list[Source]:
    """Paths, URLs and STAC items/catalogues → the :class:`Source` list to read, each once.

    A STAC Item gives one source per item (its RGB(+NIR) assets stacked, :mod:`geobind.stac`);
    an ItemCollection or catalogue, one per item.

    Example:
        >>> tmp = getfixture("tmp_path")
        >>> for name in ("a.tif", "b.tif"):
        ...     _ = (tmp / name).write_bytes(name.encode())
        >>> [s.name for s in resolve_sources([tmp / "a.tif", tmp / "b.tif", tmp / "a.tif"])]
        ['a', 'b']
    """
    single = isinstance(sources, str | os.PathLike | Source | Mapping) or _is_stac(sources)
    items: Sequence[Any] = [sources] if single else list(sources)
    if not items:
        raise InputDataError("no source given: pass a GeoTIFF/VRT path, a URL or a STAC item")
    out: dict[str, Source] = {}  # by label: each source once, in order
    for item in items:
        if _is_stac(item):
            from geobind.stac import stac_sources

            found = stac_sources(item, storage_options=storage_options)
        else:
            found = [resolve_source(item, storage_options, identity=identity)]
        for source in found:
            out.setdefault(source.label, source)
    return list(out.values())
