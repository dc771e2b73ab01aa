"""The weight-file manifest (``models/weights.json``): what to fetch, where it goes, how to check it.

* :func:`load_manifest` reads the manifest and the tensor-name data file beside it
  (``models/sadtalker_v002_keys.json``: every key, shape and dtype of the official files).
* :func:`check_file` tells whether a file on disk is the right one (size, safetensors header or
  mapping state dict against the key data, sha256 when known and asked).
* :func:`model_status` lists every file as present / missing / corrupt for a status panel;
  :func:`required_files`, :func:`missing_files` and :func:`missing_message` let the pipeline say
  exactly which files a run needs and print the downloader command.

Unknown facts stay unknown: a size of 0 or an empty sha256 in the manifest means "not checked".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .errors import CheckpointError
from .paths import DATA_DIR, ModelDirs, resolve_model_dirs
from .preprocess.mode import PreprocessMode

log = logging.getLogger(__name__)

MANIFEST_PATH = DATA_DIR / "weights.json"
"""The packaged manifest."""

# The official file names: the only place outside models/weights.json (a test checks they agree, and that no
# other module spells them). Stages receive paths; they get names from here.
SAFETENSORS_256 = "SadTalker_V0.0.2_256.safetensors"
SAFETENSORS_512 = "SadTalker_V0.0.2_512.safetensors"
MAPPING_CROP = "mapping_00229-model.pth.tar"
MAPPING_FULL = "mapping_00109-model.pth.tar"
GFPGAN_FILE = "GFPGANv1.4.pth"
REALESRGAN_FILE = "RealESRGAN_x2plus.pth"
PARSENET_FILE = "parsing_parsenet.pth"
DETECTOR_FILE = "detection_Resnet50_Final.pth"
ALIGNMENT_FILE = "alignment_WFLW_4HG.pth"
OFFICIAL_FILES = (
    SAFETENSORS_256, SAFETENSORS_512, MAPPING_CROP, MAPPING_FULL, GFPGAN_FILE, REALESRGAN_FILE, PARSENET_FILE,
    DETECTOR_FILE, ALIGNMENT_FILE,
)  # fmt: skip
MAPPING_FILES = {"crop": MAPPING_CROP, "full": MAPPING_FULL}
"""The MappingNet file of each :attr:`.PreprocessMode.mapping_feature` (see :func:`.checkpoints.mapping_name`)."""


def download_url(name: str) -> str:
    """The first download URL the manifest gives for the official file ``name`` (for messages)."""
    return load_manifest().get(name).urls[0]


DEST_CHECKPOINTS = "checkpoints"
DEST_GFPGAN = "gfpgan/weights"
FEATURES = ("256", "512", "crop", "full", "enhancer", "detector", "background")

PRESENT = "present"
MISSING = "missing"
CORRUPT = "corrupt"

_TORCH_DTYPE_CODES = {
    "torch.float32": "F32",
    "torch.float64": "F64",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.int16": "I16",
    "torch.int8": "I8",
    "torch.uint8": "U8",
    "torch.bool": "BOOL",
}


@dataclass(frozen=True)
class HFSource:
    """A file in a Hugging Face repository; the URL depends on the endpoint (``HF_ENDPOINT``)."""

    repo: str
    revision: str
    path: str

    def url(self, endpoint: str | None = None) -> str:
        base = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        return f"{base}/{self.repo}/resolve/{self.revision}/{self.path}"


@dataclass(frozen=True)
class WeightFile:
    """One manifest entry. ``size`` 0 and ``sha256`` "" mean unknown (not checked)."""

    name: str
    dest: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    hf: HFSource | None
    format: str
    keys: str | None
    needed_for: tuple[str, ...]
    notes: str = ""

    def folder(self, dirs: ModelDirs) -> Path:
        """Destination folder of this file under ``dirs``."""
        return dirs.checkpoints if self.dest == DEST_CHECKPOINTS else dirs.gfpgan

    def path(self, dirs: ModelDirs) -> Path:
        return self.folder(dirs) / self.name

    def sources(self, mirror: str | None = None, hf_endpoint: str | None = None) -> list[str]:
        """Download URLs in the order to try: the mirror (``<mirror>/<name>``), official URLs, Hugging Face."""
        out: list[str] = []
        if mirror:
            out.append(f"{mirror.rstrip('/')}/{self.name}")
        out.extend(self.urls)
        if self.hf is not None:
            out.append(self.hf.url(hf_endpoint))
        return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Manifest:
    """All weight files plus the expected tensors per key set: ``{set: {key: (shape, dtype code)}}``."""

    files: tuple[WeightFile, ...]
    key_sets: dict[str, dict[str, tuple[tuple[int, ...], str]]] = field(default_factory=dict)
    source: Path | None = None

    def get(self, name: str) -> WeightFile:
        for wf in self.files:
            if wf.name == name:
                return wf
        raise KeyError(f"'{name}' is not in the weight manifest ({', '.join(f.name for f in self.files)})")

    @property
    def names(self) -> list[str]:
        return [wf.name for wf in self.files]


def load_manifest(path: str | os.PathLike | None = None) -> Manifest:
    """Read a manifest (default: the packaged ``models/weights.json``) and its key data file."""
    path = Path(path) if path is not None else MANIFEST_PATH
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the weight manifest {path}: {exc}") from exc
    files = []
    for entry in raw["files"]:
        hf = entry.get("hf")
        files.append(
            WeightFile(
                name=entry["name"],
                dest=entry["dest"],
                size=int(entry.get("size") or 0),
                sha256=str(entry.get("sha256") or "").lower(),
                urls=tuple(entry.get("urls") or ()),
                hf=HFSource(hf["repo"], hf.get("revision", "main"), hf.get("path", entry["name"]))
                if hf
                else None,
                format=entry.get("format", "file"),
                keys=entry.get("keys"),
                needed_for=tuple(entry.get("needed_for") or ()),
                notes=entry.get("notes", ""),
            )
        )
    key_sets: dict[str, dict[str, tuple[tuple[int, ...], str]]] = {}
    if raw.get("keys_file"):
        keys_path = path.parent / raw["keys_file"]
        try:
            kraw = json.loads(keys_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read the tensor key data {keys_path}: {exc}") from exc
        for set_name, spec in kraw["sets"].items():
            key_sets[set_name] = {
                k: (tuple(int(d) for d in v[0]), str(v[1])) for k, v in spec["keys"].items()
            }
    return Manifest(tuple(files), key_sets, path)


# ----------------------------------------------------------------------------------------------- checks


class FileCheck(NamedTuple):
    """Outcome of :func:`check_file`: ``state`` is present / missing / corrupt; ``detail`` says why."""

    state: str
    detail: str


def sha256_of(path: Path, chunk: int = 4 << 20, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte blocks; ``progress(bytes_done)`` after each block."""
    h = hashlib.sha256()
    done = 0
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            done += len(block)
            if progress is not None:
                progress(done)
    return h.hexdigest()


def _compare_tensors(
    found: dict[str, tuple[tuple[int, ...], str]], expected: dict[str, tuple[tuple[int, ...], str]]
) -> str | None:
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    wrong = [
        f"{k}: {list(found[k][0])} {found[k][1]} (expected {list(v[0])} {v[1]})"
        for k, v in expected.items()
        if k in found and found[k] != v
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s), e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s), e.g. {extra[:3]}")
    if wrong:
        problems.append(f"{len(wrong)} with another shape or dtype, e.g. {wrong[:2]}")
    return "; ".join(problems) or None


def check_format(wf: WeightFile, path: Path, manifest: Manifest) -> str | None:
    """Structural check of ``path`` against the key data; returns a problem description or None.

    safetensors: the header's keys, shapes and dtypes (no tensor data is read). mapping: the
    ``mapping`` state dict read with ``torch.load(weights_only=True)``. Other formats: not checked.
    """
    from . import checkpoints

    expected = manifest.key_sets.get(wf.keys or "")
    try:
        if wf.format == "safetensors":
            header = checkpoints.read_safetensors_header(path, wf.name)
            if expected is None:
                return None
            found = {k: (tuple(int(d) for d in v["shape"]), str(v["dtype"])) for k, v in header.items()}
            return _compare_tensors(found, expected)
        if wf.format == "mapping":
            state = checkpoints.read_mapping_checkpoint(path, wf.name)
            if expected is None:
                return None
            found = {
                k: (tuple(v.shape), _TORCH_DTYPE_CODES.get(str(v.dtype), str(v.dtype)))
                for k, v in state.items()
            }
            return _compare_tensors(found, expected)
    except CheckpointError as exc:
        return str(exc)
    except Exception as exc:  # a damaged file can make the readers fail in other ways
        return f"unreadable {wf.format} file: {type(exc).__name__}: {exc}"
    return None


def check_file(
    wf: WeightFile, path: Path, manifest: Manifest, *, verify_hash: bool = False, check_structure: bool = True
) -> FileCheck:
    """Is ``path`` the file ``wf`` describes? Size, structure (safetensors header / mapping tensors against the
    key data) and, when asked and known, sha256. A matching official sha256 wins over a structure complaint
    (logged), so an official file is never rejected because of a reader limitation."""
    path = Path(path)
    if not path.is_file():
        return FileCheck(MISSING, f"{path} does not exist")
    size = path.stat().st_size
    if wf.size and size != wf.size:
        return FileCheck(CORRUPT, f"{size} bytes, expected {wf.size} (incomplete or another file)")
    if size == 0:
        return FileCheck(CORRUPT, "empty file")
    problem = check_format(wf, path, manifest) if check_structure else None
    if verify_hash and wf.sha256:
        digest = sha256_of(path)
        if digest != wf.sha256:
            return FileCheck(CORRUPT, f"sha256 {digest} differs from the official {wf.sha256}")
        if problem:
            # the bytes are the official ones: the reader or the key data is what disagrees
            log.warning("%s has the official sha256 but its structure check says: %s", wf.name, problem)
            return FileCheck(PRESENT, f"ok (official sha256; structure check disagrees: {problem})")
        return FileCheck(PRESENT, "ok")
    if problem:
        return FileCheck(CORRUPT, problem)
    return FileCheck(PRESENT, "ok (sha256 not checked)")


# ----------------------------------------------------------------------------------------------- status


class WeightStatus(NamedTuple):
    """One row of :func:`model_status`."""

    name: str
    state: str  # present / missing / corrupt
    size: int  # bytes on disk (0 when missing)
    path: Path
    needed_for: tuple[str, ...]
    detail: str


def model_status(
    dirs: ModelDirs | None = None,
    *,
    manifest: Manifest | None = None,
    verify_hash: bool = False,
    check_structure: bool = True,
    names: Iterable[str] | None = None,
) -> list[WeightStatus]:
    """Present / missing / corrupt for every manifest file (or only ``names``), in manifest order."""
    dirs = dirs or resolve_model_dirs()
    manifest = manifest or load_manifest()
    wanted = set(names) if names is not None else None
    rows = []
    for wf in manifest.files:
        if wanted is not None and wf.name not in wanted:
            continue
        path = wf.path(dirs)
        state, detail = check_file(
            wf, path, manifest, verify_hash=verify_hash, check_structure=check_structure
        )
        size = path.stat().st_size if path.is_file() else 0
        rows.append(WeightStatus(wf.name, state, size, path, wf.needed_for, detail))
    return rows


_unofficial_warned: set[tuple[str, int]] = set()
_unofficial_lock = threading.Lock()


def warn_unofficial(rows: Iterable[WeightStatus], *, manifest: Manifest | None = None) -> list[str]:
    """Log a warning for every row that is neither present nor missing (a file of another size than the
    official one: a stand-in, another release, or an incomplete copy), once per file and size per process;
    returns the messages logged by this call. The loaders check each file's tensors when they read it."""
    logged = []
    for r in rows:
        if r.state in (PRESENT, MISSING):
            continue
        key = (str(Path(r.path).resolve()), r.size)
        with _unofficial_lock:
            if key in _unofficial_warned:
                continue
            _unofficial_warned.add(key)
        try:
            official = (manifest or load_manifest()).get(r.name).size
        except (KeyError, CheckpointError):
            official = 0
        if r.size and official and r.size != official:
            msg = (
                f"{r.name} ({r.path}): not the official file (size differs: {r.size} bytes, the official one "
                f"has {official}); results will not match the paper's models"
            )
        else:
            msg = f"{r.name} ({r.path}): {r.detail}"
        log.warning("%s", msg)
        logged.append(msg)
    return logged


OPTIONAL_FEATURES = ("full", "enhancer", "detector", "background")
"""Boolean :class:`Selection` fields, each also a ``sadtalker_ext.download`` flag of that name."""


@dataclass(frozen=True)
class Selection:
    """Which features to fetch weights for (the CLI always includes the crop-mode MappingNet)."""

    sizes: tuple[int, ...] = (256,)
    full: bool = False
    enhancer: bool = False
    detector: bool = False
    crop: bool = True
    background: bool = False

    @property
    def features(self) -> set[str]:
        return {str(s) for s in self.sizes} | {f for f in ("crop", *OPTIONAL_FEATURES) if getattr(self, f)}

    def names(self, manifest: Manifest) -> list[str]:
        """File names needed by this selection, in manifest order."""
        feats = self.features
        return [wf.name for wf in manifest.files if feats & set(wf.needed_for)]


def resolve_selection(selection: Selection | Iterable[str] | None, manifest: Manifest) -> list[str]:
    """File names for a :class:`Selection`, an explicit list of names (checked), or None (everything)."""
    if selection is None:
        return manifest.names
    if isinstance(selection, Selection):
        return selection.names(manifest)
    names = list(selection)
    for name in names:
        manifest.get(name)
    return names


def required_files(
    size: int,
    preprocess: str | PreprocessMode = PreprocessMode.CROP,
    *,
    enhancer: bool = False,
    detector: bool = False,
    background: bool = False,
) -> Selection:
    """The :class:`Selection` a run needs: size 256/512 and one MappingNet (:func:`.checkpoints.mapping_name`: full modes
    00109, else 00229); ``enhancer``: GFPGAN v1.4,
    ``detector``: RetinaFace + AWing FAN, ``background``: Real-ESRGAN x2plus."""
    if size not in (256, 512):
        raise CheckpointError(f"size must be 256 or 512, got {size}")
    mapping = PreprocessMode.parse(preprocess).mapping_feature
    return Selection(
        sizes=(size,),
        full=mapping == "full",
        enhancer=enhancer,
        detector=detector,
        crop=mapping == "crop",
        background=background,
    )


PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""The folder holding ``sadtalker_ext/`` (the extension's root)."""
RUN_SH_ENV = "SADTALKER_RUN_SH"
"""Set by ``run.sh`` to its own path for the processes it starts."""


def _python() -> str:
    """``python`` when that is this interpreter on the PATH, else this interpreter's full path."""
    found = shutil.which(
        "python"
    )  # a venv's python is a link to the system one: compare the paths, unresolved
    if found and sys.executable and Path(found).absolute() == Path(sys.executable).absolute():
        return "python"
    return sys.executable or "python"


def downloader(*args: str) -> str:
    """The shell command that runs the weight downloader with ``args``, as the person can type it from the
    folder they are in: ``run.sh download`` when ``run.sh`` started this process, ``python -m
    sadtalker_ext.download`` when the package is importable from the current folder, ``sadtalker-download``
    when it is installed, else the module run from the extension's folder."""
    run_sh = os.environ.get(RUN_SH_ENV)
    if run_sh and Path(run_sh).is_file():
        return shlex.join([run_sh, "download", *args])
    module = [_python(), "-m", "sadtalker_ext.download", *args]
    try:
        here = (Path.cwd() / "sadtalker_ext").resolve() == PACKAGE_ROOT / "sadtalker_ext"
    except OSError:
        here = False
    if here:
        return shlex.join(module)
    if shutil.which("sadtalker-download"):
        return shlex.join(["sadtalker-download", *args])
    return f"cd {shlex.quote(str(PACKAGE_ROOT))} && {shlex.join(module)}"


def download_command(selection: Selection, dirs: ModelDirs | None = None) -> str:
    """The shell command that fetches ``selection`` into ``dirs`` (folders only given when not the default);
    see :func:`downloader`."""
    parts: list[str] = []
    sizes = sorted(set(selection.sizes))
    parts += ["--size", "all" if sizes == [256, 512] else str(sizes[0] if sizes else 256)]
    parts += [f"--{feature}" for feature in OPTIONAL_FEATURES if getattr(selection, feature)]
    if dirs is not None:
        default = resolve_model_dirs()
        if dirs.checkpoints != default.checkpoints:
            parts += ["--checkpoint_dir", str(dirs.checkpoints)]
        if dirs.gfpgan != default.gfpgan:
            parts += ["--gfpgan_dir", str(dirs.gfpgan)]
    return downloader(*parts)


def download_command_for(
    name: str, dirs: ModelDirs | None = None, *, manifest: Manifest | None = None
) -> str:
    """The downloader command that fetches the official file ``name`` (``--all`` when the manifest does not
    tie it to a feature); see :func:`download_command`."""
    try:
        wf = (manifest or load_manifest()).get(name)
    except (KeyError, CheckpointError):
        wf = None
    feats = set(wf.needed_for) if wf is not None else set()
    if not feats & {"256", "512", "crop", *OPTIONAL_FEATURES}:
        return downloader("--all")
    sizes = tuple(int(s) for s in ("256", "512") if s in feats) or (256,)
    selection = Selection(sizes=sizes, **{f: f in feats for f in OPTIONAL_FEATURES})
    return download_command(selection, dirs)


def missing_files(
    selection: Selection | Sequence[str], dirs: ModelDirs | None = None, *, manifest: Manifest | None = None
) -> list[WeightStatus]:
    """Rows of :func:`model_status` for the selection's files that are missing or corrupt."""
    manifest = manifest or load_manifest()
    names = resolve_selection(selection, manifest)
    rows = model_status(dirs, manifest=manifest, names=names, check_structure=False)
    return [r for r in rows if r.state != PRESENT]


def missing_message(
    selection: Selection, dirs: ModelDirs | None = None, *, manifest: Manifest | None = None
) -> str | None:
    """A user message naming every missing/corrupt file and the downloader command; None when all present.

    Cheap (size checks only), so it can run before every generation.
    """
    dirs = dirs or resolve_model_dirs()
    rows = missing_files(selection, dirs, manifest=manifest)
    if not rows:
        return None
    lines = ["SadTalker weight files are missing or incomplete:"]
    for r in rows:
        why = "missing" if r.state == MISSING else f"{r.state}: {r.detail}"
        lines.append(f"  - {r.name} ({why}; needed for {', '.join(r.needed_for)}) -> {r.path}")
    lines.append("Download them with the Model manager in the SadTalker tab, or run:")
    lines.append(f"  {download_command(selection, dirs)}")
    return "\n".join(lines)


def to_dtype_code(torch_dtype: object) -> str:
    """``torch.float32`` -> ``F32`` (the code used in the key data file)."""
    return _TORCH_DTYPE_CODES.get(str(torch_dtype), str(torch_dtype))
