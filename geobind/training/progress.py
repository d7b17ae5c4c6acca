"""Readable training output: one progress bar per stage, and Lightning's console messages tamed.

- :class:`StageProgress`, a Lightning callback: a tqdm bar over a stage's optimizer steps whose
  postfix shows the epoch, the last training loss and the last validation R@10 (it replaces
  Lightning's own bar).
- :func:`lightning_messages`: while a fit runs, each Lightning message is printed once
  (Lightning has its own console handler *and* propagates to the root logger, so an application
  that configured logging, like the CLI, printed every line twice) and its advertisements for
  hosted services never. With ``verbose=False`` (the CLI's and the demo's default; ``--verbose``
  lifts it) only its warnings and errors: no ``GPU available: False …``, no ``Trainer.fit
  stopped …``, no advice about data-loader workers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L

__all__ = ["StageProgress", "lightning_messages"]

_LIGHTNING = ("lightning", "lightning.pytorch", "lightning.fabric")
_ADVERTS = ("💡 Tip:", "litlogger", "litmodels", "Lightning Experiments", "lightning.ai")
# warnings raised (as attributed by their stacklevel) inside Lightning and its helper packages
_LIGHTNING_MODULES = r"(lightning|lightning_fabric|lightning_utilities|pytorch_lightning)(\..*)?$"


class _NoAdverts(logging.Filter):
    """Drops Lightning's tips that advertise hosted logging and model-registry services."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(word in message for word in _ADVERTS)


@contextlib.contextmanager
def lightning_messages(*, verbose: bool | None = None) -> Iterator[None]:
    """Lightning's console output while the block runs: each message once, no advertisements;
    ``verbose=False`` also hides its informational messages and its warnings, ``True`` or
    ``None`` leave them as Lightning has them (an enclosing ``verbose=False`` block stays in
    force under ``None``). Everything is put back afterwards.

    Example:
        >>> import logging
        >>> with lightning_messages(verbose=False):
        ...     logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.WARNING
        True
    """
    top = logging.getLogger("lightning")
    loggers = [logging.getLogger(name) for name in _LIGHTNING]
    levels = [lg.level for lg in loggers]
    propagate = top.propagate
    # Lightning's handler prints; the root's (if an application set one up) would print again
    handlers = list(top.handlers)
    if handlers and logging.getLogger().handlers:
        top.propagate = False
    if not handlers:  # no handler of its own: its records reach the root's handlers
        handlers = list(logging.getLogger().handlers)
    advert = _NoAdverts()
    for handler in handlers:
        handler.addFilter(advert)
    try:
        with warnings.catch_warnings():
            if verbose is False:
                for lg in loggers:
                    lg.setLevel(logging.WARNING)
                # advice on workers, logging intervals and deprecations inside Lightning
                warnings.filterwarnings("ignore", module=_LIGHTNING_MODULES)
                with contextlib.suppress(ImportError):
                    from lightning.fabric.utilities.warnings import PossibleUserWarning

                    warnings.simplefilter("ignore", PossibleUserWarning)
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(advert)
        top.propagate = propagate
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class StageProgress(L.Callback):
    """A tqdm bar over a stage's optimizer steps: ``epoch e/E, loss …, val R@10 …``.

    Args:
        desc: the bar's label (the stage: ``stage1``, ``stage2``, ``pretrain-clip``).
        monitor: the validation metric shown (logged by the task).
        enabled: ``False`` shows nothing (the callback still costs nothing).

    Example:
        >>> StageProgress("stage1").desc
        'stage1'
    """

    def __init__(self, desc: str, *, monitor: str = "val/R@10", enabled: bool = True):
        super().__init__()
        self.desc, self.monitor, self.enabled = desc, monitor, enabled
        self._bar: Any = None
        self._loss: float | None = None
        self._val: float | None = None

    def _postfix(self, trainer: L.Trainer, *, done: bool = False) -> str:
        last = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        # while training, the epoch running; once done, the epochs completed
        epoch = trainer.current_epoch + (0 if done else 1)
        epoch = epoch if last is None else min(epoch, last)
        parts = [f"epoch {epoch}/{last}" if last else f"epoch {epoch}"]
        if self._loss is not None:
            parts.append(f"loss {self._loss:.3f}")
        name = self.monitor.split("/")[-1]
        parts.append(f"val {name} {self._val:.3f}" if self._val is not None else f"val {name} –")
        return ", ".join(parts)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from tqdm.auto import tqdm

        total = trainer.estimated_stepping_batches
        self._bar = tqdm(
            total=int(total) if math.isfinite(total) else None,
            initial=trainer.global_step,
            desc=self.desc,
            unit="step",
            dynamic_ncols=True,
            disable=not self.enabled,
            leave=True,
        )
        self._bar.set_postfix_str(self._postfix(trainer), refresh=False)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss = float(loss)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(trainer), refresh=False)
            self._bar.update(1)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            self._val = float(value)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(trainer))

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            postfix = self._postfix(trainer, done=True)
            if self._bar.total is not None and self._bar.n < self._bar.total:
                postfix += f", stopped: {_why_stopped(trainer)}"
            self._bar.set_postfix_str(postfix)
        self._close()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._close()


def _why_stopped(trainer: L.Trainer) -> str:
    """Why a fit ended before its last epoch: early stopping or the time budget."""
    from lightning.pytorch.callbacks import EarlyStopping

    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return f"{callback.monitor} stopped improving"
    return "time budget (max_minutes) reached"
