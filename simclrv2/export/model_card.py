"""What an export says about itself for people: README.md (the model card) from config.json's
report, and SHA256SUMS (`sha256sum -c` format) over every file."""

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


def model_card(report):
    """README.md of the export described by `report` (what config.json holds)."""
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
        "| file | what |", "|---|---|",
    ]
    if "savedmodel" in report["formats"]:
        sigs = ", ".join(f"`{s}`" for s in report["signatures"])
        lines.append(f"| `saved_model/` | TF SavedModel; signatures {sigs} |")
    if "onnx" in report["formats"]:
        outs = ", ".join(f"`{o}`" for o in report["onnx"]["outputs"])
        lines.append(f"| `model.onnx` | ONNX opset {report['onnx']['opset']}, input `images`, "
                     f"outputs {outs} |")
    if report.get("int8"):
        q = report["int8"]
        lines.append(f"| `{q['file']}` | the ONNX model quantized to int8 (QDQ, onnxruntime); "
                     f"{q['gate']} {q.get('top1_drop_points', q.get('disagreement_points'))} "
                     f"points on {q['check_examples']} images (allowed {q['max_drop_points']:g}) |")
    if "keras" in report["formats"]:
        lines.append("| `model.keras` | Keras 3 model with its heads, for `fit` "
                     "(`import simclrv2.zoo` first) |")
    lines += ["| `config.json` | everything below, machine-readable |",
              f"| `{CHECKSUMS}` | `sha256sum -c {CHECKSUMS}` |", ""]
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
