"""Speech recognition: local Whisper (process pool over VAD-cut windows), models from PyPI,
caption formats, the transcript cache and WER for tests and benchmarks."""
