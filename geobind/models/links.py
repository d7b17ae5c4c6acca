"""Which links between modalities a model's weights were trained for.

A link ``"sat-ground"`` means contrastive training bound the two encoders' outputs (Sat2Cap bound
its satellite tower to frozen CLIP photo embeddings; OpenAI CLIP bound photos to text; geobind's
stage 2 binds audio to sat). Links compose: with ``sat-ground`` and ``ground-text`` trained, text
queries over satellite embeddings are meaningful (emergent, as in the paper). A modality with no
path of trained links to ``sat`` is *unbound*: its queries over satellite embeddings rank at
random until a stage binds it. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable

from geobind.errors import InputDataError

__all__ = ["bound_to", "link", "split_link", "unique_links"]


def split_link(text: str) -> tuple[str, str]:
    """``"sat-ground"`` → ``("sat", "ground")``.

    Example:
        >>> split_link("audio-sat")
        ('audio', 'sat')
    """
    parts = str(text).split("-")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise InputDataError(
            f"a link names two different modalities joined by '-', e.g. 'sat-ground'; got {text!r}"
        )
    return parts[0], parts[1]


def link(a: str, b: str) -> str:
    """The link between modalities ``a`` and ``b``, as recorded (``"a-b"``).

    Example:
        >>> link("sat", "ground")
        'sat-ground'
    """
    return f"{a}-{b}"


def _same(x: str, y: str) -> bool:
    return set(split_link(x)) == set(split_link(y))


def unique_links(links: Iterable[str]) -> list[str]:
    """``links`` without repeats (``"a-b"`` and ``"b-a"`` are the same link), first kept.

    Example:
        >>> unique_links(["sat-ground", "ground-sat", "audio-sat"])
        ['sat-ground', 'audio-sat']
    """
    out: list[str] = []
    for item in links:
        split_link(item)
        if not any(_same(item, kept) for kept in out):
            out.append(item)
    return out


def bound_to(start: str, links: Iterable[str]) -> set[str]:
    """The modalities a path of trained ``links`` joins to ``start`` (``start`` included).

    Example:
        >>> sorted(bound_to("sat", ["sat-ground", "ground-text"]))
        ['ground', 'sat', 'text']
        >>> sorted(bound_to("sat", ["ground-text"]))
        ['sat']
    """
    pairs = [split_link(item) for item in links]
    reached, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        for a, b in pairs:
            for here, there in ((a, b), (b, a)):
                if here == node and there not in reached:
                    reached.add(there)
                    frontier.append(there)
    return reached
