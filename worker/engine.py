"""The training loop: plain PyTorch with no Celery or Redis, so it can be unit-tested and benchmarked
against a hand-written loop. What it produces (metric records, gradients, the graph, checkpoints)
goes to a ``Hooks`` object; the Celery task's hooks write to Redis, tests' hooks keep lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from models.nn import state_codec
from models.nn.state_codec import TrainState
from models.placement import worker_device
from worker.breakpoints import Paused, Rules, Watch
from worker.data_parallel import Group
from worker.throughput import Throughput

__all__ = [
    "Data",
    "Hooks",
    "ListHooks",
    "NonFiniteLoss",
    "Paused",
    "Rules",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "choose_device",
]


@dataclass(frozen=True)
class TrainConfig:
    total_steps: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    classification: bool = False  # targets are class indices: report accuracy from argmax over dim 1
    gradients_every: int = 0
    graph: bool = False
    checkpoint_every: int = 0
    stop_on_nan: bool = True
    clip_grad_norm: float | None = None  # max total norm of the gradients, as torch.nn.utils.clip_grad_norm_
    accumulate: int = 1  # micro-batches per optimizer step
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    compile: bool = False
    channels_last: bool = False
    breakpoints: Rules | None = None
    # When the scheduler steps: after every optimizer step, or after the last step of each epoch.
    scheduler_interval: Literal["step", "epoch"] = "epoch"
    # Records reach the hooks every N steps or every interval, whichever comes first: reading the
    # losses back is one device sync per batch of steps, and one Redis round trip.
    flush_every: int = 256
    flush_interval_s: float = 0.1


@dataclass
class Data:
    x: torch.Tensor  # (N, *input_shape)
    y: torch.Tensor  # (N,) class indices or (N, *output_shape)
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    num_classes: int | None = None
    # Random transforms of a batch: (x, epoch, index of its first sample in the epoch's order) -> x.
    augment: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None

    def to(self, device: torch.device) -> Data:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        x, y = self.x.to(device), self.y.to(device)
        return Data(x, y, move(self.x_val), move(self.y_val), self.num_classes, self.augment)


class Hooks:
    """Where the loop reports. Every method may be left as is; the loop never waits on anything else."""

    def records(self, batch: list[dict[str, Any]]) -> None:
        """Metric records in step order, one per step."""

    def gradients(self, step: int, grads: dict[str, torch.Tensor]) -> None:
        """Gradients of step ``step`` (after backward, before the optimizer step). Copy what you keep."""

    def graph(self, loss: torch.Tensor, net: nn.Module) -> None:
        """The loss of the first step, before backward frees its graph."""

    def checkpoint(self, state: TrainState) -> None:
        """State after ``state.step`` steps; every record up to it has been reported."""

    def should_stop(self) -> bool:
        """Asked after every step; True ends the run after reporting what is pending."""
        return False


@dataclass
class ListHooks(Hooks):
    """Keeps everything in lists: the test double of the Redis hooks."""

    stop_after: int | None = None
    all_records: list[dict[str, Any]] = field(default_factory=list)
    grads: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    losses_for_graph: list[torch.Tensor] = field(default_factory=list)
    states: list[TrainState] = field(default_factory=list)

    def records(self, batch: list[dict[str, Any]]) -> None:
        self.all_records.extend(batch)

    def gradients(self, step: int, grads: dict[str, torch.Tensor]) -> None:
        self.grads[step] = {k: v.detach().clone() for k, v in grads.items()}

    def graph(self, loss: torch.Tensor, net: nn.Module) -> None:
        self.losses_for_graph.append(loss)

    def checkpoint(self, state: TrainState) -> None:
        self.states.append(state)

    def should_stop(self) -> bool:
        last = self.all_records[-1]["step"] if self.all_records else 0
        return self.stop_after is not None and last >= self.stop_after


class NonFiniteLoss(Exception):
    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss is {value} at step {step} (stop_on_nan is set)")
        self.step = step


def choose_device(requested: str, cuda_available: bool) -> torch.device:
    """The job's device (models.placement.worker_device); ``cuda`` on a worker without it is an error."""
    device = worker_device(requested, cuda_available)
    if device is None:
        raise RuntimeError("the job asks for device 'cuda' but this worker has no CUDA device")
    return torch.device(device)


def _clone_tensors(value: Any) -> Any:
    """A snapshot: optimizer.state_dict() hands out the live buffers that the next step changes in place."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):  # keeping the type: MultiStepLR's milestones are a Counter
        return type(value)({k: _clone_tensors(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_clone_tensors(v) for v in value]
    return value


class Trainer:
    def __init__(
        self,
        net: nn.Module,
        criterion: Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer,
        data: Data,
        cfg: TrainConfig,
        scheduler: LRScheduler | ReduceLROnPlateau | None = None,
        group: Group | None = None,
    ) -> None:
        """``group``: this process's rank of a data-parallel job (torch.distributed initialized), or None."""
        self.net, self.criterion, self.optimizer, self.data, self.cfg = net, criterion, optimizer, data, cfg
        self.scheduler = scheduler
        self.group = group
        self.leader = group is None or group.leader
        self.device = data.x.device
        self.step = 0
        self.epoch = 0
        self.cursor = 0
        self.order: torch.Tensor | None = None
        self.order_rng: torch.Tensor | None = None  # the shuffler's state before it drew ``order``
        # A generator of its own, so the data order depends on the seed alone and not on dropout draws.
        self.shuffler = torch.Generator().manual_seed(cfg.seed)
        self._pending: list[tuple[Any, ...]] = []
        self._evals: dict[int, dict[str, float]] = {}
        self._throughput = Throughput(start=time.perf_counter())  # restarted by run()
        # The compiled wrapper only runs forward passes: state and parameters stay the plain module's, so a
        # checkpoint's keys have no "_orig_mod." prefix and load into the user's module.
        # Under DDP the forward goes through its wrapper (which all-reduces the gradients in backward); the
        # optimizer and checkpoints keep the plain module, so its keys have no "module." prefix either.
        self.ddp = None if group is None else group.wrap(net, self.device)
        module: nn.Module = net if self.ddp is None else self.ddp
        self.forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(module) if cfg.compile else module
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "16-mixed" else None
        self.watch = None if cfg.breakpoints is None else Watch(cfg.breakpoints, net)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16-mixed" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # --- state ---------------------------------------------------------------------------------------------------

    def state(self) -> TrainState:
        rng = {**state_codec.rng_state(self.device), "shuffle": self.shuffler.get_state()}
        return TrainState(
            step=self.step,
            epoch=self.epoch,
            cursor=self.cursor,
            order=self.order,
            order_rng=self.order_rng,
            model={k: v.detach().clone() for k, v in self.net.state_dict().items()},
            optimizer=_clone_tensors(self.optimizer.state_dict()),
            rng=rng,
            scheduler=None if self.scheduler is None else _clone_tensors(self.scheduler.state_dict()),
            scaler=None if self.scaler is None else self.scaler.state_dict(),
            recent_losses=None if self.watch is None else self.watch.state(),
        )

    def load_state(self, state: TrainState, *, optimizer: bool = True, scheduler: bool = True) -> None:
        """Continue from ``state``; a fork that changed the optimizer's type or the scheduler starts those fresh."""
        self.net.load_state_dict(state.model)
        if optimizer:
            state_codec.load_optimizer_state(self.optimizer, state.optimizer)
        if scheduler and self.scheduler is not None and state.scheduler is not None:
            self.scheduler.load_state_dict(state.scheduler)
        if self.watch is not None and state.recent_losses is not None:
            self.watch.load_state(state.recent_losses)
        if self.scaler is not None and state.scaler:  # empty before the first scaled step
            self.scaler.load_state_dict(state.scaler)
        state_codec.set_rng_state(state.rng, self.device)
        self.shuffler.set_state(state.rng["shuffle"])
        self.step, self.epoch, self.cursor = state.step, state.epoch, state.cursor
        self.order_rng = state.order_rng
        if state.order is None and state.order_rng is not None and state.cursor > 0:
            redraw = torch.Generator().set_state(state.order_rng)
            self.order = torch.randperm(self.data.x.shape[0], generator=redraw).to(self.device)
        else:
            self.order = None if state.order is None else state.order.to(self.device)

    # --- the loop ------------------------------------------------------------------------------------------------

    def run(self, hooks: Hooks) -> str:
        """Train to ``total_steps``; return ``"finished"``, or ``"stopped"`` when the hooks asked."""
        cfg, net = self.cfg, self.net
        n = self.data.x.shape[0]
        net.train()
        last_flush = time.perf_counter()
        self._throughput = Throughput(start=last_flush)
        while self.step < cfg.total_steps:
            step = self.step + 1
            before = None
            if self.watch is not None:
                self.watch.begin_step()
                before = self._position()
            # An epoch's last step takes the micro-batches left, so every epoch sees each sample once.
            micro = min(cfg.accumulate, math.ceil((n - self.cursor) / cfg.batch_size))
            losses, corrects, size, count = [], [], 0, 0
            for i in range(micro):
                x, y = self.next_batch(n)
                with self._syncing(i < micro - 1):
                    with self._autocast():
                        out = self.forward(x)  # forward
                        loss = self.criterion(out, y)  # loss
                    if step == 1 and i == 0 and cfg.graph and self.leader:
                        hooks.graph(loss, net)
                    # Summed micro-batch losses over their count: the gradient of their mean, as one batch of
                    # all of them would give (up to rounding); one micro-batch is backpropagated as is.
                    scaled = loss / micro if micro > 1 else loss
                    if self.scaler is not None:
                        scaled = self.scaler.scale(scaled)
                    scaled.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
                losses.append(loss.detach())
                if cfg.classification:
                    corrects.append((out.detach().argmax(1) == y).sum())
                size, count = size + x.shape[0], count + y.numel()
            # The loss stays a tensor here: turning it into a float is a device sync (batched in _drain).
            step_loss = losses[0] if micro == 1 else torch.stack(losses).float().mean()
            if self.watch is not None and before is not None:
                hit = self.watch.check(step, step_loss, grads_scaled=self.scaler is not None)
                if hit is not None:
                    self._drain(hooks)
                    raise Paused(hit, self._state_before(before))
            if self.scaler is not None and (cfg.clip_grad_norm is not None or cfg.gradients_every):
                self.scaler.unscale_(self.optimizer)  # clip and report the true gradients, not scaled ones
            if cfg.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm)
            if cfg.gradients_every and step % cfg.gradients_every == 0:
                hooks.gradients(step, {k: p.grad for k, p in net.named_parameters() if p.grad is not None})
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used (a Python float: no sync)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
                self.scaler.update()
            else:
                self.optimizer.step()  # update
            self.optimizer.zero_grad(set_to_none=True)

            self.step = step
            epoch_done = self.cursor == 0
            correct = (corrects[0] if micro == 1 else torch.stack(corrects).sum()) if corrects else None
            stop = False
            if self.group is not None:  # the leader's stop is asked before its drain: heeded a step later
                step_loss, correct, stop = self.group.reduce(step_loss, correct, self.leader and hooks.should_stop())
                size, count = size * self.group.world_size, count * self.group.world_size  # equal shards
            now = time.perf_counter()
            self._pending.append(
                (
                    step,
                    self.epoch + (0 if epoch_done else 1),
                    step_loss,
                    correct,
                    count,
                    self._throughput.add(now, size),
                    time.time(),
                    lr,
                )
            )
            last_step = step == cfg.total_steps
            if (epoch_done or last_step) and self.data.x_val is not None:
                self._evals[step] = self.evaluate()
            if self.scheduler is not None and (epoch_done or cfg.scheduler_interval == "step"):
                self._step_scheduler(step)
            due_ckpt = last_step or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            if (
                step == 1
                or due_ckpt
                or len(self._pending) >= cfg.flush_every
                or now - last_flush >= cfg.flush_interval_s
            ):
                self._drain(hooks)
                last_flush = now
            if due_ckpt and self.leader:
                hooks.checkpoint(self.state())
            if not last_step and (stop if self.group is not None else hooks.should_stop()):
                self._drain(hooks)
                return "stopped"
        self._drain(hooks)
        return "finished"

    def _syncing(self, deferred: bool) -> contextlib.AbstractContextManager[Any]:
        """Under DDP, a micro-batch before a step's last keeps its gradients local (no_sync): one all-reduce
        a step, of the accumulated sum."""
        return self.ddp.no_sync() if deferred and self.ddp is not None else contextlib.nullcontext()

    def _position(self) -> tuple[dict[str, torch.Tensor], int, int, torch.Tensor | None]:
        """Where the run stands before a step: what a breakpoint's state goes back to."""
        rng = {**state_codec.rng_state(self.device), "shuffle": self.shuffler.get_state()}
        return rng, self.epoch, self.cursor, self.order

    def _state_before(self, position: tuple[dict[str, torch.Tensor], int, int, torch.Tensor | None]) -> TrainState:
        """The state before this step: its update is not applied, so weights and optimizer are as they were."""
        self.optimizer.zero_grad(set_to_none=True)
        rng, epoch, cursor, order = position
        state = self.state()
        return dataclasses.replace(state, rng=rng, epoch=epoch, cursor=cursor, order=order)

    def skip_step(self) -> None:
        """Leave out the batches of the next step (a resumed breakpoint's ``skip_batch``); no step is taken."""
        n = self.data.x.shape[0]
        for _ in range(min(self.cfg.accumulate, math.ceil((n - self.cursor) / self.cfg.batch_size))):
            self.next_batch(n)

    def next_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of the data order; moves the cursor, and the epoch at its end."""
        cfg, x_all, y_all = self.cfg, self.data.x, self.data.y
        epoch, start = self.epoch, self.cursor
        if self.cursor == 0 and cfg.shuffle:
            self.order_rng = self.shuffler.get_state()
            self.order = torch.randperm(n, generator=self.shuffler).to(self.device)
        end = min(self.cursor + cfg.batch_size, n)
        if self.group is not None:  # this rank's share of the batch (see worker.data_parallel)
            epoch_order = self.order if cfg.shuffle else torch.arange(n, device=self.device)
            assert epoch_order is not None
            idx = self.group.pad(epoch_order[self.cursor : end], epoch_order)
            if self.data.augment is not None:
                # Every rank draws the whole batch's augmentation and keeps its rows: the samples are those a
                # one-process job would see, and the ranks' random crops are not copies of each other.
                x = self.group.mine(self.data.augment(x_all[idx], epoch, start))
            else:
                x = x_all[self.group.mine(idx)]  # (B / world_size, *input_shape)
            y = y_all[self.group.mine(idx)]
        elif cfg.shuffle:
            assert self.order is not None  # drawn at cursor 0, or restored with the cursor by load_state
            idx = self.order[self.cursor : end]
            x, y = x_all[idx], y_all[idx]  # (B, *input_shape), (B, ...)
        else:
            x, y = x_all[self.cursor : end], y_all[self.cursor : end]
        if self.data.augment is not None and self.group is None:
            x = self.data.augment(x, epoch, start)  # seeded by the batch's place, which a checkpoint restores
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self.cursor = end
        if end >= n:
            self.epoch, self.cursor, self.order = self.epoch + 1, 0, None
        return x, y

    def _drain(self, hooks: Hooks) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        losses = torch.stack([p[2] for p in pending]).tolist()  # one device sync for the whole batch
        if self.device.type == "cuda":
            # A step is stamped when the host has queued its kernels; after this sync the last one has run, so
            # its stamp says when it was done and the rate over a job's records is the device's true rate.
            *head, wall, lr = pending[-1]
            pending[-1] = (*head, time.time(), lr)
        corrects = torch.stack([p[3] for p in pending]).tolist() if pending[0][3] is not None else None
        out: list[dict[str, Any]] = []
        failed: NonFiniteLoss | None = None
        for i, (step, epoch, _, _, count, rate, wall, lr) in enumerate(pending):
            rec: dict[str, Any] = {
                "step": step,
                "epoch": epoch,
                "loss": losses[i],
                "lr": lr,
                "samples_per_s": rate,
                "t": wall,
            }
            if corrects is not None:
                rec["accuracy"] = corrects[i] / count
            rec.update(self._evals.pop(step, {}))
            out.append(rec)
            if self.cfg.stop_on_nan and not math.isfinite(losses[i]):
                failed = NonFiniteLoss(step, losses[i])
                break
        # A summary, not a per-step series: on the last record of each batch, as the job's record shows it.
        out[-1]["overall_samples_per_s"] = self._throughput.overall()
        hooks.records(out)
        if failed is not None:
            raise failed

    def _step_scheduler(self, step: int) -> None:
        """As PyTorch documents each: after ``optimizer.step()``, per batch or per epoch; ReduceLROnPlateau on
        the held-out loss of the epoch just ended (the job's checks make sure there is one)."""
        assert self.scheduler is not None
        if isinstance(self.scheduler, ReduceLROnPlateau):
            if step in self._evals:
                self.scheduler.step(self._evals[step]["val_loss"])
        else:
            self.scheduler.step()

    @torch.no_grad()
    def evaluate(self, chunk: int = 1024) -> dict[str, float]:
        """Loss (and accuracy) on the held-out split, in eval mode; draws no random numbers."""
        x_val, y_val = self.data.x_val, self.data.y_val
        assert x_val is not None and y_val is not None
        self.net.eval()
        total, correct, n = 0.0, 0, x_val.shape[0]
        try:
            for i in range(0, n, chunk):
                y = y_val[i : i + chunk]
                with self._autocast():  # held-out figures at the precision the job trains in
                    out = self.net(x_val[i : i + chunk])
                    total += float(self.criterion(out, y)) * y.shape[0]
                if self.cfg.classification:
                    correct += int((out.argmax(1) == y).sum())
        finally:
            self.net.train()
        result = {"val_loss": total / max(n, 1)}
        if self.cfg.classification:
            result["val_accuracy"] = correct / max(y_val.numel(), 1)
        return result
