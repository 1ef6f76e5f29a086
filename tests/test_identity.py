"""One identity per person and per speaker across the whole talk (frame/identity.py).

Real faces composed into a talk (tests/framing_identity.py): the same two people in clips 26 s
apart, sides swapped and colours shifted, with a third person between. Bounds and what they rest on:
- Same person: embedding distance under dlib's 0.6 (its model card); measured 0.17-0.35 within
  one recording. Different people: measured 0.62-1.03 between the recordings in ../shared/media.
- Speaker confidence >= 0.5: the mapped face must be the talking one in most of the label's
  on-screen speech; measured figures are printed and go to docs/quality.md.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import pytest
from framing_identity import PARTS, IdentityTalk, build
from framing_metrics import cache_dir

from montaged.config import FrameConfig, ProfileConfig
from montaged.frame.identity import ClipFaces, identify_talk
from montaged.frame.tracks import look_distance
from montaged.frame.worker import plan_crops_in_process
from montaged.media.probe import probe_media
from montaged.model import ClipPlan, CropPlan

SPEAKER_CONFIDENCE_MIN = 0.5


@pytest.fixture(scope="module")
def talk(media_dir: Path, ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> IdentityTalk:
    return build(media_dir, cache_dir(tmp_path_factory.mktemp("identity")))


@pytest.fixture(scope="module")
def plans(talk: IdentityTalk) -> list[CropPlan]:
    clips = [ClipPlan(i, a, b, 1.0, {}, "test", "") for i, (a, b) in enumerate(PARTS)]
    profile = ProfileConfig.model_validate({"aspect": "9:16", "width": 1080, "height": 1920})
    cfg = FrameConfig.model_validate({})

    async def run() -> list[CropPlan]:
        info = probe_media(talk.video)
        return await plan_crops_in_process(talk.video, info, clips, profile, cfg, talk.turns)

    return anyio.run(run)


def _faces(plan: CropPlan) -> list[int]:
    assert plan.identity is not None
    return [f["face"] for f in plan.identity["clip_faces"]]


def test_same_people_far_apart_share_identities_and_speakers(plans: list[CropPlan]) -> None:
    first, middle, last = (_faces(p) for p in plans)
    print("\nfaces per clip:", first, middle, last)
    for p in plans:
        assert p.identity is not None
        print(f"clip {p.clip_index}: {p.identity['clip_faces']}  speaker_in_crop={p.speaker_in_crop}")
    speakers = plans[0].identity["speakers"] if plans[0].identity else {}
    print("speakers:", speakers)
    assert len(first) == 2 and len(last) == 2 and len(middle) == 1
    assert set(first) == set(last), "the two people of the first clip are the two of the last"
    assert middle[0] not in first, "the presenter is someone else"
    assert plans[0].identity is not None and plans[0].identity["talk_faces"] == 3
    # The map is the talk's, the same in every clip's sidecar.
    assert all(p.identity is not None and p.identity["speakers"] == speakers for p in plans)
    assert set(speakers) == {"S1", "S2", "S3"}
    assert len({v["face"] for v in speakers.values()}) == 3
    assert speakers["S3"]["face"] == middle[0]
    assert {speakers["S1"]["face"], speakers["S2"]["face"]} == set(first)
    for v in speakers.values():
        assert v["confidence"] >= SPEAKER_CONFIDENCE_MIN
    for p in plans:
        assert p.identity is not None
        for f in p.identity["clip_faces"]:
            assert f["distance"] is not None and f["distance"] < 0.6


def test_swapped_sides_still_frame_the_right_speaker(plans: list[CropPlan]) -> None:
    """S1 sits left in the first clip and right in the last: the crop follows S1 in both."""
    for p in plans:
        assert p.speaker_in_crop is not None and p.speaker_in_crop >= 0.9, p.notes


def test_colour_histograms_alone_would_split_the_people(talk: IdentityTalk) -> None:
    """Why embeddings: under the second camera's white balance the look the per-clip tracker
    uses (hue-saturation histograms) moves past its own same-person bound (tracks.SAME_LOOK)."""
    import av
    from framing_identity import _warm

    from montaged.frame.tracks import SAME_LOOK, face_hist

    with av.open(str(talk.video)) as c:
        frame = next(f for f in c.decode(video=0) if f.time is not None and f.time > 1.0)
        img = frame.to_ndarray(format="bgr24")
    box = (150 + 110.0, 330 + 60.0, 220.0, 260.0)  # the middle of face1's tile in the first part
    a = face_hist(img, box)
    b = face_hist(_warm(img), box)
    print(f"histogram distance same face, warm vs plain: {look_distance(a, b):.2f} (SAME_LOOK {SAME_LOOK})")
    assert look_distance(a, b) > SAME_LOOK


def _clip(i: int, people: list[int], emb: list[np.ndarray | None], spans: list[tuple[float, float]],
          votes: dict[str, tuple[int, ...]], heard: dict[str, int]) -> ClipFaces:  # fmt: skip
    return ClipFaces(i, tuple(people), tuple(emb), tuple(spans), votes, heard)


def test_people_seen_together_are_never_merged() -> None:
    e = np.ones(128) / np.sqrt(128)
    c = _clip(0, [0, 1], [e, e + 0.01], [(0, 10), (5, 12)], {}, {})
    talk = identify_talk([c])
    assert talk.count == 2


def test_unembedded_faces_stay_apart_and_offscreen_voices_map_to_nobody() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=128) * 0.1
    c0 = _clip(0, [0], [a], [(0, 5)], {"S1": (40,), "S9": (2,)}, {"S1": 50, "S9": 30})
    c1 = _clip(1, [0, 1], [a + 0.001, None], [(20, 30), (20, 30)], {"S1": (30, 0)}, {"S1": 40})
    talk = identify_talk([c0, c1])
    assert talk.count == 2
    assert talk.faces[0][0] == talk.faces[1][0] == 0
    assert talk.faces[1][1] == 1
    assert talk.speakers["S1"].face == 0 and talk.speakers["S1"].confidence == pytest.approx(70 / 90)
    assert "S9" not in talk.speakers


def test_clip_evidence_votes_and_the_talk_map_decide_the_runs() -> None:
    """A clip where the person on the left talks in X's turns: X votes for them; and when the talk
    says X is someone else on screen (a mouth seen moving in X's speech elsewhere), the runs follow
    the talk's map, not this clip's own guess."""
    from montaged.frame.analyse import ClipAnalysis
    from montaged.frame.detect import Detection
    from montaged.frame.evidence import clip_faces, relabel
    from montaged.frame.speaker import speaking_runs
    from montaged.frame.tracks import FaceObs, link
    from montaged.model import SpeakerTurn

    rng = np.random.default_rng(0)
    hists = [rng.dirichlet(np.full(128, 0.05)).astype(np.float32) for _ in range(2)]

    def obs(i: int, x: float, h: np.ndarray, act: float) -> FaceObs:
        return FaceObs(i, Detection((x, 300.0, 150.0, 190.0), 0.9), h, act)

    frames = [
        [obs(i, 300, hists[0], 0.8 if i < 25 else 0.02), obs(i, 1400, hists[1], 0.02)] for i in range(50)
    ]
    tracks = link(frames, max_gap=5, min_obs=2)
    times = np.arange(50) * 0.2
    an = ClipAnalysis(100.0, 10.0, 1920, 1080, 25.0, times, tracks, [], [], [], [], "yunet", 5)
    turns = [SpeakerTurn(100.0, 105.0, "X"), SpeakerTurn(105.0, 110.0, "Y")]
    ev = clip_faces(an, 0, turns)
    left = tracks[0].identity
    assert ev.heard == {"X": 25, "Y": 25}
    # Nobody talks in Y's turns; the 5-sample smoothing lets the left mouth bleed 2 samples in.
    assert ev.votes["X"][ev.people.index(left)] >= 20 and sum(ev.votes["Y"]) <= 2
    relabel(an, {left: 7, tracks[1].identity: 8})
    clip_turns = [(0.0, 5.0, "X"), (5.0, 10.0, "Y")]
    own = speaking_runs(an.tracks, times, 10.0, turns=clip_turns)
    assert own[0].identity == 7
    talk = speaking_runs(an.tracks, times, 10.0, turns=clip_turns, mapping={"X": 8, "Y": 7})
    assert [r.identity for r in talk] == [8, 7]
