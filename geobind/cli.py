"""The ``geobind`` command line.

Every command is a thin shell over a library function. A :class:`~geobind.errors.GeoBindError`
prints one line (``error: …``) to stderr and exits with status 2; any other exception prints a short
message with a hint to rerun with ``--debug`` for the full traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from geobind._version import __version__
from geobind.errors import GeoBindError

app = typer.Typer(
    name="geobind",
    help="Bind satellite imagery, ground photos, audio and text in one embedding space.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geobind {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to create for the world.")],
    preset: Annotated[str, typer.Option(help="World size: tiny, demo or bench.")] = "demo",
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives byte-identical files.")] = 0,
    preview: Annotated[bool, typer.Option("--preview", help="Also write preview.png.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing OUT.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: all cores).", min=1)
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Generate the deterministic synthetic world (scenes, photos, audio, captions, manifests)."""
    from geobind.synth import generate_world

    start = time.perf_counter()
    world = generate_world(
        out,
        preset,
        seed=seed,
        preview=preview,
        overwrite=overwrite,
        progress=progress,
        workers=workers,
    )
    counts = world.info["counts"]
    typer.echo(
        f"world '{preset}' (seed {seed}) written to {world.root} in "
        f"{time.perf_counter() - start:.1f} s: {len(world.scenes)} scenes, "
        f"{counts['ground']['total']} ground photos, {counts['audio']['total']} audio clips"
    )
    for name, path in world.scenes.items():
        typer.echo(f"  scene {name}: {path}")
    typer.echo(f"  manifests: {world.ground_manifest}, {world.audio_manifest}")
    if preview:
        typer.echo(f"  preview: {world.root / 'preview.png'}")


@app.command("convert-clap")
def convert_clap(
    checkpoint: Annotated[
        Path, typer.Argument(help="LAION-CLAP checkpoint (.pt or .safetensors).")
    ],
    out: Annotated[Path, typer.Argument(help="Folder to write (config.json + model.safetensors).")],
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow unpickling a .pt file. Pickles can run code: only for files you trust.",
        ),
    ] = False,
) -> None:
    """Convert a LAION-CLAP checkpoint's audio tower to safetensors, once, for geobind.load."""
    from geobind.models.clap_convert import convert_laion_clap

    folder = convert_laion_clap(checkpoint, out, trust_pickle=trust_pickle)
    typer.echo(
        f"audio tower written to {folder}; use it with geobind.load({{'audio': '{folder}'}})"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it).

    Example:
        >>> main(["--version"])
        geobind ...
        0
    """
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        app(
            args=argv, prog_name="geobind"
        )  # standalone: usage errors and --help exit via SystemExit
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except GeoBindError as err:
        if _state["debug"]:
            raise
        typer.echo(f"error: {err}", err=True)
        return 2
    except Exception as err:
        if _state["debug"]:
            raise
        typer.echo(
            f"error: unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback)",
            err=True,
        )
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
