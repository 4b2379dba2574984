"""Small image-classification datasets held entirely as ``uint8`` tensors, for proxy training.

Decoding once into ``[N, C, H, W]`` tensors that a trainer moves to the GPU and indexes there
avoids the input-pipeline overhead that dominates training many small networks. Nothing is
downloaded: Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package, everything else
from a path the user gives (``parse_dataset``: ``fashion-mnist``, ``idx:PATH``,
``imagefolder:PATH``, ``cifar10:PATH``). CIFAR-10 pickles are read with a restricted unpickler.
The validation split is carved with its own seed, so every architecture sees the same images.
Dataset names, layouts and split rules: docs/evaluation.md.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from search_spaces.errors import ConfigError, UnknownNameError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
DATASET_KINDS = ("fashion-mnist", "idx", "imagefolder", "cifar10")

# Statistics of the full training sets, so that a subset normalises exactly like the full set.
_KNOWN_STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DatasetError(ConfigError):
    """A dataset name, folder or file is wrong; the message says how to fix it."""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset name: what to read and from where.

    Attributes:
        kind: one of ``DATASET_KINDS``.
        path: the folder (None for the packaged Fashion-MNIST).
        image_size: imagefolder only: every image is resized to this at load time.
    """

    kind: str
    path: str | None = None
    image_size: int | None = None  # imagefolder only: every image is resized to this at load time

    @property
    def name(self) -> str:
        """The name the spec was parsed from (``kind`` or ``kind:path``)."""
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_dataset(name: "str | DatasetSpec") -> DatasetSpec:
    """Parse a dataset name.

    Args:
        name: ``"fashion-mnist"``, ``"idx:PATH"``, ``"imagefolder:PATH"``, ``"cifar10:PATH"``,
            or a :class:`DatasetSpec` (returned as is).

    Raises:
        DatasetError: empty name or a kind without its folder.
        UnknownNameError: an unknown kind.

    Example:
        >>> parse_dataset("cifar10:/data/cifar-10-batches-py").kind
        'cifar10'
    """
    if isinstance(name, DatasetSpec):
        return name
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"A dataset name must be a non-empty string, got {name!r}. Use one of: fashion-mnist, idx:PATH, imagefolder:PATH, cifar10:PATH.")
    name = name.strip()
    kind, sep, path = name.partition(":")
    kind = kind.lower()
    if kind in ("fashion-mnist", "fashion_mnist", "fashionmnist", "fmnist"):
        return DatasetSpec("fashion-mnist", path or None)
    if kind in ("idx", "imagefolder", "cifar10"):
        if not path:
            raise DatasetError(f"Dataset {name!r} needs a folder: write it as '{kind}:/path/to/folder'.")
        return DatasetSpec(kind, os.path.expanduser(path))
    raise UnknownNameError("dataset", kind if sep else name, [k for k in DATASET_KINDS])


@dataclass
class ImageData:
    """Train/val/test images as ``uint8 [N, C, H, W]`` tensors with ``int64`` labels.

    Images stay ``uint8`` (4x smaller than float) until :meth:`normalize`, which a trainer calls
    per batch on its device. ``mean``/``std`` are per-channel statistics of the full training
    split; ``classes`` are class names when the source has them.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple
    std: tuple
    classes: list = field(default_factory=list)

    @property
    def in_chans(self) -> int:
        """Image channels."""
        return int(self.train_x.shape[1])

    @property
    def resolution(self) -> int:
        """Image side length in pixels."""
        return int(self.train_x.shape[-1])

    def sizes(self) -> dict:
        """Images per split: ``{"train", "val", "test"}``."""
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}

    def nbytes(self) -> int:
        """Memory held by all tensors, in bytes."""
        return sum(t.numel() * t.element_size() for t in (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y))

    def to(self, device) -> "ImageData":
        """A copy with every tensor on ``device``.

        Args:
            device: a torch device or its name.
        """
        mv = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return ImageData(self.name, mv(self.train_x), mv(self.train_y), mv(self.val_x), mv(self.val_y), mv(self.test_x), mv(self.test_y),
                         self.num_classes, self.mean, self.std, self.classes)

    def normalize(self, x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """uint8 batch -> float, scaled to [0, 1] and standardised per channel.

        Args:
            x: ``uint8 [B, C, H, W]`` images.
            dtype: floating dtype of the result.
        """
        mean = torch.tensor(self.mean, device=x.device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=dtype).view(1, -1, 1, 1)
        return (x.to(dtype) / 255.0 - mean) / std


# ---------------------------------------------------------------------------------------------
# IDX (MNIST format)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_maybe_gz(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return f.read()


def read_idx(path: "str | Path") -> np.ndarray:
    """One IDX file (gzipped or not) -> numpy array of its declared shape and type.

    Args:
        path: the file.

    Raises:
        DatasetError: bad magic number, truncated header or a size that does not match it.
    """
    path = Path(path)
    raw = _open_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() if raw else 'empty'}).")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header.")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(shape)) if ndim else 1
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise DatasetError(f"{path}: IDX header declares shape {shape} ({count * dtype.itemsize} bytes) but the file holds {len(body)} bytes.")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


_IDX_PATTERNS = {
    "train_images": r"^train-images[-.]idx3-ubyte(\.gz)?$",
    "train_labels": r"^train-labels[-.]idx1-ubyte(\.gz)?$",
    "test_images": r"^(t10k|test)-images[-.]idx3-ubyte(\.gz)?$",
    "test_labels": r"^(t10k|test)-labels[-.]idx1-ubyte(\.gz)?$",
}


def find_idx_files(folder: "str | Path") -> dict[str, Path]:
    """The four MNIST-format files of a folder, by role (train/test images/labels).

    Args:
        folder: the folder; ``.gz`` and uncompressed names are both recognised.

    Raises:
        DatasetError: the folder is missing or lacks one of the four files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"IDX folder {str(folder)!r} does not exist or is not a directory.")
    names = sorted(p.name for p in folder.iterdir())
    found, missing = {}, []
    for role, pat in _IDX_PATTERNS.items():
        hits = [n for n in names if re.match(pat, n)]
        if not hits:
            missing.append(role)
        else:
            hits.sort(key=lambda n: n.endswith(".gz"))  # prefer the uncompressed copy when both exist
            found[role] = folder / hits[0]
    if missing:
        raise DatasetError(
            f"IDX folder {str(folder)!r} lacks {', '.join(missing)}. Expected the four MNIST-format files "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz)."
        )
    return found


def _load_idx_folder(folder: "str | Path"):
    f = find_idx_files(folder)
    out = []
    for img_role, lab_role in (("train_images", "train_labels"), ("test_images", "test_labels")):
        x, y = read_idx(f[img_role]), read_idx(f[lab_role])
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3):  # N, H, W, C
            x = x.transpose(0, 3, 1, 2)
        else:
            raise DatasetError(f"{f[img_role]}: expected images of shape [N, H, W] or [N, H, W, C], got {x.shape}.")
        if x.dtype != np.uint8:
            raise DatasetError(f"{f[img_role]}: expected uint8 pixels, got {x.dtype}.")
        if y.ndim != 1 or len(y) != len(x):
            raise DatasetError(f"{f[lab_role]}: expected {len(x)} labels in one dimension, got shape {y.shape}.")
        out += [x, y.astype(np.int64)]
    return out


def fashion_mnist_dir() -> Path:
    """Where the Debian package put Fashion-MNIST (or ``$AUTOBUILD_FASHION_MNIST``)."""
    candidates = [os.environ["AUTOBUILD_FASHION_MNIST"]] if os.environ.get("AUTOBUILD_FASHION_MNIST") else []
    candidates += list(FASHION_MNIST_DIRS)
    candidates += _dpkg_listed_dirs("dataset-fashion-mnist")
    for c in candidates:
        p = Path(c)
        if p.is_dir() and any(re.match(_IDX_PATTERNS["train_images"], q.name) for q in p.iterdir()):
            return p
    raise DatasetError(
        "Fashion-MNIST was not found (looked in " + ", ".join(dict.fromkeys(candidates)) + "). Install it with `make setup` or "
        "`sudo apt-get install dataset-fashion-mnist`, set AUTOBUILD_FASHION_MNIST to a folder holding its four IDX files, "
        "or pass the folder as 'idx:/path/to/folder'."
    )


def _dpkg_listed_dirs(package: str) -> list[str]:
    """Folders of the package's files from dpkg's own file list, read directly (no subprocess)."""
    lst = Path(f"/var/lib/dpkg/info/{package}.list")
    if not lst.is_file():
        return []
    dirs = []
    for line in lst.read_text().splitlines():
        if re.match(_IDX_PATTERNS["train_images"], os.path.basename(line)):
            dirs.append(os.path.dirname(line))
    return dirs


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python pickles


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers, bytes/str/numbers and numpy arrays.

    ``find_class`` is the single place where a pickle can reach code; allowing only the globals
    numpy needs to rebuild an ``ndarray`` (plus ``_codecs.encode``, which protocol-2 pickles use
    for bytes) means a crafted file cannot import ``os.system`` & co.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1"):
        # a pure function, harmless to allow
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        """Resolve only the globals in ``ALLOWED``; refuse everything else.

        Args:
            module: the global's module.
            name: the global's name.
        """
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}: only dicts, lists, bytes and numpy arrays are allowed")


def restricted_load(data: bytes):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (bytes keys kept as bytes).

    Args:
        data: the pickle's bytes.
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _cifar_batch(path: Path):
    try:
        d = restricted_load(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({e}).") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(d).__name__}.")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or not ("labels" in d or "fine_labels" in d):
        raise DatasetError(f"{path}: missing 'data' or 'labels' entries (keys: {sorted(d)}).")
    x = np.asarray(d["data"], dtype=np.uint8)
    y = np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64)
    if x.ndim != 2 or x.shape[1] % 3 or len(x) != len(y):
        raise DatasetError(f"{path}: 'data' has shape {x.shape} for {len(y)} labels; expected [N, 3*H*W].")
    side = int(round((x.shape[1] // 3) ** 0.5))
    return x.reshape(len(x), 3, side, side), y


def _load_cifar10(folder: "str | Path"):
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"CIFAR-10 folder {str(folder)!r} does not exist; point 'cifar10:PATH' at the extracted 'cifar-10-batches-py' folder.")
    train = sorted(folder.glob("data_batch_*"))
    test = folder / "test_batch"
    if not train or not test.is_file():
        raise DatasetError(f"CIFAR-10 folder {str(folder)!r} needs data_batch_1..5 and test_batch (the 'python version' of CIFAR-10).")
    parts = [_cifar_batch(p) for p in train]
    tx, ty = _cifar_batch(test)
    classes = []
    meta = folder / "batches.meta"
    if meta.is_file():
        try:
            m = restricted_load(meta.read_bytes())
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in m.get(b"label_names", m.get("label_names", []))]
        except Exception:  # class names are cosmetic
            classes = []
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), tx, ty, classes


# ---------------------------------------------------------------------------------------------
# ImageFolder


def _load_image_dir(root: Path, image_size: int | None, class_to_idx: dict | None = None):
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if class_to_idx is None:
        _, class_to_idx = find_classes(str(root))
    samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DatasetError(f"ImageFolder {str(root)!r} holds no images (expected root/<class>/<image>).")
    xs, ys, size = [], [], image_size
    for path, label in samples:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is None:
                size = im.size[0]
                if im.size[0] != im.size[1]:
                    raise DatasetError(f"{path} is {im.size[0]}x{im.size[1]}; images must be square or an image_size must be given (imagefolder datasets are resized at load time).")
            if im.size != (size, size):
                if image_size is None:
                    raise DatasetError(f"{path} is {im.size[0]}x{im.size[1]} but earlier images are {size}x{size}; give an image_size to resize all images.")
                im = im.resize((size, size), Image.BILINEAR)
            xs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
        ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64), class_to_idx


def _load_imagefolder(root: "str | Path", image_size: int | None):
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"ImageFolder root {str(root)!r} does not exist or is not a directory.")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        x, y, c2i = _load_image_dir(root / "train", image_size)
        size = image_size or x.shape[-1]
        tx, ty, _ = _load_image_dir(test_dir, size, c2i)
    else:
        x, y, c2i = _load_image_dir(root, image_size)
        tx = ty = None  # carved off in load_dataset
    classes = sorted(c2i, key=c2i.get)
    return x, y, tx, ty, classes


# ---------------------------------------------------------------------------------------------


def _subset(n_avail: int, n: int | None, what: str, name: str) -> int:
    if n is None:
        return n_avail
    if n < 1:
        raise DatasetError(f"{what} must be at least 1, got {n}.")
    if n > n_avail:
        raise DatasetError(f"{name}: {what}={n} but only {n_avail} images are available.")
    return n


@lru_cache(maxsize=4)
def _raw(spec: DatasetSpec):
    if spec.kind == "fashion-mnist":
        x, y, tx, ty = _load_idx_folder(spec.path or fashion_mnist_dir())
        classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    elif spec.kind == "idx":
        x, y, tx, ty = _load_idx_folder(spec.path)
        classes = []
    elif spec.kind == "cifar10":
        x, y, tx, ty, classes = _load_cifar10(spec.path)
    elif spec.kind == "imagefolder":
        x, y, tx, ty, classes = _load_imagefolder(spec.path, spec.image_size)
    else:  # pragma: no cover - parse_dataset guards this
        raise UnknownNameError("dataset", spec.kind, DATASET_KINDS)
    return x, y, tx, ty, classes


@lru_cache(maxsize=16)
def dataset_fingerprint(dataset: "str | DatasetSpec") -> str:
    """What identifies a dataset in an evaluator's settings: the name for the packaged dataset,
    a hash of the decoded content for path-based ones, so moving a folder keeps stored results
    valid while different files under the same path do not.

    Args:
        dataset: a dataset name or :class:`DatasetSpec`.
    """
    import hashlib

    spec = parse_dataset(dataset)
    if spec.kind == "fashion-mnist" and spec.path is None:
        return "fashion-mnist"
    h = hashlib.sha256()
    for a in _raw(spec)[:4]:
        if a is not None:
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    extra = f",image_size={spec.image_size}" if spec.image_size else ""
    return f"{spec.kind}:sha256={h.hexdigest()[:16]}{extra}"


def load_dataset(
    dataset: "str | DatasetSpec" = "fashion-mnist",
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.1,
) -> ImageData:
    """Decode a dataset and split it into train/val/test tensors.

    Args:
        dataset: a dataset name (see :func:`parse_dataset`) or :class:`DatasetSpec`.
        n_train: training images, taken after the validation images from the same seeded
            permutation, so a larger ``n_train`` is a superset of a smaller one (default: all).
        n_val: validation images carved from the training split (default: ``val_fraction`` of it).
        n_test: test images: the first of a seeded permutation of the test split (default: all).
        split_seed: seed of the split permutations (independent of any training seed).
        val_fraction: validation share when ``n_val`` is not given.

    Raises:
        DatasetError: a missing or malformed dataset, or more images asked for than it holds.

    Example:
        >>> data = load_dataset("fashion-mnist", n_train=2000, n_val=1000, n_test=1000)  # doctest: +SKIP
        >>> data.sizes(), data.in_chans, data.num_classes  # doctest: +SKIP
    """
    spec = parse_dataset(dataset)
    x, y, tx, ty, classes = _raw(spec)
    rng = np.random.default_rng(split_seed)
    if tx is None:  # single-pool ImageFolder: carve a test split first (20 %)
        perm = rng.permutation(len(x))
        n_hold = max(1, len(x) // 5)
        tx, ty, x, y = x[perm[:n_hold]], y[perm[:n_hold]], x[perm[n_hold:]], y[perm[n_hold:]]
    if n_val is None:
        n_val = max(1, int(round(len(x) * val_fraction)))
    n_val = _subset(len(x) - 1, n_val, "n_val", spec.name)
    perm = rng.permutation(len(x))
    val_idx, rest = perm[:n_val], perm[n_val:]
    n_train = _subset(len(rest), n_train, "n_train", spec.name)
    train_idx = rest[:n_train]
    n_test = _subset(len(tx), n_test, "n_test", spec.name)
    test_idx = np.sort(rng.permutation(len(tx))[:n_test])
    num_classes = int(max(y.max(), ty.max())) + 1
    if spec.kind in _KNOWN_STATS:
        mean, std = _KNOWN_STATS[spec.kind]
    else:  # statistics of the whole training split, independent of the subset drawn
        xf = x.reshape(len(x), x.shape[1], -1).astype(np.float64) / 255.0
        mean = tuple(float(v) for v in xf.mean(axis=(0, 2)))
        std = tuple(float(max(v, 1e-3)) for v in xf.std(axis=(0, 2)))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return ImageData(
        name=spec.name,
        train_x=t(x[train_idx]), train_y=t(y[train_idx]),
        val_x=t(x[val_idx]), val_y=t(y[val_idx]),
        test_x=t(tx[test_idx]), test_y=t(ty[test_idx]),
        num_classes=num_classes, mean=tuple(mean), std=tuple(std), classes=list(classes),
    )


__all__ = [
    "DATASET_KINDS", "DatasetError", "DatasetSpec", "ImageData", "RestrictedUnpickler", "dataset_fingerprint", "fashion_mnist_dir",
    "find_idx_files", "load_dataset", "parse_dataset", "read_idx", "restricted_load",
]
