"""Editor exports: a job's selected ranges as an OpenTimelineIO timeline, FCPXML or CMX 3600 EDL.

``timing`` reads what a source's timecode needs (exact rate, first timestamp, timecode tag),
``timeline`` builds the OTIO timeline from the clips' sidecars, ``formats`` writes it out through
OTIO's adapters.
"""
