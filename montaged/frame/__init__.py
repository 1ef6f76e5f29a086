"""Framing: faces, motion and the active speaker, turned into a smooth crop path per clip.

Entry points: :func:`montaged.frame.plan.plan_crop` (sync, one clip, in a worker process) and
:func:`montaged.frame.worker.plan_crops_in_process` (async, a pool of them). This package imports
nothing itself, so importing it does not load OpenCV or PyAV.
"""
