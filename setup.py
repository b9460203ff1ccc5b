"""rzero_jax: JAX/TPU-native self-play reasoning training (R-Zero, Absolute Zero)."""

from setuptools import find_packages, setup

setup(
    name="rzero_jax",
    version="0.1.0",
    description="JAX/TPU-native R-Zero and Absolute Zero self-play reasoning training",
    packages=find_packages(include=["rzero_jax", "rzero_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Tested on jax 0.10.2 (Python 3.11) and on the newest release, 0.12.0.1 (Python 3.12),
        # each with the newest flax 0.12.x, optax 0.2.x and orbax-checkpoint 0.12.x it resolves to
        # (releases after jax 0.10.2 / flax 0.12.8 need Python 3.12: 3.11 resolves to those).
        "jax>=0.10.0,<0.13",
        "flax>=0.12.5,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.12.0,<0.13",
        "numpy>=2.0,<3",
        "ml_dtypes>=0.5",
        "safetensors>=0.5,<0.9",
        "tokenizers>=0.22,<0.24",
        "transformers>=5.0,<6",
        "jinja2>=3.1",  # chat templates (transformers needs it; only torch pulled it in before)
        "absl-py>=2.1,<3",
        "ml_collections>=1.0,<2",
        "tensorboardX>=2.6,<3",
        "scipy>=1.13,<2",
        "sympy>=1.13,<1.15",
        "math-verify[antlr4_13_2]>=0.8,<0.10",
        # Benchmark loading for rzero_jax.eval (hub ids and parquet files).
        "datasets>=3.0,<6",
        "matplotlib>=3.8,<4",  # figures of `python -m rzero_jax.report`
    ],
    extras_require={
        # PyTorch is only the test-time reference (the local CPU wheel, Python 3.11); on newer
        # Pythons PyPI serves only the multi-GB CUDA build, so tests that need it are skipped there.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4",
                 "torch==2.13.0; python_version < '3.12'", "nltk>=3.9,<4",
                 "pyink>=24.3,<27",
                 "nbformat>=5.9,<6", "nbclient>=0.10,<0.12",
                 "ipykernel>=6.29,<8"],
        # Optional Weights & Biases logging (config.wandb_project).
        "wandb": ["wandb>=0.19"],
        # The documentation site (`make docs`): Sphinx + MyST Markdown + the book theme.
        "docs": ["sphinx>=7.2,<9", "myst-parser>=3,<5", "sphinx-book-theme>=1.1,<2"],
    },
)
