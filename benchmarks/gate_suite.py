"""What the promotion gate's robustness suite says of a model, and what it costs a nightly.

    .venv/bin/python benchmarks/gate_suite.py [--model REF] [--images 4200]

REF is a model-store reference (default `production`) or a path to a .keras file. Prints the
model's MNIST test accuracy, its suite accuracy with its weakest styles, and the seconds spent
loading (or building) the suite and scoring it, as the nightly does.
"""

from __future__ import annotations

import argparse
import time

from digitflow.data import load_mnist, model_input
from digitflow.models import load_model
from digitflow.robustness import DEFAULT_COUNT, load_suite, score
from model_store import ModelStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="production", help="store reference or .keras path")
    parser.add_argument("--images", type=int, default=DEFAULT_COUNT, help="suite size")
    args = parser.parse_args()

    resolved = ModelStore().resolve(args.model)
    model = load_model(resolved.local_path)
    mnist = load_mnist()
    started = time.monotonic()
    suite = load_suite(mnist, args.images)
    loaded = time.monotonic() - started
    started = time.monotonic()
    result = score(model, suite)
    scored = time.monotonic() - started
    predicted = model.predict(model_input(mnist.x_test), batch_size=512, verbose=0).argmax(1)
    weakest = sorted(result.per_style.items(), key=lambda item: item[1])[:3]
    print(f"model {resolved.uri} (version {resolved.version})")
    print(f"MNIST test {(predicted == mnist.y_test).mean():.2%}, suite {result.accuracy:.2%}")
    print("weakest styles: " + ", ".join(f"{name} {value:.1%}" for name, value in weakest))
    print(f"suite of {len(suite):,} loaded in {loaded:.2f} s, scored in {scored:.2f} s")


if __name__ == "__main__":
    main()
