"""Media input and tools: probe, audio decode and fan-out, ffmpeg processes, encoder choice.

Import the submodules directly (``montaged.media.probe``...); this package imports nothing, so
code that only builds ffmpeg argv does not pay for PyAV.
"""
