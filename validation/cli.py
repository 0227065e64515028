"""The ``unrelu`` command line.

Each command lives in its own module of ``validation`` that provides
``add_parser(subparsers)``; the parser's ``func`` default runs it and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from formulation.results import UnreluError

#: Modules that contribute commands, in the order of ``unrelu --help``.
COMMAND_MODULES = ("validation.verify", "validation.train", "validation.cs", "validation.compare_solvers",
                   "validation.bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unrelu",
        description=(
            "Learning ReLU networks by un-rectifying: x = d*z with d in [0,1] and sign constraints, "
            "solved by a safeguarded augmented-Lagrangian method whose blocks are convex subproblems."
        ),
        epilog="Run `unrelu COMMAND --help` for the options of a command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


class _ProgressHandler(logging.Handler):
    """Progress records of long solves (logger ``unrelu.progress``) as ``unrelu: ...`` lines on the current
    stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"unrelu: {self.format(record)}", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr closed: progress is not worth failing for
            pass


def show_progress() -> None:
    """Send the ``unrelu.progress`` records (INFO and above) to stderr, once per process."""
    logger = logging.getLogger("unrelu.progress")
    if not any(isinstance(handler, _ProgressHandler) for handler in logger.handlers):
        logger.addHandler(_ProgressHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    show_progress()
    try:
        return int(args.func(args) or 0)
    except UnreluError as exc:
        print(f"unrelu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unrelu: interrupted; results written so far are kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
