"""`simclrv2 export`: write a verified SavedModel + ONNX + .keras directory (and on request
OpenVINO and TFLite)."""

import argparse
import sys

from simclrv2 import errors
from simclrv2.export import options

EPILOG = """examples:
  simclrv2 export --model runs/fmnist_finetune --out exports/fmnist
  simclrv2 export --model r50_1x_sk1 --stage finetuned_10pct --out exports/r50 --formats savedmodel,onnx
  simclrv2 export --model path/to/official/saved_model --out exports/official --image-size 224
  simclrv2 export --model runs/fmnist/distill --out exports/student --quantize int8 --calibration fashion_mnist
  simclrv2 export --model runs/fmnist/distill --out exports/cpu --formats onnx,openvino,tflite --calibration fashion_mnist

Exit status: 0 exported, 1 an artifact did not match the Keras model, OpenVINO's default
precision agreed with it on too few images, or an int8 model lost more top-1 than
--max-int8-drop (nothing written),
2 bad input (one line saying what to fix; --debug shows the traceback), also: --out in use by
another export, --model a run another process is still writing (see --allow-running),
70 a bug (traceback), 130 interrupted (the table: docs/cli.md)."""


def _parser():
    p = argparse.ArgumentParser(
        prog="simclrv2 export", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a SimCLRv2 model as one verified directory: saved_model/ (signatures "
                    "serving_default, features, projection, hidden, finetune, distill, "
                    "serving_bytes), model.onnx, model.keras, config.json, README.md, SHA256SUMS.")
    p.add_argument("--model", required=True,
                   help="a registry name (with --stage), a .keras file, a recipe run directory, "
                        "an earlier export or an official SimCLRv2 SavedModel directory")
    p.add_argument("--stage", default=None,
                   help="stage of a registry model (pretrained, finetuned_10pct, ...); for other "
                        "models recorded in config.json instead of what the source says")
    p.add_argument("--out", required=True,
                   help="output directory (must be new or empty, or an earlier export with "
                        "--overwrite). Temporary folders that killed exports left beside it "
                        "(.NAME.tmp-PID-*) are removed once their process is gone and they are "
                        "an hour old")
    p.add_argument("--formats", default=",".join(options.FORMATS),
                   help=f"comma-separated subset of {','.join(options.KNOWN_FORMATS)} (default: "
                        f"{','.join(options.FORMATS)}); openvino writes openvino/model.xml + "
                        f".bin, tflite model.tflite")
    p.add_argument("--image-size", type=int, default=None,
                   help="square input side of the exported model (default: the model's "
                        "own; 224 for an any-size model, 32 with a CIFAR stem)")
    p.add_argument("--temperature", type=float, default=options.DEFAULT_TEMPERATURE,
                   help=f"default distillation temperature recorded in config.json (default "
                        f"{options.DEFAULT_TEMPERATURE})")
    p.add_argument("--quantize", choices=list(options.QUANTIZATIONS), default=None,
                   help="also write an int8 model of each of onnx (model.int8.onnx, "
                        "onnxruntime QDQ), openvino (openvino/model.int8.xml, NNCF) and tflite "
                        "(model.int8.tflite, full-integer) among the formats, each checked by "
                        "its top-1 (needs --calibration)")
    p.add_argument("--calibration", default=None, metavar="DATASET_OR_FOLDER",
                   help="images to calibrate the int8 models on and check them, and OpenVINO's "
                        "default precision, with: a dataset name (fashion_mnist, a tfds name) "
                        "or an image folder; calibration images come from its training split, "
                        "check images from its test split (else from other training images). "
                        "Without it OpenVINO is checked on random images")
    p.add_argument("--calibration-examples", type=int, default=options.CALIBRATION_EXAMPLES,
                   help=f"images to calibrate on (default {options.CALIBRATION_EXAMPLES})")
    p.add_argument("--check-examples", type=int, default=options.CHECK_EXAMPLES,
                   help=f"other images to check the int8 models and OpenVINO's default "
                        f"precision on (default {options.CHECK_EXAMPLES})")
    p.add_argument("--max-int8-drop", type=float, default=options.MAX_INT8_DROP,
                   help="refuse the int8 model when its top-1 drops more than this many points "
                        "(without labels: when it disagrees with the float model on more than "
                        f"this percentage of the images); default {options.MAX_INT8_DROP}")
    p.add_argument("--data-dir", default=None,
                   help="where --calibration's dataset lives, as for the recipes")
    p.add_argument("--allow-running", action="store_true",
                   help="export --model even when it is a run another process is still "
                        "writing (from its newest checkpoint); refused without")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is an earlier export (its config.json says "
                        "\"format\": \"simclrv2-export\" and it holds nothing else); any "
                        "other non-empty --out is refused")
    return p


def _print_int8(q):
    figures = (f"top-1 {100 * q['float_top1']:.2f}% float, {100 * q['int8_top1']:.2f}% int8 "
               f"(drop {q['top1_drop_points']:.2f} points)" if "int8_top1" in q else
               f"disagreement {q['disagreement_points']:.2f}% (no labels)")
    name = q.get("file") or q["files"][0]
    print(f"  int8: {name}, agrees with the float model on "
          f"{100 * q['agreement_with_float']:.1f}% of {q['check_examples']} images; "
          f"{figures}; allowed {q['max_drop_points']:g}")


@errors.command("export")
def export_main(argv=None) -> int:
    """Bad input (ExportError, the importer's and the run loader's ValueErrors, a missing or
    corrupt file, a full disk) is reported by simclrv2.errors: one line, exit 2. An artifact
    that does not match the Keras model is this command's own exit 1."""
    args = _parser().parse_args(argv)
    # Each format's check loads what it wrote beside the Keras model: what TensorFlow frees
    # must go back to the system (docs/export.md, memory).
    from simclrv2 import process_memory

    process_memory.use_releasing_allocator()
    from simclrv2.export import VerificationError, export_model

    try:
        report = export_model(args.model, args.out, formats=args.formats,
                              image_size=args.image_size, stage=args.stage,
                              overwrite=args.overwrite, temperature=args.temperature,
                              quantize=args.quantize, calibration=args.calibration,
                              calibration_examples=args.calibration_examples,
                              check_examples=args.check_examples,
                              max_int8_drop=args.max_int8_drop, data_dir=args.data_dir,
                              allow_running=args.allow_running)
    except VerificationError as e:
        print(f"simclrv2 export: verification failed: {e}", file=sys.stderr)
        return errors.EXIT_RUN_FAILED
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
    precision = (report.get("openvino") or {}).get("default_precision")
    if precision:
        agreement = precision["top1_agreement"]
        print(f"  openvino at its default precision here ({precision['inference_precision']}): "
              + (f"top-1 agreement with Keras {100 * agreement:.2f}% of "
                 f"{precision['check_examples']} images; " if agreement is not None else "")
              + "max relative difference " + ", ".join(
                  f"{k} {v:.2g}" for k, v in precision["max_relative_difference"].items()))
    q = report.get("int8")
    for record in (q, (report.get("openvino") or {}).get("int8"),
                   (report.get("tflite") or {}).get("int8")):
        if record:
            _print_int8(record)
    if q and not q["exporting_cpu_int8_dot_product"]:
        print("  note: this CPU has no int8 dot-product instructions (avx512_vnni, avx_vnni, "
              "amx_int8); onnxruntime runs the int8 model slower than the float one on it")
    return errors.EXIT_DONE


if __name__ == "__main__":
    sys.exit(export_main())
