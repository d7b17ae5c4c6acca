"""One encoder per modality: preprocessing + tower, each embedding into the bundle's shared space.

Every encoder is an ``nn.Module`` whose ``forward`` is the bare model on prepared tensors and whose
``embed`` takes raw items (chips, photos, texts, audio clips), batches them, and returns
L2-normalised float32 vectors on the CPU, computed under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import numbers
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geobind.data.chips import invalid_mask, resize
from geobind.data.scaling import scale_divisor
from geobind.errors import InputDataError, UntrainedLinkWarning
from geobind.models.preprocess import (
    clap_log_mel,
    load_audio_windows,
    load_image,
    prepare_chips,
    select_bands,
    standardize,
)

__all__ = [
    "AudioEncoder",
    "Encoder",
    "GroundEncoder",
    "SatEncoder",
    "TextEncoder",
    "text_forward",
]


def _lazy(batch: Any) -> bool:
    """A sequence of items that is not a list, tuple, string or array: decoded on demand."""
    return isinstance(batch, Sequence) and not isinstance(batch, list | tuple | str | bytes)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _background(produce: Iterator[Any], depth: int = 2) -> _Prefetch:
    """Run ``produce`` in a thread, ``depth`` items ahead, so preprocessing (file reads, decoding,
    tokenising, audio features) overlaps the model forward, which releases the GIL.

    The thread starts at once, so the first item is being made while the caller does other work
    (a raster's output grid is built while its first band is read). Iterate the result; closing
    it early (or an exception in the consumer, under ``contextlib.closing``) stops the thread and
    frees what it prepared; an exception in ``produce`` is raised in the consumer.

    Example:
        >>> import contextlib
        >>> with contextlib.closing(_background(iter(range(3)))) as items:
        ...     list(items)
        [0, 1, 2]
    """
    return _Prefetch(produce, depth)


class _Prefetch:
    """The iterator :func:`_background` returns. The thread holds the queue and the stop flag,
    not this object: one dropped without ``close()`` is collected, and its thread then ends."""

    _done = object()

    def __init__(self, produce: Iterator[Any], depth: int):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_Prefetch._work,
            args=(produce, self._queue, self._stop),
            daemon=True,
            name="geobind-prefetch",
        )
        self._thread.start()

    @staticmethod
    def _work(produce: Iterator[Any], q: Any, stop: Any) -> None:
        import queue

        def put(message: tuple[Any, BaseException | None]) -> None:
            while not stop.is_set():
                try:
                    q.put(message, timeout=0.1)
                    return
                except queue.Full:
                    continue

        try:
            for item in produce:
                put((item, None))
                if stop.is_set():
                    return
            put((_Prefetch._done, None))
        except BaseException as err:  # handed to the consumer, raised there
            put((_Prefetch._done, err))

    def __iter__(self) -> _Prefetch:
        return self

    def __next__(self) -> Any:
        if self._stop.is_set():
            raise StopIteration
        item, err = self._queue.get()
        if item is self._done:
            self.close()
            if err is not None:
                raise err
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread and drop what it prepared."""
        import queue

        self._stop.set()
        while self._thread.is_alive():  # unblock a pending put, then let the thread end
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)

    def __del__(self) -> None:
        self._stop.set()  # the thread's next put (at most 0.1 s away) sees it and ends


def text_forward(text: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Run an open_clip text tower on token ids, without the padding after the longest text.

    Under CLIP's causal mask no position attends to a later one, so the padding after the
    end-of-text token changes nothing that is pooled: it is cut off and the tower runs on the used
    positions only (open_clip's ``TextTransformer.forward`` on fewer positions; equal to the full
    forward, tested, gradients included). A 5-token query took 3.5 instead of 5.1 ms through the
    demo tower (context 32) and 54 instead of 99 ms through ViT-B-32's (context 77) on 2 cores;
    a CLIP stand-in training step on the demo captions (15 of 32 positions used) took ~1.1 instead
    of ~1.3 s. Towers where padding does matter (no causal mask, padding masks, class tokens,
    last-token pooling) run whole.

    Example:
        >>> import geobind
        >>> text = geobind.load("tiny")["text"]
        >>> tokens = text.prepare(["a lake shore"])
        >>> torch.allclose(text_forward(text.text, tokens), text.text(tokens), atol=1e-5)
        True
    """
    t = text
    short = (
        getattr(t, "attn_mask", None) is not None
        and getattr(t, "cls_emb", None) is None
        and not getattr(t, "use_pad_mask", True)
        and not getattr(t, "output_tokens", True)
        and getattr(t, "pool_type", None) in ("argmax", "eos", "first")
    )
    used = (tokens != getattr(t, "pad_id", 0)).any(0).nonzero() if short else []
    n = int(used.max()) + 1 if len(used) else tokens.shape[1]
    if n == tokens.shape[1]:
        return t(tokens)
    from open_clip.transformer import text_global_pool

    x = tokens[:, :n]
    cast = t.transformer.get_cast_dtype()
    h = t.token_embedding(x).to(cast) + t.positional_embedding[:n].to(cast)
    h = t.ln_final(t.transformer(h, attn_mask=t.attn_mask[:n, :n]))
    pooled = text_global_pool(h, x, pool_type=t.pool_type, eos_token_id=getattr(t, "eos_id", None))
    if isinstance(t.text_projection, nn.Linear):
        return t.text_projection(pooled)
    return pooled if t.text_projection is None else pooled @ t.text_projection


class Encoder(nn.Module):
    """Base class: ``prepare`` (CPU preprocessing) → ``forward`` (the tower) → ``embed`` (both)."""

    modality: str = ""
    #: Prepare the next batch in a thread while the model runs. That pays where preparing
    #: waits or releases the GIL (GeoTIFF chip reads, torch audio features; chips already in
    #: memory are cheap, and grids prepare them in line, see ``embed_pixels``). Where it is
    #: mostly Python (PIL's photo plumbing, tokenising) the thread delays the forward's own
    #: Python between ops, and serial was faster on 2 cores (``benchmarks/encoders.py``, demo
    #: towers: ground 0.70 vs 0.63, text 0.87 vs 0.77 of the bare forward).
    prefetch: bool = True
    #: Set by the bundle when no trained link joins this encoder to the satellite encoder (e.g.
    #: a CLAP tower whose projection no stage has trained): ``embed`` warns once, with this text.
    untrained_link: str | None = None

    def __init__(self, embed_dim: int):
        super().__init__()
        self.embed_dim = embed_dim

    def _warn_untrained_link(self) -> None:
        """Warn once (per encoder) that this encoder's link to sat is untrained, pointing at the
        first caller outside geobind."""
        if not self.untrained_link or self.__dict__.get("_link_warned"):
            return
        self._link_warned = True
        package = __name__.rsplit(".", 2)[0]
        frame, level = sys._getframe(0), 1
        while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(package):
            frame, level = frame.f_back, level + 1
        warnings.warn(self.untrained_link, UntrainedLinkWarning, stacklevel=level)

    @property
    def device(self) -> torch.device:
        """The device the encoder's weights live on."""
        return next(self.parameters()).device

    def items(self, batch: Any) -> Sequence[Any]:
        """Split user input into a list of items (one per output vector); a lazy sequence (items
        decoded on demand, e.g. a pair dataset's) is kept as it is and read batch by batch."""
        if isinstance(batch, list | tuple):
            return list(batch)
        return batch if _lazy(batch) else [batch]

    def prepare(self, items: Sequence[Any]) -> torch.Tensor:
        """Preprocess a list of items into one input tensor (on the CPU)."""
        raise NotImplementedError

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        device = self.device
        x = x.to(device, non_blocking=device.type == "cuda")
        if device.type == "cuda":  # bf16 autocast only on GPU: ~8x slower on these CPUs
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = self(x)
        else:
            out = self(x)
        return F.normalize(out.float(), dim=-1).cpu()

    def embed(self, batch: Any, *, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Embed raw items: returns an ``(N, embed_dim)`` float32 tensor of unit vectors (CPU).

        Example:
            >>> import geobind
            >>> model = geobind.load("tiny")
            >>> model["text"].embed(["a busy highway", "a lake shore"]).shape
            torch.Size([2, 64])
        """
        from tqdm.auto import tqdm

        self._warn_untrained_link()
        items = self.items(batch)
        if not items:
            return torch.empty(0, self.embed_dim)
        total = -(-len(items) // batch_size)
        if total == 1:  # nothing to overlap: no prefetch thread (~2 ms of a ~5 ms text query)
            with torch.inference_mode():
                return self._run(self.prepare(items))
        prepared = (self.prepare(chunk) for chunk in _batches(items, batch_size))
        if self.prefetch:
            prepared = _background(prepared)
        with torch.inference_mode(), contextlib.closing(prepared):
            outs = [
                self._run(x)
                for x in tqdm(prepared, total=total, disable=not progress, desc=self.modality)
            ]
        return torch.cat(outs)


class SatEncoder(Encoder):
    """Satellite chips → CLIP space, through a (trainable) copy of CLIP's image tower.

    Args:
        visual: an open_clip vision tower (``model.visual``).
        bands: 1-based band numbers read as R, G, B.
        scale: ``"auto"`` or a divisor (see :func:`~geobind.models.preprocess.prepare_chips`).
        mean: normalisation mean per channel (CLIP's).
        std: normalisation standard deviation per channel (CLIP's).
        image_size: the tower's input size; chips of other sizes are resized.
    """

    modality = "sat"

    def __init__(self, visual: nn.Module, embed_dim: int, *, bands, scale, mean, std, image_size):
        super().__init__(embed_dim)
        self.visual = visual
        self.bands, self.scale = list(bands), scale
        self.mean, self.std, self.image_size = list(mean), list(std), int(image_size)
        self._standardisation_cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def items(self, batch: Any) -> list[Any]:
        if hasattr(batch, "ndim") and batch.ndim == 4:
            return list(batch)
        if hasattr(batch, "ndim") and batch.ndim == 3:
            return [batch]
        return list(batch)

    def prepare(self, items: Sequence[Any]) -> torch.Tensor:
        return prepare_chips(
            list(items),
            bands=self.bands,
            scale=self.scale,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
        )

    def embed(self, batch: Any, *, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Embed raw chips (``(C, H, W)``, ``(B, C, H, W)`` or a list; the encoder's ``bands``
        are read from them): an ``(N, embed_dim)`` float32 tensor of unit vectors (CPU).

        Every chip is embedded, whatever its nodata share (see :meth:`embed_pixels`).

        Example:
            >>> import geobind, numpy as np
            >>> sat = geobind.load("tiny")["sat"]
            >>> sat.embed(np.zeros((2, 4, 40, 40), np.uint8)).shape
            torch.Size([2, 64])
        """
        chips = select_bands(self.items(batch), self.bands)
        if not len(chips):
            return torch.empty(0, self.embed_dim)
        vectors = self.embed_pixels(
            chips, nodata_fraction=1.0, batch_size=batch_size, progress=progress
        )
        return torch.from_numpy(vectors)

    def embed_pixels(
        self,
        pixels: np.ndarray,
        valid: np.ndarray | None = None,
        *,
        nodata: float | None = None,
        nodata_fraction: float = 0.5,
        batch_size: int = 64,
        progress: bool = False,
    ) -> np.ndarray:
        """The chip pipeline: raw chips → ``(N, embed_dim)`` float32 unit vectors (numpy).

        ``pixels`` is ``(N, bands, H, W)`` in the raster's dtype, holding the bands the model
        reads, in order. Every path that embeds satellite pixels comes here: stage anchors,
        evaluation, raster grids, point chips and stores. A pixel is invalid where ``valid``
        (``(N, H, W)`` bool) is False, or, without ``valid``, by the nodata rule of
        :func:`~geobind.data.chips.invalid_mask` with ``nodata``. Chips with more than
        ``nodata_fraction`` invalid pixels are not embedded (NaN rows); in the others invalid
        pixels read as 0. Then the encoder's ``scale`` (:func:`~geobind.data.chips.to_unit`),
        resizing to the model's input and its mean/std (:meth:`standardize_pixels`: on a GPU
        the raw pixels travel to the device and are standardised there), the tower, and L2
        normalisation. Batches are prepared on the calling thread (a prefetch thread beside
        the forward cost more than it hid on 2 cores).

        Example:
            >>> import geobind, numpy as np
            >>> sat = geobind.load("tiny")["sat"]
            >>> chips = np.full((2, 3, 32, 32), 90, np.uint8)
            >>> valid = np.ones((2, 32, 32), bool); valid[1, :20] = False  # 62 % invalid
            >>> out = sat.embed_pixels(chips, valid)
            >>> out.shape, np.isnan(out).any(axis=1).tolist()
            ((2, 64), [False, True])
        """
        from tqdm.auto import tqdm

        pixels = np.asarray(pixels)
        if pixels.ndim != 4:
            raise InputDataError(
                f"pixels must be (chips, bands, height, width); got shape {pixels.shape}"
            )
        if pixels.shape[1] != len(self.bands):
            raise InputDataError(
                f"pixels hold {pixels.shape[1]} band(s); the model reads {len(self.bands)} "
                f"(bands {self.bands} of a raster): select them first"
            )
        if not 0 <= nodata_fraction <= 1:
            raise InputDataError(f"nodata_fraction must be in [0, 1]; got {nodata_fraction}")
        n, size = pixels.shape[0], pixels.shape[-2] * pixels.shape[-1]
        invalid = invalid_mask(pixels, nodata) if valid is None else ~np.asarray(valid, bool)
        if invalid is not None and not invalid.any():
            invalid = None
        out = np.full((n, self.embed_dim), np.nan, np.float32)
        if invalid is None:
            todo = np.arange(n)
        else:
            todo = np.flatnonzero(invalid.reshape(n, -1).sum(1) / float(size) <= nodata_fraction)
        steps = range(0, todo.size, batch_size)
        if progress:  # not built otherwise: called once a batch by the grid's loop
            steps = tqdm(steps, total=len(steps), desc="chips")
        with torch.inference_mode():
            for i in steps:
                # all chips to embed: a slice, not a copy
                idx = slice(i, i + batch_size) if invalid is None else todo[i : i + batch_size]
                x = self.standardize_pixels(pixels[idx], None if invalid is None else invalid[idx])
                out[idx] = self._run(x).numpy()
        return out

    def standardize_pixels(self, pixels: np.ndarray, invalid: np.ndarray | None = None):
        """Raw ``(B, bands, H, W)`` chips → the tower's input: invalid pixels 0, scaled, resized,
        standardised.

        The raw pixels move to the encoder's device (uint8 stays uint8 over a GPU's bus) and every
        step runs there, in torch on the calling thread: a GPU forward is not starved by host-side
        float work, and on the CPU torch's in-place ops take half the time numpy's did (a 64-chip
        uint8 batch of the demo model: 0.25 ms, as one multiply-add at the tower's input size,
        against 0.38 ms in four steps and 0.49 ms in numpy). The numbers equal the numpy reference,
        :func:`~geobind.data.chips.to_unit` then :func:`~geobind.models.preprocess.standardize`,
        within 1e-6 (tested).

        Example:
            >>> import geobind, numpy as np
            >>> sat = geobind.load("tiny")["sat"]
            >>> px = np.random.default_rng(0).integers(0, 255, (2, 3, 40, 40), dtype=np.uint8)
            >>> tuple(sat.standardize_pixels(px).shape)
            (2, 3, 32, 32)
        """
        device = self.device
        cuda = device.type == "cuda"
        divisor = scale_divisor(pixels.dtype, self.scale)
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device, non_blocking=cuda)
        x = x.to(torch.float32, copy=True)  # on the device; never the caller's array itself
        if invalid is not None:
            off = torch.from_numpy(np.ascontiguousarray(invalid)).to(device, non_blocking=cuda)
            x.masked_fill_(off[:, None], 0)
        mean, std, scale, shift = self._standardisation(device, divisor)
        unit = pixels.dtype == np.uint8 and divisor == 255.0  # in [0, 1] with no clamp
        if unit and x.shape[-2:] == (self.image_size, self.image_size):
            # no resize between: the scaling and the standardisation are one multiply-add
            # (within 5e-7 of the steps below; half the time of the demo model's batch)
            return x.mul_(scale).add_(shift)
        x /= divisor
        if pixels.dtype.kind == "f":
            x = torch.nan_to_num_(x, nan=0.0, posinf=1.0, neginf=0.0)
        if not unit:
            x.clamp_(0.0, 1.0)
        return resize(x, self.image_size).sub_(mean).div_(std)

    def _standardisation(self, device: torch.device, divisor: float) -> tuple[torch.Tensor, ...]:
        """``(mean, std, scale, shift)`` as ``(1, C, 1, 1)`` tensors on ``device``, where
        ``x * scale + shift`` is ``(x / divisor - mean) / std``; made once per device, divisor and
        mean/std (0.15 ms a batch otherwise)."""
        key = (str(device), float(divisor), tuple(self.mean), tuple(self.std))
        entry = self._standardisation_cache.get(key)
        if entry is None:
            with torch.inference_mode(False):  # usable outside inference mode too
                mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
                std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
                entry = mean, std, 1.0 / (divisor * std), -mean / std
            if len(self._standardisation_cache) >= 8:  # devices and dtypes change rarely
                self._standardisation_cache.clear()
            self._standardisation_cache[key] = entry
        return entry

    def normalize(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Resize and standardise chips already scaled to [0, 1] (``(B, 3, H, W)``).

        A tensor stays on its device (the training path: chip datasets scale on the CPU, this runs
        where the model runs); a numpy array (inference) is standardised in numpy (see
        :func:`~geobind.models.preprocess.standardize`) and returned as a CPU tensor.
        """
        if isinstance(x, np.ndarray):
            return standardize(x, image_size=self.image_size, mean=self.mean, std=self.std)
        x = resize(x, self.image_size)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def _split_transform(transform: Callable) -> tuple[Callable | None, Sequence, Sequence]:
    """Split a torchvision ``Compose`` ending in ``ToTensor``, ``Normalize`` (CLIP's transform)
    into its PIL steps and the normalisation's mean and std; ``(None, …)`` for other shapes."""
    from torchvision.transforms import Compose, Normalize

    steps = list(getattr(transform, "transforms", []))
    names = [type(t).__name__ for t in steps]
    if (
        not isinstance(transform, Compose)
        or names[-2:-1] not in (["ToTensor"], ["MaybeToTensor"])
        or not isinstance(steps[-1], Normalize)
        or any(n in ("ToTensor", "MaybeToTensor", "Normalize") for n in names[:-2])
    ):
        return None, (), ()
    return Compose(steps[:-2]), steps[-1].mean, steps[-1].std


class GroundEncoder(Encoder):
    """Ground-level photos → CLIP space, through CLIP's frozen image tower and its own transform."""

    modality = "ground"
    prefetch = False  # see Encoder.prefetch

    def __init__(self, visual: nn.Module, embed_dim: int, transform: Callable):
        super().__init__(embed_dim)
        self.visual = visual
        self.transform = transform
        self._pil, self._mean, self._std = _split_transform(transform)

    def prepare(self, items: Sequence[Any]) -> torch.Tensor:
        """Photos → ``(B, 3, S, S)``: CLIP's transform, its tensor steps once per batch.

        The PIL steps (resize, crop) run per photo; ``ToTensor`` and ``Normalize`` run on the whole
        batch in numpy, bitwise equal to the per-photo transform (tested). Per photo, those two
        cost ~0.3 ms of fixed torch overhead, as much as decoding a demo photo, and torch in the
        prefetch thread starts a second OpenMP team beside the forward (see ``standardize``).
        """
        if self._pil is None:  # a transform of another shape: run it as it is
            return torch.stack([self.transform(load_image(item)) for item in items])
        x = np.stack([np.asarray(self._pil(load_image(item))) for item in items])
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)  # planar, then float
        x /= np.float32(255)
        return standardize(x, image_size=x.shape[-1], mean=self._mean, std=self._std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


class TextEncoder(Encoder):
    """Text → CLIP space, through CLIP's frozen text tower and open_clip's tokenizer.

    Text longer than the context is truncated by the tokenizer. With ``templates`` (e.g.
    ``["a satellite photo of {}."]``) each text is embedded once per template and averaged.
    """

    modality = "text"
    prefetch = False  # see Encoder.prefetch

    #: Calls with at most ``cache_batch`` texts (queries: similarity, classify, top_k, plot)
    #: keep each text's vector, up to ``cache_texts`` of them; the cache empties itself when any
    #: weight of the tower changes (its storage or its in-place version counter). A loop of
    #: similarity() calls over many stored tile grids then embeds its query once, not per tile
    #: (~3.5 ms per call with the demo tower on 2 cores, against ~0.1 ms to scan a 1 MiB grid).
    cache_batch = 64
    cache_texts = 4096

    def __init__(self, text: nn.Module, embed_dim: int, tokenizer: Callable):
        super().__init__(embed_dim)
        self.text = text
        self.tokenizer = tokenizer
        self._cache: dict[str, torch.Tensor] = {}
        self._stamp: tuple = ()

    def items(self, batch: Any) -> list[Any]:
        items = [batch] if isinstance(batch, str) else list(batch)
        bad = [type(t).__name__ for t in items if not isinstance(t, str)]
        if bad:
            raise InputDataError(f"text queries must be strings; got {', '.join(sorted(set(bad)))}")
        return items

    def prepare(self, items: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(items))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The text tower on token ids, without the padding after the longest text
        (:func:`text_forward`)."""
        return text_forward(self.text, x)

    def embed(
        self,
        batch: Any,
        *,
        batch_size: int = 64,
        progress: bool = False,
        templates: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Embed texts, optionally averaged over prompt ``templates`` (each holding one ``{}``).

        Example:
            >>> import geobind
            >>> text = geobind.load("tiny")["text"]
            >>> text.embed("forest", templates=["a photo of {}.", "satellite view of {}."]).shape
            torch.Size([1, 64])
        """
        items = self.items(batch)
        if not templates or not items:
            return self._texts(items, batch_size, progress)
        filled = [t.format(item) for item in items for t in templates]
        vecs = self._texts(filled, batch_size, progress)
        return F.normalize(vecs.view(len(items), len(templates), -1).mean(1), dim=-1)

    def _texts(self, texts: list[str], batch_size: int, progress: bool) -> torch.Tensor:
        """:meth:`Encoder.embed`, through the query cache (see ``cache_batch``)."""
        if not texts or len(texts) > self.cache_batch:
            return super().embed(texts, batch_size=batch_size, progress=progress)
        stamp = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if stamp != self._stamp or len(self._cache) > self.cache_texts:
            self._cache, self._stamp = {}, stamp  # replaced, not cleared: safe across threads
        cache, unique = self._cache, dict.fromkeys(texts)
        found = {t: cache[t] for t in unique if t in cache}
        missing = [t for t in unique if t not in found]
        if missing:
            vecs = super().embed(missing, batch_size=batch_size, progress=progress)
            found.update(zip(missing, vecs, strict=True))
            cache.update(zip(missing, vecs, strict=True))
        return torch.stack([found[t] for t in texts])


class AudioEncoder(Encoder):
    """Audio → the shared space: CLAP's HTSAT audio tower, then a linear projection to embed_dim.

    Clips are mixed to mono and resampled to the tower's rate; a clip longer than the window is
    split into windows (at most ``max_windows``, evenly spread) whose embeddings are averaged.
    """

    modality = "audio"

    def __init__(self, tower: nn.Module, embed_dim: int, *, features: Any, max_windows: int):
        super().__init__(embed_dim)
        self.tower = tower
        self.proj = nn.Linear(tower.config.projection_dim, embed_dim)
        self.features = features  # transformers ClapFeatureExtractor
        self.max_windows = int(max_windows)

    @property
    def sample_rate(self) -> int:
        """The rate clips are resampled to before feature extraction."""
        return int(self.features.sampling_rate)

    def items(self, batch: Any) -> list[Any]:
        """A clip: a path, an array or an ``(array, rate)`` pair; a list or tuple batches clips."""
        one = isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[1], numbers.Real)
        if _lazy(batch):
            return batch
        if one or not isinstance(batch, list | tuple):
            return [batch]
        return list(batch)

    def prepare(self, items: Sequence[np.ndarray]) -> torch.Tensor:
        """Log-mel features for windows of mono samples at the tower's rate."""
        return clap_log_mel(items, self.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.tower(input_features=x).audio_embeds)

    def embed(self, batch: Any, *, batch_size: int = 16, progress: bool = False) -> torch.Tensor:
        """Embed clips (paths, arrays with their rate as ``(array, rate)``, or lists of those).

        Example:
            >>> import geobind, numpy as np
            >>> audio = geobind.load("tiny")["audio"]
            >>> audio.embed((np.zeros(16000, np.float32), 16000)).shape
            torch.Size([1, 64])
        """
        from tqdm.auto import tqdm

        self._warn_untrained_link()
        clips = self.items(batch)
        window = int(self.features.nb_max_samples)

        def windows() -> Iterator[tuple[np.ndarray, int]]:
            for i, clip in enumerate(tqdm(clips, disable=not progress, desc="audio")):
                for w in load_audio_windows(clip, self.sample_rate, window, self.max_windows):
                    yield w, i

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            chunk: list[tuple[np.ndarray, int]] = []
            for item in windows():  # streamed: a long list of long clips is never all in memory
                chunk.append(item)
                if len(chunk) == batch_size:
                    yield self.prepare([w for w, _ in chunk]), torch.tensor([i for _, i in chunk])
                    chunk = []
            if chunk:
                yield self.prepare([w for w, _ in chunk]), torch.tensor([i for _, i in chunk])

        sums = torch.zeros(len(clips), self.embed_dim)
        prepared = _background(batches()) if self.prefetch else batches()
        with torch.inference_mode(), contextlib.closing(prepared):
            for feats, owners in prepared:
                sums.index_add_(0, owners, self._run(feats))
        return F.normalize(sums, dim=-1)
