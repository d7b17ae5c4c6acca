"""Lightning tasks: the generic binding stage and the CLIP stand-in pretraining."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from open_clip import ClipLoss

from geobind.models.encoders import Encoder, SatEncoder, text_forward
from geobind.training.loss import InfoNCE
from geobind.training.metrics import retrieval_metrics

__all__ = ["BindTask", "ClipPretrainTask"]


def _warmup_cosine(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Schedule(L.LightningModule):
    """AdamW, linear warm-up then cosine decay; validation logs retrieval ``val/R@1``, ``R@10``."""

    def __init__(self, lr: float, weight_decay: float, warmup_steps: int):
        super().__init__()
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _collect(self, queries: torch.Tensor, gallery: torch.Tensor) -> None:
        self._val.append((queries.detach().float().cpu(), gallery.detach().float().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        queries = torch.cat([v[0] for v in self._val])
        gallery = torch.cat([v[1] for v in self._val])
        self._val.clear()
        m = retrieval_metrics(queries, gallery, ks=(1, 10))
        self.log("val/R@1", m["R@1"])
        self.log("val/R@10", m["R@10"], prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = int(self.trainer.estimated_stepping_batches) if self.trainer else 1000
        scheduler = _warmup_cosine(optimizer, self.warmup_steps, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)


class BindTask(_Schedule):
    """Bind one trainable encoder to frozen anchor embeddings (a GeoBind stage).

    Batches hold ``input`` (what the trainable encoder reads: chips scaled to [0, 1] for the
    satellite encoder, log-mel features for audio) and ``anchor`` (cached unit vectors from the
    frozen side). Validation logs ``val/R@1`` and ``val/R@10`` (trainable → anchor retrieval over
    the whole validation set), which early stopping and checkpointing watch.

    Args:
        encoder: the trainable encoder (its ``forward`` is the bare tower).
        bidirectional: stage 2's two-way InfoNCE (stage 1 uses one-way InfoNCE, as the paper).
        temperature: initial (learnable) temperature.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        warmup_steps: int = 20,
        temperature: float = 0.07,
        bidirectional: bool = False,
    ):
        super().__init__(lr, weight_decay, warmup_steps)
        self.encoder = encoder.train()  # bundles load in eval mode
        self.loss = InfoNCE(temperature, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.encoder, SatEncoder):
            x = self.encoder.normalize(x)
        return F.normalize(self.encoder(x).float(), dim=-1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["input"]), batch["anchor"].float())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input"]))
        self.log(
            "train/temperature", 1 / self.loss.logit_scale.exp(), batch_size=len(batch["input"])
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(self(batch["input"]), batch["anchor"])


class ClipPretrainTask(_Schedule):
    """Train both CLIP towers on photo–caption pairs (the offline stand-in for real CLIP
    weights)."""

    def __init__(
        self,
        clip: torch.nn.Module,
        *,
        lr: float = 5e-4,
        weight_decay: float = 0.1,
        warmup_steps: int = 20,
    ):
        super().__init__(lr, weight_decay, warmup_steps)
        self.clip = clip.train()
        self.loss = ClipLoss()

    def _embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``CLIP.forward``'s unit vectors, with the text tower on the used positions only."""
        image = F.normalize(self.clip.encode_image(batch["image"]), dim=-1)
        return image, F.normalize(text_forward(self.clip.text, batch["text"]), dim=-1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, text = self._embed(batch)
        loss = self.loss(image, text, self.clip.logit_scale.exp())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        image, text = self._embed(batch)
        self._collect(text, image)  # caption → photo retrieval
