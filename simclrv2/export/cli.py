"""`simclrv2 export`: write a verified SavedModel + ONNX + .keras directory."""

import argparse
import sys

from simclrv2 import errors

EPILOG = """examples:
  simclrv2 export --model runs/fmnist_finetune --out exports/fmnist
  simclrv2 export --model r50_1x_sk1 --stage finetuned_10pct --out exports/r50 --formats savedmodel,onnx
  simclrv2 export --model path/to/official/saved_model --out exports/official --image-size 224

Exit status: 0 exported, 1 an artifact did not match the Keras model (nothing written),
2 bad input (one line saying what to fix; --debug shows the traceback), 70 a bug (traceback)."""


def _parser():
    p = argparse.ArgumentParser(
        prog="simclrv2 export", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a SimCLRv2 model as one verified directory: saved_model/ (signatures "
                    "serving_default, features, projection, hidden, finetune, distill, "
                    "serving_bytes), model.onnx, model.keras, config.json, README.md, SHA256SUMS.")
    p.add_argument("--model", required=True,
                   help="a registry name (with --stage), a .keras file, a recipe run directory "
                        "or an official SimCLRv2 SavedModel directory")
    p.add_argument("--stage", default=None,
                   help="stage of a registry model (pretrained, finetuned_10pct, ...); for other "
                        "models recorded in config.json instead of what the source says")
    p.add_argument("--out", required=True,
                   help="output directory (must be new or empty, or an earlier export with "
                        "--overwrite). Temporary folders that killed exports left beside it "
                        "(.NAME.tmp-PID-*) are removed once their process is gone and they are "
                        "an hour old")
    p.add_argument("--formats", default="savedmodel,onnx,keras",
                   help="comma-separated subset of savedmodel,onnx,keras (default: all)")
    p.add_argument("--image-size", type=int, default=None,
                   help="square input side of the exported model (default: the model's "
                        "own; 224 for an any-size model, 32 with a CIFAR stem)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="default distillation temperature recorded in config.json (default 1.0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is an earlier export (its config.json says "
                        "\"format\": \"simclrv2-export\" and it holds nothing else); any "
                        "other non-empty --out is refused")
    return p


@errors.command("export")
def export_main(argv=None) -> int:
    """Bad input (ExportError, the importer's and the run loader's ValueErrors, a missing or
    corrupt file, a full disk) is reported by simclrv2.errors: one line, exit 2. An artifact
    that does not match the Keras model is this command's own exit 1."""
    args = _parser().parse_args(argv)
    from simclrv2.export.exporter import VerificationError, export_model

    try:
        report = export_model(args.model, args.out, formats=args.formats,
                              image_size=args.image_size, stage=args.stage,
                              overwrite=args.overwrite, temperature=args.temperature)
    except VerificationError as e:
        print(f"simclrv2 export: verification failed: {e}", file=sys.stderr)
        return 1
    ver = report["verification"]
    print(f"exported {report['architecture']} ({report['stage']}) at {report['image_size']} px "
          f"to {report['out_dir']}")
    print(f"  formats: {', '.join(report['formats'])}; signatures: "
          f"{', '.join(report['signatures']) or '-'}")
    for name, why in report["skipped_signatures"].items():
        print(f"  skipped {name}: {why}")
    for path in report["removed_stale"]:
        print(f"  removed {path}: left by an interrupted export")
    print(f"  verified: max relative difference {ver['max_relative_difference']:.2g} "
          f"(tolerance {ver['tolerance']:g}); {report['export_wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(export_main())
