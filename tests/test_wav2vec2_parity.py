"""Our wav2vec2 against transformers' Wav2Vec2Model, same random weights, speech-like audio (fp32)."""

import shutil
import subprocess

import jax.numpy as jnp
import numpy as np
import pytest
from audio_inputs import speech_like
from peers import perturb_vectors, rel_err, require, state_dict_numpy

from emo_jax.convert.wav2vec2 import from_hf_wav2vec2

SAMPLE_RATE = 16000


def espeak_speech(tmp_path, text: str = "Emote portrait alive: talking and singing from one photo.") -> np.ndarray:
    """Real synthetic speech from Debian's espeak-ng, loaded at 16 kHz and normalised."""
    from emo_jax.audio import load_audio

    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    audio = load_audio(path)
    return ((audio - audio.mean()) / audio.std()).astype(np.float32)


TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=(32, 32, 32),
    conv_stride=(5, 2, 2),
    conv_kernel=(10, 3, 3),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
CASES = {
    "base_group_norm_post_norm": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    "large_layer_norm_pre_norm": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


AUDIO = [
    "speech_like",
    pytest.param("espeak", marks=pytest.mark.skipif(not shutil.which("espeak-ng"), reason="no espeak-ng")),
]


@pytest.mark.parity
@pytest.mark.parametrize("audio_kind", AUDIO)
@pytest.mark.parametrize("case", sorted(CASES))
def test_wav2vec2_matches_transformers(case, audio_kind, tmp_path):
    torch = require("torch")
    transformers = require("transformers")
    config = transformers.Wav2Vec2Config(**TINY, **CASES[case])
    torch.manual_seed(0)
    peer = transformers.Wav2Vec2Model(config).eval()
    perturb_vectors(peer)
    ours = from_hf_wav2vec2(state_dict_numpy(peer), config.to_dict())

    if audio_kind == "espeak":
        audio = espeak_speech(tmp_path)[None]
    else:
        audio = np.stack([speech_like(seed=0), speech_like(seed=1)])
    with torch.no_grad():
        expected = peer(torch.from_numpy(audio), output_hidden_states=True)
    got = ours(jnp.asarray(audio))
    assert len(got.hidden_states) == len(expected.hidden_states) == TINY["num_hidden_layers"] + 1
    errors = [rel_err(g, e.numpy()) for g, e in zip(got.hidden_states, expected.hidden_states)]
    errors.append(rel_err(got.last_hidden_state, expected.last_hidden_state.numpy()))
    print(
        f"wav2vec2 {case} on {audio_kind} ({audio.shape[1] / SAMPLE_RATE:.1f} s): "
        "rel err per hidden state, then last_hidden_state: " + ", ".join(f"{e:.1e}" for e in errors)
    )
    assert max(errors) < 1e-5


@pytest.mark.parity
def test_ctc_checkpoint_with_old_weight_norm_names():
    torch = require("torch")
    transformers = require("transformers")
    config = transformers.Wav2Vec2Config(**TINY, vocab_size=12)
    torch.manual_seed(0)
    ctc = transformers.Wav2Vec2ForCTC(config).eval()
    state_dict = state_dict_numpy(ctc)
    prefix = "wav2vec2.encoder.pos_conv_embed.conv."
    state_dict[prefix + "weight_g"] = state_dict.pop(prefix + "parametrizations.weight.original0")
    state_dict[prefix + "weight_v"] = state_dict.pop(prefix + "parametrizations.weight.original1")
    ours = from_hf_wav2vec2(state_dict, config.to_dict())
    audio = speech_like()[None]
    with torch.no_grad():
        expected = ctc.wav2vec2(torch.from_numpy(audio)).last_hidden_state.numpy()
    assert rel_err(ours(jnp.asarray(audio)).last_hidden_state, expected) < 1e-5
