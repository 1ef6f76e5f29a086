"""Markers from what a test uses, so that ``-m`` selections stay true as tests are added.

A test is marked

- ``media`` when it, one of its fixtures, or a helper they call in tests/ refers to a path in
  the real recordings (a ``Path`` under ``media.MEDIA`` such as ``daemon_harness.JFK``, or the
  ``media_dir`` fixture, or ``need_media``);
- ``services`` when it uses the shared PostgreSQL or Redis (the ``pg_url``/``redis_prefix``
  fixtures, ``REDIS_URL``/``PG_DSN``) or starts private ones (``services.own_postgres``/``own_redis``);
- ``image`` when it uses the container image (the ``podman`` fixture of tests/test_image.py);
- ``slow`` when it is listed in ``SLOW``.

References are found in the compiled code (global names, defaults, nested functions), followed
into functions and classes defined under tests/, so a test that makes a clip with JFK's speech
through a module helper is marked like one that names ``media_dir``.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any

import pytest
from media import MEDIA

TESTS = Path(__file__).resolve().parent
# media.py holds MEDIA and this module tests for it: following them would mark every caller
NOT_FOLLOWED = {TESTS / "media.py", Path(__file__).resolve()}

MEDIA_FIXTURES = frozenset({"media_dir"})
SERVICE_FIXTURES = frozenset({"pg_url", "redis_prefix"})
SERVICE_NAMES = frozenset({"REDIS_URL", "PG_DSN", "own_postgres", "own_redis"})
IMAGE_FIXTURES = frozenset({"podman"})

SLOW_TESTS = (
    # Setup + call of 20 s or more, measured with --durations file by file on the 2-core
    # development host at load average ~12 (Dec 2026), or noted in the test itself: whole jobs
    # through real daemons, models loaded in fresh processes, composed 1080p scenes, the container
    # build (every test of a costly module-scoped fixture, or deselecting one would not save it).
    "test_concurrency.py::test_stalled_render_pushes_back_to_the_store",  # 70 s
    "test_concurrency.py::test_jobs_overlap_across_stages_and_workers_follow_the_pools",  # 28 s
    "test_daemon_diarize.py::test_speakers_reach_words_sidecar_and_captions",  # 22 s
    "test_daemon_ears.py::test_two_ears_cache_and_budget",  # 34 s
    "test_daemon_ears.py::test_refused_key_continues_with_whisper",  # 22 s
    "test_daemon_lifecycle.py::test_two_daemons_share_postgres_without_duplicates",  # 86 s
    "test_daemon_lifecycle.py::test_check_config_prints_every_error",  # 68 s
    "test_daemon_lifecycle.py::test_sigkill_mid_render_resumes_exactly_once",  # 94 s with its clip
    "test_daemon_lifecycle.py::test_sigterm_finishes_stage_then_resumes",  # 43 s
    "test_diarize.py::test_fixed_speaker_counts",  # 65 s
    "test_diarize.py::test_speaker_count_is_estimated",  # 49 s
    "test_export.py::test_real_job_exports_through_montagectl",  # 26 s
    "test_fault_drills.py::test_sigkill_in_every_stage_loses_and_duplicates_nothing",  # 113 s
    "test_fault_drills.py::test_redis_down",  # 34 s
    "test_fault_drills.py::test_sigkill_of_each_pools_worker_fails_no_job",  # 25 s
    "test_fault_drills.py::test_postgres_restart_midrun",  # 22 s
    "test_fencing.py::test_input_that_kills_the_daemon_every_time_is_poisoned",  # 48 s
    "test_fencing.py::test_stale_holder_after_a_lease_takeover_touches_nothing",  # 35 s
    "test_fencing.py::test_resumed_job_is_not_refused_its_own_cloud_ear",  # 31 s
    "test_frame_quality.py::test_framing_beats_naive_and_centre",  # these four share the composed
    "test_frame_quality.py::test_interjection_is_not_followed",  # scenes: over 300 s at that load
    "test_frame_quality.py::test_any_aspect_keeps_the_moving_face",
    "test_frame_quality.py::test_renderer_reads_the_path_as_planned",
    "test_frame_switches.py::test_switches_land_on_the_cut",  # 113 s to compose and analyse its scene
    "test_image.py::test_image_keeps_its_healthcheck",  # these four share the image build: minutes
    "test_image.py::test_container_is_unprivileged_and_read_only",
    "test_image.py::test_healthcheck_passes",
    "test_image.py::test_a_talk_dropped_into_in_comes_out_as_clips",
    "test_intake_hostile.py::test_fuzzed_intake_entries_all_end_and_the_daemon_keeps_serving",  # 76 s
    "test_load.py::test_twenty_jobs_through_socket_hotfolder_and_redis_at_once",  # 79 s
    "test_load.py::test_two_daemons_share_hotfolder_and_redis_group",  # 42 s
    "test_preview.py::test_dry_run_through_montagectl_then_show_lists_every_candidate",  # 36 s
    "test_preview.py::test_process_dry_run_json",  # 33 s
    "test_procpool.py::test_a_daemon_keeps_framing_after_its_vision_worker_is_killed",  # 21 s
    "test_store_faults.py::test_daemon_waits_out_a_full_disk_and_then_runs_the_job",  # 24 s
    "test_tui.py::test_submit_with_completion_runs_to_done_and_shows_details",  # 27 s
    "test_tui.py::test_budget_panel_blocked_cloud_and_near_cap_spend",  # 21 s
    "test_whisper.py::test_cli_transcribe_prints_and_reuses_the_cache",  # 42 s
    "test_whisper.py::test_long_input_through_the_pool",  # 40 s
    "test_whisper.py::test_cuts_inside_speech_keep_each_word_once",  # 30 s
    # measured by the sessions that wrote them (load ~10): the module fixture is the cost
    "test_identity.py::test_same_people_far_apart_share_identities_and_speakers",  # ~150 s with its talk
    "test_identity.py::test_swapped_sides_still_frame_the_right_speaker",
    "test_identity.py::test_colour_histograms_alone_would_split_the_people",
    "test_boundaries.py::test_every_clip_of_every_recording_has_clean_boundaries",  # ~90 s uncached
)
SLOW: dict[str, frozenset[str]] = {
    name: frozenset(t.split("::")[1] for t in SLOW_TESTS if t.startswith(f"{name}::"))
    for name in {t.split("::")[0] for t in SLOW_TESTS}
}
"""Test functions by file name (a class's as "Class.test_name")."""


def mark_by_use(items: list[pytest.Item]) -> None:
    """Add ``media``, ``services``, ``image`` and ``slow`` to the items that qualify."""
    checked: set[str] = set()
    for item in items:
        module = getattr(item, "module", None)
        _check_slow_names(module, checked)
        funcs = list(_functions_of(item))
        if _uses(item, funcs, MEDIA_FIXTURES, _is_media):
            item.add_marker(pytest.mark.media)
        if _uses(item, funcs, SERVICE_FIXTURES, _is_service):
            item.add_marker(pytest.mark.services)
        if _uses(item, funcs, IMAGE_FIXTURES, _nothing):
            item.add_marker(pytest.mark.image)
        if module is not None and _slow_name(item) in SLOW.get(Path(module.__file__).name, ()):
            item.add_marker(pytest.mark.slow)


def _slow_name(item: pytest.Item) -> str:
    func = getattr(item, "originalname", item.name)
    cls = getattr(item, "cls", None)
    return f"{cls.__name__}.{func}" if cls is not None else func


def _check_slow_names(module: Any, checked: set[str]) -> None:
    """A name in SLOW that its file does not define is a renamed or deleted test: say so, rather
    than silently run it in the quick subset."""
    if module is None or module.__file__ in checked:
        return
    checked.add(module.__file__)
    for name in SLOW.get(Path(module.__file__).name, ()):
        obj: Any = module
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            raise pytest.UsageError(f"tests/markers.py SLOW names {name}, which {module.__file__} lacks")


def _uses(
    item: pytest.Item, funcs: list[FunctionType], fixtures: frozenset[str], hit: Callable[[str, object], bool]
) -> bool:
    """Whether the item requests one of ``fixtures`` (also by name through ``getfixturevalue``, so a
    fixture that picks ``pg_url`` by parameter marks each of its parameters) or refers to a global
    ``hit`` matches."""
    if fixtures & set(getattr(item, "fixturenames", ())):
        return True
    seen: set[CodeType] = set()
    return any(_refers(f, fixtures, hit, seen) for f in funcs)


def _functions_of(item: pytest.Item) -> Iterator[FunctionType]:
    """The test function and the functions of every fixture it uses."""
    yield from _plain(getattr(item, "obj", None))
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        for fixturedef in defs:
            yield from _plain(getattr(fixturedef, "func", None))


def _plain(obj: object) -> Iterator[FunctionType]:
    """The plain function behind a method, a static or class method or a decorated function."""
    obj = getattr(obj, "__func__", obj)
    if callable(obj):
        obj = inspect.unwrap(obj)
    if isinstance(obj, FunctionType):
        yield obj


def _is_media(name: str, value: object) -> bool:
    if isinstance(value, Path):
        return value.is_relative_to(MEDIA)
    if isinstance(value, list | tuple | frozenset | set):
        return any(isinstance(v, Path) and v.is_relative_to(MEDIA) for v in value)
    return False


def _is_service(name: str, value: object) -> bool:
    return name in SERVICE_NAMES


def _nothing(name: str, value: object) -> bool:
    return False


def _refers(
    func: FunctionType, fixtures: frozenset[str], hit: Callable[[str, object], bool], seen: set[CodeType]
) -> bool:
    """Whether ``func``, or a function or class under tests/ that it names, names one of
    ``fixtures`` in a string or a global that ``hit`` matches."""
    code = func.__code__
    if code in seen or not _followed(code.co_filename):
        return False
    seen.add(code)
    defaults = [*(func.__defaults__ or ()), *(func.__kwdefaults__ or {}).values()]
    if any(hit("", d) for d in defaults):
        return True
    names = set(_names(code))
    if "getfixturevalue" in names and fixtures.intersection(_strings(code)):
        return True
    # Names resolve in the function's module, or in a module under tests/ it imports inside itself
    # (``from daemon_harness import JFK`` in a test body).
    scopes = [func.__globals__, *(vars(m) for m in map(sys.modules.get, names) if _is_ours(m))]
    for name in names:
        scope = next((s for s in scopes if name in s), None)
        if scope is None:
            continue
        value = scope[name]
        if hit(name, value) or any(_refers(f, fixtures, hit, seen) for f in _followable(value)):
            return True
    return False


def _is_ours(module: ModuleType | None) -> bool:
    defined_in = getattr(module, "__file__", None)
    return defined_in is not None and _followed(defined_in)


def _followable(value: object) -> Iterator[FunctionType]:
    """A function, or the methods of a class, defined under tests/."""
    if isinstance(value, FunctionType):
        yield value
    elif inspect.isclass(value) and _is_ours(sys.modules.get(value.__module__)):
        for member in vars(value).values():
            yield from _plain(member.fget if isinstance(member, property) else member)


def _followed(filename: str) -> bool:
    path = Path(filename)
    return path.is_relative_to(TESTS) and path not in NOT_FOLLOWED


def _names(code: CodeType) -> Iterator[str]:
    """Global (and attribute) names a code object and the functions nested in it load."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _names(const)


def _strings(code: CodeType) -> Iterator[str]:
    for const in code.co_consts:
        if isinstance(const, str):
            yield const
        elif isinstance(const, CodeType):
            yield from _strings(const)
