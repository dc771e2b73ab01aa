"""Audio -> 3DMM motion coefficients (ExpNet + PoseVAE), see :mod:`.coefficients`."""

from .coefficients import (
    MotionResult,
    draw_pose_noise,
    generate_coefficients,
    pose_noise_draws,
    save_coeff_mat,
    validate_pose_style,
)
from .loading import MotionNets, build_motion_nets, load_motion_nets

__all__ = [
    "MotionNets",
    "MotionResult",
    "build_motion_nets",
    "draw_pose_noise",
    "generate_coefficients",
    "load_motion_nets",
    "pose_noise_draws",
    "save_coeff_mat",
    "validate_pose_style",
]
