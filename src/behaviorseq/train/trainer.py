"""The Trainer: fit with early stopping, a checkpoint per epoch (and every N steps), exact resume,
one seed for all randomness, CUDA + AMP when present, DDP under ``torchrun``.

Exact resume: the batch order and the sampled negatives are functions of (seed, epoch, step)
(``data.batching``), and a checkpoint holds the model, optimizer, scheduler, torch / numpy / python RNG
states, the step within the epoch and the early-stopping state. Continuing from it replays the same
steps as an uninterrupted run. Checkpoints are written to a temp file and renamed.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from behaviorseq.config import ConfigError, TrainConfig
from behaviorseq.utils import atomic_write_text

# Tests set this to kill the process (SIGKILL, no clean-up) after a given global step.
_KILL_AT_STEP = int(os.environ.get("BEHAVIORSEQ_KILL_AT_STEP", "-1"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda, but torch sees no CUDA device (no GPU here, or a CPU build of "
                              "torch); train.device=cpu or auto runs on the CPU")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _LossModule(torch.nn.Module):
    """DDP synchronises gradients through ``forward``; the model's loss is its training forward."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Trainer:
    def __init__(self, model: torch.nn.Module, task, cfg: TrainConfig, run_dir: str | Path, metric_ks=None):
        self.model, self.task, self.cfg = model, task, cfg
        self.run_dir = Path(run_dir)
        self.rank, self.world = dist_info()
        self.device = resolve_device(cfg.device)
        self.model.to(self.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.step_module: torch.nn.Module = _LossModule(self.model)
        if self.world > 1:
            self.step_module = torch.nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        per_rank = task.steps_per_epoch()
        per_rank = (per_rank - per_rank % self.world) // self.world  # the optimizer steps each rank takes (fit)
        total = max(1, cfg.epochs * per_rank)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda(total))
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": -math.inf, "best_epoch": -1,
                      "bad_evals": 0, "elapsed_s": 0.0, "stopped": False, "history": []}

    def _lr_lambda(self, total: int):
        cfg = self.cfg

        def f(step: int) -> float:
            warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
            if cfg.scheduler == "cosine":
                return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
            if cfg.scheduler == "warmup_linear":
                return warm * max(0.0, 1 - step / total)
            return warm

        return f

    # ---- checkpoints ------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _rng_state(self) -> dict:
        return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                # this process's own device only (all of them would create a context on every GPU)
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def save_checkpoint(self) -> None:
        """Called by every rank at the same points: under DDP each rank's RNG states go into the checkpoint (their
        dropout draws differ, batches being of other widths), so that each resumes with its own."""
        rng = self._rng_state()
        ranks = None
        if self.world > 1:
            ranks = [None] * self.world
            dist.all_gather_object(ranks, rng)
        if self.rank != 0:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save({
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "state": self.state,
            "rng": rng, "rng_ranks": ranks,
        }, self.ckpt_dir / "last.pt")

    def load_checkpoint(self, path: Path | None = None) -> bool:
        path = path or self.ckpt_dir / "last.pt"
        if not path.exists():
            return False
        ck = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck["scaler"]:  # a run started without AMP saved an empty state, which an enabled scaler refuses
            self.scaler.load_state_dict(ck["scaler"])
        self.state = ck["state"]
        ranks = ck.get("rng_ranks")
        rng = ranks[self.rank] if ranks and len(ranks) == self.world else ck["rng"]  # this rank's own states
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        cuda = rng.get("cuda")
        if cuda is not None and self.device.type == "cuda":
            if isinstance(cuda, (list, tuple)):  # checkpoints before session 25 held every device's state
                cuda = cuda[self.device.index or 0] if len(cuda) > (self.device.index or 0) else None
            if cuda is not None:
                torch.cuda.set_rng_state(cuda.cpu(), self.device)
        return True

    def _log(self, row: dict) -> None:
        if self.rank == 0:
            with open(self.run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")

    # ---- fit ----------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.load_checkpoint():
            if self.rank == 0:  # the log is what the checkpoint knows: drop rows written after it
                atomic_write_text(self.run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.state["history"]))
            last = self.state["history"][-1] if self.state["history"] else {}
            if last.get("stopped_by_time_limit") and self.state["bad_evals"] < self.cfg.patience:
                self.state["stopped"] = False  # a time-limited run goes on (elapsed_s counts on: raise the limit)
        elif self.rank == 0:  # a fresh run starts a fresh log, and never reports an earlier run's weights
            for old in (self.run_dir / "log.jsonl", self.ckpt_dir / "best.pt", self.ckpt_dir / "last.pt"):
                old.unlink(missing_ok=True)
        cfg, st = self.cfg, self.state
        t0 = time.perf_counter() - st["elapsed_s"]
        metric = cfg.early_stop_metric
        while st["epoch"] < cfg.epochs and not st["stopped"]:
            epoch = st["epoch"]
            loader, _ = self.task.train_loader(epoch, st["step_in_epoch"], self.rank, self.world)
            n_steps = self.task.steps_per_epoch()
            n_steps -= n_steps % self.world  # every DDP rank must take the same number of steps
            if n_steps == 0:
                raise ValueError("no training batches: the training set is empty"
                                 + (f" or smaller than one batch per rank ({self.world} ranks)" if self.world > 1 else ""))
            bar = tqdm(total=n_steps, initial=st["step_in_epoch"], desc=f"epoch {epoch}", leave=False,
                       disable=self.rank != 0 or not _progress_enabled())
            self.model.train()
            losses = st.setdefault("epoch_losses", [])
            for step, batch in enumerate(loader, start=st["step_in_epoch"]):
                if step >= n_steps:
                    break
                if step % self.world != self.rank:  # DDP: ranks take turns over the epoch's batches
                    st["step_in_epoch"] = step + 1
                    continue
                loss = self._train_step(batch)
                losses.append(loss)
                # the next round of ranks: the other ranks have taken this round's other steps by the time a
                # checkpoint is read back (step + 1 made rank 1 redo its step, one more than rank 0: a hang)
                st["step_in_epoch"] = step - step % self.world + self.world
                st["global_step"] += 1
                bar.update(self.world if self.world > 1 else 1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if cfg.checkpoint_every_steps and st["global_step"] % cfg.checkpoint_every_steps == 0:
                    st["elapsed_s"] = time.perf_counter() - t0
                    self.save_checkpoint()
                if st["global_step"] == _KILL_AT_STEP:  # fault injection for the resume test
                    os.kill(os.getpid(), signal.SIGKILL)
            bar.close()
            row = {"epoch": epoch, "step": st["global_step"], "train_loss": float(np.mean(losses)) if losses else None,
                   "lr": self.scheduler.get_last_lr()[0]}
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                valid = self.task.evaluate(self.model, "valid", self.device, self.rank, self.world)
                row["valid"] = valid
                if metric not in valid:
                    raise ValueError(f"early_stop_metric {metric!r} is not computed; metrics are {sorted(valid)}")
                if not math.isfinite(valid[metric]):  # NaN never beats the best: no best.pt, the last weights reported
                    raise ValueError(f"validation {metric} is {valid[metric]} at epoch {epoch} ({valid}): e.g. AUC "
                                     "on a validation set of one class, or a diverged model; the run stops here")
                if valid[metric] > st["best"]:
                    st.update(best=valid[metric], best_epoch=epoch, bad_evals=0)
                    if self.rank == 0:
                        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                        _atomic_torch_save(self.model.state_dict(), self.ckpt_dir / "best.pt")
                else:
                    st["bad_evals"] += 1
                    if st["bad_evals"] >= cfg.patience:
                        st["stopped"] = True
            st["elapsed_s"] = row["elapsed_s"] = time.perf_counter() - t0
            if cfg.time_limit_s is not None and self._any_rank(st["elapsed_s"] > cfg.time_limit_s):
                st["stopped"] = True
                row["stopped_by_time_limit"] = True
            st["history"].append(row)
            st.update(epoch=epoch + 1, step_in_epoch=0, epoch_losses=[])
            self._log(row)
            self.save_checkpoint()
            if self.rank == 0 and _progress_enabled():
                v = row.get("valid", {})
                loss = "n/a" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
                tqdm.write(f"epoch {epoch:3d}  loss {loss}  {metric} {v.get(metric, float('nan')):.4f}"
                           f"  best {st['best']:.4f}@{st['best_epoch']}  {row['elapsed_s']:.0f}s")
        return st

    def _any_rank(self, flag: bool) -> bool:
        """True when ``flag`` holds on any DDP rank: ranks started at different times must stop together."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _train_step(self, batch: dict[str, torch.Tensor]) -> float:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            loss = self.step_module(batch)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())


def _progress_enabled() -> bool:
    return os.environ.get("BEHAVIORSEQ_PROGRESS", "1") != "0"
