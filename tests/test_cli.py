"""`simclrv2` (simclrv2/cli.py): every command answers --help and a bad option in the dashed
convention, and the exit statuses of simclrv2/errors.py are the table of docs/cli.md."""

import re

import pytest

from conftest import REPO_ROOT
from simclrv2 import cli, errors

# An option as it appears in text: `--model-dir`, or an underscore spelling `--model_dir`.
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
TRAINING = [name for name, (module, _, _) in cli.COMMANDS.items()
            if module == "simclrv2.recipes.cli"]
ZOO_SUBCOMMANDS = ["zoo models", "zoo list", "zoo info", "zoo download"]

# Each command with everything it requires and one option it does not know.
BAD_OPTION = {
    "zoo": ["zoo", "list", "--no-such-option"],
    "convert": ["convert", "--saved-model", "sm", "--out", "m.keras", "--no-such-option"],
    "export": ["export", "--model", "m.keras", "--out", "out", "--no-such-option"],
    "run": ["run", "--no-such-option"],
    "build-ops": ["build-ops", "--no-such-option"],
    **{name: [name, "--no-such-option", "1"] for name in TRAINING},
}


def _run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's own --help and errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _underscore_options(text):
    return sorted({option for option in OPTION.findall(text) if "_" in option})


def test_the_training_commands_are_found():
    assert TRAINING == ["pretrain", "finetune", "lineareval", "distill"]


@pytest.mark.parametrize("command", ["", *cli.COMMANDS, *ZOO_SUBCOMMANDS])
def test_every_command_describes_its_options_in_dashes(command, capsys, monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    code, out, err = _run([*command.split(), "--help"], capsys)
    assert code in (errors.EXIT_DONE, None), err
    assert out.startswith("usage:") and OPTION.search(out), out
    # `run --help` once crashed on a help string with a literal "%" formatted twice.
    assert "%%" not in out  # a literal percent sign doubled where nothing formats it
    assert _underscore_options(out) == [], out


def test_every_command_has_a_bad_option_row():
    assert set(BAD_OPTION) == set(cli.COMMANDS)


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_a_bad_option_is_one_line_naming_it_in_dashes_and_exit_2(command, capsys, monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    code, out, err = _run(BAD_OPTION[command], capsys)
    assert code == errors.EXIT_MISTAKE, err
    assert "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"simclrv2 {command}") and "--no-such-option" in lines[-1], err
    if command in TRAINING:  # their own parser: the one line and nothing else
        assert len(lines) == 1, err
    else:  # argparse's: its usage block, then the one line
        assert lines[0].startswith("usage:"), err
    assert _underscore_options(err) == [], err


def test_an_unknown_command_is_one_line_and_exit_2(capsys):
    code, out, err = _run(["pretrian"], capsys)
    assert code == errors.EXIT_MISTAKE and out == ""
    assert err.strip() == ("simclrv2: unknown command 'pretrian'; valid commands: "
                           + ", ".join(cli.COMMANDS))


def _documented_exit_statuses():
    """{constant name: status} from the table under `## Exit statuses` in docs/cli.md."""
    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    section = text.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`(EXIT_\w+)`\s*\|", section, re.M)
    return {name: int(status) for status, name in rows}


def test_the_exit_statuses_are_the_table_of_docs_cli_md():
    constants = {name: value for name, value in vars(errors).items()
                 if name.startswith("EXIT_") and isinstance(value, int)}
    documented = _documented_exit_statuses()
    assert documented == constants
    assert len(set(constants.values())) == len(constants)  # no status means two things
    # The ones every script already relies on.
    assert (errors.EXIT_DONE, errors.EXIT_MISTAKE, errors.EXIT_BUG) == (0, 2, 70)


def test_every_exit_table_names_the_directory_in_use_case(capsys):
    """A second writer of a directory is refused with exit 2 (simclrv2/dir_lock.py): docs/cli.md's
    table says so, and so do the statuses each writing command lists in its --help."""
    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    section = text.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| 2 |"))
    assert "directory in use" in row and "is in use: pid" in row and "--allow-running" in row
    for command in [*TRAINING, "export"]:
        _, out, _ = _run([command, "--help"], capsys)
        statuses = " ".join(out.lower().split("exit status", 1)[1].split())
        assert "2 " in statuses and " in use by another" in statuses, (command, statuses)
