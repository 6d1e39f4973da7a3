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
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Distributed:
    torch: Any
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    fsdp: bool = False  # asked for; `sharded` says whether it applies (it needs two processes)
    started: bool = False
    # The ranks that built the model on the meta device and got their shards from rank 0.
    meta_ranks: list[int] = field(default_factory=list)

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
    def wrap_model(self, module: Any, layers: Sequence[Any] = (), *, device: str = "cpu") -> Any:
        """MODULE ready for training here: as it is (one process), under DDP, or under FSDP2 with
        each of LAYERS (the decoder layers) sharded as a unit and the rest sharded at the root.

        Under FSDP only rank 0 needs real weights: the other ranks may build MODULE on the meta
        device (no memory), and get their shards, on DEVICE, from rank 0's (see `_shard`).
        Its forward must compute the loss, so that DDP's and FSDP's hooks see every pass."""
        if self.world_size == 1:
            return module
        torch = self.torch
        if self.sharded:
            return self._shard(module, layers, device)
        cuda = next(module.parameters()).device.type == "cuda"
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[self.local_rank] if cuda else None
        )

    def _shard(self, module: Any, layers: Sequence[Any], device: str) -> Any:
        """FSDP2 over MODULE, every weight and buffer then equal to rank 0's.

        Rank 0 holds the whole model; the others may hold its shape alone (meta tensors). After
        `fully_shard` those materialise only their shards (`to_empty`), and rank 0 sends each
        tensor in turn (set_model_state_dict with broadcast_from_rank0), so no rank but 0 ever
        holds every weight at once. The non-persistent buffers (a rotary embedding's inv_freq)
        are in no state dict; they are sent from rank 0 as they are. That rank 0's values reach
        everyone also makes random initialisations (LoRA's) the same on every rank."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        from torch.distributed.fsdp import fully_shard

        on_meta = any(p.is_meta for p in module.parameters())
        if self.is_main and on_meta:
            raise ValueError("rank 0 must hold the model's weights, not meta tensors")
        # The whole state stays referenced on rank 0 until it has been sent.
        full = module.state_dict() if self.is_main else {}
        for layer in layers:
            fully_shard(layer)
        fully_shard(module)
        if on_meta:
            module.to_empty(device=device)
        set_model_state_dict(
            module, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        )
        del full
        for buffer in module.buffers():
            self.torch.distributed.broadcast(buffer, src=0)
        self.meta_ranks = [rank for rank, meta in enumerate(self.gather(on_meta)) if meta]
        return module

    def gather(self, value: Any) -> list[Any]:
        """VALUE from every process, in rank order (a picklable object)."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        self.torch.distributed.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's VALUE (a picklable object) on every process."""
        if self.world_size == 1:
            return value
        box = [value if self.is_main else None]
        self.torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

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
