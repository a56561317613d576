"""One line per error for the console entry points.

Every ``robustft-*`` command is wrapped by :func:`one_line_errors`: an exception raised while
Hydra composes the config or while the task runs reaches the user as ONE line on stderr,
``robustft-<cmd>: error: <message>``, and the command exits with code 1 (130 for Ctrl-C).
The full traceback comes back with ``HYDRA_FULL_ERROR=1`` in the environment or with the
argument ``verbose=true`` (taken off the command line before Hydra or argparse sees it, so
it works even when the config does not compose, and it is not a config key).

Hydra's ``@hydra.main`` would print the error itself (``run_and_report``: a trimmed
traceback and a hint, after a line "Error executing job with overrides"). While the wrapped
command runs, Hydra's ``run_and_report`` only calls its function and a failed job's result
raises without that line, so the exception arrives here unchanged: Hydra 1.3's own
behaviour under ``HYDRA_FULL_ERROR=1``, without the variable leaking into the processes the
command starts (DDP ranks, launchers). Both are Hydra internals (``hydra._internal.utils.
run_and_report``, ``hydra.core.utils.JobReturn.return_value``) of the pinned hydra-core
1.3.8, swapped only for the call; ``tests/cli/test_errors.py`` fails if they move. Log
output is untouched: only the error path changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["one_line_errors", "one_line_message", "fold_lines", "pop_verbose_flag"]

EntryPoint = TypeVar("EntryPoint", bound=Callable[..., Any])

FULL_ERROR_VARIABLE = "HYDRA_FULL_ERROR"
VERBOSE_VALUES = {"true": True, "1": True, "false": False, "0": False}
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

# Types whose messages the project writes as sentences of their own (bad input: file or key
# and what was expected); any other type is named in front of its message.
SELF_EXPLAINING_TYPES: tuple[type[BaseException], ...] = (ValueError, LookupError, TypeError,
                                                         OSError)

# torch.utils.data re-raises a worker's exception in the main process with this message
# (torch/_utils.py, ExceptionWrapper.reraise).
_WORKER_MESSAGE = re.compile(
    r"\ACaught (?P<type>\w+) (?P<where>in [^\n]*?)\.\nOriginal (?P<traceback>.*)\Z", re.DOTALL)
_TRACEBACK_HEADER = "Traceback (most recent call last):"
# The lines OmegaConf appends to every message (omegaconf._utils.format_and_raise).
_OMEGACONF_DETAIL = re.compile(r"^\s+(full_key: |reference_type=|object_type=)")


def fold_lines(text: str) -> str:
    """``text`` on one line: stripped lines joined with spaces; the indented lines under a
    line ending in ``:`` (a list, as Hydra prints the options of a group) joined with
    ``, ``."""
    pieces: list[str] = []
    in_list = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        indented = raw[:1].isspace()
        if pieces and indented and (in_list or pieces[-1].endswith(":")):
            pieces[-1] += (", " if in_list else " ") + line
            in_list = True
        else:
            pieces.append(line)
            in_list = False
    return " ".join(pieces)


def _message_text(error: BaseException) -> str:
    # KeyError's str() is the repr of its argument (quotes, escaped newlines)
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]
    return str(error)


def _omegaconf_message(error: BaseException) -> str | None:
    """``<full_key>: <message>`` for an OmegaConf error, without OmegaConf's detail lines;
    None for other errors."""
    errors = sys.modules.get("omegaconf.errors")  # not imported: cannot be an OmegaConf error
    if errors is None or not isinstance(error, errors.OmegaConfBaseException):
        return None
    lines = str(error).splitlines()
    while lines and _OMEGACONF_DETAIL.match(lines[-1]):
        lines.pop()
    message = fold_lines("\n".join(lines))
    full_key = getattr(error, "full_key", None)
    if not full_key:
        return message
    if isinstance(error, errors.MissingMandatoryValue):
        return f"{full_key}: missing mandatory value; set it on the command line ({full_key}=...)"
    return f"{full_key}: {message}{_schema_keys(error, full_key)}"


def _schema_keys(error: BaseException, full_key: str) -> str:
    """For an unknown key of a typed config node: the keys that node takes (its schema's
    fields), so the user sees the group's own keys and nothing else."""
    errors = sys.modules["omegaconf.errors"]
    schema = getattr(error, "object_type", None)
    if not isinstance(error, (errors.ConfigKeyError, errors.ConfigAttributeError)) or \
            not dataclasses.is_dataclass(schema):
        return ""
    group, _, key = full_key.rpartition(".")
    from robustft.schemas.renamed import renamed_to

    new_key = renamed_to(schema, key)
    if new_key is not None:
        return f" (renamed: use {group + '.' if group else ''}{new_key})"
    names = [f.name for f in dataclasses.fields(schema) if not f.name.startswith("_")]
    return f" ({group or 'the top level'} takes: {', '.join(names)})"


def _hydra_message(error: BaseException) -> str | None:
    """Hydra's own composition errors: the OmegaConf cause first (it names the key), the
    config search path dropped (Hydra's internals, not the user's input)."""
    hydra_errors = sys.modules.get("hydra.errors")
    if hydra_errors is None or not isinstance(error, hydra_errors.HydraException):
        return None
    lines = str(error).split("\nConfig search path:")[0].splitlines()
    key = ""
    if lines and lines[-1].startswith("full_key: "):  # hydra.utils.instantiate's errors
        key = lines.pop()[len("full_key: "):] + ": "
    message = key + fold_lines("\n".join(lines))
    cause = error.__cause__ if error.__cause__ is not None else error.__context__
    cause_message = _omegaconf_message(cause) if cause is not None else None
    if cause_message:
        return f"{cause_message}; {message}" if message else cause_message
    return message


def _original_exception_text(traceback_text: str) -> str:
    """The exception lines (type and message) of a formatted traceback: what follows the
    frames of its last ``Traceback`` block, type names without their module."""
    lines = traceback_text.rstrip("\n").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(_TRACEBACK_HEADER)]
    position = starts[-1] + 1 if starts else 0
    while position < len(lines) and (not lines[position] or lines[position][:1].isspace()):
        position += 1
    text = fold_lines("\n".join(lines[position:])) or lines[-1].strip()
    qualified, colon, rest = text.partition(":")
    if colon and " " not in qualified:  # "robustft.data.layout.CorruptImageError: ..."
        text = qualified.rsplit(".", 1)[-1] + colon + rest
    return text


def _worker_message(error: BaseException) -> str | None:
    """An error torch re-raised from a DataLoader worker (or its pin-memory thread): the
    original error's type and message, and where it came from."""
    match = _WORKER_MESSAGE.match(_message_text(error))
    if match is None:
        return None
    original = _original_exception_text(match["traceback"])
    return f"{original} (raised {match['where']})"


def _embedded_traceback_message(error: BaseException) -> str | None:
    """An error whose message carries another process's traceback (a launcher's failed
    job, e.g. submitit's ``FailedJobError``): the original error, then this one's first
    line."""
    text = _message_text(error)
    if _TRACEBACK_HEADER not in text:
        return None
    head = text.split(_TRACEBACK_HEADER)[0].strip().splitlines()
    where = f"{type(error).__name__}: {head[0].rstrip(' :-')}" if head else type(error).__name__
    return f"{_original_exception_text(text)} ({where})"


def one_line_message(error: BaseException) -> str:
    """What the user reads for ``error``: one line, no traceback."""
    notes = "".join(f" ({fold_lines(str(note))})" for note in getattr(error, "__notes__", ()))
    for special in (_worker_message, _omegaconf_message, _hydra_message,
                    _embedded_traceback_message):
        message = special(error)
        if message:
            return message + notes
    message = fold_lines(_message_text(error))
    if not message:
        message = type(error).__name__
    elif not isinstance(error, SELF_EXPLAINING_TYPES):
        message = f"{type(error).__name__}: {message}"
    return message + notes


def pop_verbose_flag(arguments: list[str]) -> bool:
    """Remove every ``verbose=<true|false>`` from ``arguments`` (in place); True when the
    last one says true."""
    verbose = False
    kept = []
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if key == "verbose" and equals and value.lower() in VERBOSE_VALUES:
            verbose = VERBOSE_VALUES[value.lower()]
        else:
            kept.append(argument)
    arguments[:] = kept
    return verbose


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _job_error(job: Any) -> Any:
    """``JobReturn.return_value`` without the line Hydra writes to stderr before raising a
    failed job's error ("Error executing job with overrides: [...]"); a multirun job's
    number and directory go into the error's notes instead."""
    from hydra.core.utils import JobStatus
    from hydra.types import RunMode

    if job.status == JobStatus.COMPLETED:
        return job._return_value
    error = job._return_value
    hydra_cfg = job.hydra_cfg
    if hydra_cfg is not None and hydra_cfg.hydra.mode == RunMode.MULTIRUN:
        error.add_note(f"multirun job {hydra_cfg.hydra.job.num}, {hydra_cfg.hydra.runtime.output_dir}")
    raise error


@contextlib.contextmanager
def _hydra_raises() -> Iterator[None]:
    """Let exceptions pass through Hydra's ``run_and_report`` unprinted, as Hydra itself
    does under HYDRA_FULL_ERROR=1, and keep its "Error executing job" line off stderr."""
    hydra_utils = sys.modules.get("hydra._internal.utils")
    if hydra_utils is None:  # not a Hydra command
        yield
        return
    from hydra.core.utils import JobReturn

    reporting, job_result = hydra_utils.run_and_report, JobReturn.return_value
    hydra_utils.run_and_report = lambda function: function()
    JobReturn.return_value = property(_job_error, job_result.fset)
    try:
        yield
    finally:
        hydra_utils.run_and_report = reporting
        JobReturn.return_value = job_result


def _report(command: str, text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"{command}: {text}\n")
    sys.stderr.flush()


def one_line_errors(command: str) -> Callable[[EntryPoint], EntryPoint]:
    """Decorate an entry point (a ``@hydra.main`` function, or an argparse ``main(argv)``)
    so that its errors are one line on stderr (see module docstring).

    Only a command-line call is wrapped: called with a config object (Hydra's
    ``main(cfg)``) the function raises as usual.
    """

    def decorate(main: EntryPoint) -> EntryPoint:
        @functools.wraps(main)
        def command_line_main(*args: Any, **kwargs: Any) -> Any:
            if args and not isinstance(args[0], list):
                return main(*args, **kwargs)
            saved_argv = list(sys.argv)
            if args:  # an explicit argv list (argparse commands)
                arguments = list(args[0])
                verbose = pop_verbose_flag(arguments)
                args = (arguments, *args[1:])
            else:
                arguments = sys.argv[1:]
                verbose = pop_verbose_flag(arguments)
                sys.argv[1:] = arguments
            try:
                if verbose:
                    with _environment(FULL_ERROR_VARIABLE, "1"):
                        return main(*args, **kwargs)
                if os.environ.get(FULL_ERROR_VARIABLE) == "1":
                    return main(*args, **kwargs)
                try:
                    with _hydra_raises():
                        return main(*args, **kwargs)
                except KeyboardInterrupt:
                    _report(command, "interrupted (KeyboardInterrupt)")
                    sys.exit(INTERRUPTED_EXIT_CODE)
                except Exception as error:  # noqa: BLE001 - every error ends here, as one line
                    _report(command, f"error: {one_line_message(error)}")
                    sys.exit(1)
            finally:
                sys.argv[:] = saved_argv

        return command_line_main  # type: ignore[return-value]

    return decorate
