"""The study's vocabulary, one list each: KDEF's expression and angle codes (in the paper's order) and their names;
what a picture row (no 3DMM) shows as its backend."""
from __future__ import annotations

EXPRESSION_NAMES = {"AF": "afraid", "AN": "angry", "DI": "disgusted", "HA": "happy", "NE": "neutral",
                    "SA": "sad", "SU": "surprised"}
EXPRESSIONS = tuple(EXPRESSION_NAMES)
ANGLE_NAMES = {"FL": "full left profile", "HL": "half left profile", "S": "straight", "HR": "half right profile",
               "FR": "full right profile"}
ANGLES = tuple(ANGLE_NAMES)
# The backend a picture row shows (the picture itself, HOG, pixels, the dlib embedding): no 3DMM is involved,
# whatever coefficient table the run read its picture paths from.
PICTURE_BACKEND = "— (picture)"
