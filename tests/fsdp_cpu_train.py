"""`workbench train` under FSDP2 on CPU processes, for tests:  torchrun --nproc_per_node 2 tests/fsdp_cpu_train.py train ...

accelerate shards with FSDP only on accelerators (on CPU it reports MULTI_CPU and uses DDP). FSDP2 itself runs on
CPU with gloo, so this launcher switches accelerate's state to its FSDP2 path after `Accelerator()` is built: the
trainer's sharded code (gathered copies, EMA, checkpoints, resume) then runs here as it would on GPUs.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import accelerate
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_init = accelerate.Accelerator.__init__


def _fsdp2_init(self, *args, **kwargs) -> None:
    _init(self, *args, **kwargs)
    # as configs/accelerate/fsdp.yaml asks for
    self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        reshard_after_forward=True,
        state_dict_type="FULL_STATE_DICT",
        cpu_ram_efficient_loading=False,
    )
    self.state.distributed_type = DistributedType.FSDP


accelerate.Accelerator.__init__ = _fsdp2_init


def _count_gathers(path: str) -> None:
    """Count whole-policy gathers (the trainer should do one per optimizer step); written to PATH.RANK at exit."""
    import workbench.training.sharding
    import workbench.training.trainer

    calls = [0]
    gather = workbench.training.sharding.full_named_tensors

    def counted(model):
        calls[0] += 1
        return gather(model)

    workbench.training.sharding.full_named_tensors = workbench.training.trainer.full_named_tensors = counted
    atexit.register(lambda: Path(f"{path}.{os.environ.get('RANK', '0')}").write_text(str(calls[0])))


if __name__ == "__main__":
    if os.environ.get("WORKBENCH_COUNT_GATHERS"):
        _count_gathers(os.environ["WORKBENCH_COUNT_GATHERS"])
    from workbench.cli import main

    sys.exit(main())
