"""Data parallelism across processes (torchrun / accelerate launch): gloo on CPU, NCCL on CUDA.

Every process computes its share of the global batch; the gradients are summed across processes
before the optimizer step, which then runs identically everywhere. With one process it does nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Distributed:
    torch: Any
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started: bool = False

    @classmethod
    def from_environment(cls, torch: Any) -> Distributed:
        """The process's place in the job, from the variables torchrun and accelerate set."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        return cls(torch, rank, world, local)

    def start(self, device: str) -> None:
        if self.world_size == 1:
            return
        dist = self.torch.distributed
        if device.startswith("cuda"):
            self.torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
            self.started = True

    def stop(self) -> None:
        if self.started:
            self.torch.distributed.destroy_process_group()
            self.started = False

    def barrier(self) -> None:
        if self.world_size > 1:
            self.torch.distributed.barrier()

    def barrier_if_checkpoint(self, every: int, step: int) -> None:
        # The other processes wait while rank 0 writes a checkpoint, so none runs ahead of it.
        if every and step % every == 0:
            self.barrier()

    def reduce_gradients(
        self, parameters: list[Any], loss: float, tokens: int
    ) -> tuple[float, int]:
        """Sum gradients (and the step's loss and token count) over all processes."""
        if self.world_size == 1:
            return loss, tokens
        torch = self.torch
        dist = torch.distributed
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        # One flat buffer: a single all-reduce instead of one per LoRA matrix.
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for parameter, grad in zip(parameters, grads):
            count = grad.numel()
            parameter.grad = flat[offset : offset + count].view_as(grad).clone()
            offset += count
        totals = torch.tensor([loss, float(tokens)], dtype=torch.float64, device=flat.device)
        dist.all_reduce(totals)
        return float(totals[0]), int(totals[1])
