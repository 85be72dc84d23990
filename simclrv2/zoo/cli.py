"""`simclrv2 zoo {list,info,download,models}`.

User errors (unknown name, missing directory, failed download) are reported by
simclrv2.errors: one line (the download error adds how to place the files by hand) to stderr
and exit 2, without a traceback. Only light modules are imported here (the registry, the
download code, the zoo's config parser): `zoo list`, `zoo info` and every argument error
answer without importing Keras or TensorFlow. `simclrv2 convert` is simclrv2/convert.py.
"""

from __future__ import annotations

import argparse

from simclrv2 import errors
from simclrv2.zoo import checkpoints as ck
from simclrv2.zoo import download as dl

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
