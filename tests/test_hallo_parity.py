"""One full Hallo denoising step and its masks against Hallo's own PyTorch code, on random weights (opt-in, slow).

Hallo cannot be installed; point EMO_JAX_HALLO_REPO at a checkout of fudan-generative-vision/hallo (its
`hallo/models` and `einops` importable; a stub `xformers` is made here). Hallo's modules are built as its
`scripts/inference.py` builds them (training mode with gradient checkpointing, so its checkpointed block paths
run), at tiny sizes with SD1.5's four levels; the step is `FaceAnimatePipeline.__call__`'s: the ReferenceNet pass
on the reference and motion latents for both guidance branches, then the denoising UNet on both branches.
"""

from __future__ import annotations

import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from hallo_folder import HALLO_SCHEDULER
from peers import require

pytestmark = pytest.mark.slow
HALLO = os.environ.get("EMO_JAX_HALLO_REPO")


@pytest.fixture(scope="module")
def hallo_modules(tmp_path_factory):
    if not HALLO:
        pytest.skip("EMO_JAX_HALLO_REPO (a checkout of fudan-generative-vision/hallo) is not set")
    require("torch")
    require("diffusers")
    pytest.importorskip("einops")
    stub = tmp_path_factory.mktemp("stub")
    (stub / "xformers").mkdir()
    (stub / "xformers" / "__init__.py").write_text("")
    (stub / "xformers" / "ops.py").write_text("")
    sys.path[:0] = [str(stub), HALLO]
    from hallo.models import audio_proj, face_locator, image_proj, mutual_self_attention, unet_2d_condition, unet_3d

    return audio_proj, face_locator, image_proj, mutual_self_attention, unet_2d_condition, unet_3d


SIZES = dict(ch=(32, 32, 64, 64), cad=48, emb=64, lat=16)  # channels, cross-attention dim, face embedding, latent side


@pytest.fixture(scope="module")
def hallo_net(hallo_modules):
    """Hallo's five modules at tiny sizes with every parameter random (zero-initialised ones too), as `Net` holds
    them, and our model converted from their state dict."""
    import torch
    from diffusers.configuration_utils import FrozenDict

    from emo_jax.convert.hallo import from_hallo
    from emo_jax.models.emo import AudioProjectionConfig, ImageEmbeddingConfig

    audio_proj, face_locator, image_proj, _, unet_2d, unet_3d = hallo_modules
    torch.manual_seed(0)
    ch, cad, emb, lat = (SIZES[k] for k in ("ch", "cad", "emb", "lat"))
    unet_config = dict(
        sample_size=lat,
        in_channels=4,
        block_out_channels=ch,
        layers_per_block=2,
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        attention_head_dim=8,
        cross_attention_dim=cad,
        norm_num_groups=32,  # Hallo's motion modules always use 32 groups
    )
    reference_unet = unet_2d.UNet2DConditionModel(**unet_config)
    video_config = {
        **unet_config,
        "down_block_types": [t.replace("2D", "3D") for t in unet_config["down_block_types"]],
        "up_block_types": [t.replace("2D", "3D") for t in unet_config["up_block_types"]],
    }
    denoising_unet = unet_3d.UNet3DConditionModel(
        **video_config,
        out_channels=4,
        use_inflated_groupnorm=True,
        unet_use_cross_frame_attention=False,
        unet_use_temporal_attention=False,
        use_motion_module=True,
        use_audio_module=True,
        motion_module_resolutions=[1, 2, 4, 8],
        motion_module_mid_block=True,
        motion_module_decoder_only=False,
        motion_module_type="Vanilla",
        motion_module_kwargs=dict(
            num_attention_heads=8,
            num_transformer_block=1,
            attention_block_types=["Temporal_Self", "Temporal_Self"],
            temporal_position_encoding=True,
            temporal_position_encoding_max_len=32,
            temporal_attention_dim_div=1,
        ),
        audio_attention_dim=cad,
        stack_enable_blocks_name=["up", "down", "mid"],
        stack_enable_blocks_depth=[0, 1, 2, 3],
    )
    for unet in (reference_unet, denoising_unet):  # a config name Hallo's diffusers had and 0.42 lacks
        unet._internal_dict = FrozenDict({**unet.config, "center_input_sample": False})
        # inference.py: enable_gradient_checkpointing() in training mode (it never calls .eval())
        unet.apply(lambda m: setattr(m, "gradient_checkpointing", True) if hasattr(m, "gradient_checkpointing") else 0)
    locator = face_locator.FaceLocator(conditioning_embedding_channels=ch[0], block_out_channels=(16, 32, 64, 128))
    projection = image_proj.ImageProjModel(
        cross_attention_dim=cad, clip_embeddings_dim=emb, clip_extra_context_tokens=4
    )
    audio_projection = audio_proj.AudioProjModel(
        seq_len=5, blocks=3, channels=16, intermediate_dim=32, output_dim=cad, context_tokens=6
    )
    parts = dict(
        reference_unet=reference_unet,
        denoising_unet=denoising_unet,
        face_locator=locator,
        imageproj=projection,
        audioproj=audio_projection,
    )
    with torch.no_grad():
        for module in parts.values():
            for p in module.parameters():
                p.copy_(torch.randn_like(p) * (p[0].numel() ** -0.5 if p.ndim > 1 else 0.3))
    state_dict = {f"{name}.{k}": v.numpy() for name, m in parts.items() for k, v in m.state_dict().items()}
    model = from_hallo(
        state_dict,
        unet_config,
        audio=AudioProjectionConfig(seq_len=5, blocks=3, channels=16, intermediate_dim=32, context_tokens=6),
        image_embedding=ImageEmbeddingConfig(dim=emb, tokens=4),
    )
    return parts, unet_config, model


@pytest.mark.parametrize("frames", [16, 4])  # 16: Hallo's guidance mask as written; 4: its fallback
def test_one_guided_step_matches_hallo(hallo_modules, hallo_net, frames):
    import torch
    from einops import repeat

    mutual = hallo_modules[3]
    parts, _, model = hallo_net
    reference_unet, denoising_unet = parts["reference_unet"], parts["denoising_unet"]
    locator, projection, audio_projection = parts["face_locator"], parts["imageproj"], parts["audioproj"]
    emb, lat, f = SIZES["emb"], SIZES["lat"], frames
    torch.manual_seed(1)

    ref_latent, motion_latents = torch.randn(1, 4, lat, lat), torch.randn(2, 4, lat, lat)
    noisy, t = torch.randn(1, 4, f, lat, lat), torch.tensor(537)
    face_embedding, audio_features = torch.randn(1, emb), torch.randn(1, f, 5, 3, 16)
    face_region = (torch.rand(1, 3, lat * 8, lat * 8) > 0.5).float()
    masks = [[(torch.rand(1, (lat >> level) ** 2) > 0.4).float() for level in range(4)] for _ in range(3)]
    motion_scale, guidance = [0.8, 1.1, 1.3], 3.5
    with torch.no_grad():  # FaceAnimatePipeline.__call__, one step
        tokens = torch.cat([projection(torch.zeros_like(face_embedding)), projection(face_embedding)])
        control = dict(do_classifier_free_guidance=True, batch_size=1, fusion_blocks="full")
        writer = mutual.ReferenceAttentionControl(reference_unet, mode="write", **control)
        reader = mutual.ReferenceAttentionControl(denoising_unet, mode="read", **control)
        located = locator(repeat(face_region.unsqueeze(1), "b f c h w -> b (r f) c h w", r=f).transpose(1, 2))
        full, face, lip = ([torch.cat([m.repeat(f, 1)] * 2) for m in region] for region in masks)
        audio = audio_projection(audio_features)
        reference_unet(
            torch.cat([ref_latent, motion_latents]).repeat(2, 1, 1, 1),
            torch.zeros_like(t),
            encoder_hidden_states=tokens,
            return_dict=False,
        )
        reader.update(writer)
        pred = denoising_unet(
            torch.cat([noisy] * 2),
            t,
            encoder_hidden_states=tokens,
            mask_cond_fea=torch.cat([torch.zeros_like(located), located]),
            full_mask=full,
            face_mask=face,
            lip_mask=lip,
            audio_embedding=torch.cat([torch.zeros_like(audio), audio]),
            motion_scale=motion_scale,
            return_dict=False,
        )[0]
    want = pred.permute(0, 2, 3, 4, 1).numpy()

    keep = jnp.asarray([0.0, 1.0])  # [unconditional, conditional]
    ours_tokens = model.image_tokens(jnp.asarray(face_embedding.numpy()).repeat(2, 0), keep)
    # Hallo's ReferenceNet rows [reference, motion 1, motion 2] x 2 branches read the tokens tiled by torch
    # .repeat: row j reads branch j mod 2's.
    rows = jnp.tile(ours_tokens, (3, 1, 1)).reshape(2, 3, *ours_tokens.shape[1:])

    def nhwc(x):
        return jnp.asarray(x.permute(0, 2, 3, 1).numpy())

    reference = model.encode_reference(nhwc(ref_latent).repeat(2, 0), rows[:, 0])
    motion = model.encode_motion(nhwc(motion_latents)[None].repeat(2, 0), jnp.ones((2,)), rows[:, 1:])
    ours = model.denoise(
        jnp.asarray(noisy.permute(0, 2, 3, 4, 1).numpy()).repeat(2, 0),
        jnp.asarray(537),
        reference,
        face_mask=jnp.asarray(face_region.permute(0, 2, 3, 1).numpy()).repeat(2, 0),
        motion=motion,
        audio_features=jnp.asarray(audio_features.numpy()).repeat(2, 0),
        reference_keep=keep,
        audio_keep=keep,
        image_tokens=ours_tokens,
        region_masks=tuple(
            jnp.stack([jnp.asarray(masks[r][level].numpy()) for r in range(3)], 1).repeat(2, 0) for level in range(4)
        ),
        motion_scale=jnp.asarray(motion_scale),
    )
    ours = np.asarray(ours)
    for branch in range(2):
        error = np.abs(ours[branch] - want[branch]).max() / np.abs(want[branch]).max()
        assert error < 1e-5, f"branch {branch}: max error {error:.2e} of the largest value"
    # uncond + g (cond - uncond) carries each branch's error times |1 - g| and g: measured against the branches'
    # scale that way (relative to the guided output's own maximum, a draw reached 1.5e-5 with both branches < 1e-5)
    guided, guided_want = ours[0] + guidance * (ours[1] - ours[0]), want[0] + guidance * (want[1] - want[0])
    scale = (abs(1 - guidance) + guidance) * np.abs(want).max()
    assert np.abs(guided - guided_want).max() / scale < 1e-5


def test_two_clips_match_hallos_pipeline(hallo_modules, hallo_net, monkeypatch):
    """`HalloSampler.clips` against `scripts/inference.py`'s loop around Hallo's `FaceAnimatePipeline` (2 clips of
    16 frames, 2 DDIM steps, guidance 3.5, the same starting noise per clip): the decoded frames of both clips.
    The second clip's motion frames are the first's decoded frames, so this covers the whole chain."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler
    from peers import state_dict_numpy

    from emo_jax.config import load_config
    from emo_jax.convert import from_diffusers_vae
    from emo_jax.convert.hallo import hallo_config
    from emo_jax.models.emo import AudioProjectionConfig, ImageEmbeddingConfig
    from emo_jax.models.vae import AutoencoderKLConfig
    from emo_jax.sample.generate import SamplingSettings
    from emo_jax.sample.hallo import HalloInputs, HalloSampler
    from emo_jax.sample.hallo_masks import HalloMasks

    face_animate = pytest.importorskip("hallo.animate.face_animate")
    parts, unet_config, model = hallo_net
    emb, lat, f, clips, steps, scale = SIZES["emb"], SIZES["lat"], 16, 2, 2, 3.5
    side, motion_scale = lat * 8, [0.8, 1.1, 1.3]
    torch.manual_seed(2)
    vae_config = AutoencoderKLConfig(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8)
    vae = AutoencoderKL(**vae_config.to_diffusers()).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    rng = np.random.default_rng(3)
    masks = HalloMasks(
        face_locator=np.where(rng.random((side, side)) > 0.5, 255, 0).astype(np.uint8),
        **{k: rng.integers(0, 256, (64, 64), dtype=np.uint8) for k in ("full", "face", "lip")},
    )
    inputs = HalloInputs(
        reference=rng.uniform(-1, 1, (side, side, 3)).astype(np.float32),
        face_embedding=rng.standard_normal(emb).astype(np.float32),
        masks=masks,
        audio_features=rng.standard_normal((clips * f, 5, 3, 16)).astype(np.float32),
        frames=clips * f - 5,
    )
    noise = rng.standard_normal((clips, f, lat, lat, 4)).astype(np.float32)

    # scripts/inference.py, from its step 3 on (preprocessing replaced by the inputs above)
    scheduler = DDIMScheduler(**HALLO_SCHEDULER)
    pipeline = face_animate.FaceAnimatePipeline(
        vae=vae,
        reference_unet=parts["reference_unet"],
        denoising_unet=parts["denoising_unet"],
        face_locator=parts["face_locator"],
        scheduler=scheduler,
        image_proj=parts["imageproj"],
    )
    starts = iter(torch.from_numpy(noise).permute(0, 4, 1, 2, 3))
    monkeypatch.setattr(pipeline, "prepare_latents", lambda *args, **kwargs: next(starts)[None])
    pixels = torch.from_numpy(inputs.reference).permute(2, 0, 1)[None]
    region = torch.from_numpy(masks.face_locator / 255.0).float()[None].repeat(3, 1, 1)[None]
    full, face, lip = (
        [torch.from_numpy(level[r])[None].repeat(f, 1) for level in masks.levels(side)] for r in range(3)
    )
    audio_emb = torch.from_numpy(inputs.audio_features)
    result = []
    with torch.no_grad():
        for t in range(clips):
            if not result:
                motion = pixels.repeat(2, 1, 1, 1)
            else:
                motion = result[-1][0].permute(1, 0, 2, 3)[-2:] * 2.0 - 1.0
            audio = parts["audioproj"](audio_emb[t * f : (t + 1) * f][None])
            output = pipeline(
                ref_image=torch.cat([pixels, motion])[None],
                audio_tensor=audio,
                face_emb=torch.from_numpy(inputs.face_embedding)[None],
                face_mask=region,
                pixel_values_full_mask=full,
                pixel_values_face_mask=face,
                pixel_values_lip_mask=lip,
                width=side,
                height=side,
                video_length=f,
                num_inference_steps=steps,
                guidance_scale=scale,
                generator=None,
                motion_scale=motion_scale,
            )
            result.append(output.videos)
    want = [v[0].permute(1, 2, 3, 0).numpy() for v in result]  # per clip [F, S, S, 3]

    config = load_config("configs/hallo.py:float32")
    config.model = hallo_config(
        unet_config,
        audio=AudioProjectionConfig(seq_len=5, blocks=3, channels=16, intermediate_dim=32, context_tokens=6),
        image_embedding=ImageEmbeddingConfig(dim=emb, tokens=4),
    ).to_dict()
    config.data.update(num_frames=f, size=side)
    settings = SamplingSettings(steps=steps, guidance_audio=scale, guidance_reference=scale)
    sampler = HalloSampler(model, from_diffusers_vae(state_dict_numpy(vae), dict(vae.config)), config, settings)
    ours = list(sampler.clips(inputs, motion_scale, noise=lambda clip: noise[clip]))
    assert len(ours) == clips
    for clip in range(clips):
        inside = np.mean((want[clip] > 0) & (want[clip] < 1))
        assert inside > 0.5 and want[clip].std() > 0.05, "the peer's frames are mostly clamped: a weak comparison"
        error = np.abs(ours[clip] - want[clip]).max()
        print(f"clip {clip}: max error {error:.2e} (frames in [0, 1]; {inside:.0%} unclamped)")
        assert error < 1e-4, f"clip {clip}: max error {error:.2e}"
    frames = np.stack(list(sampler.frames(inputs, motion_scale, noise=lambda clip: noise[clip])))
    assert frames.shape == (inputs.frames, side, side, 3) and frames.dtype == np.uint8


def test_masks_equal_hallos_from_the_same_landmarks(tmp_path, monkeypatch):
    """emo_jax.sample.hallo_masks against Hallo's `get_mask` steps (hallo.utils.util, its files re-read), on 20
    random landmark sets: every pixel equal."""
    if not HALLO:
        pytest.skip("EMO_JAX_HALLO_REPO (a checkout of fudan-generative-vision/hallo) is not set")
    import types

    from PIL import Image

    from emo_jax.sample.hallo_masks import LIPS, hallo_masks

    for name in ("av", "mediapipe", "torchvision", "moviepy", "moviepy.editor"):  # imported, unused here
        stub = types.ModuleType(name)
        stub.AudioFileClip = stub.VideoClip = object
        monkeypatch.setitem(sys.modules, name, stub)
    monkeypatch.syspath_prepend(HALLO)
    require("torch")
    pytest.importorskip("einops")
    from hallo.utils import util

    rng = np.random.default_rng(0)
    for trial in range(20):
        x, y, s = rng.uniform(100, 400), rng.uniform(100, 400), rng.uniform(40, 250)
        landmarks = np.stack([x + rng.uniform(-s, s, 478), y + rng.uniform(-s, s, 478)], 1)
        landmarks[list(LIPS)] = np.stack([x + rng.uniform(-s, s, 20) / 4, y + s / 2 + rng.uniform(-s, s, 20) / 8], 1)
        ratio = float(rng.choice([1.0, 1.2, 1.5]))
        ours = hallo_masks(landmarks, 512, 512, ratio)
        f = {k: str(tmp_path / f"{trial}_{k}.png") for k in ("lip", "face", "blur", "sep_lip", "full", "sep_face")}
        util.get_lip_mask(landmarks, 512, 512, f["lip"])
        util.get_face_mask(landmarks, 512, 512, f["face"], ratio)
        util.get_blur_mask(f["face"], f["blur"], kernel_size=(51, 51))
        util.get_blur_mask(f["lip"], f["sep_lip"], kernel_size=(31, 31))
        util.get_background_mask(f["blur"], f["full"])
        util.get_sep_face_mask(f["blur"], f["sep_lip"], f["sep_face"])
        for mine, name in (
            (ours.face_locator, "face"),
            (ours.full, "full"),
            (ours.face, "sep_face"),
            (ours.lip, "sep_lip"),
        ):
            np.testing.assert_array_equal(mine, np.asarray(Image.open(f[name])), err_msg=f"{trial} {name}")
