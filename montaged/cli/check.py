"""``montaged --check-config`` and ``montaged check``: find configuration and set-up problems early."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import anyio

from montaged.config import Secrets, Settings, find_config_file, known_secrets, load
from montaged.errors import ConfigError, MontageError
from montaged.redact import redact_text, redact_url


def check_config(path: Path | None) -> int:
    """Print every configuration error as ``key.path: problem (got value)``; 1 if any."""
    try:
        settings = load(path)
    except ConfigError as e:
        where = find_config_file(path)
        print(f"configuration errors ({where or 'defaults + environment'}):", file=sys.stderr)
        for line in str(e).splitlines():
            print(line)
        return 1
    where = find_config_file(path)
    print(f"configuration OK ({where or 'built-in defaults'}; store {_safe_url(settings.store_url())},"
          f" socket {settings.control.socket()})")
    return 0


def _safe_url(url: str) -> str:
    """The URL without its password, credential query parameters or any configured secret."""
    return redact_text(redact_url(url), known_secrets())


def _profiles_ok(settings: Settings) -> tuple[bool, str, str]:
    """Every profile names a caption style that exists and an encoder preset libx264 knows."""
    from montaged.media.encoders import encoder_args
    from montaged.render.captions import resolve_style

    errors = []
    for name, profile in settings.profiles.items():
        try:
            resolve_style(settings.render.caption_styles, profile.captions)
        except ValueError as e:
            errors.append(f"profiles.{name}.{e}")
        try:
            if profile.preset is not None:
                encoder_args("libx264", profile.preset)
        except MontageError as e:
            errors.append(f"profiles.{name}.preset: {str(e).removeprefix('render.preset: ')}")
    return not errors, "profiles", "; ".join(errors) or ", ".join(settings.profiles)


def _print_plan(settings: Settings) -> None:
    """The sizing plan the daemon will use (cores, cgroup quota, memory, GPU); warnings do not fail
    the check, the daemon starts with them."""
    from montaged.resources_plan import probe_plan

    try:
        plan = probe_plan(settings)
    except MontageError as e:
        print(f"warn resource plan: {e}")
        return
    print("     resource plan (a 0 in the config is sized here; docs/scaling.md says how to override):")
    for text in plan.lines():
        print(f"{'warn' if text.startswith('warning: ') else '    '}   {text.removeprefix('warning: ')}")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="check config, ffmpeg, encoder, models, store; print the plan",
                       description="Check that this machine can run Montage: config, ffmpeg, the encoder"
                       " that will be used, Whisper model files and the job store;"
                       " print how the pools are sized.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if check_config(args.config) != 0:
        return 1
    settings = load(args.config)
    problems = 0

    def line(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")

    ffmpeg = shutil.which(settings.render.ffmpeg)
    line(ffmpeg is not None, "ffmpeg", ffmpeg or f"{settings.render.ffmpeg!r} not found; install ffmpeg")
    if ffmpeg:
        from montaged.media.encoders import select_encoder

        try:
            choice = select_encoder(settings.render.encoder, settings.render.ffmpeg,
                                    x264_preset=settings.render.preset)
            line(True, "encoder", f"{choice.name} ({'hardware' if choice.hardware else 'software'})")
        except MontageError as e:
            line(False, "encoder", str(e))
    from montaged.render.captions import missing_fonts

    missing = missing_fonts(settings.render.caption_styles)
    line(not missing, "caption fonts", "; ".join(f"style {k!r} needs font {v!r}, not installed (Debian:"
                                                   " apt-get install fonts-dejavu-core, or pick an installed"
                                                   " family from fc-list)" for k, v in missing.items())
         or ", ".join(sorted({st.font for st in settings.render.caption_styles.values()})))
    line(*_profiles_ok(settings))
    from montaged.asr.models import resolve

    try:
        line(True, "whisper model", str(resolve(settings.whisper.model, settings.paths.models())))
    except MontageError as e:
        line(False, "whisper model", str(e))
    _print_plan(settings)
    secrets = Secrets(config=settings.secrets)
    try:
        secrets.prefetch()
        sources = settings.secrets.sources
        line(True, "secrets", ", ".join(f"{k} from {v.partition(':')[0]}" for k, v in sources.items())
             or "all from the environment and $CREDENTIALS_DIRECTORY")
        deepgram_key = secrets.get("deepgram_api_key")
    except MontageError as e:
        line(False, "secrets", redact_text(str(e), known_secrets()))
        deepgram_key = None
    line(True, "deepgram", "enabled, key present" if settings.deepgram.enabled and deepgram_key
         else ("enabled but no key: Whisper only" if settings.deepgram.enabled else "off"))

    async def ping_store() -> None:
        from montaged.store import open_store

        store = open_store(settings.store_url(), password=_password(),
                           connect_timeout=settings.store.connect_timeout_seconds)
        try:
            await store.migrate()
            await store.ping()
        finally:
            await store.close()

    def _password() -> str | None:
        try:
            secret = secrets.get("database_password")
        except MontageError:  # already reported on the secrets line
            return None
        return secret.get_secret_value() if secret else None

    try:
        settings.paths.state_dir.mkdir(parents=True, exist_ok=True)
        anyio.run(ping_store)
        line(True, "store", _safe_url(settings.store_url()))
    except (MontageError, OSError, ValueError) as e:  # ValueError: a store.url the driver cannot parse
        line(False, "store", redact_text(str(e), known_secrets()))
    return 1 if problems else 0


__all__ = ["Settings", "add_parser", "check_config", "run"]
