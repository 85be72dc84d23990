"""The `simclrv2` command: one entry point, each sub-command owned by its package.

Sub-commands are imported lazily so that `simclrv2 zoo list` does not pay for TensorFlow's
start-up more than it must. Every command takes argparse-style options spelled with dashes
(`--model-dir DIR`) and exits with a status of the one table in simclrv2.errors (docs/cli.md).
Failures are reported by simclrv2.errors: one line and exit 2 for an ordinary mistake, the
traceback and exit 70 for a bug; `--debug` anywhere on the command line (or SIMCLRV2_DEBUG=1)
shows the traceback of a mistake too.
"""

import importlib
import sys

from simclrv2 import errors

# sub-command -> (module, function, one-line help)
COMMANDS = {
    "zoo": ("simclrv2.zoo.cli", "zoo_main", "list, describe and download the released checkpoints"),
    "convert": ("simclrv2.convert", "convert_main", "convert an official SavedModel into a .keras model"),
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
    lines.append("`simclrv2 COMMAND --help` describes the options of one command. A mistake is")
    lines.append(f"reported in one line (exit {errors.EXIT_MISTAKE}); --debug, anywhere, shows its "
                 "traceback too.")
    lines.append("Exit statuses of every command: docs/cli.md.")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug may come before the command name too; it is removed before any parser sees it.
    debug = errors.debug_requested(argv)
    argv = errors.strip_debug(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return errors.EXIT_DONE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"simclrv2: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return errors.EXIT_MISTAKE
    module_name, function_name, _ = COMMANDS[name]
    function = getattr(importlib.import_module(module_name), function_name)
    if hasattr(function, "__wrapped__"):  # an errors.command: it reports its own failures
        return function(rest + [errors.DEBUG_FLAG] * debug)
    return errors.run(name, function, rest, debug)


if __name__ == "__main__":
    sys.exit(main())
