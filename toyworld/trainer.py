"""One resumable training loop for every toy component.

A component gives its modules, an optimizer and a `step(i) -> loss` function whose batch is drawn from
a generator seeded by (component seed, i): a run stopped at any point and resumed from its last
checkpoint draws the same batches as one that never stopped. The loop keeps, under
`<workdir>/<name>/`: `ckpt.pt` (modules, optimizer, step; written whole or not at all),
`loss.csv` (step, loss, seconds) and, when done, `loss.png` and a `done` marker.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.io.atomic import atomic_path

log = logging.getLogger(__name__)


def batch_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, step])


def optimise(opt: torch.optim.Optimizer, loss: torch.Tensor, params, max_norm: float = 1.0) -> float:
    """One optimizer step on `loss` with gradient clipping; returns the loss as a float."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    return float(loss.detach())


@dataclass(frozen=True)
class TrainSettings:
    """How long and how a component trains: steps, batch size, peak learning rate, checkpoint interval.
    Each component module has its defaults (`SETTINGS`); `dataclasses.replace` makes a variant."""

    steps: int
    batch: int
    lr: float = 1e-3
    checkpoint_every: int = 200


def component_trainer(
    name: str,
    workdir: str | os.PathLike,
    modules: dict[str, torch.nn.Module],
    settings: TrainSettings,
    *,
    weight_decay: float,
) -> tuple[Trainer, list[torch.nn.Parameter]]:
    """What the toy captioner, CLIP, depth and texture trainers share: AdamW over every module's parameters (in
    the order of `modules`), a warm-up of a tenth of the run (at most 100 steps), checkpoints under
    `workdir/name`. Returns the trainer and the parameters (for `optimise`)."""
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=weight_decay)
    steps = settings.steps
    warmup = min(100, steps // 10 + 1)
    trainer = Trainer(name, workdir, modules, opt, steps, lr_warmup=warmup, checkpoint_every=settings.checkpoint_every)
    return trainer, params


class Trainer:
    def __init__(
        self,
        name: str,
        workdir: str | os.PathLike,
        modules: dict[str, torch.nn.Module],
        optimizer: torch.optim.Optimizer,
        steps: int,
        *,
        checkpoint_every: int = 200,
        lr_warmup: int = 100,
        lr_decay: bool = True,
        on_checkpoint: Callable[[int, dict[str, torch.nn.Module]], None] | None = None,
    ):
        self.name = name
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.modules = modules
        self.opt = optimizer
        self.steps = steps
        self.checkpoint_every = checkpoint_every
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.lr_warmup = lr_warmup
        self.lr_decay = lr_decay
        self.start = 0
        self.on_checkpoint = on_checkpoint  # called with (step, modules) after each periodic checkpoint

    @property
    def done(self) -> bool:
        return (self.dir / "done").exists()

    def finished(self) -> bool:
        """True when the run is done, with its final weights loaded: a trainer can then skip preparing
        its data (`run` would return at once anyway)."""
        if self.done:
            self.resume()
        return self.done

    def _ckpt(self) -> Path:
        return self.dir / "ckpt.pt"

    def resume(self) -> int:
        """Load the last checkpoint if there is one; returns the step to continue from."""
        if self._ckpt().exists():
            state = torch.load(self._ckpt(), map_location="cpu", weights_only=False)
            for k, m in self.modules.items():
                m.load_state_dict(state["modules"][k])
            self.opt.load_state_dict(state["optimizer"])
            self.start = int(state["step"])
            log.info("%s: resumed at step %d", self.name, self.start)
        return self.start

    def save(self, step: int) -> None:
        state = {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizer": self.opt.state_dict(),
            "step": step,
        }
        with atomic_path(self._ckpt()) as tmp:
            torch.save(state, tmp)

    def _set_lr(self, step: int) -> None:
        warm = min(1.0, (step + 1) / max(1, self.lr_warmup))
        decay = 0.5 * (1 + math.cos(math.pi * step / self.steps)) if self.lr_decay else 1.0
        for g, lr in zip(self.opt.param_groups, self.base_lrs, strict=True):
            g["lr"] = lr * warm * (0.1 + 0.9 * decay)

    def run(self, step_fn: Callable[[int], float]) -> None:
        if self.done:
            self.resume()  # the final weights
            for m in self.modules.values():
                m.eval()
            log.info("%s: already trained", self.name)
            return
        start = self.resume()
        for m in self.modules.values():
            m.train()
        t0 = time.time()
        new_log = not (self.dir / "loss.csv").exists() or start == 0
        with open(self.dir / "loss.csv", "w" if new_log else "a", newline="") as f:
            w = csv.writer(f)
            if new_log:
                w.writerow(["step", "loss", "seconds"])
            bar = tqdm(range(start, self.steps), desc=self.name, initial=start, total=self.steps, mininterval=5)
            smooth = None
            for step in bar:
                self._set_lr(step)
                loss = float(step_fn(step))
                smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
                w.writerow([step, f"{loss:.6g}", f"{time.time() - t0:.1f}"])
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{smooth:.4g}")
                    f.flush()
                if (step + 1) % self.checkpoint_every == 0:
                    self.save(step + 1)
                    if self.on_checkpoint is not None:
                        self.on_checkpoint(step + 1, self.modules)
        self.save(self.steps)
        for m in self.modules.values():
            m.eval()
        plot_loss(self.dir / "loss.csv", self.dir / "loss.png", title=f"{self.name} training loss")
        (self.dir / "done").write_text("ok\n")


def read_loss(path: str | os.PathLike) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    with open(path) as f:
        for row in csv.DictReader(f):
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))
    return steps, losses


def plot_loss(csv_path: str | os.PathLike, png_path: str | os.PathLike, title: str) -> None:
    """A loss curve (log10 of a running mean) as a PNG."""
    from pipeline.report.plots import line_panel

    steps, losses = read_loss(csv_path)
    if not losses:
        return
    k = max(1, len(losses) // 100)
    xs = [steps[i] for i in range(0, len(losses) - k + 1, k)]
    ys = [math.log10(max(1e-12, float(np.mean(losses[i : i + k])))) for i in range(0, len(losses) - k + 1, k)]
    img = line_panel({"log10 loss": ys}, title=title, xs=xs, x_label="step", size=(420, 240))
    img.save(png_path)
