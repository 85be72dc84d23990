"""Where images come from: Fashion-MNIST (the embedded default), tfds, image folders.

A `Source` is one split of one dataset. It exposes the contract's
`dataset` (uint8 HxWx3, int label), `num_examples`, `num_classes`, `image_size`, and keeps the
images in the form the pipelines read fastest:

- "array":  decoded uint8 images in memory (Fashion-MNIST, CIFAR, STL-10), random access;
- "files":  image file paths (folders), random access, decoded on the fly (each checked once
            by that decoder when the folder is loaded);
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
    skipped: int = 0  # files of a folder left out: unreadable, or decoded wrong by TensorFlow
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


# A process that runs several stages (the main job, the benchmarks) decompressed and padded the
# same files once a stage; now once while they stay the same files, and shared read-only.
_DECODED = {}
_DECODED_KEPT = 4  # both splits of two folders


def _file_identity(path):
    info = os.stat(path)
    return os.path.realpath(path), info.st_size, info.st_mtime_ns, info.st_ino


def _decoded_fashion_mnist(image_path, label_path):
    key = (_file_identity(image_path), _file_identity(label_path))
    if key not in _DECODED:
        images = _read_idx(image_path, 0x803)
        labels = _read_idx(label_path, 0x801).astype(np.int64)
        images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
        images.flags.writeable = labels.flags.writeable = False
        while len(_DECODED) >= _DECODED_KEPT:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = images, labels
    return _DECODED[key]


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
    images, labels = _decoded_fashion_mnist(image_path, label_path)
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

# split -> the subfolders that hold it, the first found wins (ImageNet-style trees have val/)
FOLDER_SPLITS = {"train": ("train",), "test": ("test", "val")}
_BMP_HEAD = 14 + 124 + 4 * 256  # BMP file header, the largest info header, a full palette
_EXAMPLES = 3  # file names a warning quotes per reason


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _subfolders(path: str) -> list:
    """Sorted names of the non-hidden folders in `path`, links to folders included."""
    return sorted(d for d in os.listdir(path)
                  if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


def _class_folders(tree: str) -> list:
    """Sorted names of the class folders of a split: its non-hidden folders that are not links
    (a link to a folder is never entered; see `_walk`)."""
    return [d for d in _subfolders(tree) if not os.path.islink(os.path.join(tree, d))]


def _split_folder(root: str, split: Optional[str]) -> str:
    """The folder that holds `split`'s images.

    With a train/ subfolder, `root` is split: train/ for 'train', test/ (else val/) for 'test',
    each laid out as class_name/*.jpg. Without one, `root` itself is the training split and it
    has no test split: its images are the training images, and a test top-1 on them would be
    training accuracy, so asking for it is an error that names the fix.
    """
    split = split or "train"
    if split not in FOLDER_SPLITS:
        raise ValueError(f"image folder {root!r} has splits 'train' and 'test' (its test/ or val/ "
                         f"subfolder), not {split!r}")
    folders = _subfolders(root)
    if "train" not in folders:
        if split == "train":
            return root
        raise ValueError(
            f"image folder {root!r} has no test split: without train/ and test/ subfolders every "
            "image in it is a training image, and a test top-1 on them would be training accuracy. "
            f"Move the images into {root}/train/class_name/*.jpg and {root}/test/class_name/*.jpg "
            "(a val/ subfolder is read when there is no test/), or evaluate on held-out training "
            "images with eval_split='validation' (--eval-split validation)")
    others = [f for f in folders if f not in ("train", "test", "val")]
    if others:
        raise ValueError(
            f"image folder {root!r} has a train/ subfolder beside other folders "
            f"({', '.join(others[:5])}); with train/ every class folder belongs in "
            f"{root}/train/class_name/ and {root}/test/class_name/ (or val/)")
    found = [f for f in FOLDER_SPLITS[split] if f in folders]
    if not found:
        raise ValueError(f"image folder {root!r} has train/ but no test/ or val/ subfolder; put "
                         f"the test images in {root}/test/class_name/*.jpg")
    folder = os.path.join(root, found[0])
    if split != "train":
        train, mine = os.path.realpath(os.path.join(root, "train")), os.path.realpath(folder)
        if _inside(train, mine) or _inside(mine, train):
            raise ValueError(f"{folder} is, holds or lies in {root}/train: its images are training "
                             f"images; give the test split images of its own")
    return folder


def _walk(tree: str):
    """([(path, class folder or None, is a link)], [(skipped path, why)]) for the image files
    below `tree`, in a fixed order: its folders sorted by name and walked depth first, then the
    files directly in `tree` (class None) last, so that a labeled listing (class folders only)
    is a prefix of the unlabeled listing of the same tree, and positions (the validation
    split's) mean the same images in both.

    Links to folders are never entered: one pointing back up (cls/loop -> ..) would list the
    tree again at every level, one pointing elsewhere would read images from outside it."""
    entries, loose, skipped = [], [], []
    for dirpath, dirnames, filenames in os.walk(tree):  # followlinks=False
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                skipped.append((os.path.join(dirpath, d), "to a folder"))
            else:
                keep.append(d)
        dirnames[:] = keep
        top = None if dirpath == tree else os.path.relpath(dirpath, tree).split(os.sep)[0]
        for f in sorted(filenames):
            if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(dirpath, f)
            (loose if top is None else entries).append((path, top, os.path.islink(path)))
    return entries + loose, skipped


def _readable_links(tree: str, entries: list, skipped: list) -> list:
    """[(path, class folder)] of `entries` less the links that may not be read. A link to a file
    is read only when it leads to a regular file inside `tree` that is read no other way (not
    listed itself, nor through an earlier link): no image then counts twice, and no link leads
    out of the split (e.g. from train/ into test/). The others are added to `skipped`."""
    real = os.path.realpath(tree)
    seen = {os.path.join(real, os.path.relpath(p, tree)) for p, _, link in entries if not link}
    kept = []
    for path, top, link in entries:
        if link:
            target = os.path.realpath(path)
            why = ("pointing outside the folder" if not _inside(target, real) else
                   "to an image already read" if target in seen else
                   "broken" if not os.path.isfile(target) else None)
            if why:
                skipped.append((path, why))
                continue
            seen.add(target)
        kept.append((path, top))
    return kept


def _bmp_problem(head: bytes) -> Optional[str]:
    """Why TensorFlow would decode this BMP wrong (from its first bytes), or None.

    TensorFlow reads 24- and 32-bit pixels, reads the bytes of an 8-bit BMP as grey levels
    whatever its palette says, and fails on 1- and 4-bit BMPs. So a palette BMP is read right
    only when it is an uncompressed 8-bit grey ramp (entry i = (i, i, i)); the other palette
    BMPs are skipped, not converted: what trains must be what TensorFlow decodes (also when
    serving). Only Windows info headers (40 bytes or more) are parsed.
    """
    if head[:2] != b"BM" or len(head) < 54:
        return None
    info, bits = int.from_bytes(head[14:18], "little"), int.from_bytes(head[28:30], "little")
    if info < 40 or bits > 8:
        return None
    compression, used = int.from_bytes(head[30:34], "little"), int.from_bytes(head[46:50], "little")
    n = used or 256
    palette = np.frombuffer(head[14 + info:14 + info + 4 * n], np.uint8)
    if bits == 8 and compression == 0 and palette.size == 4 * n:
        bgr = palette.reshape(n, 4)[:, :3].astype(np.int64)
        if np.array_equal(bgr, np.repeat(np.arange(n)[:, None], 3, axis=1)):
            return None
    return ("palette BMP(s), which TensorFlow reads as grey indices or not at all (save them as "
            "24-bit RGB, e.g. PIL's Image.open(p).convert('RGB').save(p))")


def _probe(path):
    """(height and width of the image as the pipeline decodes it, the first bytes of a BMP)."""
    encoded = tf.io.read_file(path)
    head = tf.cond(tf.strings.substr(encoded, 0, 2) == b"BM",
                   lambda: tf.strings.substr(encoded, 0, _BMP_HEAD), lambda: tf.constant(b""))
    return tf.shape(decode_image(encoded))[:2], head


def _decode_check(paths: list) -> list:
    """For each file, ((width, height), None) or (None, why it is left out).

    Every file is decoded in full by `decode_image`, the decoder that trains (in parallel, in
    tf.data), so an epoch never stops on a file and what was checked is what trains (PIL, the
    former check, opened 1-bit BMPs that TensorFlow cannot decode and palette BMPs it decodes
    as grey). Palette BMPs that TensorFlow decodes wrong are left out too (`_bmp_problem`)."""
    index = np.arange(len(paths), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((index, np.asarray(paths)))
    ds = ds.map(lambda i, p: (i, *_probe(p)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=False)
    results = [None] * len(paths)
    for index, shapes, heads in ds.ignore_errors().batch(1024).as_numpy_iterator():
        for i, (h, w), head in zip(index, shapes, heads):
            why = _bmp_problem(head)
            results[i] = (None, why) if why else ((int(w), int(h)), None)
    for i, result in enumerate(results):
        if result is None:  # the decoder failed: say why when the header tells
            try:
                with open(paths[i], "rb") as f:
                    head = f.read(_BMP_HEAD)
            except OSError:
                head = b""
            results[i] = (None, _bmp_problem(head) or "unreadable or corrupt")
    return results


def _summary(root: str, skipped: list) -> str:
    """'2 why (a.jpg, b.jpg); 1 other why (c.bmp)' from [(path, why)], paths relative to root."""
    by_reason = {}
    for path, why in skipped:
        by_reason.setdefault(why, []).append(os.path.relpath(path, root))
    return "; ".join(f"{len(names)} {why} ({', '.join(names[:_EXAMPLES])}"
                     f"{', ...' if len(names) > _EXAMPLES else ''})"
                     for why, names in by_reason.items())


def load_folder(root: str, labeled: bool, split: Optional[str] = None) -> Source:
    """One split of an image folder (`_split_folder`: train/ and test/ or val/ subfolders, or
    the folder itself as the only, training, split): `class_name/**/*.jpg` when labeled (the
    classes of train/, sorted by name, for every split), any images below the split's folder
    when not. Links: `_walk` and `_readable_links`; files left out: `_decode_check`."""
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise ValueError(f"image folder {root!r} does not exist or is not a folder")
    tree = _split_folder(root, split)
    entries, links = _walk(tree)
    entries = _readable_links(tree, entries, links)
    if links:
        log.warning("image folder %s: did not follow %d symbolic link(s) (links to folders are "
                    "never followed; a link to a file is read only when it leads to an image "
                    "inside the folder that is read no other way): %s", tree, len(links),
                    _summary(tree, links))
    if labeled:
        classes = _class_folders(_split_folder(root, "train"))
        unknown = sorted(set(_class_folders(tree)) - set(classes))
        if unknown:
            raise ValueError(f"{tree} has class folders that {root}/train lacks "
                             f"({', '.join(unknown[:5])}); a class must have training images")
        index = {name: c for c, name in enumerate(classes)}
        candidates = [(p, index[top]) for p, top in entries if top is not None]
    else:
        classes = []
        candidates = [(p, UNLABELED) for p, _ in entries]
    if not candidates:
        layout = "class_name/image.jpg" if labeled else "image files anywhere below it"
        raise ValueError(f"image folder {tree!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                         f"expected {layout}")
    checked = _decode_check([p for p, _ in candidates])
    kept = [(p, y) for (p, y), (size, _) in zip(candidates, checked) if size is not None]
    sizes = {size for size, _ in checked if size is not None}
    skipped = [(p, why) for (p, _), (_, why) in zip(candidates, checked) if why is not None]
    if skipped:
        log.warning("image folder %s: skipped %d of %d image file(s) that TensorFlow, the decoder "
                    "that trains, cannot decode right: %s", tree, len(skipped), len(candidates),
                    _summary(tree, skipped))
    if not kept:
        raise ValueError(f"image folder {tree!r}: none of its {len(candidates)} image files could "
                         f"be decoded ({_summary(tree, skipped)})")
    side = None
    if len(sizes) == 1:
        (w, h), = sizes
        side = w if w == h else None
    return Source(name=f"folder:{root}", split=split or "train", kind="files",
                  num_examples=len(kept), num_classes=len(classes) if labeled else None,
                  image_size=side, paths=np.array([p for p, _ in kept]),
                  labels=np.array([y for _, y in kept], dtype=np.int64), skipped=len(skipped))


# ------------------------------------------------------------------------------------------------
# The contract's entry points

def _known_names() -> str:
    return ", ".join(["fashion_mnist", *TFDS_DATASETS, "folder:/path (or a folder path)"])


def _folder_root(name: str) -> Optional[str]:
    """The folder a dataset name stands for ('folder:/path', or a path that is not a known
    name), else None."""
    if name.startswith("folder:"):
        return name[len("folder:"):]
    known = name == "fashion_mnist" or name in TFDS_DATASETS
    if not known and (os.sep in name or os.path.isdir(name)):
        return name
    return None


def _load(name: str, split: Optional[str], data_dir: Optional[str], unlabeled: bool) -> Source:
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string; known: {_known_names()}")
    root = _folder_root(name)
    if root is not None:
        return load_folder(root, labeled=not unlabeled, split=split)
    if name == "fashion_mnist":
        return load_fashion_mnist(split or "train", data_dir, unlabeled=unlabeled)
    if name in TFDS_DATASETS:
        default = TFDS_DATASETS[name][1] if unlabeled else "train"
        return load_tfds(name, split or default, data_dir, unlabeled=unlabeled)
    raise ValueError(f"unknown dataset {name!r}; known: {_known_names()}")


def check_split(name: str, split: str) -> None:
    """Raises the error that loading `split` of an image folder would raise when the folder
    lacks it, without listing or decoding an image: stages call it first, so that a missing
    test split stops a run at its start, not after its training. Other datasets: nothing."""
    root = _folder_root(name) if isinstance(name, str) else None
    if root is not None:
        root = os.path.abspath(os.path.expanduser(root))
        if os.path.isdir(root):
            _split_folder(root, split)


def load_labeled(name: str, split: Optional[str] = None, data_dir: Optional[str] = None) -> Source:
    """A labeled split: 'fashion_mnist', a tfds name from TFDS_DATASETS, or an image folder
    ('folder:/path' or a path) laid out as class_name/*.jpg, or as train/class_name/*.jpg and
    test/class_name/*.jpg (or val/) for a test split. `split` defaults to 'train'."""
    source = _load(name, split, data_dir, unlabeled=False)
    if source.num_classes is None:
        raise ValueError(f"{name}: no labels found")
    return source


def load_unlabeled(name: str, split: Optional[str] = None, data_dir: Optional[str] = None) -> Source:
    """Images with label -1: for stl10 the 'unlabelled' split by default, for a folder every image
    below it (below its train/ subfolder when it has one), for the others their 'train' split
    without labels."""
    return _load(name, split, data_dir, unlabeled=True)
