"""The jitted sampler: prefill + `lax.while_loop` decode over a KV cache, with log-probabilities."""

from rzero_jax.sampling.methods import Greedy, Sampling, make_method
from rzero_jax.sampling.sampler import SampleOutput, generate

__all__ = ["Greedy", "SampleOutput", "Sampling", "generate", "make_method"]
