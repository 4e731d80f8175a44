"""Print pyproject.toml's [project].dependencies as a pip requirements list (one source of truth).

Usage: python3 pyproject_requirements.py PYPROJECT [--gpu]
  --gpu  swap the `tensorflow` requirement for `tensorflow[and-cuda]` (same version pin), which pulls
         the CUDA/cuDNN runtime wheels TensorFlow needs to use an NVIDIA GPU.
Used by the Dockerfile's dependency stage; needs only the standard library (Python >= 3.11 for tomllib).
"""

import re
import sys

import tomllib


def requirements(pyproject: str, gpu: bool = False) -> list[str]:
    with open(pyproject, "rb") as fh:
        deps = list(tomllib.load(fh)["project"]["dependencies"])
    if gpu:
        # Plain `tensorflow` only: not `tensorflow-io`, not an existing `tensorflow[extra]`.
        tf = re.compile(r"^tensorflow(?=\s*(?:[=<>!~;]|$))", re.IGNORECASE)
        swapped = [tf.sub("tensorflow[and-cuda]", d, count=1) for d in deps]
        if swapped == deps:
            sys.exit("pyproject_requirements: no plain `tensorflow` requirement to swap for --gpu")
        deps = swapped
    return deps


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    print("\n".join(requirements(args[0], gpu="--gpu" in args[1:])))
