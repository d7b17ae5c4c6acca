"""Weights on disk: safetensors only, checked before they are trusted, never unpickled."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from geobind._hashing import sha256_file  # re-exported: geobind.models.io.sha256_file
from geobind.errors import ModelFileError

__all__ = ["check_safetensors", "read_safetensors", "sha256_file", "write_safetensors"]

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def check_safetensors(path: str | Path) -> dict:
    """Validate a safetensors file's framing without loading it; returns its header.

    Catches what a truncated download or a hostile file looks like: a header length larger than the
    file (or than safetensors allows), a header that is not JSON, or tensors ending past the file.

    Example:
        >>> p = getfixture("tmp_path") / "bad.safetensors"
        >>> _ = p.write_bytes((2**40).to_bytes(8, "little") + b"{}")
        >>> check_safetensors(p)
        Traceback (most recent call last):
        ...
        geobind.errors.ModelFileError: ... header claims 1099511627776 bytes ...
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"weights file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(
                f"{path} is truncated ({size} bytes); it is not a safetensors file"
            )
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise ModelFileError(
                f"{path}: the safetensors header claims {n} bytes but the file holds {size}; "
                "the file is truncated or not a safetensors file. Save or download it again"
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelFileError(
                f"{path}: the safetensors header is not valid JSON ({err})"
            ) from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header is not a JSON object")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ModelFileError(
            f"{path} is truncated: its tensors need {8 + n + end} bytes but the file has {size}. "
            "Save or download it again"
        )
    return header


def read_safetensors(path: str | Path, *, sha256: str | None = None) -> dict:
    """Load tensors after checking the framing and, when given, the SHA-256 of the file.

    Example:
        >>> import torch
        >>> p = write_safetensors({"w": torch.ones(2)}, getfixture("tmp_path") / "w.safetensors")
        >>> read_safetensors(p)["w"].tolist()
        [1.0, 1.0]
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors(path)
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise ModelFileError(
                f"{path}: SHA-256 {actual[:16]}… does not match the {sha256[:16]}… recorded in "
                "geobind.json; the weights are corrupt or were modified. Save the model again"
            )
    try:
        return load_file(path)
    except SafetensorError as err:
        raise ModelFileError(f"cannot read {path}: {err}") from None


def write_safetensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> Path:
    """Write tensors (made contiguous, on the CPU) to a safetensors file."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path, metadata)
    return Path(path)
