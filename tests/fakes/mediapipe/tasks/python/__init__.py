import dataclasses

from mediapipe.tasks.python import vision


@dataclasses.dataclass
class BaseOptions:
    model_asset_path: str


__all__ = ["BaseOptions", "vision"]
