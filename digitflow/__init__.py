"""digitflow core: MNIST data, preprocessing, models, training, evaluation and the CLI.

The core never imports `flows`, `beam_jobs` or `model_store`; they build on it.
"""
