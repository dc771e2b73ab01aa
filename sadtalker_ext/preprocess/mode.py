"""The five preprocess modes and what each one means to the stages: the one table every module asks.

=========  ==========  =============  ===========  ================  ================
mode       crops_face  is_extended    is_full      uses_crop_params  mapping_feature
=========  ==========  =============  ===========  ================  ================
crop       yes         no             no           no                ``crop`` (00229)
resize     no          no             no           no                ``crop`` (00229)
full       yes         no             yes          yes               ``full`` (00109)
extcrop    yes         yes            no           no                ``crop`` (00229)
extfull    yes         yes            yes          yes               ``full`` (00109)
=========  ==========  =============  ===========  ================  ================

* ``crops_face``: the face is detected and the picture cut around it (``resize`` squashes the whole
  picture to ``size x size``: no landmarks, no crop box, nothing to paste back into);
* ``is_extended``: the cut keeps the whole (larger) crop box instead of cutting again to the face quad;
* ``is_full``: rendered frames are pasted back into the original picture;
* ``uses_crop_params``: the renderer's MappingNet also receives the source's crop parameters
  ``(s, tx, ty)`` (73 coefficient columns instead of 70);
* ``mapping_feature``: the weight-manifest feature whose MappingNet file the mode loads
  (:data:`sadtalker_ext.weights.MAPPING_FILES` turns it into the file name).
"""

from __future__ import annotations

import enum

from ..errors import InputError


class PreprocessMode(enum.Enum):
    """One preprocess mode; build it from a user's string with :meth:`parse` (any case)."""

    CROP = "crop"
    RESIZE = "resize"
    FULL = "full"
    EXTCROP = "extcrop"
    EXTFULL = "extfull"

    @classmethod
    def parse(cls, value: str | PreprocessMode) -> PreprocessMode:
        """The mode named ``value`` (case-insensitive; a mode is returned as it is).

        Raises :class:`InputError` naming the modes for anything else."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for mode in cls:
                if mode.value == value.lower():
                    return mode
        raise InputError(f"unknown preprocess mode {value!r}; use one of {', '.join(MODE_NAMES)}")

    @property
    def crops_face(self) -> bool:
        """False for ``resize`` only: no face detection, no crop box."""
        return self is not PreprocessMode.RESIZE

    @property
    def is_extended(self) -> bool:
        """True for ``extcrop``/``extfull``: the crop keeps the whole crop box."""
        return self in (PreprocessMode.EXTCROP, PreprocessMode.EXTFULL)

    @property
    def is_full(self) -> bool:
        """True for ``full``/``extfull``: frames are pasted back into the original picture."""
        return self in (PreprocessMode.FULL, PreprocessMode.EXTFULL)

    @property
    def uses_crop_params(self) -> bool:
        """True for ``full``/``extfull``: the MappingNet takes 73 columns (70 + the crop's s, tx, ty)."""
        return self.is_full

    @property
    def mapping_feature(self) -> str:
        """``'full'`` (``mapping_00109``, 73 inputs) or ``'crop'`` (``mapping_00229``, 70 inputs): the
        weight-manifest feature of the MappingNet file this mode needs."""
        return "full" if self.uses_crop_params else "crop"


MODE_NAMES: tuple[str, ...] = tuple(mode.value for mode in PreprocessMode)
"""The user-facing names, in the order front ends list them (``crop`` first: the default)."""
