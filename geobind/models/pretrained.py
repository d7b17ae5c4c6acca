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

__all__ = ["hub_file", "hub_offline", "hub_reachable"]

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
    from huggingface_hub import constants

    files = " or ".join(filenames)
    return WeightsNotFoundError(
        f"{what}: {repo_id}/{files} is not in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) and {why}. On a machine with internet run "
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
    for name in names:
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str) and Path(cached).is_file():
            return cached
    if hub_offline():
        raise _missing(what, repo_id, names, "offline mode is on (HF_HUB_OFFLINE=1)")
    if not hub_reachable():
        raise _missing(what, repo_id, names, "huggingface.co cannot be reached")
    errors = []
    for name in names:
        try:
            return hf_hub_download(repo_id, name)
        except Exception as err:
            errors.append(f"{name}: {err}")
    raise _missing(what, repo_id, names, "downloading failed (" + "; ".join(errors) + ")")
