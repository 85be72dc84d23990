"""How every `simclrv2` command reports a failure: one line for an ordinary mistake, a traceback
for a bug.

An ordinary mistake (a model name that does not exist, a missing or corrupt file, a full disk)
prints `simclrv2 COMMAND: <what is wrong>; <the fix>` to stderr and exits 2: a traceback would
only bury the one sentence the user needs. (Where the fix is commands to copy, such as fetching
a checkpoint by hand after a failed download, they follow that line, one a line.)

Anything else is a bug in simclrv2 or in a library it calls: the traceback is printed, then one
line saying so, and the exit status is 70 (EX_SOFTWARE), so that it is never mistaken for a
status a command documents (export's 1 means "an artifact did not match"). `--debug` anywhere
on the command line, or SIMCLRV2_DEBUG=1, prints the traceback of ordinary mistakes too; the
exit status stays the same. KeyboardInterrupt prints "interrupted" and exits 130. A training
run that failed on its own terms (the loss became NaN/inf, no checkpoint reads back, another
worker of a multi-worker run died) is one line and exit 1, as the training stages document it.
The EXIT_* constants below are the one table of exit statuses every command uses
(docs/cli.md documents it, and a test holds the two together).

What counts as ordinary, by exception type (see `describe`):
- ValueError (ConfigError, DataNotFoundError, ExportError, ... and plain ValueError) raised by
  simclrv2 itself (or any code outside the standard library and installed packages): this
  code raises ValueError only to refuse an input, with a message that names it. A ValueError
  raised inside Keras, TensorFlow or the standard library (the innermost Python frame is
  theirs) means simclrv2 called them wrongly: a bug. (One raised by C code called straight
  from simclrv2, such as a NumPy reshape, counts as simclrv2's: there is no frame to tell.)
- json.JSONDecodeError and UnicodeDecodeError: a file that is not the JSON or text it should be.
- OSError (missing file, a file where a folder should be, no permission, no space left, a
  download that failed, a file that is not gzip): the machine's state, not the code's.
- EOFError (a truncated compressed file) and zipfile.BadZipFile (a corrupt .keras archive).
- TensorFlow's DataLossError, NotFoundError and PermissionDeniedError: TF's names for the
  same file problems.
This module imports nothing heavy: `simclrv2 zoo list` stays fast.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import sysconfig
import traceback
import zipfile

DEBUG_FLAG = "--debug"
DEBUG_ENV = "SIMCLRV2_DEBUG"

# The exit statuses of every command. A scheduler or a shell loop acts on them without reading
# the output: 3 and 130 both mean "not finished", but only 3 promises a checkpoint written by a
# clean stop, so only 3 is safe to answer by running the same command again unattended; 130
# (128 + SIGINT, the shell's convention for a process ended by Ctrl-C) promises nothing. A
# SIGTERM that was handled is a clean stop too, hence 3 rather than 143 (128 + SIGTERM).
EXIT_DONE = 0
EXIT_RUN_FAILED = 1  # failed on its own terms: NaN/inf loss, lost worker, export not verified
EXIT_MISTAKE = 2  # a mistake in the input (a bad option too, as argparse exits): one line
EXIT_PREEMPTED = 3  # stopped early by SIGTERM or a first Ctrl-C, with a checkpoint saved
EXIT_BUG = 70  # EX_SOFTWARE in sysexits.h: a traceback
EXIT_INTERRUPTED = 130  # stopped without a clean stop: a second Ctrl-C, or outside training

_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep
_LIBRARY_DIRS = tuple(sorted({os.path.realpath(sysconfig.get_paths()[key]) + os.sep
                              for key in ("stdlib", "platstdlib", "purelib", "platlib")}))

# errno -> what to do about it
_OS_FIXES = {
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give a file path",
    errno.EEXIST: "it is in the way; remove it or choose another path",
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOSPC: "the disk is full; free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is used up; free some space or write somewhere else",
}
# A run that failed on its own terms, not by a mistake in its input nor by a bug: exit 1, as
# the training stages document it (matched by class name: no TensorFlow import here).
_RUN_FAILURES = ("NonFiniteLossError", "DamagedCheckpointsError", "LostWorkerError")
_TF_FILE_ERRORS = {
    "DataLossError": "the file is corrupt or truncated; write or download it again",
    "NotFoundError": "check the path",
    "PermissionDeniedError": "check its permissions or choose another location",
}


class UsageError(ValueError):
    """An ordinary mistake found by command-line code; the message says what to do."""


def describe(error: BaseException):
    """The message for an ordinary mistake, or None when `error` looks like a bug.

    The message is one line, except that an exception class of simclrv2 may add lines of
    commands to copy below it (the download error's `gsutil`/`curl` lines, the tfds
    preparation commands); any other text is folded into one line."""
    ours = type(error).__module__.split(".")[0] == "simclrv2"
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
        return _one_line(f"{error}; the file is not the JSON or UTF-8 text it should be")
    if isinstance(error, ValueError):
        if ours:
            return _first_line_and_commands(str(error))
        return None if _raised_in_library(error) else _one_line(str(error))
    if isinstance(error, OSError):
        return (_first_line_and_commands if ours else _one_line)(_describe_os_error(error))
    if isinstance(error, zipfile.BadZipFile):
        return _one_line(f"{error}: the .keras file (a zip archive) is corrupt or truncated; "
                         "save, copy or download it again")
    if isinstance(error, EOFError):
        return _one_line(f"{error}: a file is truncated; copy or download it again")
    tf_fix = _tensorflow_file_error(error)
    if tf_fix is not None:
        return _one_line(f"{getattr(error, 'message', error)}; {tf_fix}")
    return None


def _describe_os_error(error: OSError) -> str:
    if error.errno is None or not error.strerror:
        return str(error)
    where = " or ".join(repr(os.fspath(f)) for f in (error.filename, error.filename2)
                        if f is not None)
    text = f"{error.strerror}: {where}" if where else error.strerror
    fix = _OS_FIXES.get(error.errno)
    return f"{text}; {fix}" if fix else text


def _tensorflow_file_error(error):
    """The fix for TensorFlow's file errors, matched by class name (no TF import here)."""
    for cls in type(error).__mro__:
        if cls.__module__.startswith("tensorflow") and cls.__name__ in _TF_FILE_ERRORS:
            return _TF_FILE_ERRORS[cls.__name__]
    return None


def _is_run_failure(error) -> bool:
    return any(cls.__module__.startswith("simclrv2.") and cls.__name__ in _RUN_FAILURES
               for cls in type(error).__mro__)


def _raised_in_library(error) -> bool:
    """Whether the innermost frame of `error` is in the standard library or an installed
    package other than simclrv2 (which may itself be installed in site-packages)."""
    tb, filename = error.__traceback__, None
    while tb is not None:
        filename, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
    if filename is None:
        return False
    path = os.path.realpath(filename)
    return not path.startswith(_PACKAGE_DIR) and path.startswith(_LIBRARY_DIRS)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _first_line_and_commands(text: str) -> str:
    """simclrv2's own multi-line messages: a sentence that may wrap over lines, then commands
    indented by two spaces (kept as they are, to be copied)."""
    lines = [line for line in text.splitlines() if line.strip()]
    commands = [i for i, line in enumerate(lines) if line.startswith("  ")]
    if not commands:
        return _one_line(text)
    first = commands[0]
    return "\n".join([_one_line("\n".join(lines[:first]))] + lines[first:])


def debug_requested(argv) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def strip_debug(argv) -> list:
    return [arg for arg in argv if arg != DEBUG_FLAG]


def run(command: str, function, argv, debug: bool = False) -> int:
    """function(argv) -> exit status, with every exception reported as the module docstring
    says. `command` is what the message names (`zoo list`, `export`)."""
    try:
        return int(function(argv) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"simclrv2 {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 -- sorted into mistakes and bugs right here
        if _is_run_failure(error):
            if debug:
                traceback.print_exc()
            print(f"simclrv2 {command}: {_one_line(str(error))}", file=sys.stderr)
            return EXIT_RUN_FAILED
        message = describe(error)
        if message is None:
            traceback.print_exc()
            print(f"simclrv2 {command}: internal error ({type(error).__name__}), a bug in "
                  "simclrv2 or a library it uses; please report it with the traceback above",
                  file=sys.stderr)
            return EXIT_BUG
        if debug:
            traceback.print_exc()
        print(f"simclrv2 {command}: {message}", file=sys.stderr)
        return EXIT_MISTAKE


def command(name: str, subcommands=()):
    """Decorator for a command's main(argv): strips --debug and runs it under `run`, so the
    command reports failures the same way whether it is called by `simclrv2 NAME` or directly
    (tests, `python -m`). With `subcommands`, a leading one is named too (`zoo list`)."""
    def wrap(function):
        @functools.wraps(function)
        def main(argv=None):
            argv = list(sys.argv[1:] if argv is None else argv)
            debug = debug_requested(argv)
            argv = strip_debug(argv)
            shown = f"{name} {argv[0]}" if argv and argv[0] in subcommands else name
            return run(shown, function, argv, debug)
        return main
    return wrap
