"""Clip rendering: extractor → FIFO → encoder, crop-path geometry, sidecars.

Entry point: :func:`montaged.render.encode.render_clip`.
"""
