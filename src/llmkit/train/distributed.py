"""Training on several processes (torchrun): DDP replicates the model, FSDP2 shards it.

The public surface, shared by every training loop (fine-tuning, pretraining):

    dist = Distributed.from_environment(torch, fsdp=False)
    dist.setup(device)                      # joins the process group (gloo on CPU, NCCL on CUDA)
    wrapped = dist.wrap_model(module, layers)
    with dist.gradient_sync(wrapped, last_micro_batch): loss.backward()
    loss, tokens = dist.reduce_sum([loss, tokens])
    dist.is_main, dist.barrier(), dist.barrier_if_checkpoint(every, step), dist.teardown()

With one process every call is a no-op and `wrap_model` returns the module as it is.

The loss a process backpropagates must be its share of the *global* batch's sum, divided by the
global batch's target count: DDP and FSDP average gradients over processes, so `gradient_scale`
(the process count) undoes the averaging and the result is the gradient of one mean, exactly as in
one process. Under FSDP2 (`fully_shard` on every decoder layer, then on the whole module) each
process keeps only its slice of the weights, gradients and optimizer state; a layer's full weights
exist only while it runs. Every process must then take part in every forward pass, evaluation and
state-dict call, which is why the helpers here are called on all ranks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Distributed:
    torch: Any
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    fsdp: bool = False  # asked for; `sharded` says whether it applies (it needs two processes)
    started: bool = False

    @classmethod
    def from_environment(cls, torch: Any, *, fsdp: bool = False) -> Distributed:
        """The process's place in the job, from the variables torchrun and accelerate set."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        return cls(torch, rank, world, local, fsdp)

    @property
    def is_main(self) -> bool:
        """Rank 0, which writes metrics, checkpoint metadata and exports for every process."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.fsdp and self.world_size > 1

    @property
    def gradient_scale(self) -> int:
        """What to multiply a process's loss by so that averaged gradients equal summed ones."""
        return self.world_size

    @property
    def mode(self) -> str:
        if self.world_size == 1:
            return "single"
        return "fsdp" if self.sharded else "ddp"

    def setup(self, device: str) -> None:
        if self.world_size == 1:
            return
        dist = self.torch.distributed
        if device.startswith("cuda"):
            self.torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
            self.started = True

    def teardown(self) -> None:
        if self.started:
            self.torch.distributed.destroy_process_group()
            self.started = False

    def barrier(self) -> None:
        if self.world_size > 1:
            self.torch.distributed.barrier()

    def barrier_if_checkpoint(self, every: int, step: int) -> None:
        """The barrier after a step that rank 0 checkpoints, so no process runs ahead of it."""
        if every and step % every == 0:
            self.barrier()

    def reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over all processes (one all-reduce)."""
        if self.world_size == 1:
            return [float(v) for v in values]
        totals = self.torch.tensor([float(v) for v in values], dtype=self.torch.float64)
        self.torch.distributed.all_reduce(totals)
        return [float(v) for v in totals]

    def reduce_mean(self, value: float) -> float:
        return self.reduce_sum([value])[0] / self.world_size

    # ---- the model ---------------------------------------------------------------------------
    def wrap_model(self, module: Any, layers: Sequence[Any] = ()) -> Any:
        """MODULE ready for training here: as it is (one process), under DDP, or under FSDP2 with
        each of LAYERS (the decoder layers) sharded as a unit and the rest sharded at the root.

        Its forward must compute the loss, so that DDP's and FSDP's hooks see every pass."""
        if self.world_size == 1:
            return module
        torch = self.torch
        if self.sharded:
            from torch.distributed.fsdp import fully_shard

            for layer in layers:
                fully_shard(layer)
            fully_shard(module)
            return module
        cuda = next(module.parameters()).device.type == "cuda"
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[self.local_rank] if cuda else None
        )

    def unwrap(self, wrapped: Any) -> Any:
        """The module inside a DDP wrapper (FSDP2 shards modules in place: nothing to unwrap)."""
        return wrapped.module if self.mode == "ddp" else wrapped

    @contextlib.contextmanager
    def gradient_sync(self, wrapped: Any, enabled: bool) -> Iterator[None]:
        """Backward passes inside skip the gradient exchange unless ENABLED (the last micro-batch
        of a step): gradient accumulation then costs one exchange per step, not per micro-batch."""
        if self.mode == "ddp" and not enabled:
            with wrapped.no_sync():
                yield
        elif self.mode == "fsdp":
            wrapped.set_requires_gradient_sync(enabled)
            yield
        else:
            yield

    # ---- state, for checkpoints and export -----------------------------------------------------
    def sharded_state(self, wrapped: Any, optimizer: Any) -> dict[str, Any]:
        """This process's shards of the weights and optimizer state, as DCP saves and loads them
        (trainable weights only: the frozen base is reloaded from the store on resume)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(ignore_frozen_params=True)
        weights, optim = get_state_dict(wrapped, optimizer, options=options)
        return {"model": weights, "optim": optim}

    def load_sharded_state(self, wrapped: Any, optimizer: Any, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(
            wrapped,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optim"],
            options=StateDictOptions(ignore_frozen_params=True, strict=False),
        )

    def full_state(self, wrapped: Any) -> dict[str, Any] | None:
        """The whole model's weights gathered onto rank 0 (on the CPU); None on the others.

        Every process must call it: each contributes its shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(wrapped, options=options)
        return state if self.is_main else None
