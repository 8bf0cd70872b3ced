"""The SD1.5-family UNet (diffusers `UNet2DConditionModel`), channels-last, in Flax NNX, for images or video.

One class serves every size: SD1.5 (320/640/1280/1280, 8 heads, cross-attention 768) and the tiny test
configs are the same code with another `UNetConfig`. With `UNetConfig.motion` it is a video UNet with
AnimateDiff motion modules (diffusers `UNetMotionModel`). Later the same class is ReferenceNet and the EMO
backbone.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from emo_jax.models.attention import BasicTransformerBlock, Context, Transformer2DModel
from emo_jax.models.conditioning import TimestepEmbedding, timestep_embedding
from emo_jax.models.hf_config import read_hf_config, to_diffusers_config
from emo_jax.models.layers import Compute, conv, group_norm
from emo_jax.models.region_audio import RegionAudioBlock
from emo_jax.models.temporal import MotionConfig, TemporalTransformer
from emo_jax.models.unet_blocks import DownBlock2D, MidBlock2D, UpBlock2D

CROSS_ATTN_DOWN, DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_ATTN_UP, UP = "CrossAttnUpBlock2D", "UpBlock2D"
MID_CROSS_ATTN = "UNetMidBlock2DCrossAttn"
AUDIO_ATTENTION = ("block", "regions")
# diffusers' video block names -> the image block they extend with motion modules.
MOTION_BLOCK_TYPES = {
    "CrossAttnDownBlockMotion": CROSS_ATTN_DOWN,
    "DownBlockMotion": DOWN,
    "CrossAttnUpBlockMotion": CROSS_ATTN_UP,
    "UpBlockMotion": UP,
}

# diffusers config keys whose other values select features this UNet does not have: key -> accepted values.
_SUPPORTED_ONLY = {
    "act_fn": ("silu",),
    "center_input_sample": (False,),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "class_embeddings_concat": (False,),
    "projection_class_embeddings_input_dim": (None,),
    "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "time_embedding_type": ("positional",),
    "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1.0,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "only_cross_attention": (False,),
    "dual_cross_attention": (False,),
    "mid_block_type": (MID_CROSS_ATTN,),
    "mid_block_only_cross_attention": (None, False),
    "attention_type": ("default",),
    "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
    "dropout": (0.0,),
    # UNetMotionModel
    "mid_block_layers": (1,),
    "transformer_layers_per_mid_block": (None,),
    "reverse_temporal_transformer_layers_per_block": (None,),
    "reverse_motion_num_attention_heads": (None,),
}
# Keys with no effect here (besides "_"-prefixed bookkeeping): the nominal sample size, and `upcast_attention`
# (our attention always takes its softmax on fp32 logits, see `attention.dot_product_attention`).
_NO_EFFECT = {"sample_size", "upcast_attention", "addition_embed_type_num_heads"}


def _per_block(value: int | tuple[int, ...] | list[int], n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ValueError(f"UNetConfig.{name}: {len(value)} values for {n} blocks")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of a UNet, field names and defaults as in diffusers' config.json for SD1.5.

    `attention_head_dim` is, as in diffusers' SD1.5 configs, the number of heads (a historical misnomer);
    `num_attention_heads` overrides it where given.
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (CROSS_ATTN_DOWN, CROSS_ATTN_DOWN, CROSS_ATTN_DOWN, DOWN)
    up_block_types: tuple[str, ...] = (UP, CROSS_ATTN_UP, CROSS_ATTN_UP, CROSS_ATTN_UP)
    layers_per_block: int | tuple[int, ...] = 2
    transformer_layers_per_block: int | tuple[int, ...] = 1
    attention_head_dim: int | tuple[int, ...] = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    cross_attention_dim: int | None = 768  # None: no text (attn2 only in 'cross' reference mode)
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    use_linear_projection: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    motion: MotionConfig | None = None  # AnimateDiff motion modules: a video UNet
    # EMO backbone extensions (no diffusers twin): see attention.BasicTransformerBlock.
    reference_attention: str | None = None  # None | 'concat_self' | 'cross'
    audio_cross_attention_dim: int | None = None  # width of the audio tokens the audio attention reads
    # 'block': EMO's audio attention inside every spatial block (`attn_audio`); 'regions': Hallo's audio modules,
    # a transformer of one `RegionAudioBlock` after each spatial transformer (`audio_modules`).
    audio_attention: str = "block"
    # A ReferenceNet that only provides features: no conv_norm_out / conv_out, and the UNet returns its last
    # feature map [.., block_out_channels[0]] (Hallo's reference UNet has no output layers).
    features_only: bool = False

    def __post_init__(self):
        if isinstance(self.motion, Mapping):  # from a config file
            object.__setattr__(self, "motion", MotionConfig(**self.motion))
        for name in ("block_out_channels", "down_block_types", "up_block_types"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("layers_per_block", "transformer_layers_per_block", "attention_head_dim", "num_attention_heads"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"UNetConfig: {n} block_out_channels but {len(self.down_block_types)} down_block_types "
                f"and {len(self.up_block_types)} up_block_types"
            )
        for kind in self.down_block_types:
            if kind not in (CROSS_ATTN_DOWN, DOWN):
                raise ValueError(f"UNetConfig: unsupported down block type {kind!r}")
        for kind in self.up_block_types:
            if kind not in (CROSS_ATTN_UP, UP):
                raise ValueError(f"UNetConfig: unsupported up block type {kind!r}")
        if self.audio_attention not in AUDIO_ATTENTION:
            raise ValueError(
                f"UNetConfig.audio_attention must be one of {AUDIO_ATTENTION}, got {self.audio_attention!r}"
            )
        if self.cross_attention_dim is not None and not isinstance(self.cross_attention_dim, int):
            raise ValueError("UNetConfig: per-block cross_attention_dim is not supported; give one int")
        for i, heads in enumerate(self.heads):
            if self.block_out_channels[i] % heads:
                raise ValueError(
                    f"UNetConfig: {self.block_out_channels[i]} channels of block {i} do not split into {heads} heads"
                )

    @property
    def heads(self) -> tuple[int, ...]:
        """Attention heads per down block (head dim = block channels / heads)."""
        heads = self.num_attention_heads if self.num_attention_heads is not None else self.attention_head_dim
        return _per_block(heads, len(self.block_out_channels), "num_attention_heads")

    @property
    def layers(self) -> tuple[int, ...]:
        return _per_block(self.layers_per_block, len(self.block_out_channels), "layers_per_block")

    @property
    def transformer_layers(self) -> tuple[int, ...]:
        return _per_block(
            self.transformer_layers_per_block, len(self.block_out_channels), "transformer_layers_per_block"
        )

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], *, source: str = "config") -> UNetConfig:
        """Reads a diffusers `UNet2DConditionModel` or `UNetMotionModel` config.json dict; unsupported features
        raise, naming the key."""
        config = dict(config)
        motion = None
        if config.get("_class_name") == "UNetMotionModel":
            motion_fields = {f.name for f in dataclasses.fields(MotionConfig)}
            motion = MotionConfig(**{k: config.pop(k) for k in list(config) if k in motion_fields})
            for key in ("down_block_types", "up_block_types"):
                config[key] = [MOTION_BLOCK_TYPES.get(kind, kind) for kind in config.get(key, ())]
        fields = read_hf_config(cls, config, supported_only=_SUPPORTED_ONLY, no_effect=_NO_EFFECT, source=source)
        return cls(**fields, motion=motion)

    def to_diffusers(self) -> dict[str, Any]:
        """The diffusers config.json dict of this architecture: `UNet2DConditionModel(**d)`, or with motion
        modules `UNetMotionModel(**d)`, builds its twin."""
        extensions = {"motion", "reference_attention", "audio_cross_attention_dim", "audio_attention", "features_only"}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        emo = {k: getattr(self, k) for k in extensions - {"motion"} if getattr(self, k) != defaults[k]}
        if self.motion is None:
            return {
                **{k: v for k, v in to_diffusers_config(self, "UNet2DConditionModel").items() if k not in extensions},
                **emo,
            }
        if not self.flip_sin_to_cos or self.freq_shift != 0:
            raise ValueError("UNetMotionModel fixes flip_sin_to_cos=True, freq_shift=0")
        d = {
            k: v
            for k, v in to_diffusers_config(self, "UNetMotionModel").items()
            if k not in extensions | {"attention_head_dim", "flip_sin_to_cos", "freq_shift"}
        }
        motion_names = {image: video for video, image in MOTION_BLOCK_TYPES.items()}
        return {
            **d,
            **dataclasses.asdict(self.motion),
            "num_attention_heads": list(self.heads),
            "down_block_types": [motion_names[kind] for kind in self.down_block_types],
            "up_block_types": [motion_names[kind] for kind in self.up_block_types],
            **emo,
        }


class UNet(nnx.Module):
    """Conditional denoiser: `unet(sample, timesteps, encoder_hidden_states)`.

    Images: sample [B, H, W, in_channels] -> [B, H, W, out_channels] (any H, W; sizes that do not halve evenly
    are restored on the way up). Video: sample [B, F, H, W, in_channels] -> [B, F, H, W, out_channels]; spatial
    layers see each frame alone, motion modules (if configured) attend across frames.
    timesteps: [] or [B]; encoder_hidden_states: [B, L, cross_attention_dim] or None (no text).
    EMO inputs (keyword): reference {block path: [B, S, C]} (ReferenceNet features, shared by a video's frames);
    motion {motion key: [B, n, S, C]} (ReferenceNet features of the n motion frames); audio [B, F, A, Da]
    tokens per frame (or [B, A, Da] for images); speed [B, F, K, Ds] tokens per frame; reference_keep,
    audio_keep, speed_keep [B]; with `audio_attention='regions'` (Hallo), region_masks: one [B, 3, S] (or
    [B, F, 3, S]) per resolution, full / face / lip masks flattened at S = h * w of that level, and
    motion_scale [3], their weights;
    conv_in_residual [B, (F,) H, W, C0] added after conv_in (face locator); collect_reference: sow the
    features a ReferenceNet provides.
    """

    def __init__(self, config: UNetConfig, *, compute: Compute = Compute(), rngs: nnx.Rngs):
        self.config = config
        c = config
        channels = c.block_out_channels
        n = len(channels)
        time_embed_dim = channels[0] * 4

        regions = c.audio_attention == "regions" and c.audio_cross_attention_dim is not None

        def transformer(num_heads: int, num_layers: int, ch: int) -> Transformer2DModel:
            def block() -> BasicTransformerBlock:
                return BasicTransformerBlock(
                    ch,
                    heads=num_heads,
                    dim_head=ch // num_heads,
                    cross_attention_dim=c.cross_attention_dim,
                    reference_attention=c.reference_attention,
                    audio_cross_attention_dim=None if regions else c.audio_cross_attention_dim,
                    compute=compute,
                    rngs=rngs,
                )

            return Transformer2DModel(
                ch, ch, block, num_layers=num_layers, norm_num_groups=c.norm_num_groups, compute=compute, rngs=rngs
            )

        def audio_module(num_heads: int, widths: tuple[int, ...], ch: int, layer: int) -> Transformer2DModel:
            """Hallo's audio module of layer `layer`: heads of width widths[layer] // num_heads (Hallo derives
            them from the layer's input channels, not its own), over a stage of `ch` channels."""
            dim_head = widths[layer] // num_heads
            inner = num_heads * dim_head

            def block() -> RegionAudioBlock:
                return RegionAudioBlock(
                    inner,
                    heads=num_heads,
                    dim_head=dim_head,
                    cross_attention_dim=c.audio_cross_attention_dim,
                    compute=compute,
                    rngs=rngs,
                )

            return Transformer2DModel(ch, inner, block, norm_num_groups=c.norm_num_groups, compute=compute, rngs=rngs)

        def stage_audio(attends: bool, num_heads: int, widths: tuple[int, ...], ch: int):
            """Hallo's audio modules follow spatial transformers only."""
            return functools.partial(audio_module, num_heads, widths, ch) if regions and attends else None

        def motion(num_heads: int, num_layers: int, ch: int) -> TemporalTransformer:
            return TemporalTransformer(
                ch,
                num_attention_heads=num_heads,
                num_layers=num_layers,
                norm_num_groups=c.norm_num_groups,
                max_seq_length=c.motion.motion_max_seq_length,
                speed_cross_attention_dim=c.motion.speed_cross_attention_dim,
                norm_per_frame=c.motion.norm_per_frame,
                compute=compute,
                rngs=rngs,
            )

        m = c.motion
        block_motion = (
            functools.partial(motion, m.motion_num_attention_heads, m.temporal_transformer_layers_per_block)
            if m
            else None
        )
        mid_motion = (
            functools.partial(motion, m.motion_num_attention_heads, m.temporal_transformer_layers_per_mid_block)
            if m and m.use_motion_mid_block
            else None
        )

        def stage_motion(attends: bool):
            """Motion modules for a stage with (or, unless `in_plain_stages` is off, without) spatial attention."""
            return block_motion if attends or m is None or m.in_plain_stages else None

        common = dict(
            temb_channels=time_embed_dim,
            resnet_groups=c.norm_num_groups,
            resnet_eps=c.norm_eps,
            compute=compute,
            rngs=rngs,
        )

        self.conv_in = conv(c.in_channels, channels[0], compute, rngs)
        self.time_embedding = TimestepEmbedding(channels[0], time_embed_dim, compute=compute, rngs=rngs)

        down_blocks = []
        for i, kind in enumerate(c.down_block_types):
            attends = kind == CROSS_ATTN_DOWN
            resnet_inputs = (channels[max(i - 1, 0)],) + (channels[i],) * (c.layers[i] - 1)
            down_blocks.append(
                DownBlock2D(
                    channels[max(i - 1, 0)],
                    channels[i],
                    num_layers=c.layers[i],
                    add_downsample=i < n - 1,
                    make_attention=(
                        functools.partial(transformer, c.heads[i], c.transformer_layers[i]) if attends else None
                    ),
                    make_motion=stage_motion(attends),
                    make_audio=stage_audio(attends, c.heads[i], resnet_inputs, channels[i]),
                    downsample_padding=c.downsample_padding,
                    **common,
                )
            )
        self.down_blocks = nnx.List(down_blocks)

        self.mid_block = MidBlock2D(
            channels[-1],
            make_attention=functools.partial(transformer, c.heads[-1], c.transformer_layers[-1]),
            make_motion=mid_motion,
            make_audio=stage_audio(True, c.heads[-1], (channels[-1],), channels[-1]),
            output_scale_factor=c.mid_block_scale_factor,
            **common,
        )

        rev_channels, rev_heads = channels[::-1], c.heads[::-1]
        rev_layers, rev_tlayers = c.layers[::-1], c.transformer_layers[::-1]
        up_blocks = []
        for i, kind in enumerate(c.up_block_types):
            num_layers = rev_layers[i] + 1
            skip_in = rev_channels[min(i + 1, n - 1)]
            attends = kind == CROSS_ATTN_UP
            up_blocks.append(
                UpBlock2D(
                    rev_channels[max(i - 1, 0)],
                    rev_channels[i],
                    num_layers=num_layers,
                    add_upsample=i < n - 1,
                    skip_channels=[rev_channels[i]] * (num_layers - 1) + [skip_in],
                    make_attention=(functools.partial(transformer, rev_heads[i], rev_tlayers[i]) if attends else None),
                    make_motion=stage_motion(attends),
                    make_audio=stage_audio(attends, rev_heads[i], (skip_in,) * num_layers, rev_channels[i]),
                    **common,
                )
            )
        self.up_blocks = nnx.List(up_blocks)

        if not c.features_only:
            self.conv_norm_out = group_norm(channels[0], c.norm_num_groups, c.norm_eps, compute, rngs)
            self.conv_out = conv(channels[0], c.out_channels, compute, rngs)

        # Each spatial transformer block's key in `Context.reference`: its attribute path, the same path under
        # which a ReferenceNet of this layout sows its features. A motion module's key in `Context.motion`: with
        # motion_features 'residual', where the ReferenceNet sows its hidden state at this module's place
        # (`<stage>.motion_input_<layer>`); with 'attention_input', the spatial block before it (same index;
        # blocks without spatial attention have none under that key).
        for path, node in nnx.iter_graph(self):
            if isinstance(node, BasicTransformerBlock) and "attentions" in path:
                node.path = ".".join(str(p) for p in path)
            elif isinstance(node, TemporalTransformer):
                prefix = ".".join(str(p) for p in path[:-2])
                residual = c.motion.motion_features == "residual"
                node.motion_key = (
                    f"{prefix}.motion_input_{path[-1]}"
                    if residual
                    else f"{prefix}.attentions.{path[-1]}.transformer_blocks.0"
                )

    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array,
        encoder_hidden_states: jax.Array | None = None,
        *,
        reference: dict[str, jax.Array] | None = None,
        reference_keep: jax.Array | None = None,
        audio: jax.Array | None = None,
        audio_keep: jax.Array | None = None,
        region_masks: tuple[jax.Array, ...] | None = None,
        motion_scale: jax.Array | None = None,
        motion: dict[str, jax.Array] | None = None,
        speed: jax.Array | None = None,
        speed_keep: jax.Array | None = None,
        conv_in_residual: jax.Array | None = None,
        collect_reference: bool = False,
    ) -> jax.Array:
        c = self.config
        batch = sample.shape[0]
        video = sample.ndim == 5
        num_frames = sample.shape[1] if video else 1

        def per_frame(x: jax.Array | None, shared_ndim: int) -> jax.Array | None:
            """[B, F, ...] -> [B * F, ...]; a per-video [B, ...] (ndim `shared_ndim`) is repeated per frame."""
            if x is None:
                return None
            if x.ndim == shared_ndim:
                return jnp.repeat(x, num_frames, axis=0) if num_frames > 1 else x
            return x.reshape((batch * num_frames,) + x.shape[2:])

        if video:  # frames into the batch, each video's frames contiguous: [B * F, H, W, C]
            sample = sample.reshape((batch * num_frames,) + sample.shape[2:])
        context = Context(
            encoder_hidden_states=per_frame(encoder_hidden_states, 3),
            reference=None if reference is None else {k: per_frame(v, 3) for k, v in reference.items()},
            reference_keep=per_frame(reference_keep, 1),
            audio=per_frame(audio, 3),
            audio_keep=per_frame(audio_keep, 1),
            region_masks=None if region_masks is None else tuple(per_frame(m, 3) for m in region_masks),
            motion_scale=None if motion_scale is None else jnp.asarray(motion_scale, jnp.float32),
            motion=motion,
            speed=speed,
            speed_keep=speed_keep,
            collect=collect_reference,
        )

        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
        t_emb = timestep_embedding(
            timesteps, c.block_out_channels[0], flip_sin_to_cos=c.flip_sin_to_cos, freq_shift=c.freq_shift
        )
        temb = jnp.repeat(self.time_embedding(t_emb), num_frames, axis=0)

        x = self.conv_in(sample)
        if conv_in_residual is not None:
            x = x + per_frame(conv_in_residual, 4)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context, num_frames)
            skips.extend(block_skips)

        x = self.mid_block(x, temb, context, num_frames)

        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            # Upsample to the size of the skip the next block concatenates (2x unless a size was odd).
            upsample_size = tuple(skips[-1].shape[1:3]) if block.upsamplers is not None else None
            x = block(x, block_skips, temb, context, upsample_size, num_frames)

        out = x if c.features_only else self.conv_out(jax.nn.silu(self.conv_norm_out(x)))
        return out.reshape((batch, num_frames) + out.shape[1:]) if video else out
