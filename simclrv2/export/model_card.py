"""What an export says about itself for people: README.md (the model card) from config.json's
report with each file's size, and SHA256SUMS (`sha256sum -c` format) over every file."""

from __future__ import annotations

import pathlib

CHECKSUMS = "SHA256SUMS"


def write_checksums(root):
    """SHA256SUMS in `sha256sum -c` format for every file below root; returns how many."""
    from simclrv2.zoo.download import sha256_of_files

    digests = {name: digest for name, digest in sha256_of_files(root).items()
               if name != CHECKSUMS}
    lines = [f"{digest}  {name}" for name, digest in digests.items()]
    pathlib.Path(root, CHECKSUMS).write_text("\n".join(lines) + "\n")
    return len(lines)


def file_sizes(root) -> dict:
    """{path relative to root (posix): bytes} of every file below root."""
    root = pathlib.Path(root)
    return {p.relative_to(root).as_posix(): p.stat().st_size
            for p in sorted(root.rglob("*")) if p.is_file()}


def _size(sizes, *names):
    """The size of the files `names` together, or of every file below a name ending in "/"."""
    total = sum(size for path, size in sizes.items()
                if path in names or any(n.endswith("/") and path.startswith(n) for n in names))
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{total / scale:.1f} {unit}"
    return f"{total} B"


def _runtime_rows(report, size):
    """The model card's rows of the OpenVINO and TFLite files: (files, what) for each model."""
    models = []
    ov = report.get("openvino")
    if ov:
        precision = ov.get("default_precision") or {}
        agreement = precision.get("top1_agreement")
        checked = (f"; at OpenVINO's default precision here "
                   f"({precision['inference_precision']}) top-1 agreement with Keras "
                   f"{100 * agreement:.2f}% on {precision['check_examples']} images"
                   if agreement is not None else "")
        models.append((ov["files"], "OpenVINO IR (float32 weights) read from model.onnx, same "
                                    f"input and outputs{checked}"))
        if ov.get("int8"):
            models.append((ov["int8"]["files"], f"OpenVINO int8 (NNCF); {_gate(ov['int8'])}"))
    lite = report.get("tflite")
    if lite:
        models.append(([lite["file"]], f"TFLite float32 for LiteRT, signature "
                                       f"`{lite['signature']}` with model.onnx's input and outputs"))
        if lite.get("int8"):
            models.append(([lite["int8"]["file"]], "TFLite full-integer int8 (float32 input and "
                                                   f"outputs); {_gate(lite['int8'])}"))
    # An OpenVINO model is its .xml and the .bin beside it: one row, named by the .xml.
    return [f"| `{files[0]}`{' + `.bin`' if len(files) > 1 else ''} | {size(*files)} | {what} |"
            for files, what in models]


def _gate(q):
    return (f"{q['gate']} {q.get('top1_drop_points', q.get('disagreement_points'))} points on "
            f"{q['check_examples']} images (allowed {q['max_drop_points']:g})")


def model_card(report, sizes=None):
    """README.md of the export described by `report` (what config.json holds); `sizes`
    ({relative path: bytes}, file_sizes) gives each file's size."""
    sizes = sizes or {}

    def size(*names):
        return _size(sizes, *names)

    cfg = report["model_config"]
    lines = [
        f"# {report['architecture']} ({report['stage']})", "",
        "SimCLRv2 ResNet exported by `simclrv2 export` (Chen et al., *Big Self-Supervised Models "
        "are Strong Semi-Supervised Learners*, NeurIPS 2020).", "",
        f"- Architecture: ResNet-{cfg['depth']} {cfg['width']}x, selective kernels "
        f"{'on' if cfg['sk'] else 'off'}, {'CIFAR' if cfg['cifar_stem'] else 'ImageNet'} stem; "
        f"projection head {'yes' if cfg['include_projection_head'] else 'no'}; "
        f"classes: {report['classes']['num_classes'] or 'none (pretrained, no supervised head)'}",
        f"- Input: {report['input']['description']}, "
        f"{report['image_size']}x{report['image_size']}, any batch size",
        f"- Preprocessing: {report['preprocessing']['eval']}", "",
        "| file | size | what |", "|---|---|---|",
    ]
    if "savedmodel" in report["formats"]:
        sigs = ", ".join(f"`{s}`" for s in report["signatures"])
        lines.append(f"| `saved_model/` | {size('saved_model/')} | TF SavedModel; "
                     f"signatures {sigs} |")
    if "onnx" in report["formats"]:
        outs = ", ".join(f"`{o}`" for o in report["onnx"]["outputs"])
        lines.append(f"| `model.onnx` | {size('model.onnx')} | ONNX opset "
                     f"{report['onnx']['opset']}, input `images`, outputs {outs} |")
        data = report["onnx"].get("external_data")
        if data:
            lines.append(f"| `{data}` | {size(data)} | model.onnx's weights (ONNX external "
                         "data, read from beside model.onnx: keep the two together) |")
    if report.get("int8"):
        q = report["int8"]
        lines.append(f"| `{q['file']}` | {size(q['file'])} | the ONNX model quantized to int8 "
                     f"(QDQ, onnxruntime); {_gate(q)} |")
    lines += _runtime_rows(report, size)
    if "keras" in report["formats"]:
        lines.append(f"| `model.keras` | {size('model.keras')} | Keras 3 model with its heads, "
                     "for `fit` (`import simclrv2.zoo` first) |")
    lines += [f"| `config.json` | {size('config.json')} | everything below, machine-readable |",
              f"| `{CHECKSUMS}` | | `sha256sum -c {CHECKSUMS}` |", ""]
    if report["skipped_signatures"]:
        lines.append("Not exported: " + "; ".join(
            f"`{k}` ({v})" for k, v in report["skipped_signatures"].items()) + ".")
        lines.append("")
    verification = report["verification"]
    lines += [f"Verified against the Keras model on a probe batch of "
              f"{verification['probe_shape'][0]}: largest relative difference "
              f"{verification['max_relative_difference']:.2g} (tolerance "
              f"{verification['tolerance']:g}); per output in config.json.", ""]
    if report.get("source"):
        lines.append(f"Source: `{report['source']}` ({report['source_kind']}).")
    lines.append(f"Exported {report['exported_at']} with simclrv2 {report['simclrv2_version']}.")
    return "\n".join(lines) + "\n"
