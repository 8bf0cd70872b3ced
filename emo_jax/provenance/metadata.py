"""Metadata that says a file is AI-generated: MP4 container tags and PNG text chunks.

`container_tags()` go into every sampled MP4, written by the same ffmpeg that encodes it (`Mp4Writer(tags=...)`)
and read back with `emo_jax.data.video.read_tags`; `png_info()` into the frame strips sampling writes and the
frame grids training writes. They survive copying, not a re-encode that drops metadata.
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


def png_info():
    """PNG text chunks (Comment, Description, Software) for the frame strips and grids emo-jax writes:
    `Image.save(path, pnginfo=png_info())`."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (("Comment", NOTICE), ("Description", NOTICE), ("Software", GENERATOR)):
        info.add_text(key, value)
    return info
