"""Exit codes of montagectl, written once: the parser's epilog and docs/montagectl.md quote them."""

from __future__ import annotations

OK = 0
REFUSED = 1  # the daemon answered with an error reply
USAGE = 2  # bad command line or configuration (argparse exits 2 too)
UNREACHABLE = 3  # no daemon on the socket, or the socket cannot be used
JOB_FAILED = 4  # a job montagectl waited for failed or was cancelled
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it

EPILOG = """\
exit codes:
  0    done
  1    the daemon refused the request (its error code and message are printed)
  2    usage or configuration error
  3    montaged is not running, the socket is not accessible, or it did not answer in --timeout
  4    a job waited for (submit --wait, watch ID) failed or was cancelled
  130  interrupted (Ctrl-C); jobs already submitted go on in the daemon
"""


class CtlExit(Exception):
    """End the command with ``code`` after printing ``message`` (one line) on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
