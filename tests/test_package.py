"""The package surface: fast import, errors, the CLI's contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import geobind
from geobind import cli, errors

HEAVY = ("torch", "open_clip", "lightning", "torchgeo", "transformers", "rasterio", "matplotlib")


def test_import_does_not_load_heavy_libraries():
    code = (
        "import sys, json, geobind; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_version_is_exposed():
    assert geobind.__version__.count(".") == 2
    assert "generate_world" in geobind.__all__
    assert geobind.generate_world is geobind.synth.generate_world
    with pytest.raises(AttributeError):
        geobind.not_a_name  # noqa: B018


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.InputDataError, ValueError),
        (errors.CRSError, ValueError),
        (errors.ModelFileError, OSError),
        (errors.WeightsNotFoundError, FileNotFoundError),
        (errors.OutputExistsError, FileExistsError),
        (errors.MissingDependencyError, ImportError),
    ],
)
def test_errors_inherit_root_and_builtin(cls, builtin):
    with pytest.raises(errors.GeoBindError):
        raise cls("x")
    with pytest.raises(builtin):
        raise cls("x")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geobind.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_version_and_help():
    out = _cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"geobind {geobind.__version__}"
    out = _cli("--help")
    assert out.returncode == 0
    assert "synth" in out.stdout


def test_cli_geobind_error_is_one_line_exit_2(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    out = _cli("synth", str(tmp_path / "taken"), "--preset", "tiny")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ")
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_cli_unexpected_error_hints_at_debug(monkeypatch, capsys, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("geobind.synth.generate_world", boom)
    assert cli.main(["synth", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "disk on fire" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "synth", str(tmp_path / "w")])


def test_cli_usage_error_exits_nonzero():
    out = _cli("synth")
    assert out.returncode == 2
    assert "Missing argument" in out.stderr
