"""`simclrv2 convert`: an official SimCLR TF2 SavedModel (a local directory, or a released
checkpoint downloaded into the cache) into a verified Keras 3 `.keras` model.

What `--saved-model` is, is decided by the resolver's one check (simclrv2.artifacts): an official
release is converted, an export's saved_model/ or any other SavedModel is refused in one line.
Every argument error answers before Keras or TensorFlow is imported; the importer
(simclrv2.zoo.importer) loads the SavedModel, copies its weights and checks the outputs.
"""

from __future__ import annotations

import argparse
import pathlib

from simclrv2 import artifacts, errors, process_memory
from simclrv2.dir_lock import DirectoryLock
from simclrv2.zoo import checkpoints as ck
from simclrv2.zoo import download as dl
from simclrv2.zoo.config import parse_name

_UserError = errors.UsageError  # reported by simclrv2.errors: one line, exit 2


def _convert_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simclrv2 convert",
        description="Convert an official SimCLR TF2 SavedModel into a Keras 3 .keras model "
                    "(weights copied into the simclrv2 architecture, outputs checked against "
                    "the SavedModel). Give a local directory with --saved-model, or a "
                    "released checkpoint with --checkpoint NAME --stage STAGE (downloaded "
                    "into the cache first).")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--saved-model", metavar="DIR",
                     help="local saved_model directory (holds saved_model.pb and variables/)")
    src.add_argument("--checkpoint", metavar="NAME",
                     help="released checkpoint name (see `simclrv2 zoo list`); needs --stage")
    parser.add_argument("--stage", help="stage of --checkpoint, e.g. pretrained or finetuned_10pct")
    parser.add_argument("--out", required=True, metavar="FILE.keras",
                        help="output model file; must end in .keras and not exist (see "
                             "--overwrite). A FILE.json with its provenance is written beside it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (and its .json)")
    parser.add_argument("--arch", metavar="NAME",
                        help="architecture such as r50_1x_sk1; default: read from the "
                             "SavedModel (or from the registry with --checkpoint)")
    parser.add_argument("--input-size", type=int, metavar="PX",
                        help="a fixed square input side for the Keras model (default: any "
                             "size; verification probes at 224 px, 32 for a CIFAR stem)")
    parser.add_argument("--cache-dir", help="cache root for --checkpoint downloads")
    parser.add_argument("--base-url", help="HTTP(S) root for --checkpoint downloads")
    return parser


def _check_overwrite(out: pathlib.Path, overwrite: bool) -> None:
    """Refuses to replace an existing output (the .keras or the .json written beside it) unless
    asked: checked before any download or conversion, so a refusal costs nothing."""
    if out.is_dir():
        raise _UserError(f"--out {out} is a directory; give a file path ending in .keras")
    side = out.with_suffix(".json")
    existing = [p for p in (out, side) if p.exists()]
    if existing and not overwrite:
        names, one = " and ".join(str(p) for p in existing), len(existing) == 1
        raise _UserError(f"{names} already exist{'s' if one else ''}; pass --overwrite to "
                         f"replace {'it' if one else 'them'}, or choose another --out")


@errors.command("convert")
def convert_main(argv=None) -> int:
    parser = _convert_parser()
    args = parser.parse_args(argv)
    # The SavedModel and the Keras model are held one after the other: what TensorFlow frees
    # must go back to the system (docs/pretrained_models.md, memory).
    process_memory.use_releasing_allocator()
    if args.checkpoint is not None and args.stage is None:
        parser.error("--checkpoint needs --stage (e.g. --stage pretrained)")
    if args.saved_model is not None and args.stage is not None:
        parser.error("--stage only goes with --checkpoint")
    out = pathlib.Path(args.out)
    if out.suffix != ".keras":
        raise _UserError(f"--out {args.out!r} must end in .keras (Keras 3 native format), "
                         f"e.g. --out {out.with_suffix('.keras')}")
    if not out.parent.is_dir():
        raise _UserError(f"the directory of --out, {out.parent}, does not exist; create it first")
    # One conversion at a time writes --out (and its .json): a second one is refused while this
    # one holds `.NAME.keras.lock` beside it, and what it finds is checked under the lock.
    with DirectoryLock(out, beside=True, option="another --out"):
        _check_overwrite(out, args.overwrite)
        return _convert(args, out)


def _convert(args, out):
    """The conversion, its --out checked and locked."""
    if args.arch is not None:
        try:
            parse_name(args.arch)  # the spelling, and a depth or width the zoo doesn't have
        except ValueError as error:
            raise _UserError(f"--arch: {error}") from None
    if args.input_size is not None and args.input_size < 1:
        raise _UserError(f"--input-size must be a positive number of pixels, got {args.input_size}")
    architecture = args.arch
    # Optional importer arguments are passed only when set, so the call stays within
    # the minimal convert_saved_model(saved_model_dir, out_path, architecture) contract.
    extra = {}
    if args.input_size is not None:
        extra["input_shape"] = (args.input_size, args.input_size, 3)
    if args.checkpoint is not None:
        entry = ck.get_checkpoint(args.checkpoint, args.stage)
        architecture = architecture or entry.architecture
        saved_model = dl.download_checkpoint(entry.name, entry.stage, cache_dir=args.cache_dir,
                                             base_url=args.base_url)
        extra["provenance"] = {"checkpoint": entry.name, "stage": entry.stage,
                               "url": entry.url, "gs_url": entry.gs_url,
                               "paper_top1": entry.top1}
    else:
        saved_model = pathlib.Path(args.saved_model)
        if not (saved_model / "saved_model.pb").is_file():
            hint = (f"; did you mean {saved_model / 'saved_model'}?"
                    if (saved_model / "saved_model" / "saved_model.pb").is_file() else "")
            raise _UserError(f"--saved-model {saved_model} has no saved_model.pb; give the "
                             f"saved_model directory itself{hint}")
        # The resolver's one check says what the SavedModel is before anything is loaded.
        kind = artifacts.saved_model_kind(saved_model)
        if kind != "official_savedmodel":
            raise _UserError(f"--saved-model {saved_model} is the saved_model/ of a `simclrv2 "
                             f"export`, not an official release: its export directory holds "
                             f"the Keras model already (model.keras), or export it again with "
                             f"--formats keras")
    from simclrv2.zoo.importer import convert_saved_model

    convert_saved_model(saved_model, out, architecture=architecture, **extra)
    print(out)
    return errors.EXIT_DONE
