"""Training-time augmentation of satellite chips: jitter, flips, turns, gain and haze.

Every draw is a function of ``(seed, epoch, index)`` only (:func:`draw`), so runs repeat exactly
and DataLoader workers never repeat each other.

Example:
    >>> import numpy as np
    >>> d = draw(seed=0, epoch=1, index=5, jitter_px=2, bands=3, gain_jitter=0.1, haze_jitter=0.2)
    >>> out = apply(np.full((3, 4, 4), 0.5, np.float32), d)
    >>> out.shape, bool(((out >= 0) & (out <= 1)).all())
    ((3, 4, 4), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HAZE", "Augmented", "Draw", "apply", "apply_batch", "draw", "draw_for", "orient"]

#: The haze colour ``haze_jitter`` blends chips towards (in [0, 1] units, every band).
HAZE = 0.75


class Augmented:
    """The augmentation settings of a chip dataset and the epoch its draws belong to, kept in
    shared memory so :meth:`set_epoch` reaches DataLoader workers that are already running.
    Both chip datasets (scenes + points, and pair datasets) are built on it.

    Example:
        >>> ds = Augmented()
        >>> ds.set_augmentation(augment=True, jitter_px=2, gain_jitter=0.1, haze_jitter=0.2)
        >>> ds.set_epoch(3)
        >>> ds.epoch, ds.jitter_px
        (3, 2)
    """

    def set_augmentation(
        self,
        *,
        augment: bool = False,
        jitter_px: int = 3,
        gain_jitter: float = 0.0,
        haze_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Check and keep the settings (see :func:`draw`); the epoch starts at 0.

        Raises:
            InputDataError: a negative or fractional ``jitter_px``, ``gain_jitter`` outside
                [0, 1) or ``haze_jitter`` outside [0, 1].
        """
        import torch

        from geobind.errors import InputDataError

        if int(jitter_px) != jitter_px or jitter_px < 0:
            raise InputDataError(f"jitter_px must be a whole number ≥ 0; got {jitter_px!r}")
        if not (0 <= gain_jitter < 1 and 0 <= haze_jitter <= 1):
            raise InputDataError(
                f"gain_jitter must be in [0, 1) and haze_jitter in [0, 1]; got {gain_jitter!r}, "
                f"{haze_jitter!r}"
            )
        self.augment, self.jitter_px, self.seed = bool(augment), int(jitter_px), int(seed)
        self.gain_jitter, self.haze_jitter = float(gain_jitter), float(haze_jitter)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch the augmentation draws belong to."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch for the augmentation draws (reaches running DataLoader workers; no
        effect without ``augment``)."""
        self._epoch.fill_(int(epoch))


@dataclass(frozen=True)
class Draw:
    """One chip's augmentation: a centre shift in pixels (east, north), flips, 90° turns, and
    per-band gains with a haze weight (``None``: no radiometric jitter)."""

    shift: tuple[int, int] = (0, 0)
    flip_lr: bool = False
    flip_ud: bool = False
    turns: int = 0
    gains: np.ndarray | None = None
    haze: float = 0.0


def draw(
    *,
    seed: int,
    epoch: int,
    index: int,
    jitter_px: int,
    bands: int,
    gain_jitter: float = 0.0,
    haze_jitter: float = 0.0,
) -> Draw:
    """The draws of chip ``index`` at ``epoch``: a shift uniform in ``[-jitter_px, jitter_px]``
    pixels (x and y), a left-right and a top-bottom flip (each with probability 1/2), a random
    multiple of 90°, and, when asked, gains uniform in ``[1 - gain_jitter, 1 + gain_jitter]``
    per band and a haze weight uniform in ``[0, haze_jitter]`` (drawn last: the geometric draws
    do not depend on them).
    """
    rng = np.random.default_rng([seed, epoch, index])
    dx, dy = rng.integers(-jitter_px, jitter_px, size=2, endpoint=True)
    flip_lr, flip_ud = rng.random(2) < 0.5
    turns = int(rng.integers(4))
    gains, haze = None, 0.0
    if gain_jitter or haze_jitter:
        gains = rng.uniform(1 - gain_jitter, 1 + gain_jitter, bands).astype(np.float32)
        haze = float(np.float32(rng.uniform(0, haze_jitter)))
    return Draw((int(dx), int(dy)), bool(flip_lr), bool(flip_ud), turns, gains, haze)


def draw_for(dataset: Any, index: int) -> Draw:
    """:func:`draw` with a chip dataset's settings (its ``seed``, ``epoch``, ``jitter_px``,
    ``bands``, ``gain_jitter`` and ``haze_jitter``), for its chip ``index``."""
    return draw(
        seed=dataset.seed,
        epoch=dataset.epoch,
        index=index,
        jitter_px=dataset.jitter_px,
        bands=len(dataset.bands),
        gain_jitter=dataset.gain_jitter,
        haze_jitter=dataset.haze_jitter,
    )


def apply(image: np.ndarray, d: Draw, invalid: np.ndarray | None = None) -> np.ndarray:
    """Apply ``d``'s radiometry, flips and turns to a ``(bands, H, W)`` chip in [0, 1].

    Each band is multiplied by its gain, then the chip is blended towards :data:`HAZE` with the
    haze weight and clipped to [0, 1]; ``invalid`` pixels (``(H, W)``) stay 0. The shift is the
    caller's (it moves the read window). The chip is a batch of one of :func:`apply_batch`
    (``image`` itself is left as it is).
    """
    batch = image[None].copy() if d.gains is not None else image[None]  # apply_batch writes
    return apply_batch(batch, [d], None if invalid is None else invalid[None])[0]


def orient(image: np.ndarray, d: Draw) -> np.ndarray:
    """``d``'s flips and turns of a ``(..., H, W)`` chip, as a view (no pixel is copied).

    Example:
        >>> import numpy as np
        >>> orient(np.arange(4).reshape(1, 2, 2), Draw(flip_lr=True)).tolist()
        [[[1, 0], [3, 2]]]
    """
    if d.flip_lr:
        image = image[..., :, ::-1]
    if d.flip_ud:
        image = image[..., ::-1, :]
    if d.turns:
        image = np.rot90(image, d.turns, axes=(-2, -1))
    return image


def apply_batch(
    images: np.ndarray, draws: Sequence[Draw | None], invalid: np.ndarray | None = None
) -> np.ndarray:
    """``d``'s radiometry, flips and turns (see :func:`apply`) on a ``(B, bands, H, W)`` float32
    batch, chip ``k`` by ``draws[k]`` (``None``: left as it is); a chip does not depend on the
    batch it comes in.

    The radiometry runs on the whole batch at once (a chip's gains and haze become a row of
    ``(B, bands)`` factors); the flips and turns are views copied once into the output.
    ``images`` may be overwritten; ``invalid`` is ``(B, H, W)`` or ``None``.

    Example:
        >>> import numpy as np
        >>> d = draw(seed=0, epoch=0, index=1, jitter_px=0, bands=3, gain_jitter=0.1)
        >>> x = np.random.default_rng(0).random((2, 3, 4, 4), np.float32)
        >>> one = apply(x[0].copy(), d)
        >>> out = apply_batch(x.copy(), [d, None])
        >>> np.array_equal(out[0], one), np.array_equal(out[1], x[1])
        (True, True)
    """
    if len(draws) != len(images):
        raise ValueError(f"{len(images)} chips but {len(draws)} draws")
    jitter = [k for k, d in enumerate(draws) if d is not None and d.gains is not None]
    if jitter:
        every = len(jitter) == len(images)
        sub = images if every else images[jitter]
        haze = np.array([draws[k].haze for k in jitter], np.float32)
        gains = np.stack([draws[k].gains for k in jitter]) * (1 - haze)[:, None]
        sub *= gains[:, :, None, None]  # in place, in float32
        sub += (haze * np.float32(HAZE))[:, None, None, None]
        np.clip(sub, 0.0, 1.0, out=sub)
        if invalid is not None:
            sub[np.broadcast_to((invalid if every else invalid[jitter])[:, None], sub.shape)] = 0.0
        if every:
            images = sub
        else:
            images[jitter] = sub
    turned = [k for k, d in enumerate(draws) if d and (d.flip_lr or d.flip_ud or d.turns)]
    if not turned:
        return images
    out = np.empty_like(images)
    for k, d in enumerate(draws):  # each chip copied once, turned or not
        out[k] = orient(images[k], d) if d else images[k]
    return out
