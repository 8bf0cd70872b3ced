"""How well the invisible watermark survives, on videos you give (e.g. `emo-jax sample --no-provenance` outputs):

    python -m emo_jax.eval.watermark VIDEO.mp4 [VIDEO.mp4 ...] [--json out.json]

Each video's frames are marked (`provenance.watermark.Marker`) and written by our own writer (H.264, as
`emo-jax sample` writes), then changed the ways a shared video gets changed (`ATTACKS`, each with ffmpeg from
our encode), and read back as `emo-jax provenance` reads them (`watermark.read_file`). Printed per case: bit
accuracy (mean, lowest) and the share of videos where the mark counts as found; the same reading of the
unmarked videos (what a false alarm would look like); and the visual cost, the PSNR of the marked frames
against the unmarked ones before encoding.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from emo_jax.provenance import watermark

# name -> ffmpeg arguments applied to our encode
ATTACKS = {
    "our H.264 encode": [],
    "re-encode at CRF 28": ["-c:v", "libx264", "-crf", "28"],
    "resize to half size": ["-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2", "-c:v", "libx264"],
    "10% crop (centred)": ["-vf", "crop=trunc(iw*0.45)*2:trunc(ih*0.45)*2:iw*0.05:ih*0.05", "-c:v", "libx264"],
    "10% crop (corner)": ["-vf", "crop=trunc(iw*0.45)*2:trunc(ih*0.45)*2:0:0", "-c:v", "libx264"],
    "first 6 frames cut": ["-vf", "trim=start_frame=6,setpts=PTS-STARTPTS", "-c:v", "libx264"],
    "frame rate to 30 fps": ["-vf", "fps=30", "-c:v", "libx264"],
}


def attack(source: Path, out: Path, arguments: list[str]) -> Path:
    """`source` changed by ffmpeg `arguments` into `out` (a plain copy of the stream when none are given)."""
    import imageio_ffmpeg

    if not arguments:
        arguments = ["-c", "copy"]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), *arguments, str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{source}: ffmpeg {' '.join(arguments)} failed ({done.stderr.strip()[-300:]})")
    return out


def measure(video: Path, folder: Path) -> dict[str, float]:
    """{case: matching bits} for one video, plus 'unmarked' and 'psnr_db'."""
    from emo_jax.data.video import Mp4Writer, probe, read_frames

    fps = probe(video).fps
    frames = list(read_frames(video, fps))
    marker = watermark.Marker()
    marked = [marker(frame) for frame in frames]
    error = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(marked, frames)])
    encoded = folder / "marked.mp4"
    with Mp4Writer(encoded, fps) as writer:
        for frame in marked:
            writer.write(frame)
    result = {"psnr_db": float(10 * np.log10(255**2 / error)), "frames": len(frames)}
    for index, (case, arguments) in enumerate(ATTACKS.items()):
        changed = attack(encoded, folder / f"case{index}.mp4", arguments)
        result[case] = watermark.read_file(changed).matching
    result["unmarked"] = watermark.read_file(video).matching
    return result


def table(results: list[dict[str, float]]) -> str:
    lines = ["| case | bit accuracy (mean) | lowest | found |", "|---|---|---|---|"]
    for case in [*ATTACKS, "unmarked"]:
        bits = np.array([r[case] for r in results]) / watermark.BITS
        found = np.mean(bits * watermark.BITS >= watermark.FOUND_BITS)
        lines.append(f"| {case} | {bits.mean():.1%} | {bits.min():.1%} | {found:.0%} |")
    psnr = [r["psnr_db"] for r in results]
    lines.append(f"\nPSNR of marked against unmarked frames: {np.mean(psnr):.1f} dB (lowest {min(psnr):.1f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emo_jax.eval.watermark", description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path, help="unmarked videos (e.g. emo-jax sample --no-provenance)")
    parser.add_argument("--json", type=Path, help="write every video's readings here")
    args = parser.parse_args(argv)
    results = []
    for video in args.videos:
        with tempfile.TemporaryDirectory() as folder:
            results.append({"video": str(video), **measure(video, Path(folder))})
        print(f"{video}: " + ", ".join(f"{k} {v:g}" for k, v in results[-1].items() if k != "video"), flush=True)
    print(f"\n{len(results)} videos, {sum(r['frames'] for r in results)} frames\n" + table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
