"""Files that ship with the package: the demo model and example inputs."""

from pathlib import Path

ASSETS = Path(__file__).parent
DEMO_MODEL = ASSETS / "demo_model"  # an exported bundle (emo-jax export) of the tiny model trained on synthetic faces
EXAMPLE_IMAGE = ASSETS / "examples" / "face.png"  # a held-out synthetic identity, with face.json (its face box)
EXAMPLE_AUDIO = ASSETS / "examples" / "speech.wav"  # held-out synthetic speech
