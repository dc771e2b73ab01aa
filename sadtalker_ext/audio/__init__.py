"""Audio input side of SadTalker: decoding, the 80-band log-mel front end, per-frame mel windows, eye blinks.

Modules:

* ``decode``   -- any audio/video file -> 16 kHz mono float32 samples (``load_audio``), ``write_wav16``.
* ``features`` -- ``MelParams``, ``mel_spectrogram``, frame-count rule, ``mel_windows``, and the typed result
  ``AudioFeatures`` built by ``prepare_audio`` / ``idle_audio_features``.
* ``blink``    -- the random eye-blink ratio track (``blink_ratio``), driven by a seeded numpy Generator.
"""
