"""Videos say they are AI-generated: the invisible watermark, the C2PA manifest, and `emo-jax provenance`."""

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from emo_jax.cli import main
from emo_jax.data.video import Mp4Writer
from emo_jax.eval import watermark as robustness
from emo_jax.provenance import credentials, watermark
from emo_jax.provenance.check import inspect
from emo_jax.provenance.metadata import container_tags, png_info

FPS = 25.0


def face_video(frames: int = 100, size: int = 64) -> np.ndarray:
    """[frames, size, size, 3] uint8: the astronaut's head, drifting a few pixels and nodding (a talking-head
    stand-in with real texture)."""
    head = Image.fromarray(astronaut()[20:260, 130:370]).resize((size + 12, size + 12), Image.LANCZOS)
    head = np.asarray(head)
    t = np.arange(frames)
    dx, dy = np.rint(6 + 5 * np.sin(t / 9)).astype(int), np.rint(6 + 4 * np.sin(t / 5 + 1)).astype(int)
    return np.stack([head[y : y + size, x : x + size] for x, y in zip(dx, dy)])


def encode(frames: np.ndarray, path, tags=None):
    with Mp4Writer(path, FPS, tags=tags) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def marked(frames: np.ndarray) -> np.ndarray:
    marker = watermark.Marker()
    return np.stack([marker(f) for f in frames])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """{name: path}: the marked video after each of the measurement script's attacks (its first: our encode)
    and with 3 frames cut; the unmarked video; the clean frames."""
    tmp = tmp_path_factory.mktemp("marked")
    clean = face_video()
    ours = encode(marked(clean), tmp / "ours.mp4")
    attacks = {**robustness.ATTACKS, "first 3 frames cut": ["-vf", "trim=start_frame=3", "-c:v", "libx264"]}
    changed = {name: robustness.attack(ours, tmp / f"{i}.mp4", a) for i, (name, a) in enumerate(attacks.items())}
    return {"clean": clean, "plain": encode(clean, tmp / "plain.mp4"), "ours": ours, **changed}


def test_the_mark_is_faint_and_reads_back_exactly_from_the_frames():
    clean = face_video()
    frames = marked(clean)
    change = frames.astype(float) - clean
    assert 0 < np.abs(change).max() <= watermark.STRENGTH + 0.5
    assert 10 * np.log10(255**2 / np.mean(change**2)) > 40  # PSNR, dB
    small = np.stack([np.asarray(Image.fromarray(f).resize((watermark.READ_SIZE,) * 2, Image.BOX)) for f in frames])
    reading = watermark.read(small)
    assert reading.matching == watermark.BITS and reading.payload == watermark.PAYLOAD
    assert reading.window == (0.0, 0.0, 1.0, 1.0) and reading.phase == 0
    # the same pattern at any resolution: a 160 px video marks the same cells
    assert watermark.pattern(160, 160).shape == (160, 160)
    np.testing.assert_allclose(
        watermark.pattern(64, 64)[::16, ::16], watermark.pattern(128, 128)[1::32, 1::32], atol=0.1
    )


@pytest.mark.parametrize("name", [*robustness.ATTACKS, "first 3 frames cut"])
def test_the_mark_survives_encoding_re_encoding_resizing_cropping_and_trimming(videos, name):
    reading = watermark.read_file(videos[name])
    assert reading.found, f"{name}: {reading.matching}/32 bits"


def test_the_measurement_script_reports_each_case(videos, capsys):
    robustness.main([str(videos["plain"])])
    out = capsys.readouterr().out
    for case in [*robustness.ATTACKS, "unmarked"]:
        assert f"| {case} |" in out
    assert "| our H.264 encode | 100.0% |" in out and "PSNR of marked against unmarked frames: 4" in out


def test_a_video_without_the_mark_does_not_read_as_marked(videos):
    reading = watermark.read_file(videos["plain"])
    assert not reading.found and reading.matching < watermark.FOUND_BITS - 4


def test_a_signed_video_reads_valid_untrusted_and_trusted_with_its_anchor(videos, tmp_path):
    video = encode(videos["clean"][:8], tmp_path / "signed.mp4")
    credentials.sign_file(video, {"model_weights": "sha256:abc"})
    found = credentials.read_credentials(video)
    assert found.status == "valid" and not found.trusted and found.says_generated
    assert found.model_weights == "sha256:abc" and found.generator.startswith("emo-jax")
    assert found.problems == ("signingCredential.untrusted",)
    chain, _ = credentials.local_signer_files()
    anchor = tmp_path / "ca.pem"
    anchor.write_text("-----BEGIN CERTIFICATE-----" + chain.read_text().split("-----BEGIN CERTIFICATE-----")[2])
    assert credentials.read_credentials(video, trust_anchors=anchor).trusted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem", "signed.mp4"]  # no signed copy left beside it


def test_altered_bytes_read_as_tampered_and_a_re_encode_drops_the_manifest(videos, tmp_path):
    video = encode(videos["clean"][:8], tmp_path / "signed.mp4")
    credentials.sign_file(video, {"model_weights": "sha256:abc"})
    data = bytearray(video.read_bytes())
    for name, offset in (("frames", data.find(b"mdat") + 64), ("manifest", data.find(b"c2pa.actions") + 40)):
        altered = bytearray(data)
        altered[offset] ^= 0xFF
        (tmp_path / f"{name}.mp4").write_bytes(altered)
        assert credentials.read_credentials(tmp_path / f"{name}.mp4").status == "tampered", name
    assert (
        credentials.read_credentials(robustness.attack(video, tmp_path / "re.mp4", ["-c:v", "libx264"])).status
        == "none"
    )


def test_the_user_s_own_signer_is_used_and_bad_signer_files_are_refused_by_name(videos, tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_JAX_CONFIG_DIR", str(tmp_path / "other_user"))
    cert, key = credentials.local_signer_files()  # another user's pair stands in for a bought certificate
    monkeypatch.undo()
    assert credentials.signer_files(cert, key) == (cert, key)
    video = encode(videos["clean"][:8], tmp_path / "signed.mp4")
    credentials.sign_file(video, {"model_weights": "sha256:abc"}, cert, key)
    assert credentials.read_credentials(video).status == "valid"
    with pytest.raises(ValueError, match="both a signing certificate and its key"):
        credentials.signer_files(cert, None)
    with pytest.raises(FileNotFoundError, match="missing.pem: no such signing"):
        credentials.signer_files(tmp_path / "missing.pem", key)
    with pytest.raises(ValueError, match=r"key.txt: not an unencrypted PEM private key"):
        (tmp_path / "key.txt").write_text("not a key")
        credentials.signer_files(cert, tmp_path / "key.txt")
    with pytest.raises(ValueError, match="key.pem: not a PEM certificate chain"):
        credentials.signer_files(key, key)


def test_the_weights_digest_names_the_weights_not_the_path():
    from flax import nnx

    a, b = nnx.Linear(3, 2, rngs=nnx.Rngs(0)), nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    assert credentials.weights_digest(a) == credentials.weights_digest(b)
    b.bias[...] = b.bias[...] + 1e-3
    assert credentials.weights_digest(a) != credentials.weights_digest(b)


def test_provenance_command_finds_each_mark_and_exit_codes_say_whether_any(videos, tmp_path, capsys):
    frames = marked(videos["clean"])
    full = encode(frames, tmp_path / "full.mp4", tags=container_tags())
    credentials.sign_file(full, {"model_weights": "sha256:abc"})
    found = inspect(full)
    assert found.synthetic and found.credentials.says_generated and set(found.tags) == {"comment", "description"}
    assert found.mark.found

    def run(path) -> tuple[int, str]:
        try:
            main(["provenance", str(path)])
            code = 0
        except SystemExit as exit:
            code = exit.code
        return code, capsys.readouterr().out

    code, out = run(full)
    assert code == 0 and "MARKED as AI-generated" in out and "valid signature, untrusted signer" in out
    assert "trainedAlgorithmicMedia" in out and "32/32 bits" in out

    code, out = run(videos["plain"])
    assert code == 1 and "no emo-jax mark found" in out
    assert "content credentials (C2PA): none" in out and "metadata tags: none" in out

    re_encoded = robustness.attack(full, tmp_path / "re.mp4", ["-map_metadata", "-1", "-c:v", "libx264", "-crf", "28"])
    code, out = run(re_encoded)
    assert code == 0 and "content credentials (C2PA): none" in out and "invisible watermark: found" in out

    for where in (b"mdat", b"c2pa.actions"):  # a byte of the frames, then of the manifest
        tampered = bytearray(full.read_bytes())
        tampered[tampered.find(where) + 64] ^= 0xFF
        (tmp_path / "tampered.mp4").write_bytes(tampered)
        code, out = run(tmp_path / "tampered.mp4")
        assert "TAMPERED" in out and code == 0, where  # the tags and the watermark still say it

    grid = tmp_path / "grid.png"
    Image.fromarray(videos["clean"][0]).save(grid, pnginfo=png_info())
    credentials.sign_file(grid, {"training_step": 7})
    code, out = run(grid)
    assert code == 0 and "model training step 7" in out and "metadata tags: Comment, Description" in out

    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(SystemExit) as exit:
        main(["provenance", str(tmp_path / "notes.txt")])
    assert exit.value.code == 1 and "notes.txt" in capsys.readouterr().err
