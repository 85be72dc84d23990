"""The `simclrv2` command: one entry point, each sub-command owned by its package.

Sub-commands are imported lazily so that `simclrv2 zoo list` does not pay for TensorFlow's
start-up more than it must.
"""

import importlib
import sys

# sub-command -> (module, function, one-line help)
COMMANDS = {
    "zoo": ("simclrv2.zoo.cli", "zoo_main", "list, describe and download the released checkpoints"),
    "convert": ("simclrv2.zoo.cli", "convert_main", "convert an official SavedModel into a .keras model"),
    "pretrain": ("simclrv2.recipes.cli", "pretrain_main", "stage 1: contrastive pretraining"),
    "finetune": ("simclrv2.recipes.cli", "finetune_main", "stage 2: fine-tuning on labeled data"),
    "lineareval": ("simclrv2.recipes.cli", "lineareval_main", "linear evaluation of frozen features"),
    "distill": ("simclrv2.recipes.cli", "distill_main", "stage 3: distillation into a student"),
    "export": ("simclrv2.export.cli", "export_main", "write SavedModel, ONNX and .keras with checks"),
    "run": ("simclrv2.main_job", "main", "the whole pipeline on the embedded Fashion-MNIST"),
    "build-ops": ("simclrv2.data.fused_view", "main", "compile the fused augmentation op (make setup does)"),
}


def _usage() -> str:
    lines = ["usage: simclrv2 COMMAND [options]", "", "commands:"]
    for name, (_, _, help_text) in COMMANDS.items():
        lines.append(f"  {name:<11} {help_text}")
    lines.append("")
    lines.append("`simclrv2 COMMAND --help` describes the options of one command.")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"simclrv2: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
