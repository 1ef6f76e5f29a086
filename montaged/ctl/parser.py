"""montagectl's command line: global options, one sub-command per control op, exit codes in --help.

Global options are accepted before or after the command (``montagectl --json list`` and
``montagectl list --json``): sub-commands repeat them with ``SUPPRESS`` defaults, so a value given
before the command is not reset by the sub-command's parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from montaged.ctl import editing, purge
from montaged.ctl.exits import EPILOG
from montaged.model import JobState

DEFAULT_TIMEOUT = 10.0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 seconds")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 seconds or more")
    return value


def reel_value(text: str) -> dict[str, Any]:
    """``--reel order=score,transition=dip,seconds=0.8`` (any of the three) as the ``reel`` option;
    the job's submit checks the values."""
    reel: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("order", "transition", "seconds"):
            raise argparse.ArgumentTypeError(f"{part!r}: use order=time|score, transition=crossfade|dip,"
                                             " seconds=S (comma-separated)")
        try:
            reel[key] = float(value) if key == "seconds" else value
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: seconds must be a number") from None
    return reel


def add_render_options(p: argparse.ArgumentParser, *, default_profile: str | None) -> None:
    """``--profile`` (repeatable: one render per profile from one analysis) and ``--reel``."""
    shown = default_profile or "the daemon's, vertical"
    p.add_argument("--profile", "-p", dest="profiles", action="append", metavar="P",
                   help=f"output profile (default: {shown}); repeat it for one render per profile from"
                        " one analysis (transcription, speakers and selection run once)")
    p.add_argument("--reel", nargs="?", const=True, type=reel_value, metavar="SETTINGS",
                   help="join the clips into one reel with transitions instead of separate clips;"
                        " SETTINGS changes the profile's (or the default) order=time|score,"
                        " transition=crossfade|dip, seconds=S, e.g. --reel transition=dip,seconds=0.8")
    p.add_argument("--no-reel", dest="reel", action="store_const", const=False,
                   help="separate clips even with a profile that makes a reel")


def render_options(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """The job's ``profile`` and the options ``--profile``/``--reel`` ask for."""
    profiles: list[str] = list(dict.fromkeys(args.profiles or []))
    options: dict[str, Any] = {}
    if len(profiles) > 1:
        options["profiles"] = profiles
    if args.reel is not None:
        options["reel"] = args.reel
    return (profiles[0] if profiles else None), options


def _globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("global options")
    g.add_argument("--socket", "-s", type=Path, metavar="PATH", default=default(None),
                   help="control socket (default: control.socket_path from the config, "
                        "$MONTAGE_CONTROL__SOCKET_PATH, else $RUNTIME_DIRECTORY/montaged.sock)")
    g.add_argument("--config", "-c", type=Path, metavar="FILE", default=default(None),
                   help="TOML config to read the socket path from (default: $MONTAGE_CONFIG, "
                        "else /etc/montage/montage.toml if present)")
    g.add_argument("--json", action="store_true", default=default(False),
                   help="machine-readable output: one JSON document on stdout (watch: one event per line)")
    g.add_argument("--timeout", type=positive_float, metavar="SECONDS", default=default(DEFAULT_TIMEOUT),
                   help=f"give up when montaged does not answer a request within this (default "
                        f"{DEFAULT_TIMEOUT:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="montagectl",
        description="Control a running montaged over its Unix socket: submit files, follow and steer jobs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _globals(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _globals(p, suppress=True)
        return p

    p = command("submit", "queue files as jobs (optionally wait for them, with progress bars)",
                "Queue each FILE as a job. Paths are made absolute here; montaged checks that each one is"
                " a readable regular file inside its input roots.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add_render_options(p, default_profile=None)
    p.add_argument("--max-clips", type=positive_int, metavar="N", help="at most N clips per file")
    p.add_argument("--speakers", type=positive_int, metavar="N", help="number of speakers, when known")
    p.add_argument("--language", "-l", metavar="CODE",
                   help="spoken language (en, de, pt-BR…; default: whisper.language)")
    p.add_argument("--min-seconds", type=positive_float, metavar="S", help="shortest clip (select's)")
    p.add_argument("--max-seconds", type=positive_float, metavar="S", help="longest clip (select's)")
    p.add_argument("--captions", metavar="STYLE",
                   help='burned caption style (render.caption_styles), or "none"; default: the profile\'s')
    p.add_argument("--output-dir", "-o", type=Path, metavar="DIR",
                   help="where the clips go (under the daemon's output folder or an input root)")
    p.add_argument("--wait", "-w", action="store_true",
                   help="show progress until every job is done, failed or cancelled; exit 4 if any did not"
                        " finish")
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="preview: run up to selection only and print the ranked candidates (range, score,"
                        " reason, text, speakers); renders nothing. Implies --wait")

    states = [s.value for s in JobState]
    p = command("list", "list jobs, newest first")
    p.add_argument("--state", choices=states, help="only jobs in this state")
    p.add_argument("--limit", "-n", type=positive_int, default=50, metavar="N", help="at most N (default 50)")

    p = command("show", "one job: stages and their timings, clips, ranked candidates, error, events")
    p.add_argument("job_id", metavar="ID")
    p = command("cancel", "cancel a queued or running job")
    p.add_argument("job_id", metavar="ID")
    p = command("retry", "queue a failed or cancelled job again")
    p.add_argument("job_id", metavar="ID")

    p = command("watch", "live progress bars from the event stream (Ctrl-C stops watching)",
                "Follow jobs live from montaged's event stream. With ID, follow that job and end when it"
                " ends (exit 0 done, 4 failed or cancelled); without, follow every job until Ctrl-C.")
    p.add_argument("job_id", nargs="?", metavar="ID")

    command("pause", "pause intake: queued jobs wait, running jobs go on")
    command("resume", "resume intake")
    command("stats", "jobs by state, queues, encoder, cache, throughput, budget")
    editing.add_parsers(command)
    _render_parser(command)
    purge.add_parsers(command)
    return parser


def _render_parser(command: Any) -> None:
    p = command("render", "re-cut: render a range of a finished job again, as a new job (earlier clips stay)",
                "Render a clip (--clip N, as numbered in `montagectl show`), a ranked candidate of a preview"
                " or a job (--candidate R), or any range (--start/--end, seconds of the source) of a finished"
                " job's source, as a new job. Its transcript, speakers and analysis come from the caches the"
                " first job filled; an edge you give inside a word moves to the nearer word edge unless"
                " --exact (an edge you do not give stays where the clip had it). The new clip gets its own"
                " file name and sidecar.")
    p.add_argument("job_id", metavar="ID")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--clip", type=positive_int, metavar="N", help="start from the job's clip N")
    which.add_argument("--candidate", type=positive_int, metavar="R", help="start from candidate of rank R")
    p.add_argument("--start", type=seconds, metavar="S", help="start here (seconds of the source)")
    p.add_argument("--end", type=seconds, metavar="E", help="end here (seconds of the source)")
    p.add_argument("--exact", action="store_true", help="cut at exactly --start/--end, even inside a word")
    p.add_argument("--profile", "-p", metavar="P", help="output profile (default: the job's)")
    p.add_argument("--captions", metavar="STYLE",
                   help='burned caption style (render.caption_styles), or "none"; default: the job\'s')
    p.add_argument("--wait", "-w", action="store_true", help="show progress until the new job ends")
