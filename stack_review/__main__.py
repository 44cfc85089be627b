"""``python -m stack_review``: write or check the reviewed manifest of every stack.

    python -m stack_review --write          # regenerate stack_review/manifests/*.txt
    python -m stack_review --check          # exit 1 with a diff when one is out of date
    python -m stack_review --print --stack prod

``make manifest`` runs ``--write``; the test suite runs the same comparison as ``--check``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from stack_review.manifest import (
    MANIFEST_DIR,
    committed_stacks,
    generate,
    manifest_path,
    stale_manifests,
)


def text_diff(before: str, after: str, fromfile: str, tofile: str) -> str:
    """A unified diff of two manifests ('' when equal)."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=fromfile,
            tofile=tofile,
        )
    )


def manifest_diff(stack: str, expected: str, directory: Path = MANIFEST_DIR) -> str:
    """A unified diff from the committed manifest to ``expected`` ('' when equal)."""
    path = manifest_path(stack, directory)
    committed = path.read_text() if path.exists() else ""
    return text_diff(
        committed,
        expected,
        fromfile=f"{path.name} (committed)",
        tofile=f"{path.name} (what the program declares now)",
    )


def _shown(path: Path) -> Path:
    """A path relative to the working directory when it lies below it (shorter output)."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    stacks = committed_stacks()
    parser = argparse.ArgumentParser(
        prog="python -m stack_review",
        description="Render each stack's infrastructure manifest from the real program "
        "under mocks, and write it or compare it with the committed one.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the committed files")
    mode.add_argument("--check", action="store_true", help="fail with a diff when stale")
    mode.add_argument("--print", action="store_true", help="print the manifests")
    parser.add_argument(
        "--stack",
        action="append",
        choices=stacks,
        help=f"one stack (repeatable); default: every committed stack ({', '.join(stacks)})",
    )
    parser.add_argument(
        "--dir", type=Path, default=MANIFEST_DIR, help="manifest directory (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    stacks = args.stack or committed_stacks()
    out_of_date = []
    for stack in stacks:
        text = generate(stack)
        path = manifest_path(stack, args.dir)
        if args.print:
            sys.stdout.write(text)
        elif args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            changed = not path.exists() or path.read_text() != text
            path.write_text(text)
            print(f"{'wrote' if changed else 'unchanged'} {_shown(path)}")
        elif diff := manifest_diff(stack, text, args.dir):
            out_of_date.append(stack)
            sys.stdout.write(diff)
    if args.check:
        stale = stale_manifests(args.dir) if args.stack is None else []
        for path in stale:
            print(f"{path}: no Pulumi.{path.stem}.yaml any more; delete it")
        if out_of_date or stale:
            print(
                f"\nmanifest out of date for {', '.join(out_of_date) or 'no stack'}: "
                "run `make manifest` and commit the result with your change."
            )
            return 1
        print(f"manifests up to date: {', '.join(stacks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
