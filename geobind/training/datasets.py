"""Datasets for the binding stages: photo–caption pairs, audio clips, and anchor pairing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geobind.models.preprocess import clap_log_mel, load_audio_windows, load_image

__all__ = ["Anchored", "AudioClips", "PhotoCaptions"]


class PhotoCaptions(Dataset):
    """Ground photos with their captions, for pretraining the CLIP stand-in.

    Photos go through CLIP's image transform once (``preload=True``, the default: the demo world's
    photos fit in memory as uint8) or on every access.

    Example:
        >>> import numpy as np, open_clip
        >>> tf = open_clip.image_transform(32, is_train=False)
        >>> ds = PhotoCaptions([np.zeros((40, 40, 3), np.uint8)], ["a lake"], tf,
        ...                    open_clip.SimpleTokenizer(context_length=16))
        >>> ds[0]["image"].shape, ds[0]["text"].shape
        (torch.Size([3, 32, 32]), torch.Size([16]))
    """

    def __init__(
        self,
        photos: Sequence[Any],
        captions: Sequence[str],
        transform: Callable,
        tokenizer: Callable,
        *,
        preload: bool = True,
        flip: bool = False,
    ):
        self.photos, self.transform, self.flip = list(photos), transform, flip
        self.tokens = tokenizer(list(captions))
        self.cache = [transform(load_image(p)) for p in self.photos] if preload else None

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = (
            self.cache[i] if self.cache is not None else self.transform(load_image(self.photos[i]))
        )
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return {"image": image, "text": self.tokens[i], "index": i}


class AudioClips(Dataset):
    """Audio clips as log-mel features of one window each (random window when ``augment``).

    Example:
        >>> import geobind, numpy as np
        >>> features = geobind.load("tiny")["audio"].features
        >>> ds = AudioClips([(np.zeros(48000, np.float32), 48000)], features)
        >>> ds[0]["input"].shape
        torch.Size([1, 201, 64])
    """

    def __init__(
        self,
        clips: Sequence[Any],
        features: Any,
        *,
        augment: bool = False,
        max_windows: int = 8,
        seed: int = 0,
    ):
        # a Sequence stays as it is: clips decoded on demand (pair datasets) are never all loaded
        self.clips = clips if isinstance(clips, Sequence) else list(clips)
        self.features, self.augment = features, augment
        self.max_windows, self.seed = max_windows, seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by live workers
        self.rate = int(features.sampling_rate)

    def set_epoch(self, epoch: int) -> None:
        """Vary the random window per epoch, reproducibly (also in persistent workers)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Any]:
        windows = load_audio_windows(
            self.clips[i], self.rate, int(self.features.nb_max_samples), self.max_windows
        )
        pick = 0
        if self.augment and len(windows) > 1:
            rng = np.random.default_rng([self.seed, int(self._epoch), i])
            pick = int(rng.integers(len(windows)))
        return {"input": clap_log_mel([windows[pick]], self.features)[0], "index": i}


class Anchored(Dataset):
    """Adds the frozen anchor embedding of each item: ``base[i] | {"anchor": anchors[i]}``.

    Anchors are computed once per dataset by the caller, never per epoch.
    """

    def __init__(self, base: Dataset, anchors: torch.Tensor, key: str = "image"):
        if len(base) != len(anchors):
            raise ValueError(f"{len(base)} items but {len(anchors)} anchors")
        self.base, self.anchors, self.key = base, anchors, key

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the base dataset (augmentation seeds)."""
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        return {"input": item[self.key], "anchor": self.anchors[i], "index": i}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Items ``indices`` at once (a DataLoader's batched fetch), through the base dataset's
        own ``__getitems__`` when it has one (pair chips: one batch of decoding and
        augmentation).

        Example:
            >>> import torch
            >>> ds = Anchored([{"image": torch.zeros(2)}, {"image": torch.ones(2)}], torch.eye(2))
            >>> [item["anchor"].tolist() for item in ds.__getitems__([1, 0])]
            [[0.0, 1.0], [1.0, 0.0]]
        """
        many = getattr(self.base, "__getitems__", None)
        items = many(list(indices)) if many else [self.base[i] for i in indices]
        return [
            {"input": item[self.key], "anchor": self.anchors[i], "index": i}
            for item, i in zip(items, indices, strict=True)
        ]
