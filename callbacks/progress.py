"""A progress bar that counts videos and shows the frame rate."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar


class VideoProgressBar(TQDMProgressBar):
    """Lightning's bar (one step = one video) with frames and frames per second as postfix."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._frames = 0
        self._start = 0.0

    def _reset_counts(self) -> None:
        self._frames = 0
        self._start = time.perf_counter()

    def on_test_start(self, trainer, pl_module) -> None:
        super().on_test_start(trainer, pl_module)
        self._reset_counts()

    def on_predict_start(self, trainer, pl_module) -> None:
        super().on_predict_start(trainer, pl_module)
        self._reset_counts()

    def _postfix(self, outputs) -> dict:
        self._frames += int(getattr(outputs, "num_frames", 0))
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        return {"frames": self._frames, "frames/s": f"{self._frames / elapsed:.1f}"}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self.test_progress_bar is not None:
            self.test_progress_bar.set_postfix(self._postfix(outputs), refresh=False)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self.predict_progress_bar is not None:
            self.predict_progress_bar.set_postfix(self._postfix(outputs), refresh=False)
