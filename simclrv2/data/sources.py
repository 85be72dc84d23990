"""Where images come from: Fashion-MNIST (the embedded default), tfds, image folders.

A `Source` is one split of one dataset. It exposes the contract's
`dataset` (uint8 HxWx3, int label), `num_examples`, `num_classes`, `image_size`, and keeps the
images in the form the pipelines read fastest:

- "array":  decoded uint8 images in memory (Fashion-MNIST, CIFAR, STL-10), random access;
- "files":  image file paths (folders), random access, decoded on the fly;
- "stream": encoded JPEGs read in file order (ImageNet from tfds), no random access.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import zlib
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")
# tfds name -> (image side if fixed, default unlabeled split, held in memory)
TFDS_DATASETS = {
    "cifar10": (32, "train", True),
    "cifar100": (32, "train", True),
    "stl10": (96, "unlabelled", True),
    "imagenet2012": (None, "train", False),
    "imagenet2012_subset/1pct": (None, "train", False),
    "imagenet2012_subset/10pct": (None, "train", False),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")  # what tf.io.decode_image reads
UNLABELED = -1


class DataNotFoundError(ValueError):
    """A dataset that is named correctly but is not on this machine."""


@dataclasses.dataclass
class Source:
    """One split of one dataset; see the module docstring for `kind`."""

    name: str
    split: str
    kind: str
    num_examples: int
    num_classes: Optional[int]
    image_size: Optional[int]  # side of every image when they are all square and equal
    labels: Optional[np.ndarray] = None  # int64 [N]; -1 when unlabeled
    images: Optional[np.ndarray] = None  # "array": uint8 [N, H, W, 1 or 3]
    paths: Optional[np.ndarray] = None  # "files": str [N]
    stream: Optional[Callable[[], tf.data.Dataset]] = None  # "stream": () -> (jpeg bytes, label)
    skipped: int = 0  # unreadable files left out of a folder
    _tensor: Optional[tf.Variable] = dataclasses.field(default=None, repr=False)

    @property
    def random_access(self) -> bool:
        return self.kind in ("array", "files")

    def image_tensor(self) -> tf.Variable:
        """The images as a non-trainable variable: tf.data captures it by handle, so arrays over
        the 2 GB GraphDef limit (STL-10 unlabelled) work and pipelines build quickly."""
        if self.kind != "array":
            raise ValueError(f"{self.name}: only in-memory sources have an image tensor")
        if self._tensor is None:
            with tf.init_scope():
                self._tensor = tf.Variable(self.images, trainable=False, name="images")
        return self._tensor

    @property
    def dataset(self) -> tf.data.Dataset:
        """(uint8 [H, W, 3] image, int64 label) in the source's fixed order."""
        labels = self.labels if self.labels is not None else None
        if self.kind == "array":
            images = self.image_tensor()
            lab = tf.constant(labels)

            def get(i):
                image = tf.gather(images, i)
                return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image, lab[i]

            return tf.data.Dataset.range(self.num_examples).map(get, num_parallel_calls=tf.data.AUTOTUNE)
        if self.kind == "files":
            return tf.data.Dataset.from_tensor_slices((self.paths, labels)).map(
                lambda p, y: (decode_image(tf.io.read_file(p)), y), num_parallel_calls=tf.data.AUTOTUNE)
        return self.stream().map(lambda b, y: (decode_image(b), y), num_parallel_calls=tf.data.AUTOTUNE)

    def subset(self, indices: Sequence[int]) -> "Source":
        """The examples at `indices` (e.g. from `label_subset`), as a new source."""
        if not self.random_access:
            raise ValueError(
                f"{self.name}:{self.split} is read as a stream and cannot be indexed; for ImageNet "
                "label fractions use the prepared 'imagenet2012_subset/1pct' or '/10pct' instead")
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self.num_examples)):
            raise ValueError(f"subset indices must be a 1-D list within [0, {self.num_examples}) "
                             f"for {self.name}:{self.split}; were they made for another dataset?")
        return dataclasses.replace(
            self, split=f"{self.split}[subset of {idx.size}]", num_examples=int(idx.size),
            labels=None if self.labels is None else self.labels[idx],
            images=None if self.images is None else self.images[idx],
            paths=None if self.paths is None else self.paths[idx], _tensor=None)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Any JPEG/PNG/BMP/GIF -> uint8 [H, W, 3]; gray and RGBA become RGB, GIFs their first frame."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


# ------------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian's dataset-fashion-mnist)

def _read_idx(path: str, expected_magic: int) -> np.ndarray:
    reinstall = "reinstall it with `apt-get install --reinstall dataset-fashion-mnist`"
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as error:  # cut short, or not gzip at all
        raise ValueError(f"{path} is truncated or corrupt ({error}); {reinstall}") from None
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path} is not an idx file (magic {magic:#x}, expected {expected_magic:#x}); "
                         f"{reinstall}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != 4 + 4 * ndim + int(np.prod(dims)):
        raise ValueError(f"{path} holds {len(data)} bytes where its header promises "
                         f"{4 + 4 * ndim + int(np.prod(dims))}: it is truncated; {reinstall}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str = "train", data_dir: Optional[str] = None, unlabeled=False) -> Source:
    """Fashion-MNIST, 28x28 gray zero-padded to 32x32 for the CIFAR stem.

    Padding (not resizing) keeps every pixel as it was; the background is black, so the border
    is seamless. The single channel is kept in memory and repeated to RGB after cropping.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"fashion_mnist has splits 'train' and 'test', not {split!r}")
    root = data_dir or FASHION_MNIST_DIR
    image_path = os.path.join(root, f"{prefix}-images-idx3-ubyte.gz")
    label_path = os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")
    for path in (image_path, label_path):
        if not os.path.exists(path):
            raise DataNotFoundError(
                f"Fashion-MNIST file {path} is missing; install Debian's copy with "
                "`apt-get install dataset-fashion-mnist` (files land in "
                f"{FASHION_MNIST_DIR}), or pass data_dir= a folder holding the four idx .gz files")
    images = _read_idx(image_path, 0x803)
    labels = _read_idx(label_path, 0x801).astype(np.int64)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
    return Source(name="fashion_mnist", split=split, kind="array", num_examples=len(images),
                  num_classes=10, image_size=32, images=images,
                  labels=np.full_like(labels, UNLABELED) if unlabeled else labels)


# ------------------------------------------------------------------------------------------------
# tfds

def _not_prepared(name: str, data_dir: str) -> DataNotFoundError:
    manual = ("manual_dir='/path/to/the/ILSVRC2012 tar files', " if name.startswith("imagenet") else "")
    return DataNotFoundError(
        f"tfds dataset {name!r} is not prepared in data_dir {data_dir!r}, and nothing is downloaded "
        "at run time. Prepare it once on a machine that has the source files, then copy it here:\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='/tmp/prep')"
        f".download_and_prepare(download_config=tfds.download.DownloadConfig({manual}))\"\n"
        f"  cp -r /tmp/prep/{name.split('/')[0]} {data_dir}/\n"
        "and pass data_dir= that folder (the one holding the dataset's own folder).")


def load_tfds(name: str, split: str, data_dir: Optional[str] = None, unlabeled: bool = False) -> Source:
    import tensorflow_datasets as tfds  # slow import; only tfds users pay for it

    data_dir = os.path.expanduser(data_dir or os.path.join("~", "tensorflow_datasets"))
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise _not_prepared(name, data_dir)
    try:
        num_examples = int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError) as err:
        raise ValueError(f"{name} has no split {split!r}; its splits are "
                         f"{sorted(builder.info.splits.keys())} (tfds slicing like 'train[:10%]' works)") from err
    side, _, in_memory = TFDS_DATASETS[name]
    num_classes = int(builder.info.features["label"].num_classes)
    if in_memory:
        images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
        labels = labels.astype(np.int64)
        return Source(name=name, split=split, kind="array", num_examples=len(images),
                      num_classes=num_classes, image_size=side, images=images,
                      labels=np.full_like(labels, UNLABELED) if unlabeled else labels)

    def stream():
        ds = builder.as_dataset(split=split, shuffle_files=False, as_supervised=True,
                                decoders={"image": tfds.decode.SkipDecoding()})
        if unlabeled:
            ds = ds.map(lambda b, y: (b, tf.constant(UNLABELED, tf.int64)))
        return ds.map(lambda b, y: (b, tf.cast(y, tf.int64)))

    return Source(name=name, split=split, kind="stream", num_examples=num_examples,
                  num_classes=num_classes, image_size=side, stream=stream)


# ------------------------------------------------------------------------------------------------
# Image folders

def _check_file(path: str):
    """(width, height) when the file is an image TensorFlow can decode, else None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format not in ("JPEG", "PNG", "BMP", "GIF"):
                return None
            size = im.size
            im.draft("RGB", (64, 64))  # decodes JPEGs at reduced scale: catches truncation cheaply
            im.load()
            return size
    except Exception:  # PIL raises many types for broken files; any of them means "skip"
        return None


def _image_files(root: str) -> list:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def load_folder(root: str, labeled: bool) -> Source:
    """`root/class_name/**/*.jpg` when labeled (classes sorted by name), any images when not."""
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise ValueError(f"image folder {root!r} does not exist or is not a folder")
    if labeled:
        classes = sorted(d for d in os.listdir(root)
                         if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
        candidates = [(p, c) for c, name in enumerate(classes)
                      for p in _image_files(os.path.join(root, name))]
    else:
        classes = []
        candidates = [(p, UNLABELED) for p in _image_files(root)]
    if not candidates:
        layout = "root/class_name/image.jpg" if labeled else "image files anywhere below it"
        raise ValueError(f"image folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                         f"expected {layout}")
    kept, sizes = [], set()
    for path, label in candidates:
        size = _check_file(path)
        if size is not None:
            kept.append((path, label))
            sizes.add(size)
    skipped = len(candidates) - len(kept)
    if skipped:
        log.warning("image folder %s: skipped %d unreadable or corrupt file(s) of %d",
                    root, skipped, len(candidates))
    if not kept:
        raise ValueError(f"image folder {root!r}: none of its {len(candidates)} image files could be read")
    side = None
    if len(sizes) == 1:
        (w, h), = sizes
        side = w if w == h else None
    return Source(name=f"folder:{root}", split="all", kind="files", num_examples=len(kept),
                  num_classes=len(classes) if labeled else None, image_size=side,
                  paths=np.array([p for p, _ in kept]),
                  labels=np.array([y for _, y in kept], dtype=np.int64), skipped=skipped)


# ------------------------------------------------------------------------------------------------
# The contract's entry points

def _known_names() -> str:
    return ", ".join(["fashion_mnist", *TFDS_DATASETS, "folder:/path (or a folder path)"])


def _load(name: str, split: Optional[str], data_dir: Optional[str], unlabeled: bool) -> Source:
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string; known: {_known_names()}")
    if name.startswith("folder:"):
        return load_folder(name[len("folder:"):], labeled=not unlabeled)
    if name == "fashion_mnist":
        return load_fashion_mnist(split or "train", data_dir, unlabeled=unlabeled)
    if name in TFDS_DATASETS:
        default = TFDS_DATASETS[name][1] if unlabeled else "train"
        return load_tfds(name, split or default, data_dir, unlabeled=unlabeled)
    if os.sep in name or os.path.isdir(name):
        return load_folder(name, labeled=not unlabeled)
    raise ValueError(f"unknown dataset {name!r}; known: {_known_names()}")


def load_labeled(name: str, split: Optional[str] = None, data_dir: Optional[str] = None) -> Source:
    """A labeled split: 'fashion_mnist', a tfds name from TFDS_DATASETS, or an image folder
    ('folder:/path' or a path) laid out as class_name/*.jpg. `split` defaults to 'train'."""
    source = _load(name, split, data_dir, unlabeled=False)
    if source.num_classes is None:
        raise ValueError(f"{name}: no labels found")
    return source


def load_unlabeled(name: str, split: Optional[str] = None, data_dir: Optional[str] = None) -> Source:
    """Images with label -1: for stl10 the 'unlabelled' split by default, for a folder every image
    below it, for the others their 'train' split without labels."""
    return _load(name, split, data_dir, unlabeled=True)
