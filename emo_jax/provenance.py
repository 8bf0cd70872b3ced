"""How a video emo-jax makes declares itself machine-generated: for now, the MP4 container's own tags.

`container_tags()` are written by the same ffmpeg that encodes the file (`Mp4Writer(tags=...)`) and read back
with `emo_jax.data.video.read_tags`. They survive copying, not a re-encode that drops metadata.
"""

from __future__ import annotations

from emo_jax import __version__

GENERATOR = f"emo-jax {__version__}"
NOTICE = (
    f"AI-generated video, made by {GENERATOR} (an audio-driven portrait animation model) from one image and an "
    "audio track: not a recording of the person shown."
)


def container_tags() -> dict[str, str]:
    """MP4 metadata tags: comment and description carry `NOTICE` (the encoder tag is ffmpeg's own: its muxer
    overwrites any other)."""
    return {"comment": NOTICE, "description": NOTICE}
