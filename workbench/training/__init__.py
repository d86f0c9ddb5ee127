"""Training runs: configs, the trainer loop and the trainers built on it.

- `config` (the fields every trainer shares) and one `*_config.py` beside each `*_trainer.py`: rlp, ntp, warmstart;
- `configs`: YAML into the right config class (the registry of trainer kinds, `CONFIGS`);
- `trainer`: the loop (accelerate, checkpoints, evaluation, metrics), `rlp_trainer`, `ntp_trainer`, `warmstart_trainer`;
- loss pieces: `rl_math` (advantages, clipped surrogate, EMA), `policy_logps` (thought-token log-probs), `flops`;
- `checkpoints`, `sharding` (FSDP2 helpers);
- `warm_start_cache` / `warm_start`: the cached thinking-ready model (`warm:BASE`);
- `launch`: `train(config)` in this process, `start_background(config)` as a process.

Modules import each other by full name; this file imports nothing.
"""
