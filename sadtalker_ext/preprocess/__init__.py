"""Face preprocessing: crop modes, 5-point alignment to 224, 3DMM extraction, and paste-back of rendered frames."""
