"""``python -m preflight``: check every committed stack (or ``--stack NAME``) offline
against Google's API schemas and limits; exit 1 when any value would be refused."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from preflight.check import check_stack
from stack_review.manifest import committed_stacks


def main(argv: Sequence[str] | None = None) -> int:
    stacks = committed_stacks()
    parser = argparse.ArgumentParser(
        prog="python -m preflight",
        description="Check every value the Pulumi program declares against Google's API "
        "discovery documents and documented limits, offline.",
    )
    parser.add_argument(
        "--stack",
        action="append",
        choices=stacks,
        help=f"one stack (repeatable); default: every committed stack ({', '.join(stacks)})",
    )
    args = parser.parse_args(argv)
    failed = False
    for stack in args.stack or stacks:
        problems = check_stack(stack)
        for problem in problems:
            print(problem.render())
        if problems:
            failed = True
            print(f"{stack}: {len(problems)} value(s) Google would refuse or ignore\n")
        else:
            print(f"{stack}: every declared value fits Google's schemas and limits")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
