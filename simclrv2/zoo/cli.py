"""`simclrv2 zoo {list,info,download}` and `simclrv2 convert`.

User errors (unknown name, missing directory, failed download) are reported by
simclrv2.errors: one line (the download error adds how to place the files by hand) to stderr
and exit 2, without a traceback. Only light modules are imported here (the registry, the
download code, the zoo's config parser): `zoo list`, `zoo info` and every argument error
answer without importing Keras or TensorFlow. The importer is imported only by `convert`.
"""

from __future__ import annotations

import argparse
import pathlib
import re

from simclrv2 import errors
from simclrv2.zoo import checkpoints as ck
from simclrv2.zoo import download as dl
from simclrv2.zoo.config import parse_name

_ARCH_RE = re.compile(r"^r\d+_\d+(\.\d+)?x_sk[01]$")
_ZOO_COMMANDS = ("list", "info", "download", "models")
_UserError = errors.UsageError  # reported by simclrv2.errors: one line, exit 2


def _fmt_top1(value):
    return "-" if value is None else f"{value:.1f}"


def _zoo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simclrv2 zoo",
        description="List, describe and download the SavedModels released by the SimCLR "
                    "authors (gs://simclr-checkpoints-tf2). Downloads go to $SIMCLRV2_HOME "
                    "(default ~/.keras/simclrv2) and are resumed if interrupted.")
    sub = parser.add_subparsers(dest="command", metavar="{list,info,download,models}")
    sub.required = True

    p = sub.add_parser("models", help="every buildable architecture with its parameter counts",
                       description="Print one row per registered architecture (depth x width x "
                                   "SK): trainable parameters of the backbone and of the 3-layer "
                                   "projection head, computed from layer shapes, beside the "
                                   "paper's Table 1 figure (millions) where one is published.")
    p.add_argument("--released", action="store_true", help="only the 13 released SimCLRv2 ones")

    p = sub.add_parser("list", help="table of released checkpoints",
                       description="Print one row per released checkpoint: name, stage, "
                                   "architecture, the paper's ImageNet top-1 (%), whether "
                                   "it is in the cache (yes, or 'damaged' when a file is "
                                   "missing or not the recorded size), and its HTTPS URL.")
    p.add_argument("--stage", help=f"only this stage ({', '.join(ck.STAGES)})")
    p.add_argument("--arch", dest="architecture", help="only this architecture, e.g. r50_1x_sk1")
    p.add_argument("--version", type=int, choices=(1, 2), help="only SimCLR v1 or v2")
    p.add_argument("--cache-dir", help="cache root to look in (default: $SIMCLRV2_HOME or "
                                       "~/.keras/simclrv2)")

    p = sub.add_parser("info", help="everything known about one checkpoint name",
                       description="Print every field of the checkpoints called NAME (all "
                                   "stages, or one with --stage) and where they are cached.")
    p.add_argument("name", help="checkpoint name, e.g. r50_1x_sk1 or simclrv1_r50_4x")
    p.add_argument("--stage", help="only this stage")
    p.add_argument("--cache-dir", help="cache root to look in")

    p = sub.add_parser("download", help="download one checkpoint into the cache",
                       description="Download NAME at STAGE (three files: saved_model.pb and "
                                   "the variables) and print the local saved_model directory. "
                                   "Nothing is downloaded if it is already cached.")
    p.add_argument("name", help="checkpoint name, e.g. r50_1x_sk1 (see `simclrv2 zoo list`)")
    p.add_argument("--stage", required=True,
                   help=f"one of {', '.join(ck.STAGES)}")
    p.add_argument("--cache-dir", help="cache root (default: $SIMCLRV2_HOME or ~/.keras/simclrv2)")
    p.add_argument("--base-url", help="HTTP(S) root to fetch from instead of "
                                      f"{ck.HTTPS_ROOT} (also $SIMCLRV2_BASE_URL)")
    p.add_argument("--retries", type=int, default=4, help="tries per file (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@errors.command("zoo", subcommands=_ZOO_COMMANDS)
def zoo_main(argv=None) -> int:
    args = _zoo_parser().parse_args(argv)
    if args.command == "models":
        return _models(args)
    if args.command == "list":
        return _list(args)
    if args.command == "info":
        return _info(args)
    return _download(args)


def _models(args) -> int:
    from simclrv2.zoo.architectures import OFFICIAL_PARAMS_M, SIMCLRV1_PARAMS_M, list_models
    from simclrv2.zoo.param_count import count_parameters

    rows = [("architecture", "backbone", "proj. head", "paper (M)", "ours (M)")]
    for name in list_models(released_only=args.released):
        counts = count_parameters(name)
        official = OFFICIAL_PARAMS_M.get(name, SIMCLRV1_PARAMS_M.get(name))
        rows.append((name, f"{counts['backbone']:,}", f"{counts['projection_head']:,}",
                     "-" if official is None else str(official),
                     f"{counts['backbone'] / 1e6:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(r, widths))))
    print(f"{len(rows) - 1} architectures at 224 px (ImageNet stem); paper = Table 1 of "
          "arXiv:2006.10029 (SimCLRv1 ResNet-50 1x/2x/4x from arXiv:2002.05709)")
    return errors.EXIT_DONE


def _list(args) -> int:
    rows = [("name", "stage", "arch", "top-1", "cached", "url")]
    shown = {"complete": "yes", "damaged": "damaged", "absent": ""}
    for c in ck.list_checkpoints(stage=args.stage, architecture=args.architecture,
                                 version=args.version):
        rows.append((c.name, c.stage, c.architecture, _fmt_top1(c.top1),
                     shown[dl.cache_status(c, args.cache_dir)], c.url))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    print(f"{len(rows) - 1} checkpoints; top-1: ImageNet %, Table 1 of arXiv:2006.10029 "
          "(pretrained = linear eval); '-' = not published")
    return errors.EXIT_DONE


def _info(args) -> int:
    if args.stage is not None:
        entries = [ck.get_checkpoint(args.name, args.stage)]
    else:
        entries = [c for c in ck.list_checkpoints() if c.name == args.name]
        if not entries:
            ck.get_checkpoint(args.name, "pretrained")  # raises with the list of names
    for i, c in enumerate(entries):
        if i:
            print()
        fields = c.to_dict()
        fields["cache_path"] = str(dl.saved_model_cache_path(c, args.cache_dir))
        fields["cached"] = dl.is_cached(c, args.cache_dir)
        width = max(len(k) for k in fields)
        for key, value in fields.items():
            print(f"{key.ljust(width)}  {value}")
    return errors.EXIT_DONE


def _download(args) -> int:
    path = dl.download_checkpoint(args.name, args.stage, cache_dir=args.cache_dir,
                                  base_url=args.base_url, progress=not args.quiet,
                                  retries=args.retries)
    print(path)
    return errors.EXIT_DONE


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
    _check_overwrite(out, args.overwrite)
    if args.arch is not None and not _ARCH_RE.match(args.arch):
        raise _UserError(f"--arch {args.arch!r} is not of the form "
                         "r{depth}_{width}x_sk{0|1}, e.g. r50_1x_sk1")
    if args.arch is not None:
        parse_name(args.arch)  # a depth or width the zoo doesn't have: named here
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
    try:
        from simclrv2.zoo.importer import convert_saved_model
    except ImportError as e:
        if e.name not in ("simclrv2.zoo.importer",):
            raise
        raise _UserError("this build of simclrv2 has no importer (simclrv2.zoo.importer "
                         "is missing); update the package") from e
    convert_saved_model(saved_model, out, architecture=architecture, **extra)
    print(out)
    return errors.EXIT_DONE
