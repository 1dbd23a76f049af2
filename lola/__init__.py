"""lola-stream: LLM-assisted bandits (LOLA) for content experiments on Kafka streams.

Subpackages (kept top-level in the repository, installed under this namespace):

- ``lola.kernels``: Numba policy kernels over struct-of-arrays bandit state.
- ``lola.stream``: the Kafka worker, broker launcher, load generator.
- ``lola.export``: LoRA fine-tuning, ONNX export and the torch-free prior server.
- ``lola.bench``: benchmarks and the paper replay.
"""

__version__ = "0.1.0"
