"""Published models by name: the registry (``registry.json``), its files and the local cache.

The registry is data, not code per model. Each entry names where its weights are published (a
Hugging Face repository and file names, or a URL), their format (``open_clip`` state dicts, plain,
``state_dict``-wrapped or ``module.``-prefixed, possibly in a zip; ``hf_clip_vision``: a
transformers CLIP vision model; ``hf_clap_audio``: a transformers CLAP audio tower), the
architecture and whether it needs QuickGELU, the preprocessing that goes with the weights, the
licence, and which encoders it provides in which space. An entry with ``encoders`` is a model that
:func:`geobind.load` builds by name (the others are towers those models use); its
``trained_links`` say which links between modalities the weights were trained for.

Files live in the Hugging Face cache (``HF_HOME``; files that are not on the hub, such as
SkyCLIP's zip, in ``$HF_HOME/geobind``). :func:`pull` fills it on a connected machine; copying the
folder to an offline machine and pointing ``HF_HOME`` at it is all the offline machine needs.
Nothing here imports torch.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from geobind.errors import InputDataError, ModelFileError, WeightsNotFoundError
from geobind.models.links import split_link
from geobind.models.pretrained import (
    geobind_cache_dir,
    hub_cache_dir,
    hub_offline,
    hub_reachable,
)

__all__ = [
    "FORMATS",
    "ModelStatus",
    "WeightFile",
    "get_entry",
    "list_registered",
    "local_files",
    "model_status",
    "pull",
    "register_model",
    "towers",
    "unregister_model",
    "weight_files",
    "zip_member",
]

#: Checkpoint formats the loaders read (see :mod:`geobind.models.checkpoints`).
FORMATS = ("open_clip", "hf_clip_vision", "hf_clap_audio")
#: What each modality of a model takes from the entry that provides it.
ROLES = {"sat": "image", "ground": "image", "text": "text", "audio": "audio"}
_FORMAT_ROLES = {
    "open_clip": {"image", "text"},
    "hf_clip_vision": {"image"},
    "hf_clap_audio": {"audio"},
}


@dataclass(frozen=True)
class WeightFile:
    """One published file of a registry entry.

    Attributes:
        entry: the registry entry it belongs to.
        filename: its name in the hub repository (or the URL's last part).
        repo_id: the Hugging Face repository, or ``None`` for a URL.
        url: where it is published when it is not on the hub.
        member: for a zip, a pattern naming the checkpoint inside it.
    """

    entry: str
    filename: str
    repo_id: str | None = None
    url: str | None = None
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.repo_id else str(self.url)

    def local(self, root: Path | None = None) -> Path | None:
        """The file in the cache (under ``root``, an ``HF_HOME``-like folder, when given), or
        ``None`` when it is not there.

        Example:
            >>> f = WeightFile("x", "model.safetensors", repo_id="nobody/nothing")
            >>> f.local(getfixture("tmp_path")) is None
            True
        """
        if self.repo_id is None:
            path = self._url_path(root)
            return path if path.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        hub = hub_cache_dir() if root is None else Path(root) / "hub"
        found = try_to_load_from_cache(self.repo_id, self.filename, cache_dir=str(hub))
        return Path(found) if isinstance(found, str) and Path(found).is_file() else None

    def _url_path(self, root: Path | None = None) -> Path:
        folder = geobind_cache_dir() if root is None else Path(root) / "geobind"
        return folder / self.entry / self.filename


@dataclass
class ModelStatus:
    """What the local cache holds of a registry entry (or a preset).

    Attributes:
        name: the entry or preset name.
        kind: ``"preset"`` (built in), ``"model"`` (loadable by name) or ``"tower"``.
        description: one paragraph from the registry or the preset.
        files: every file the entry needs (for a model: its towers' files too).
        missing: those not in the local cache.
        local_bytes: total size of the files present.
        published_mb: the published size of the files whose size the registry records
            (approximate).
        size_complete: whether the registry records the size of every file.
    """

    name: str
    kind: str
    description: str
    files: list[WeightFile] = field(default_factory=list)
    missing: list[WeightFile] = field(default_factory=list)
    local_bytes: int = 0
    published_mb: float | None = None
    size_complete: bool = True

    @property
    def state(self) -> str:
        """``"built in"``, ``"cached"``, ``"missing"`` or ``"partial"``."""
        if self.kind == "preset":
            return "built in"
        if not self.missing:
            return "cached"
        return "missing" if len(self.missing) == len(self.files) else "partial"

    @property
    def size(self) -> str:
        """The size to show: local when cached, else the published size (``?`` unknown)."""
        if self.kind == "preset":
            return "-"
        if not self.missing:
            return f"{self.local_bytes / 1e6:.0f} MB"
        if not self.published_mb:
            return "?"
        return f"{'~' if self.size_complete else '≥'}{self.published_mb:.0f} MB"


def _read_registry() -> dict[str, Any]:
    text = (resources.files("geobind.models") / "registry.json").read_text()
    return json.loads(text)


@cache
def _entries() -> dict[str, dict[str, Any]]:
    """The shipped registry, checked; :func:`register_model` adds to this same dict."""
    entries = _read_registry()["models"]
    for name, entry in entries.items():
        _check_entry(name, entry, entries)
    return entries


def _check_entry(name: str, entry: Mapping[str, Any], entries: Mapping[str, Any]) -> None:
    """Refuse an entry the loaders could not use, naming what is wrong."""

    def bad(why: str) -> InputDataError:
        return InputDataError(f"registry entry {name!r}: {why}")

    if not isinstance(entry.get("description"), str):
        raise bad("needs a `description`")
    provides = entry.get("provides") or {}
    if "source" in entry:
        fmt = entry.get("format")
        if fmt not in FORMATS:
            raise bad(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        source = entry["source"]
        if bool(source.get("hub")) == bool(source.get("url")):
            raise bad("`source` names either `hub` (with `files`) or `url`")
        if source.get("hub") and not source.get("files"):
            raise bad("a hub `source` lists its `files`")
        if set(provides) - _FORMAT_ROLES[fmt]:
            raise bad(f"a {fmt} checkpoint provides only {sorted(_FORMAT_ROLES[fmt])}")
        if fmt != "hf_clap_audio" and not (entry.get("arch") or entry.get("model_cfg")):
            raise bad("needs `arch` (an open_clip model name) or `model_cfg`")
    encoders = entry.get("encoders")
    if encoders is None:
        if "trained_links" in entry:
            raise bad("`trained_links` belong to entries with `encoders`")
        return
    for modality, other in encoders.items():
        source_entry = entry if other == name else entries.get(other)
        if source_entry is None:
            raise bad(f"encoder {modality!r} names {other!r}, which is not in the registry")
        role = ROLES.get(modality)
        if role is None:
            raise bad(f"unknown modality {modality!r}; models have {', '.join(ROLES)}")
        if role not in (source_entry.get("provides") or {}):
            raise bad(f"encoder {modality!r} needs an {role} tower; {other!r} provides none")
    if encoders.get("ground") != encoders.get("text") or "text" not in encoders:
        raise bad("`ground` and `text` come from one open_clip CLIP (the same entry)")
    for item in entry.get("trained_links", []):
        if not set(split_link(item)) <= set(encoders):
            raise bad(f"trained link {item!r} names a modality the model does not have")


def list_registered(*, loadable: bool | None = None) -> list[str]:
    """Registry names, sorted: all, only models (``loadable=True``) or only towers (``False``).

    Example:
        >>> list_registered(loadable=True)
        ['georsclip-vit-b-32', 'openai-clip-vit-b-32', 'remoteclip-vit-b-32', 'sat2cap',
         'skyclip-vit-b-32']
        >>> "clap-htsat-unfused" in list_registered(loadable=False)
        True
    """
    return sorted(
        name
        for name, entry in _entries().items()
        if loadable is None or loadable == ("encoders" in entry)
    )


def get_entry(name: str) -> dict[str, Any]:
    """A copy of registry entry ``name``.

    Example:
        >>> get_entry("sat2cap")["source"]
        {'hub': 'MVRL/Sat2Cap', 'files': ['config.json', 'model.safetensors']}
    """
    entries = _entries()
    if name not in entries:
        raise InputDataError(
            f"{name!r} is not in the model registry; registered: {', '.join(sorted(entries))}"
        )
    return copy.deepcopy(entries[name])


def register_model(name: str, entry: Mapping[str, Any], *, replace: bool = False) -> None:
    """Add an entry to the registry for this session (e.g. your own checkpoint in a published
    layout), checked as the shipped ones are.

    Example:
        >>> entry = get_entry("remoteclip-vit-b-32")
        >>> entry["source"] = {"hub": "me/my-rs-clip", "files": ["clip.pt"]}
        >>> entry["encoders"] = dict.fromkeys(["sat", "ground", "text"], "my-rs-clip")
        >>> register_model("my-rs-clip", entry)
        >>> "my-rs-clip" in list_registered(loadable=True)
        True
        >>> unregister_model("my-rs-clip")
    """
    from geobind.models.presets import _presets

    entries = _entries()
    if name in _presets():
        raise InputDataError(f"{name!r} is a preset name; choose another name")
    if name in entries and not replace:
        raise InputDataError(f"{name!r} is registered already; pass replace=True to replace it")
    _check_entry(name, entry, entries)
    entries[name] = copy.deepcopy(dict(entry))


def unregister_model(name: str) -> None:
    """Remove an entry added with :func:`register_model` (or a shipped one, for this session).

    Example:
        >>> unregister_model("no-such-model")  # nothing to remove: no error
    """
    _entries().pop(name, None)


def towers(name: str) -> list[str]:
    """The registry entries whose files model (or tower) ``name`` needs, itself first.

    Example:
        >>> towers("sat2cap")
        ['sat2cap', 'openai-clip-vit-b-32', 'clap-htsat-unfused']
    """
    entry = get_entry(name)
    out = [name] if "source" in entry else []
    for other in (entry.get("encoders") or {}).values():
        if other not in out:
            out.append(other)
    return out


def weight_files(name: str) -> list[WeightFile]:
    """Every published file model (or tower) ``name`` needs.

    Example:
        >>> [str(f) for f in weight_files("remoteclip-vit-b-32")]
        ['chendelong/RemoteCLIP/RemoteCLIP-ViT-B-32.pt']
    """
    files = []
    for tower in towers(name):
        source = get_entry(tower)["source"]
        if source.get("hub"):
            files += [WeightFile(tower, f, repo_id=source["hub"]) for f in source["files"]]
        else:
            url = source["url"]
            basename = os.path.basename(urllib.parse.urlparse(url).path)
            files.append(WeightFile(tower, basename, url=url, member=source.get("member")))
    return files


def local_files(name: str, *, download: bool = True) -> dict[str, list[Path]]:
    """Local paths of every file ``name`` needs, by tower, from the cache.

    Missing files are downloaded when the hub (or the URL's host) is reachable and ``download``
    is true; otherwise a :class:`~geobind.errors.WeightsNotFoundError` names them and
    ``geobind pull NAME``, at once (no network retries).

    Example:
        >>> env = getfixture("monkeypatch")
        >>> env.setenv("HF_HUB_OFFLINE", "1")
        >>> env.setenv("HF_HOME", str(getfixture("tmp_path")))
        >>> local_files("sat2cap")
        Traceback (most recent call last):
        ...
        geobind.errors.WeightsNotFoundError: sat2cap: MVRL/Sat2Cap/config.json, ...
        `geobind pull sat2cap --to DIR`...
    """
    files = weight_files(name)
    missing = [f for f in files if f.local() is None]
    if missing:
        why = None
        if not download:
            why = "downloading was not asked for"
        elif hub_offline():
            why = "offline mode is on (HF_HUB_OFFLINE=1)"
        else:
            hosts = {
                "huggingface.co" if f.repo_id else urllib.parse.urlparse(str(f.url)).hostname
                for f in missing
            }
            down = sorted(h for h in hosts if h and not hub_reachable(host=h))
            if down:
                why = f"{', '.join(down)} cannot be reached"
        if why is not None:
            shown = ", ".join(str(f) for f in missing)
            raise WeightsNotFoundError(
                f"{name}: {shown} not in the local cache ({hub_cache_dir().parent}) and {why}. "
                f"On a machine with internet run `geobind pull {name} --to DIR`, copy DIR here "
                "and set HF_HOME to it (or run `geobind pull "
                f"{name}` on a machine that shares this cache)"
            )
        pull(name)
    out: dict[str, list[Path]] = {}
    for f in files:
        path = f.local()
        if path is None:  # pulled just now, and still not there
            raise WeightsNotFoundError(f"{name}: {f} was downloaded but is not in the cache")
        out.setdefault(f.entry, []).append(path)
    return out


def _download_url(url: str, target: Path, progress: Callable[[str], None] | None) -> Path:
    """Stream ``url`` into ``target`` (written whole or not at all)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    if progress:
        progress(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise WeightsNotFoundError(f"downloading {url} failed: {err}") from None
    partial.replace(target)
    return target


def pull(
    name: str,
    *,
    to: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download every file model (or tower) ``name`` needs into the cache, on a connected machine.

    Hub files go through ``huggingface_hub`` into the Hugging Face cache (``HF_HOME``); other
    files (URLs) into ``$HF_HOME/geobind``. With ``to``, both go under that folder instead
    (``to/hub``, ``to/geobind``): copy it to the offline machine and set ``HF_HOME`` to it.
    Files already there are not downloaded again.

    Args:
        name: a registry name (:func:`list_registered`).
        to: an ``HF_HOME``-like folder to fill instead of this machine's cache.
        progress: called with a line per file (e.g. ``print``).

    Returns:
        The local path of each file.

    Raises:
        WeightsNotFoundError: offline mode is on, or a download failed.

    Example:
        >>> env = getfixture("monkeypatch")
        >>> env.setenv("HF_HUB_OFFLINE", "1")
        >>> pull("sat2cap", to=getfixture("tmp_path"))
        Traceback (most recent call last):
        ...
        geobind.errors.WeightsNotFoundError: cannot pull sat2cap: offline mode is on ...
    """
    root = None if to is None else Path(to)
    files = weight_files(name)
    todo = [f for f in files if f.local(root) is None]
    if todo and hub_offline():
        raise WeightsNotFoundError(
            f"cannot pull {name}: offline mode is on (HF_HUB_OFFLINE=1); unset it on a machine "
            "with internet"
        )
    hosts = {
        "huggingface.co" if f.repo_id else urllib.parse.urlparse(str(f.url)).hostname for f in todo
    }
    down = sorted(h for h in hosts if h and not hub_reachable(host=h))
    if down:
        raise WeightsNotFoundError(
            f"cannot pull {name}: {', '.join(down)} cannot be reached from this machine; run "
            f"`geobind pull {name} --to DIR` on a machine with internet and copy DIR here"
        )
    paths = []
    for f in files:
        path = f.local(root)
        if path is not None:
            if progress:
                progress(f"{f}: cached at {path}")
        elif f.repo_id is not None:
            from huggingface_hub import hf_hub_download

            if progress:
                progress(f"downloading {f}")
            hub = hub_cache_dir() if root is None else root / "hub"
            try:
                path = Path(hf_hub_download(f.repo_id, f.filename, cache_dir=str(hub)))
            except Exception as err:  # network, missing file, authentication: one line
                raise WeightsNotFoundError(f"downloading {f} failed: {err}") from None
        else:
            path = _download_url(str(f.url), f._url_path(root), progress)
        paths.append(path)
    return paths


def model_status(name: str) -> ModelStatus:
    """What the local cache holds of ``name`` (a registry entry or a preset).

    Example:
        >>> env = getfixture("monkeypatch")
        >>> env.setenv("HF_HOME", str(getfixture("tmp_path")))
        >>> s = model_status("sat2cap")
        >>> s.kind, s.state, len(s.files)
        ('model', 'missing', 5)
        >>> model_status("tiny").state
        'built in'
    """
    from geobind.models.presets import _presets

    presets = _presets()
    if name in presets:
        return ModelStatus(name, "preset", presets[name].get("description", ""))
    entry = get_entry(name)
    files = weight_files(name)
    local = {f: f.local() for f in files}
    sizes = [get_entry(t).get("size_mb") for t in towers(name)]
    return ModelStatus(
        name=name,
        kind="model" if "encoders" in entry else "tower",
        description=entry["description"],
        files=files,
        missing=[f for f, p in local.items() if p is None],
        local_bytes=sum(p.stat().st_size for p in local.values() if p is not None),
        published_mb=float(sum(x for x in sizes if x)) or None,
        size_complete=None not in sizes,
    )


def zip_member(path: Path, pattern: str | None) -> str:
    """The checkpoint inside zip ``path``: the one member matching ``pattern`` (default: any
    ``.pt``, ``.pth``, ``.bin`` or ``.safetensors`` file).

    Example:
        >>> import zipfile
        >>> p = getfixture("tmp_path") / "ckpt.zip"
        >>> with zipfile.ZipFile(p, "w") as z:
        ...     z.writestr("run/epoch_20.pt", b"...")
        ...     z.writestr("run/params.txt", b"lr 1e-9")
        >>> zip_member(p, "*.pt")
        'run/epoch_20.pt'
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelFileError(f"{path} is not a readable zip file ({err})") from None
    if pattern:
        found = [n for n in names if fnmatch.fnmatch(n, pattern)]
    else:
        found = [n for n in names if n.endswith((".pt", ".pth", ".bin", ".safetensors"))]
    if len(found) != 1:
        what = f"matching {pattern!r}" if pattern else "(.pt, .pth, .bin, .safetensors)"
        held = ", ".join(names[:8]) + (" …" if len(names) > 8 else "") or "nothing"
        many = f"{len(found)} checkpoints" if found else "no checkpoint"
        raise ModelFileError(f"{path} holds {many} {what}; it holds {held}")
    return found[0]
