"""The engine: sampling thoughts and scoring what follows them, fast.

- `thought`: what a thought is (template, sampling settings, `Thought`), where it ends, which tokens end the text;
- `prefix_cache`: the document's key/value cache shared by every (position, thought) row;
- `token_sampling`: the LM head in vocabulary chunks, and temperature / top-p sampling from it;
- `sampler`: `ThoughtSampler`, every position's G thoughts decoded in one batch (transformers);
- `scorer`: no-think scores and teacher-forced continuations on the shared prefix;
- `vllm_backend`: the same sampler on a vLLM engine;
- `backends`: `make_sampler(policy, template, config, backend=...)` chooses between them.

Modules import each other by full name; this file imports nothing, so `workbench.engine.thought` stays light.
"""
