"""`simclrv2 pretrain|finetune|lineareval|distill --recipe NAME_OR_FILE [--key=value ...]`."""

from __future__ import annotations

import contextlib
import json
import pathlib

from simclrv2 import errors
from simclrv2.recipes import config as config_lib

USAGE = """usage: simclrv2 {stage} [--recipe NAME_OR_FILE] [--key=value ...] [--print-config]

Runs stage `{stage}` with the recipe's settings, each overridable by --key=value.
Recipes: {recipes}
Keys: {keys}
"""


def parse_args(stage: str, argv):
    """(recipe, overrides, print_only) from argv; raises ConfigError on malformed options."""
    recipe, overrides, print_only = None, {}, False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("--print-config", "--print_config"):
            print_only = True
            continue
        if not arg.startswith("--"):
            raise config_lib.ConfigError(f"unexpected argument {arg!r}; options look like "
                                         f"--key=value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if not args:
                raise config_lib.ConfigError(f"--{key} needs a value (--{key}=VALUE)")
            value = args.pop(0)
        key = key.replace("-", "_")
        if key == "recipe":
            recipe = value
        else:
            overrides[key] = value
    return recipe, overrides, print_only


def _main(stage, argv):
    """Runs one stage; failures are reported by simclrv2.errors: one line and exit 2 for a bad
    recipe, option, checkpoint or dataset, one line and exit 1 for a loss that became NaN/inf
    or a lost worker of a multi-worker run."""
    if any(a in ("-h", "--help") for a in argv):
        keys = ", ".join(f.name for f in config_lib.dataclasses.fields(config_lib.STAGES[stage]))
        print(USAGE.format(stage=stage, recipes=", ".join(config_lib.list_recipes()), keys=keys))
        return 0
    recipe, overrides, print_only = parse_args(stage, argv)
    config = config_lib.load(stage, recipe, overrides)
    if print_only:
        print(json.dumps(config_lib.to_dict(config), indent=2))
        return 0
    model_dir = pathlib.Path(config.model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise config_lib.ConfigError(f"model_dir {model_dir} is a file; pass --model_dir=DIR, a "
                                     f"new folder or a run to resume")
    from simclrv2.recipes import stages  # TensorFlow: only once there is something to run

    with _removed_if_left_empty(model_dir):
        result = stages.STAGE_FUNCTIONS[stage](config)
    result.pop("model", None)
    print(json.dumps(result, indent=2, default=str))
    return 0 if result.get("status") == "done" else 3


@contextlib.contextmanager
def _removed_if_left_empty(model_dir):
    """A run refused before it wrote anything (a bad dataset or checkpoint is found only after
    the stage made model_dir) leaves no empty model_dir behind, if it was new."""
    existed = model_dir.exists()
    try:
        yield
    except Exception:
        if not existed and model_dir.is_dir() and not any(model_dir.iterdir()):
            model_dir.rmdir()
        raise


@errors.command("pretrain")
def pretrain_main(argv):
    return _main("pretrain", argv)


@errors.command("finetune")
def finetune_main(argv):
    return _main("finetune", argv)


@errors.command("lineareval")
def lineareval_main(argv):
    return _main("lineareval", argv)


@errors.command("distill")
def distill_main(argv):
    return _main("distill", argv)
