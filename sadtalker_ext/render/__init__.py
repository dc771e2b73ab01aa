"""Renderer stage: loading of the face-vid2vid networks, keypoint motion and frame generation."""
