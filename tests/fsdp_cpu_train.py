"""`workbench train` under FSDP2 on CPU processes, for tests:  torchrun --nproc_per_node 2 tests/fsdp_cpu_train.py train ...

accelerate shards with FSDP only on accelerators (on CPU it reports MULTI_CPU and uses DDP). FSDP2 itself runs on
CPU with gloo, so this launcher switches accelerate's state to its FSDP2 path after `Accelerator()` is built: the
trainer's sharded code (gathered copies, EMA, checkpoints, resume) then runs here as it would on GPUs.
"""

from __future__ import annotations

import sys

import accelerate
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_init = accelerate.Accelerator.__init__


def _fsdp2_init(self, *args, **kwargs) -> None:
    _init(self, *args, **kwargs)
    # as configs/accelerate/fsdp.yaml asks for
    self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True,
        state_dict_type="FULL_STATE_DICT", cpu_ram_efficient_loading=False,
    )
    self.state.distributed_type = DistributedType.FSDP


accelerate.Accelerator.__init__ = _fsdp2_init

if __name__ == "__main__":
    from workbench.cli import main

    sys.exit(main())
