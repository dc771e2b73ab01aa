"""PoseVAE of SadTalker (official ``Audio2Pose`` with its ``CVAE``): audio -> head-motion sequence (pure torch).

At inference only the decoder runs: for a chunk of ``seq_len`` (32) frames it takes a latent noise vector z (64),
the pose-style class bias (one learnt 64-vector per style, 46 styles), the reference pose (6: 3 rotation angles in
radians, 3 translations) and the chunk's 32 audio embeddings, and returns 32 pose offsets (6 each) relative to the
reference pose.

Decoder, per chunk: ``linear_audio`` 512 -> 6 per frame, flattened to 192; ``z + classbias[style]``;
MLP on ``[ref (6), z' (64), audio (192)]`` = 262 -> 128 (ReLU) -> 192 (sigmoid); reshaped to a 1-channel
(32, 6) map -> :class:`ResUnet` -> ``pose_linear`` Linear(6, 6) per frame.

State-dict keys equal the official ``audio2pose.*`` keys with the prefix stripped: ``audio_encoder.audio_encoder.*``
(:class:`PoseAudioEncoder`), ``netG.encoder.*`` / ``netG.decoder.*`` (the CVAE halves) and ``netD_motion.*``
(:class:`PoseSequenceDiscriminator`, training only).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from .audio_encoder import MelEncoderConfig, PoseAudioEncoder
from .pose_discriminator import PoseDiscriminatorConfig, PoseSequenceDiscriminator
from .res_unet import ResUnet, ResUnetConfig


@dataclass(frozen=True)
class PoseVAEConfig:
    """Official values of src/config/auido2pose.yaml (MODEL.CVAE, DATASET.NUM_CLASSES)."""

    seq_len: int = 32
    latent_size: int = 64
    num_classes: int = 46
    pose_dim: int = 6
    audio_emb_in_size: int = 512
    audio_emb_out_size: int = 6
    encoder_layer_sizes: tuple[int, ...] = (192, 128)
    decoder_layer_sizes: tuple[int, ...] = (128, 192)
    mel: MelEncoderConfig = field(default_factory=MelEncoderConfig)
    unet: ResUnetConfig = field(default_factory=ResUnetConfig)
    discriminator: PoseDiscriminatorConfig = field(default_factory=PoseDiscriminatorConfig)

    @property
    def conditioning_size(self) -> int:
        """Latent + flattened audio projection + reference pose: 64 + 32 * 6 + 6 = 262."""
        return self.latent_size + self.seq_len * self.audio_emb_out_size + self.pose_dim


def _mlp(sizes: list[int], final: nn.Module | None) -> nn.Sequential:
    """Linear layers ``L{i}`` with ReLU ``A{i}`` between them and ``final`` (named ``sigmoid``) after the last."""
    seq = nn.Sequential()
    pairs = list(itertools.pairwise(sizes))
    for i, (cin, cout) in enumerate(pairs):
        seq.add_module(f"L{i}", nn.Linear(cin, cout))
        if i + 1 < len(pairs):
            seq.add_module(f"A{i}", nn.ReLU())
        elif final is not None:
            seq.add_module("sigmoid", final)
    return seq


class PoseEncoder(nn.Module):
    """CVAE encoder (training only): ground-truth motion + audio + style -> (mu, logvar).

    Its first MLP size is the yaml's 192 plus latent + seq_len * audio_out + 6 (= 454), as the official code
    computes it. Every MLP layer is followed by ReLU.
    """

    def __init__(self, config: PoseVAEConfig) -> None:
        super().__init__()
        cfg = config
        self.config = cfg
        self.resunet = ResUnet(cfg.unet)
        sizes = [cfg.encoder_layer_sizes[0] + cfg.conditioning_size, *cfg.encoder_layer_sizes[1:]]
        self.MLP = nn.Sequential()
        for i, (cin, cout) in enumerate(itertools.pairwise(sizes)):
            self.MLP.add_module(f"L{i}", nn.Linear(cin, cout))
            self.MLP.add_module(f"A{i}", nn.ReLU())
        self.linear_means = nn.Linear(sizes[-1], cfg.latent_size)
        self.linear_logvar = nn.Linear(sizes[-1], cfg.latent_size)
        self.linear_audio = nn.Linear(cfg.audio_emb_in_size, cfg.audio_emb_out_size)
        self.classbias = nn.Parameter(torch.zeros(cfg.num_classes, cfg.latent_size))

    def forward(
        self, motion: torch.Tensor, ref_pose: torch.Tensor, audio_emb: torch.Tensor, style: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """motion (B, L, 6), ref_pose (B, 6), audio_emb (B, L, 512), style (B,) long -> mu, logvar (B, 64).

        As in the official code, ``logvar`` is computed with ``linear_means`` (``linear_logvar`` is unused).
        """
        b = motion.shape[0]
        pose_feat = self.resunet(motion.unsqueeze(1)).reshape(b, -1)
        audio_feat = self.linear_audio(audio_emb).reshape(b, -1)
        hidden = self.MLP(torch.cat([ref_pose, pose_feat, audio_feat, self.classbias[style]], dim=-1))
        mu = self.linear_means(hidden)
        return mu, self.linear_means(hidden)


class PoseDecoder(nn.Module):
    """CVAE decoder: (z, style, reference pose, audio embeddings of one chunk) -> pose motion of the chunk."""

    def __init__(self, config: PoseVAEConfig) -> None:
        super().__init__()
        cfg = config
        self.config = cfg
        self.resunet = ResUnet(cfg.unet)
        self.MLP = _mlp([cfg.conditioning_size, *cfg.decoder_layer_sizes], nn.Sigmoid())
        self.pose_linear = nn.Linear(cfg.pose_dim, cfg.pose_dim)
        self.linear_audio = nn.Linear(cfg.audio_emb_in_size, cfg.audio_emb_out_size)
        self.classbias = nn.Parameter(torch.zeros(cfg.num_classes, cfg.latent_size))

    def forward(
        self, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor, audio_emb: torch.Tensor
    ) -> torch.Tensor:
        """z (B, 64) standard-normal noise, style (B,) long in [0, 45], ref_pose (B, 6),
        audio_emb (B, seq_len, 512) -> pose motion (B, seq_len, 6) (offsets from ``ref_pose``)."""
        b = z.shape[0]
        audio_feat = self.linear_audio(audio_emb).reshape(b, -1)
        latent = z + self.classbias[style]
        hidden = self.MLP(torch.cat([ref_pose, latent, audio_feat], dim=-1))
        pose_map = hidden.reshape(b, 1, self.config.seq_len, -1)
        refined = self.resunet(pose_map).squeeze(1)
        return self.pose_linear(refined)


class PoseCVAE(nn.Module):
    """Container of the two CVAE halves (keys ``encoder.*``, ``decoder.*``)."""

    def __init__(self, config: PoseVAEConfig) -> None:
        super().__init__()
        self.encoder = PoseEncoder(config)
        self.decoder = PoseDecoder(config)


class Audio2PoseNet(nn.Module):
    """Everything under the official ``audio2pose.`` prefix: audio encoder, CVAE, motion discriminator."""

    def __init__(self, config: PoseVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or PoseVAEConfig()
        self.audio_encoder = PoseAudioEncoder(self.config.mel)
        self.netG = PoseCVAE(self.config)
        self.netD_motion = PoseSequenceDiscriminator(self.config.discriminator)

    def decode_chunk(
        self, windows: torch.Tensor, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor
    ) -> torch.Tensor:
        """One decoder chunk from mel windows.

        windows (B, n, 1, 80, 16) with 1 <= n <= seq_len; when n < seq_len the embedding sequence is left-padded
        by repeating its first embedding (official behaviour for short clips). Returns (B, seq_len, 6) motion.
        """
        emb = self.audio_encoder(windows)
        missing = self.config.seq_len - emb.shape[1]
        if missing > 0:
            emb = torch.cat([emb[:, :1].expand(-1, missing, -1), emb], dim=1)
        return self.netG.decoder(z, style, ref_pose, emb)
