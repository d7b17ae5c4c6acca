"""Finding pretrained weights: local files, the Hugging Face cache, or the hub when it is reachable.

Weights are looked up in the local cache first. When they are missing and the hub cannot be reached
(``HF_HUB_OFFLINE=1``, or no connection within ~1.5 s), a
:class:`~geobind.errors.WeightsNotFoundError` names the missing file and how to provide it, instead
of retrying for a minute.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from geobind.errors import WeightsNotFoundError

__all__ = ["geobind_cache_dir", "hub_cache_dir", "hub_file", "hub_offline", "hub_reachable"]

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether the user asked for offline mode (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``).

    Example:
        >>> import os
        >>> hub_offline() == (os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true"})
        True
    """
    return any(
        os.environ.get(k, "").lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment at each call.

    ``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``, else
    huggingface_hub's default (``~/.cache/huggingface/hub``). huggingface_hub reads these once,
    when it is imported; reading them here too means ``HF_HOME`` set later in a session (a
    notebook) is honoured as well.

    Example:
        >>> env = getfixture("monkeypatch")
        >>> env.delenv("HF_HUB_CACHE", raising=False)
        >>> env.setenv("HF_HOME", "/data/hf")
        >>> str(hub_cache_dir())
        '/data/hf/hub'
    """
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if cache:
        return Path(cache).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def geobind_cache_dir() -> Path:
    """Where files that are not on the hub (e.g. zips from a URL) are kept: ``GEOBIND_CACHE``,
    else ``geobind/`` beside the hub cache (``$HF_HOME/geobind``), so that copying ``HF_HOME``
    to an offline machine brings them along.

    Example:
        >>> env = getfixture("monkeypatch")
        >>> env.delenv("HF_HUB_CACHE", raising=False)
        >>> env.delenv("GEOBIND_CACHE", raising=False)
        >>> env.setenv("HF_HOME", "/data/hf")
        >>> str(geobind_cache_dir())
        '/data/hf/geobind'
    """
    if os.environ.get("GEOBIND_CACHE"):
        return Path(os.environ["GEOBIND_CACHE"]).expanduser()
    return hub_cache_dir().parent / "geobind"


def hub_reachable(host: str = "huggingface.co", timeout: float = 1.5) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included).

    Example:
        >>> isinstance(hub_reachable(timeout=0.01), bool)
        True
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def _missing(what: str, repo_id: str, filenames: list[str], why: str) -> WeightsNotFoundError:
    files = " or ".join(filenames)
    return WeightsNotFoundError(
        f"{what}: {repo_id}/{files} is not in the local Hugging Face cache "
        f"({hub_cache_dir()}) and {why}. On a machine with internet run "
        f"`hf download {repo_id} {filenames[0]}` and copy the cache folder (set HF_HOME to it), "
        "or point geobind at a local file or folder instead"
    )


def hub_file(repo_id: str, filenames: list[str] | str, *, what: str) -> str:
    """Local path of the first of ``filenames`` found for ``repo_id``: cache first, then download.

    Args:
        repo_id: Hugging Face repository id, e.g. ``"timm/vit_base_patch32_clip_224.openai"``.
        filenames: candidate file names, in order of preference.
        what: what the weights are, for the error message.

    Raises:
        WeightsNotFoundError: not cached, and offline or the hub is unreachable or lacks the file.

    Example:
        >>> import os
        >>> os.environ["HF_HUB_OFFLINE"] = "1"
        >>> hub_file("nobody/nothing", "model.safetensors", what="test weights")
        Traceback (most recent call last):
        ...
        geobind.errors.WeightsNotFoundError: test weights: nobody/nothing/model.safetensors is not
        ...
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    names = [filenames] if isinstance(filenames, str) else list(filenames)
    cache = str(hub_cache_dir())
    for name in names:
        cached = try_to_load_from_cache(repo_id, name, cache_dir=cache)
        if isinstance(cached, str) and Path(cached).is_file():
            return cached
    if hub_offline():
        raise _missing(what, repo_id, names, "offline mode is on (HF_HUB_OFFLINE=1)")
    if not hub_reachable():
        raise _missing(what, repo_id, names, "huggingface.co cannot be reached")
    errors = []
    for name in names:
        try:
            return hf_hub_download(repo_id, name, cache_dir=cache)
        except Exception as err:
            errors.append(f"{name}: {err}")
    raise _missing(what, repo_id, names, "downloading failed (" + "; ".join(errors) + ")")
