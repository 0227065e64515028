"""The ``unrelu`` command line.

Each command lives in its own module of ``validation`` that provides
``add_parser(subparsers)``; the parser's ``func`` default runs it and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
