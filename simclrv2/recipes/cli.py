"""`simclrv2 pretrain|finetune|lineareval|distill [--recipe NAME_OR_FILE] [--train-steps 100 ...]`.

Each field of the stage's config dataclass (simclrv2/recipes/config.py) is one option, spelled
with dashes (`train_steps` -> `--train-steps`) and described by the field's type and default, so
a new field is a new option with nothing else to edit. The values travel as text, keyed by field
name, to config.load: the one place that types and checks them, for recipes and options alike.
The underscore spellings of the earlier hand-written parser (`--train_steps=100`) are still
accepted for one release, with one deprecation line per run that names the dashed ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import pathlib
import sys
import textwrap
import typing

from simclrv2 import dir_lock, errors
from simclrv2.recipes import config as config_lib
from simclrv2.recipes import memory_estimate

DESCRIPTION = """Runs stage `{stage}` with a recipe's settings, each one overridable by its option:
`--train-steps 100` and `--train-steps=100` both work; an option shown as X|none also takes
none. The defaults below are the stage's own; --recipe replaces those it sets (--print-config
shows the result)."""

EPILOG = """{recipes}

examples:
  simclrv2 {stage} --recipe {example} --print-config    # the resolved settings; trains nothing
  simclrv2 {stage} --recipe {example} --train-steps 100 --model-dir runs/try

{exit_statuses}"""

EXIT_STATUSES = (f"exit status: {errors.EXIT_DONE} done, {errors.EXIT_RUN_FAILED} the run failed "
                 f"(the loss became NaN/inf, a worker was lost), {errors.EXIT_MISTAKE} a mistake "
                 f"in the input (one line), also: --model-dir in use by another run, a size that "
                 f"does not fit in memory, {errors.EXIT_PREEMPTED} stopped early with a "
                 f"checkpoint saved (run the same command again to resume), {errors.EXIT_BUG} a "
                 f"bug, {errors.EXIT_INTERRUPTED} interrupted without a checkpoint; the table: "
                 f"docs/cli.md")


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (a missing value) become a UsageError: simclrv2.errors prints them
    as one line and exits 2, as it does every other mistake, instead of argparse's usage block."""

    def error(self, message):
        raise errors.UsageError(f"{message}; `{self.prog} --help` lists the options")


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _metavar(annotation) -> str:
    """INT, FLOAT, TEXT or true|false, with |none where the field is Optional."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) is typing.Union and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else annotation
    text = {bool: "true|false", int: "INT", float: "FLOAT", str: "TEXT"}[base]
    return f"{text}|none" if optional else text


def _default_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if value == "" else str(value)


def build_parser(stage: str) -> argparse.ArgumentParser:
    cls = config_lib.STAGE_CONFIGS[stage]
    recipes = [name for name in config_lib.list_recipes()
               if config_lib.read_recipe(name).get("stage", stage) == stage]
    example = next((name for name in recipes if name.startswith("fmnist_")), recipes[0])
    recipe_text = textwrap.fill(f"recipes for {stage} (a name, or the path of a JSON file): "
                                f"{', '.join(recipes)}", width=78)
    parser = _Parser(prog=f"simclrv2 {stage}", add_help=False, allow_abbrev=False,
                     usage=f"simclrv2 {stage} [--recipe NAME_OR_FILE] [--OPTION VALUE ...] "
                           f"[--print-config]",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description=DESCRIPTION.format(stage=stage),
                     epilog=EPILOG.format(recipes=recipe_text, stage=stage, example=example,
                                          exit_statuses=textwrap.fill(EXIT_STATUSES, width=78)))
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("--recipe", metavar="NAME_OR_FILE",
                        help="a recipe name (listed below) or a JSON file; its keys replace the "
                             "defaults shown here, and options replace its keys")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved settings as JSON and exit without training")
    parser.add_argument("--allow-running", action="store_true",
                        help="read --checkpoint or --teacher even when it is a run another "
                             "process is still writing (its newest checkpoint); refused without")
    shared = {f.name for f in dataclasses.fields(config_lib.RunConfig)}
    groups = (parser.add_argument_group("options of every stage"),
              parser.add_argument_group(f"options of {stage}"))
    types = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        groups[field.name not in shared].add_argument(
            option_name(field.name), dest=field.name, metavar=_metavar(types[field.name]),
            default=argparse.SUPPRESS, help=f"default {_default_text(field.default)}")
    return parser


def _dashed(argv, parser):
    """argv with each old underscore spelling of an option (`--train_steps=100`) rewritten to
    its dashed form, and the old spellings met, in order."""
    known = set(parser._option_string_actions)
    rewritten, old = [], []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if arg.startswith("--") and "_" in name and name.replace("_", "-") in known:
            old.append(name)
            arg = name.replace("_", "-") + sep + value
        rewritten.append(arg)
    return rewritten, old


def _unknown(stage, extra, parser) -> str:
    """One line for what argparse did not recognise, in the dashed spelling."""
    first = extra[0]
    if not first.startswith("-"):
        return (f"unexpected argument {first!r}; options look like --key value "
                f"(`simclrv2 {stage} --help` lists them)")
    name = first.partition("=")[0].replace("_", "-")
    if not name.startswith("--"):
        name = "-" + name.lstrip("-")
    close = difflib.get_close_matches(name, sorted(parser._option_string_actions), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown option {name} for stage {stage}; {hint}`simclrv2 {stage} --help` lists them"


def parse_args(stage: str, argv):
    """(recipe, overrides keyed by field name, print_only, help_only, allow_running) from argv;
    a malformed option raises UsageError, with the dashed spelling."""
    parser = build_parser(stage)
    argv, old = _dashed(list(argv), parser)
    if old:
        new = [name.replace("_", "-") for name in old]
        print(f"simclrv2 {stage}: deprecated spelling {', '.join(dict.fromkeys(old))}: options "
              f"are spelled with dashes, and the underscore forms go in the next release; write "
              f"{', '.join(dict.fromkeys(new))}", file=sys.stderr)
    args, extra = parser.parse_known_args(argv)
    if args.help:
        return None, {}, False, True, False
    if extra:
        raise errors.UsageError(_unknown(stage, extra, parser))
    recipe, print_only = args.recipe, args.print_config
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("help", "recipe", "print_config", "allow_running")}
    return recipe, overrides, print_only, False, args.allow_running


def _main(stage, argv):
    """Runs one stage; failures are reported by simclrv2.errors: one line and exit 2 for a bad
    recipe, option, checkpoint or dataset, a model_dir another process writes or a size that
    cannot fit, one line and exit 1 for a loss that became NaN/inf or a lost worker of a
    multi-worker run."""
    recipe, overrides, print_only, help_only, allow_running = parse_args(stage, argv)
    if help_only:
        print(build_parser(stage).format_help())
        return errors.EXIT_DONE
    config = config_lib.load(stage, recipe, overrides)
    if print_only:
        print(json.dumps(config_lib.to_dict(config), indent=2))
        return errors.EXIT_DONE
    model_dir = pathlib.Path(config.model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise config_lib.ConfigError(f"model_dir {model_dir} is a file; pass --model-dir DIR, a "
                                     f"new folder or a run to resume")
    # Before TensorFlow is imported: a size that cannot fit, a model_dir another process writes
    # or an input another run is still writing is refused at once (the stage checks again
    # under its lock, and for its other callers). A multi-worker run's other workers share
    # model_dir with the chief, and lock their own scratch directories.
    memory_estimate.check_fits(config)
    if config.strategy != "multiworker":
        dir_lock.refuse_if_in_use(model_dir, "another --model-dir")
    for option in ("checkpoint", "teacher"):
        dir_lock.refuse_if_being_written(getattr(config, option, ""), allow_running)
    from simclrv2.recipes import stages  # TensorFlow: only once there is something to run

    result = stages.STAGE_FUNCTIONS[stage](config)
    result.pop("model", None)
    print(json.dumps(result, indent=2, default=str))
    if result.get("status") == "done":
        return errors.EXIT_DONE
    if result.get("status") == "paused":
        print(f"simclrv2 {stage}: paused at step {result.get('steps')} (--stop-at-step) with a "
              f"checkpoint saved in {model_dir}; run it again without --stop-at-step, or with a "
              f"later one, to go on", file=sys.stderr)
        return errors.EXIT_PREEMPTED
    print(f"simclrv2 {stage}: stopped at step {result.get('steps')} with a checkpoint saved in "
          f"{model_dir}; run the same command again to resume", file=sys.stderr)
    return errors.EXIT_PREEMPTED


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
