"""lola-stream: LLM-assisted bandits (LOLA) for content experiments on Kafka streams.

Subpackages (kept top-level in the repository, installed under this namespace):

- ``lola.kernels``: Numba policy kernels over struct-of-arrays bandit state.
- ``lola.stream``: the Kafka worker, broker launcher, load generator.
- ``lola.export``: LoRA fine-tuning, ONNX export and the torch-free prior server.
- ``lola.bench``: benchmarks.
- ``lola.replay``: the LOLA paper replay (``lola replay``).
- ``lola.demo``: ``lola demo``, the main job end to end.
"""

__version__ = "0.1.0"
