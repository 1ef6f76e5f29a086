"""Face embeddings: who a face is, comparable across the whole talk (not only within one clip).

The model is dlib's ResNet face recogniser (128-D, 99.38 % on LFW with a distance threshold of
0.6, per dlib's model card), whose weights ship inside the ``face-recognition-models`` PyPI
package together with dlib's 5-point landmark model; dlib itself comes from the ``dlib-bin``
wheel. Nothing is fetched at run time.

A face is embedded in two steps, because the steps cost very different amounts:

1. :meth:`FaceEmbedder.chip` (about 2 ms): the 5 landmarks are found in the detector's box on the
   full-resolution frame and the face is cut out upright at 150x150 (dlib's alignment). Done
   while decoding, at most once a second per face, since the frame is not kept.
2. :meth:`FaceEmbedder.embed` (about 0.1-0.3 s a chip on one loaded core): the ResNet. Done only
   for the few chips each track keeps (see evidence.py), after the tracks are known.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from montaged.errors import ModelError
from montaged.frame.detect import Box

CHIP = 150
"""Side of an aligned face chip (what the ResNet was trained on)."""
SAME_PERSON = 0.6
"""Euclidean distance between two embeddings under which dlib's model card calls them one person."""
MIN_FACE_PX = 40
"""Faces smaller than this (box height, source pixels) are not embedded: the chip would be
upscaled past what the model saw in training, and its distances stop meaning anything."""


def _models_dir() -> Path:
    """Where ``face-recognition-models`` keeps its ``.dat`` files, found without importing the
    package: its ``__init__`` needs ``pkg_resources``, which setuptools 81 and later no longer ship."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "face re-identification needs the face-recognition-models package "
            "(pip install face-recognition-models dlib-bin); run scripts/bootstrap.sh"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class FaceEmbedder:
    """dlib's 5-point aligner and ResNet recogniser, loaded once per process (see :func:`embedder`)."""

    name = "dlib-resnet-v1"

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as e:
            raise ModelError(
                "face re-identification needs dlib (pip install dlib-bin); run scripts/bootstrap.sh"
            ) from e
        models = _models_dir()
        shape, resnet = (
            models / "shape_predictor_5_face_landmarks.dat",
            models / "dlib_face_recognition_resnet_model_v1.dat",
        )
        for path in (shape, resnet):
            if not path.is_file():
                raise ModelError(f"{path}: missing from face-recognition-models; reinstall that package")
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(shape))
        self._resnet = dlib.face_recognition_model_v1(str(resnet))

    def chip(self, rgb: np.ndarray, box: Box) -> np.ndarray | None:
        """The face in ``box`` (pixels of ``rgb``, an HxWx3 uint8 RGB frame) cut out upright at
        CHIP x CHIP, or None when it is too small to embed."""
        x, y, w, h = box
        if h < MIN_FACE_PX:
            return None
        rect = self._dlib.rectangle(int(x), int(y), int(x + w), int(y + h))
        shape = self._shape(rgb, rect)
        chip: np.ndarray = np.asarray(self._dlib.get_face_chip(rgb, shape, size=CHIP), dtype=np.uint8)
        return chip

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        """One 128-D embedding per chip (rows), in dlib's metric (see SAME_PERSON)."""
        if not chips:
            return np.zeros((0, 128))
        out = self._resnet.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(v) for v in out], dtype=np.float64)


@functools.cache
def embedder() -> FaceEmbedder:
    """The process's embedder (about 0.3 s to load, 35 MB of weights)."""
    return FaceEmbedder()
