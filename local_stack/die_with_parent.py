"""``python die_with_parent.py PARENT_PID COMMAND...``: run COMMAND so that Linux stops it
(SIGTERM) when the process that started it dies, even by SIGKILL.

The parent-death signal (``prctl(PR_SET_PDEATHSIG)``) is set in this process and kept by the
``exec`` of COMMAND, which keeps this process id. The supervisor does not set it between
its own fork and exec: a ``preexec_fn`` makes Python fork without ``vfork``, so gRPC's fork
handlers run in the child of any process that has used gRPC (a test run, for one), and
since gRPC 1.81 they can abort that child before its exec
(https://github.com/grpc/grpc/issues/43055). Standard library only, run with ``-I -S``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 143  # as if the parent-death SIGTERM had arrived


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        return EXIT_PARENT_GONE  # the parent died before the signal was armed
    os.execvp(command[0], command)  # noqa: S606 (the part's own argv, as Popen would run it)
    return 127  # not reached: execvp raises when it fails


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
