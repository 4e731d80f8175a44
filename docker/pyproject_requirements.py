"""Print pyproject.toml's [project].dependencies as a pip requirements list (one source of truth).

Usage: python3 pyproject_requirements.py PYPROJECT [--cpu | --gpu]
  --cpu  swap the `tensorflow` requirement for `tensorflow-cpu` (same version pin): the same TensorFlow
         without the CUDA kernels, about half the size; and add the `litert` extra, so CATDOG_RUNTIME=auto
         serves the committed LiteRT int8 model (2.4-2.8x TensorFlow's throughput here, README "Runtimes").
  --gpu  swap it for `tensorflow[and-cuda]` (same version pin), which pulls the CUDA/cuDNN runtime
         wheels TensorFlow needs to use an NVIDIA GPU.
Used by scripts/lock.sh to make requirements/cpu.lock and gpu.lock; standard library only (tomllib).
"""

import re
import sys

import tomllib

SWAPS = {"cpu": "tensorflow-cpu", "gpu": "tensorflow[and-cuda]"}
# Optional extras an image adds to the serving dependencies. The GPU image keeps TensorFlow as its
# only runtime (LiteRT's XNNPACK is a CPU path).
EXTRAS = {"cpu": ["litert"], "gpu": []}


def requirements(pyproject: str, variant: str | None = None) -> list[str]:
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    deps = list(project["dependencies"])
    if variant is not None:
        # Plain `tensorflow` only: not `tensorflow-io`, not an existing `tensorflow[extra]`.
        tf = re.compile(r"^tensorflow(?=\s*(?:[=<>!~;]|$))", re.IGNORECASE)
        swapped = [tf.sub(SWAPS[variant], d, count=1) for d in deps]
        if swapped == deps:
            sys.exit(f"pyproject_requirements: no plain `tensorflow` requirement to swap for --{variant}")
        deps = swapped + [d for extra in EXTRAS[variant] for d in project["optional-dependencies"][extra]]
    return deps


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    flags = [a.removeprefix("--") for a in args[1:]]
    unknown = [f for f in flags if f not in SWAPS]
    if unknown or len(flags) > 1:
        sys.exit(__doc__)
    print("\n".join(requirements(args[0], flags[0] if flags else None)))
