"""Container images to root filesystems: the OCI/Docker input of `g8os flist create`.

An image is read with no Docker daemon and no registry: a `docker save` archive, or an OCI image
layout (a directory, or a tar of one). Its layers are applied in order into a plain directory with
the whiteout rules of the OCI layer spec, giving the tree a container runtime would see. That
directory is packed by fs/builder.py like any other, and the image config (entrypoint, cmd, env,
workdir, ...) becomes the flist's tags, which replace 0-hub's `.startup.toml`.

Layers are untrusted input. Every blob named by a digest is checked against it before anything is
written, and each layer's content is checked against the `diff_id` of the config. Every entry name
is checked: no absolute paths, no `..`. Parent directories are walked one component at a time from
the root with O_NOFOLLOW. Symlinks met on the way resolve *inside* the root, as under a chroot and as
containerd does, because real images write through links such as `lib -> usr/lib`. The last
component is never followed. So nothing a layer says can create, change or delete anything outside
the root.
"""

from __future__ import annotations

import base64
import bz2
import errno
import gzip
import hashlib
import json
import logging
import lzma
import os
import platform as _platform
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import zstandard

if TYPE_CHECKING:
    from g8os.fs.builder import BuildReport
    from g8os.fs.store import Store

__all__ = [
    "DOCKER_SAVE", "OCI_LAYOUT", "ApplyStats", "Image", "ImageError", "Layer",
    "apply_layers", "build_from_image", "detect", "read_image", "tags_from_config",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]   # (done bytes, total bytes, what is happening), as builder's

DOCKER_SAVE = "docker-save"
OCI_LAYOUT = "oci-layout"

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_INDEX_TYPES = {MT_OCI_INDEX, MT_DOCKER_LIST}
_MANIFEST_TYPES = {MT_OCI_MANIFEST, MT_DOCKER_MANIFEST}
# Layer media types: the OCI and Docker tar families, plain, gzip or zstd. Anything else (encrypted
# layers, for example) is refused rather than unpacked as garbage.
_LAYER_TYPE = re.compile(
    r"application/vnd\.(?:oci\.image\.layer(?:\.nondistributable)?\.v1\.tar"
    r"|docker\.image\.rootfs\.(?:foreign\.)?diff\.tar)(?:\+gzip|\.gzip|\+zstd)?"
)
_DIGEST = re.compile(r"(sha256):([0-9a-f]{64})|(sha512):([0-9a-f]{128})")
_BLOB_NAME = re.compile(r"(?:.*/)?blobs/(sha256)/([0-9a-f]{64})|([0-9a-f]{64})\.json")

_JSON_LIMIT = 64 << 20      # manifests and configs are kilobytes; a bigger "JSON" blob is not one
_COPY = 1 << 20
_MAX_SYMLINK_HOPS = 40      # as the kernel's ELOOP limit
_PROGRESS_STEP = 4 << 20    # report unpacking every 4 MiB of stored layer bytes
_WH = ".wh."
_WH_OPAQUE = ".wh..wh..opq"
_WH_META = ".wh..wh."       # aufs bookkeeping (.wh..wh.plnk, ...): never part of the tree


class ImageError(ValueError):
    """The image cannot be converted: malformed, tampered with, unsupported or unsafe.

    The message names the file or layer entry and says why, so the user can act on it.
    """


# ---------------------------------------------------------------- the image as read


@dataclass
class Layer:
    """One layer blob, in the order it is applied."""

    name: str                 # where the blob is in the image, for messages
    media_type: str           # "" in docker-save archives, which carry none
    digest: str | None        # of the blob as stored, when the image names it by digest
    diff_id: str | None       # of the uncompressed tar, from the config's rootfs.diff_ids
    size: int | None
    opener: Callable[[], IO[bytes]] = field(repr=False)

    def open(self) -> IO[bytes]:
        """The blob as stored (maybe compressed); the caller closes it."""
        return self.opener()


@dataclass
class Image:
    format: str                           # DOCKER_SAVE or OCI_LAYOUT
    source: Path
    layers: list[Layer]
    config: dict[str, Any]                # the whole image config JSON
    tags: dict[str, str]                  # tags_from_config plus image.* identity
    ref: str | None = None                # the RepoTag / ref.name chosen, if any
    manifest_digest: str | None = None    # OCI only: docker-save archives have no manifest blob
    config_digest: str | None = None      # the image ID, when the archive names it


@dataclass
class ApplyStats:
    layers: int = 0
    entries: int = 0          # entries of every layer, whiteouts included
    whiteouts: int = 0        # `.wh.<name>` that removed something
    opaque: int = 0           # `.wh..wh..opq` markers applied
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- where blobs come from


class _Source:
    """Files of an image by their path inside it: a directory or a tar archive."""

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read_json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(_JSON_LIMIT + 1)
        if len(data) > _JSON_LIMIT:
            raise ImageError(f"{name}: too big for a JSON document")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ImageError(f"{name}: not valid JSON ({exc})") from None


def _inner_parts(name: str) -> list[str]:
    """A path inside an image (from manifest.json or a tar member name), checked to stay inside."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise ImageError(f"bad path inside the image: {name!r}")
    return parts


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*_inner_parts(name))

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def open(self, name: str) -> IO[bytes]:
        try:
            return self._path(name).open("rb")
        except FileNotFoundError:
            raise ImageError(f"{self.root}: {name} is missing") from None


class _MemberFile:
    """A member of a tar read through its own file handle, so layers can be opened independently."""

    def __init__(self, inner: IO[bytes], *owned: Any) -> None:
        self._inner = inner
        self._owned = owned

    def read(self, n: int = -1) -> bytes:
        return self._inner.read(n)

    def close(self) -> None:
        self._inner.close()
        for obj in self._owned:
            obj.close()

    def __enter__(self) -> _MemberFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TarSource(_Source):
    """An image archive. Members are indexed once; links between members (docker save writes a
    symlink for each repeated layer) are resolved inside the index, never on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, tarfile.TarInfo] = {}
        with tarfile.open(path, "r:*") as tf:
            for info in tf:
                try:
                    self.members["/".join(_inner_parts(info.name))] = info
                except ImageError:
                    continue  # "./" itself, or a name we would never look up

    def _regular(self, name: str) -> tarfile.TarInfo | None:
        key = "/".join(_inner_parts(name))
        for _ in range(16):
            info = self.members.get(key)
            if info is None or info.isreg():
                return info
            if info.issym():
                key = posixpath.normpath(posixpath.join(posixpath.dirname(key), info.linkname)).lstrip("/")
            elif info.islnk():
                key = posixpath.normpath(info.linkname).lstrip("/")
            else:
                return None
            if key.startswith("../") or key == "..":
                return None
        return None

    def exists(self, name: str) -> bool:
        return self._regular(name) is not None

    def size(self, name: str) -> int:
        info = self._regular(name)
        if info is None:
            raise ImageError(f"{self.path}: {name} is missing")
        return info.size

    def open(self, name: str) -> IO[bytes]:
        info = self._regular(name)
        if info is None:
            raise ImageError(f"{self.path}: {name} is missing")
        f = open(self.path, "rb")  # noqa: SIM115 - owned by the returned _MemberFile
        try:
            tf = tarfile.open(fileobj=f, mode="r:*")  # noqa: SIM115 - likewise
            inner = tf.extractfile(info)
            assert inner is not None
        except BaseException:
            f.close()
            raise
        return _MemberFile(inner, tf, f)  # type: ignore[return-value]


# ---------------------------------------------------------------- detect


def _looks_like_docker_save(doc: Any) -> bool:
    return (isinstance(doc, list) and bool(doc) and all(
        isinstance(e, dict) and isinstance(e.get("Config"), str) and isinstance(e.get("Layers"), list)
        for e in doc))


def _kind(src: _Source) -> str | None:
    if src.exists("manifest.json"):
        try:
            if _looks_like_docker_save(src.read_json("manifest.json")):
                return DOCKER_SAVE
        except ImageError:
            pass
    if src.exists("oci-layout") and src.exists("index.json"):
        return OCI_LAYOUT
    return None


# Names an image archive is made of; a tar holding anything else is someone's root filesystem, and
# detect() stops reading it early instead of scanning a multi-gigabyte rootfs tar to the end.
_IMAGE_MEMBER = re.compile(r"(?:\./)?(?:oci-layout|index\.json|manifest\.json|repositories|blobs(?:/.*)?"
                           r"|[0-9a-f]{64}(?:\.json|/.*)?|\.?/?)")
_STRANGERS = 16


def detect(path: str | os.PathLike[str]) -> str | None:
    """DOCKER_SAVE, OCI_LAYOUT, or None when `path` is neither (a plain directory or rootfs tar).

    docker-save: a tar (or an unpacked directory of one) whose manifest.json lists Config and
    Layers. oci-layout: a directory, or a tar of one, holding oci-layout and index.json. Docker 25+
    writes both into one archive; docker-save wins then, and either would read the same image.
    """
    p = Path(path)
    try:
        if p.is_dir():
            return _kind(_DirSource(p))
        if not p.is_file():
            return None
        names: set[str] = set()
        manifest: Any = None
        strangers = 0
        with tarfile.open(p, "r:*") as tf:
            for info in tf:
                if not _IMAGE_MEMBER.fullmatch(info.name):
                    strangers += 1
                    if strangers > _STRANGERS:
                        return None
                    continue
                name = info.name.removeprefix("./")
                names.add(name)
                if name == "manifest.json" and info.isreg() and info.size <= _JSON_LIMIT:
                    f = tf.extractfile(info)
                    try:
                        manifest = json.loads(f.read()) if f else None
                    except ValueError:
                        manifest = None
    except (OSError, tarfile.TarError, EOFError, zstandard.ZstdError, lzma.LZMAError):
        return None
    if _looks_like_docker_save(manifest):
        return DOCKER_SAVE
    if {"oci-layout", "index.json"} <= names:
        return OCI_LAYOUT
    return None


# ---------------------------------------------------------------- read


def _open_source(p: Path) -> _Source:
    if p.is_dir():
        return _DirSource(p)
    try:
        return _TarSource(p)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ImageError(f"{p}: not an image archive ({exc})") from None


def _verify(src: _Source, name: str, digest: str, size: int | None) -> None:
    """Hash the blob and compare with the digest it is named by: a tampered image stops here,
    before one byte of it is unpacked."""
    m = _DIGEST.fullmatch(digest)
    if m is None:
        raise ImageError(f"{name}: unsupported digest {digest!r}")
    alg, want = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    h = hashlib.new(alg)
    n = 0
    with src.open(name) as f:
        while chunk := f.read(_COPY):
            h.update(chunk)
            n += len(chunk)
    if size is not None and n != size:
        raise ImageError(f"{name}: {n} bytes, but its descriptor says {size}")
    if h.hexdigest() != want:
        raise ImageError(f"{name}: content does not match its digest {digest} (got {alg}:{h.hexdigest()})")


def _blob_name(digest: str) -> str:
    m = _DIGEST.fullmatch(digest or "")
    if m is None:
        raise ImageError(f"bad blob digest {digest!r}")
    return f"blobs/{m.group(1)}/{m.group(2)}" if m.group(1) else f"blobs/{m.group(3)}/{m.group(4)}"


def _digest_of_name(name: str) -> str | None:
    """The digest a docker-save member is named by (blobs/sha256/<hex>, or <hex>.json for a legacy
    config); None for legacy `<id>/layer.tar`, whose id is not a content hash."""
    m = _BLOB_NAME.fullmatch(name.removeprefix("./"))
    if m is None:
        return None
    return f"sha256:{m.group(2) or m.group(3)}"


def _json_blob(src: _Source, desc: Mapping[str, Any], verify: bool, what: str) -> Any:
    name = _blob_name(desc.get("digest", ""))
    if verify:
        _verify(src, name, desc["digest"], desc.get("size"))
    doc = src.read_json(name)
    if not isinstance(doc, dict):
        raise ImageError(f"{name}: the {what} is not a JSON object")
    return doc


def _host_platform() -> tuple[str, str, str | None]:
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
            "armv6l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64"}.get(machine, machine)
    variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
    return "linux", arch, variant


def _parse_platform(text: str) -> tuple[str, str, str | None]:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"bad platform {text!r}: expected os/arch or os/arch/variant")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _describe_platform(desc: Mapping[str, Any]) -> str:
    p = desc.get("platform") or {}
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x) or "?"


def _pick_platform(descs: list[dict[str, Any]], platform: str | None, where: str) -> dict[str, Any]:
    """One manifest of a multi-platform index: the platform asked for, else this host's, else the
    only one there is. Attestation manifests (BuildKit's unknown/unknown) never count."""
    candidates = [
        d for d in descs
        if (d.get("platform") or {}).get("os") != "unknown"
        and (d.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"
    ]
    want = _parse_platform(platform) if platform else _host_platform()
    for d in candidates:
        p = d.get("platform") or {}
        same_variant = (want[2] is None or p.get("variant") == want[2]
                        or (want[1:] == ("arm64", "v8") and not p.get("variant")))  # v8 is arm64's default
        if (p.get("os"), p.get("architecture")) == want[:2] and same_variant:
            return d
    if platform is None and len(candidates) == 1:
        return candidates[0]
    have = ", ".join(_describe_platform(d) for d in candidates) or "none"
    asked = platform or "/".join(x for x in want if x)
    raise ImageError(f"{where}: no manifest for platform {asked} (has: {have}); choose one with platform=")


def _ref_names(desc: Mapping[str, Any]) -> list[str]:
    ann = desc.get("annotations") or {}
    return [v for k in ("io.containerd.image.name", "org.opencontainers.image.ref.name") if (v := ann.get(k))]


def _read_oci(src: _Source, source: Path, ref: str | None, platform: str | None, verify: bool) -> Image:
    layout = src.read_json("oci-layout")
    version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise ImageError(f"{source}: unsupported OCI layout version {version!r}")
    index = src.read_json("index.json")
    descs = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descs, list) or not descs or not all(isinstance(d, dict) for d in descs):
        raise ImageError(f"{source}: index.json lists no manifests")
    if ref is not None:
        chosen = [d for d in descs if ref in _ref_names(d)]
        if not chosen:
            have = ", ".join(n for d in descs for n in _ref_names(d)) or "none"
            raise ImageError(f"{source}: no image {ref!r} in index.json (has: {have})")
        desc = chosen[0]
    else:
        desc = descs[0]
    names = _ref_names(desc)
    chosen_ref = ref or (names[0] if names else None)
    for _ in range(4):  # an index may point to an index; real ones nest once at most
        media = desc.get("mediaType")
        if media not in _INDEX_TYPES:
            break
        nested = _json_blob(src, desc, verify, "image index")
        inner = nested.get("manifests")
        if not isinstance(inner, list) or not inner:
            raise ImageError(f"{_blob_name(desc['digest'])}: image index lists no manifests")
        desc = _pick_platform(inner, platform, _blob_name(desc["digest"]))
    else:
        raise ImageError(f"{source}: image indexes nested too deep")
    if desc.get("mediaType") not in _MANIFEST_TYPES | {None}:
        raise ImageError(f"{source}: unsupported manifest media type {desc.get('mediaType')!r}")
    manifest = _json_blob(src, desc, verify, "manifest")
    cdesc = manifest.get("config")
    ldescs = manifest.get("layers")
    if not isinstance(cdesc, dict) or not isinstance(ldescs, list):
        raise ImageError(f"{_blob_name(desc['digest'])}: manifest without config or layers")
    config = _json_blob(src, cdesc, verify, "image config")
    diff_ids = _diff_ids(config, len(ldescs), source)
    layers = []
    for i, ld in enumerate(ldescs):
        if not isinstance(ld, dict):
            raise ImageError(f"{source}: layer {i} descriptor is not an object")
        media = ld.get("mediaType", "")
        if not _LAYER_TYPE.fullmatch(media):
            raise ImageError(f"{source}: layer {i}: unsupported media type {media!r}")
        name = _blob_name(ld.get("digest", ""))
        if not src.exists(name):
            raise ImageError(f"{source}: layer {i} blob {name} is missing"
                             + (" (a foreign layer: fetch it first)" if ld.get("urls") else ""))
        if verify:
            _verify(src, name, ld["digest"], ld.get("size"))
        layers.append(Layer(name=name, media_type=media, digest=ld["digest"], diff_id=diff_ids[i],
                            size=ld.get("size"), opener=_opener(src, name)))
    return Image(format=OCI_LAYOUT, source=source, layers=layers, config=config, tags={}, ref=chosen_ref,
                 manifest_digest=desc["digest"], config_digest=cdesc.get("digest"))


def _read_docker_save(src: _Source, source: Path, ref: str | None, verify: bool) -> Image:
    entries = src.read_json("manifest.json")
    if not _looks_like_docker_save(entries):
        raise ImageError(f"{source}: manifest.json does not list Config and Layers")
    if ref is not None:
        wanted = {ref, f"{ref}:latest"} if ":" not in ref.rsplit("/", 1)[-1] else {ref}
        chosen = [e for e in entries if wanted & set(e.get("RepoTags") or [])]
        if not chosen:
            have = ", ".join(t for e in entries for t in e.get("RepoTags") or []) or "none"
            raise ImageError(f"{source}: no image {ref!r} in manifest.json (has: {have})")
        entry = chosen[0]
    else:
        entry = entries[0]
    tags = entry.get("RepoTags") or []
    chosen_ref = ref or (tags[0] if tags else None)
    config_name = entry["Config"]
    config_digest = _digest_of_name(config_name)
    if verify and config_digest:
        _verify(src, config_name, config_digest, None)
    config = src.read_json(config_name)
    if not isinstance(config, dict):
        raise ImageError(f"{config_name}: the image config is not a JSON object")
    names = entry["Layers"]
    if not all(isinstance(n, str) for n in names):
        raise ImageError(f"{source}: manifest.json Layers must be paths")
    diff_ids = _diff_ids(config, len(names), source)
    layers = []
    for i, name in enumerate(names):
        if not src.exists(name):
            raise ImageError(f"{source}: layer {i} ({name}) is missing")
        digest = _digest_of_name(name) if name.removeprefix("./").startswith("blobs/") else None
        if verify and digest:
            _verify(src, name, digest, None)
        layers.append(Layer(name=name, media_type="", digest=digest, diff_id=diff_ids[i], size=src.size(name),
                            opener=_opener(src, name)))
    return Image(format=DOCKER_SAVE, source=source, layers=layers, config=config, tags={}, ref=chosen_ref,
                 config_digest=config_digest)


def _opener(src: _Source, name: str) -> Callable[[], IO[bytes]]:
    return lambda: src.open(name)


def _diff_ids(config: Mapping[str, Any], count: int, source: Path) -> list[str | None]:
    """The config's uncompressed-layer digests, one per layer; checked while applying because
    they are the only integrity check a legacy docker-save layer has."""
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if ids is None:
        return [None] * count
    if not isinstance(ids, list) or len(ids) != count:
        raise ImageError(f"{source}: the config lists {len(ids) if isinstance(ids, list) else '?'} "
                         f"diff_ids for {count} layers")
    return [str(i) for i in ids]


def read_image(path: str | os.PathLike[str], *, ref: str | None = None, platform: str | None = None,
               verify: bool = True) -> Image:
    """Read a docker-save archive or an OCI layout (directory or tar) without unpacking it.

    `ref` picks an image by RepoTag (docker-save) or ref name annotation (OCI); default the first.
    `platform` ("linux/arm64", "linux/arm/v7") picks from a multi-platform index; default this
    host's, or the only one. With `verify` every blob named by a digest is hashed now (raising
    ImageError on a mismatch), so a tampered image is refused before anything is written.
    """
    p = Path(path)
    kind = detect(p)
    if kind is None:
        raise ImageError(f"{p}: neither a docker-save archive nor an OCI image layout")
    src = _open_source(p)
    if kind == DOCKER_SAVE:
        image = _read_docker_save(src, p, ref, verify)
    else:
        image = _read_oci(src, p, ref, platform, verify)
    image.tags = tags_from_config(image.config)
    for key, value in (("image.ref", image.ref), ("image.manifest", image.manifest_digest),
                       ("image.config", image.config_digest), ("image.os", image.config.get("os")),
                       ("image.architecture", image.config.get("architecture")),
                       ("image.variant", image.config.get("variant"))):
        if value:
            image.tags[key] = str(value)
    return image


# ---------------------------------------------------------------- tags


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _str_list(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"image config: {key} must be a list of strings, not {value!r}")
    return value


def tags_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The run settings of an image config as flist tags.

    Takes the whole image config (settings under "config") or just that inner object. Lists stay
    JSON text (entrypoint, cmd, env, ports, volumes) so arguments with spaces survive; labels become
    `label.<name>`. Settings the image leaves empty are left out.
    """
    inner = config.get("config")
    if inner is None and any(k in config for k in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User")):
        inner = config
    if inner is None:
        return {}
    if not isinstance(inner, Mapping):
        raise ImageError("image config: 'config' is not an object")
    tags: dict[str, str] = {}
    for key, tag in (("Entrypoint", "entrypoint"), ("Cmd", "cmd"), ("Env", "env")):
        values = _str_list(inner.get(key), key)
        if values:
            tags[tag] = _json_text(values)
    for key, tag in (("WorkingDir", "workdir"), ("User", "user"), ("StopSignal", "stopsignal")):
        value = inner.get(key)
        if value is not None and not isinstance(value, str):
            raise ImageError(f"image config: {key} must be a string, not {value!r}")
        if value:
            tags[tag] = value
    for key, tag in (("ExposedPorts", "ports"), ("Volumes", "volumes")):
        value = inner.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise ImageError(f"image config: {key} must be an object, not {value!r}")
        if value:
            tags[tag] = _json_text(sorted(value))
    labels = inner.get("Labels")
    if labels is not None and not isinstance(labels, Mapping):
        raise ImageError(f"image config: Labels must be an object, not {labels!r}")
    for name, value in sorted((labels or {}).items()):
        tags[f"label.{name}"] = str(value)
    return tags


# ---------------------------------------------------------------- apply


def _entry_parts(name: str) -> list[str]:
    """A layer entry's path as components under the root. Absolute names and `..` are refused
    outright: an image that has them was made to escape, not by a build tool."""
    if name.startswith("/"):
        raise ImageError(f"absolute path {name!r} in a layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"'..' in layer path {name!r}")
    return parts


def _ns(pax: Mapping[str, str], key: str, fallback: float) -> int:
    """A pax time with its full precision (tarfile's float loses the nanoseconds)."""
    text = pax.get(key)
    if text:
        try:
            return int(Decimal(text) * 1_000_000_000)
        except ArithmeticError:
            pass
    return int(Decimal(repr(fallback)) * 1_000_000_000)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    """xattrs from pax records: SCHILY.xattr.* (Go, GNU tar, Python) and LIBARCHIVE.xattr.*
    (bsdtar: name URL-encoded, value base64). tarfile decoded the raw value with surrogateescape;
    encoding it back gives the exact bytes (security.capability is binary)."""
    found = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found.append((key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr."):])
            try:
                found.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
            except ValueError:
                raise ImageError(f"{member.name}: bad base64 in {key}") from None
    return found


class _Hashing:
    """Hashes everything read through it, to check a layer's diff_id in the same pass."""

    def __init__(self, inner: IO[bytes], algorithm: str) -> None:
        self.inner = inner
        self.hash = hashlib.new(algorithm)
        self.nonzero = False   # an all-zero stream is an empty tar, however long

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.hash.update(data)
        if not self.nonzero and data.count(0) != len(data):
            self.nonzero = True
        return data

    def drain(self) -> None:
        while self.read(_COPY):
            pass


class _Counting:
    """Counts the stored (compressed) bytes of layers as they are read, for the progress bar."""

    def __init__(self, inner: IO[bytes], tick: Callable[[int], None]) -> None:
        self.inner = inner
        self.tick = tick

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.tick(len(data))
        return data

    def close(self) -> None:
        self.inner.close()


def _decompressed(layer: Layer, tick: Callable[[int], None]) -> tuple[IO[bytes], list[Any]]:
    """The layer's tar stream. Compression is sniffed from the bytes, not trusted from the media
    type: docker-save archives carry none, and some tools label layers wrongly."""
    with layer.open() as f:
        magic = f.read(6)
    raw: IO[bytes] = _Counting(layer.open(), tick)  # type: ignore[assignment]
    if magic.startswith(b"\x1f\x8b"):
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    elif magic.startswith(b"\x28\xb5\x2f\xfd"):
        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[assignment]
    elif magic.startswith(b"BZh"):
        stream = bz2.BZ2File(raw)  # type: ignore[assignment]
    elif magic.startswith(b"\xfd7zXZ\x00"):
        stream = lzma.LZMAFile(raw)  # type: ignore[assignment]  # noqa: SIM115 - closed by the caller
    else:
        return raw, [raw]
    return stream, [stream, raw]


class _Applier:
    """Applies layers into one root directory, every operation relative to directory fds."""

    def __init__(self, root: Path, stats: ApplyStats, tick: Callable[[int], None]) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.stats = stats
        self.tick = tick
        self.can_chown = True
        self._warned: set[str] = set()
        self._cache: tuple[tuple[str, ...], int, tuple[str, ...]] | None = None
        self._new_layer()

    def close(self) -> None:
        self._forget()
        os.close(self.root_fd)

    def _new_layer(self) -> None:
        # Real paths (no symlinks) this layer has put in place: whiteouts only hide lower layers,
        # so these survive a whiteout or opaque marker of the same layer, whatever the order.
        self.created: set[tuple[str, ...]] = set()
        self.dirs: dict[tuple[str, ...], tuple[int, int, int]] = {}   # real path → mode, atime, mtime
        self.times: dict[tuple[str, ...], tuple[int, int]] = {}       # parents changed → times before

    def warn(self, kind: str, message: str) -> None:
        """Keep going, but say what was lost: once per kind, so a rootless run is not a flood."""
        if kind not in self._warned:
            self._warned.add(kind)
            self.stats.warnings.append(message)
            log.warning("%s", message)

    # -- walking

    def _forget(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None

    def _resolve(self, parts: list[str] | tuple[str, ...], *, create: bool,
                 follow: bool = True) -> tuple[int, tuple[str, ...]] | None:
        """An fd of the directory `parts` names, and its real path under the root.

        Each component is lstat'ed and opened with O_NOFOLLOW from its parent's fd. A symlink on
        the way resolves inside the root (absolute targets restart at the root, `..` stops there),
        so no target can lead outside. Missing directories are made (0755) when `create`, else the
        answer is None; with `follow` False a symlink on the way also answers None.
        """
        stack: list[int] = []
        real: list[str] = []
        todo = list(reversed(parts))
        hops = 0
        try:
            while todo:
                name = todo.pop()
                cur = stack[-1] if stack else self.root_fd
                if name in ("", "."):
                    continue
                if name == "..":
                    if stack:
                        os.close(stack.pop())
                        real.pop()
                    continue
                try:
                    st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        return None
                    self._touch(tuple(real), cur)
                    os.mkdir(name, 0o755, dir_fd=cur)
                    os.chmod(name, 0o755, dir_fd=cur)  # whatever the umask: runtimes make them 0755
                    self.created.add((*real, name))
                    st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    if not follow:
                        return None
                    hops += 1
                    if hops > _MAX_SYMLINK_HOPS:
                        raise ImageError(f"too many levels of symbolic links at {'/'.join((*real, name))}")
                    target = os.readlink(name, dir_fd=cur)
                    if target.startswith("/"):
                        while stack:
                            os.close(stack.pop())
                        real.clear()
                    todo.extend(reversed(target.split("/")))
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise ImageError(f"{'/'.join((*real, name))} is not a directory")
                stack.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     dir_fd=cur))
                real.append(name)
            fd = stack.pop() if stack else os.dup(self.root_fd)
            return fd, tuple(real)
        finally:
            for fd in stack:
                os.close(fd)

    def _parent(self, parts: list[str] | tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        """The parent directory of an entry (made if missing) as a new fd the caller closes, and its
        real path. The lookup is cached: entries of a layer come directory by directory."""
        key = tuple(parts)
        if self._cache is None or self._cache[0] != key:
            self._forget()
            found = self._resolve(parts, create=True)
            assert found is not None
            self._cache = (key, found[0], found[1])
        return os.dup(self._cache[1]), self._cache[2]

    def _touch(self, real: tuple[str, ...], fd: int) -> None:
        """Remember a directory's times before this layer first changes its entries, to put them
        back: a layer that does not list the directory did not mean to change it."""
        if real not in self.times:
            st = os.fstat(fd)
            self.times[real] = (st.st_atime_ns, st.st_mtime_ns)

    def _remove(self, fd: int, name: str, st: os.stat_result) -> None:
        self._forget()  # a cached parent may lie inside, or have been reached through, what goes
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=fd)  # fd-based, never follows symlinks
        else:
            os.unlink(name, dir_fd=fd)

    # -- one layer

    def apply(self, index: int, layer: Layer) -> None:
        self._new_layer()
        stream, owned = _decompressed(layer, self.tick)
        algorithm = layer.diff_id.split(":", 1)[0] if layer.diff_id else "sha256"
        if algorithm not in ("sha256", "sha512"):
            raise ImageError(f"layer {index} ({layer.name}): unsupported diff_id {layer.diff_id!r}")
        hashed = _Hashing(stream, algorithm)
        try:
            try:
                tf = tarfile.open(  # noqa: SIM115 - closed below, after the empty-layer case
                    fileobj=hashed, mode="r|", encoding="utf-8", errors="surrogateescape")  # type: ignore[call-overload]
            except tarfile.ReadError:
                hashed.drain()
                if hashed.nonzero:
                    raise
                tf = None  # an empty layer: no bytes, or only end-of-archive blocks
            if tf is not None:
                with tf:
                    for member in tf:
                        self.stats.entries += 1
                        try:
                            self._entry(tf, member)
                        except (ImageError, OSError) as exc:
                            raise ImageError(f"layer {index} ({layer.name}): {member.name}: {exc}") from None
            hashed.drain()
        except (tarfile.TarError, EOFError, zstandard.ZstdError, lzma.LZMAError, OSError) as exc:
            raise ImageError(f"layer {index} ({layer.name}): unreadable tar ({exc})") from None
        finally:
            for obj in owned:
                obj.close()
        if layer.diff_id and f"{algorithm}:{hashed.hash.hexdigest()}" != layer.diff_id:
            raise ImageError(f"layer {index} ({layer.name}): content does not match its diff_id "
                             f"{layer.diff_id} from the config (got {algorithm}:{hashed.hash.hexdigest()})")
        self._finish_layer()
        self.stats.layers += 1

    def _finish_layer(self) -> None:
        """Directory modes and times last, as tar does: set earlier they would be undone by the
        entries written into them (and a 0555 directory would refuse them when not root)."""
        self._forget()
        for real, (mode, atime, mtime) in self.dirs.items():
            self._set_dir(real, mode=mode, times=(atime, mtime))
        for real, times in self.times.items():
            if real not in self.dirs:
                self._set_dir(real, mode=None, times=times)

    def _set_dir(self, real: tuple[str, ...], *, mode: int | None, times: tuple[int, int]) -> None:
        found = self._resolve(real, create=False, follow=False)
        if found is None:
            return  # removed again later in the layer
        fd = found[0]
        try:
            if mode is not None:
                os.chmod(fd, mode)
            os.utime(fd, ns=times)
        finally:
            os.close(fd)

    def _entry(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _entry_parts(member.name)
        if not parts:  # "./": the root directory's own metadata
            if not member.isdir():
                raise ImageError("the root must be a directory")
            self._owner_xattrs(member, fd=self.root_fd)
            self.dirs[()] = self._dir_meta(member)
            return
        *parent, base = parts
        link_target = _entry_parts(member.linkname) if member.islnk() else None  # checked before any change
        if link_target == []:
            raise ImageError(f"hard link to the root ({member.linkname!r})")
        pfd, preal = self._parent(parent)
        try:
            if base.startswith(_WH):
                self._whiteout(pfd, preal, base)
            elif link_target is not None:
                self._hardlink(member, link_target, pfd, preal, base)
            else:
                self._create(tf, member, pfd, preal, base)
        finally:
            os.close(pfd)

    def _existing(self, pfd: int, base: str) -> os.stat_result | None:
        try:
            return os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _create(self, tf: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, preal: tuple[str, ...],
                base: str) -> None:
        real = (*preal, base)
        st = self._existing(pfd, base)
        if member.isdir():
            if st is None or not stat.S_ISDIR(st.st_mode):  # a directory over a directory merges
                self._touch(preal, pfd)
                if st is not None:
                    self._remove(pfd, base, st)
                os.mkdir(base, 0o700, dir_fd=pfd)
            dfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                self._owner_xattrs(member, fd=dfd)
            finally:
                os.close(dfd)
            self.created.add(real)
            self.dirs[real] = self._dir_meta(member)
            return
        if not (member.isreg() or member.issym() or member.ischr() or member.isblk() or member.isfifo()):
            self.warn(f"type-{member.type!r}",
                      f"entries of tar type {member.type!r} skipped, first: {member.name}")
            return
        self._touch(preal, pfd)
        if st is not None:
            self._remove(pfd, base, st)
        mode = member.mode & 0o7777
        pax = member.pax_headers
        times = (_ns(pax, "atime", member.mtime), _ns(pax, "mtime", member.mtime))
        if member.isreg():
            self._file(tf, member, pfd, base, mode, times)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
            self._owner_xattrs(member, dir_fd=pfd, name=base)
            os.utime(base, ns=times, dir_fd=pfd, follow_symlinks=False)
        else:
            if member.isfifo():
                os.mkfifo(base, 0o600, dir_fd=pfd)
            else:
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                try:
                    os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=pfd)
                except PermissionError:
                    self.warn("mknod", f"device nodes skipped (no CAP_MKNOD), first: {member.name}")
                    return
            self._owner_xattrs(member, dir_fd=pfd, name=base)
            os.chmod(base, mode, dir_fd=pfd)  # just made here: not a symlink
            os.utime(base, ns=times, dir_fd=pfd, follow_symlinks=False)
        self.created.add(real)

    @staticmethod
    def _dir_meta(member: tarfile.TarInfo) -> tuple[int, int, int]:
        return (member.mode & 0o7777, _ns(member.pax_headers, "atime", member.mtime),
                _ns(member.pax_headers, "mtime", member.mtime))

    def _file(self, tf: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, base: str, mode: int,
              times: tuple[int, int]) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=pfd)
        try:
            src = tf.extractfile(member)
            if src is not None:
                with open(fd, "wb", closefd=False) as out:
                    size = 0
                    holes = False
                    while chunk := src.read(_COPY):
                        size += len(chunk)
                        if chunk[0] == 0 and chunk[-1] == 0 and chunk.count(0) == len(chunk):
                            out.seek(len(chunk), os.SEEK_CUR)  # keep sparse files sparse
                            holes = True
                        else:
                            out.write(chunk)
                    if holes:
                        out.truncate(size)
            self._owner_xattrs(member, fd=fd)
            os.chmod(fd, mode)  # after chown, which clears setuid/setgid
            os.utime(fd, ns=times)
        finally:
            os.close(fd)

    def _hardlink(self, member: tarfile.TarInfo, target: list[str], pfd: int, preal: tuple[str, ...],
                  base: str) -> None:
        """Link to an entry of this layer or a lower one. The target path resolves like any other
        (inside the root), and its last component is linked itself, never followed."""
        *tparent, tbase = target
        found = self._resolve(tparent, create=False)
        if found is None:
            raise ImageError(f"hard link target {member.linkname!r} does not exist")
        tfd = found[0]
        try:
            tst = self._existing(tfd, tbase)
            if tst is None:
                raise ImageError(f"hard link target {member.linkname!r} does not exist")
            if stat.S_ISDIR(tst.st_mode):
                raise ImageError(f"hard link to a directory ({member.linkname!r})")
            st = self._existing(pfd, base)
            if st is None or (st.st_dev, st.st_ino) != (tst.st_dev, tst.st_ino):
                self._touch(preal, pfd)
                if st is not None:
                    self._remove(pfd, base, st)
                os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)
        self.created.add((*preal, base))

    def _owner_xattrs(self, member: tarfile.TarInfo, *, fd: int | None = None, dir_fd: int | None = None,
                      name: str | None = None) -> None:
        """Numeric owner, then xattrs (chown clears security.capability, so they come after)."""
        if self.can_chown:
            try:
                if fd is not None:
                    os.chown(fd, member.uid, member.gid)
                else:
                    os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EINVAL):
                    raise
                self.can_chown = False
                self.warn("chown", f"owners not kept ({exc.strerror}): run as root for a faithful image")
        xattrs = _xattrs(member)
        if not xattrs:
            return
        # fsetxattr for an fd we hold; otherwise the parent's fd path with the last component not
        # followed, which reaches symlinks, devices and fifos without opening them.
        for key, value in xattrs:
            try:
                if fd is not None:
                    os.setxattr(fd, key, value)
                else:
                    os.setxattr(f"/proc/self/fd/{dir_fd}/{name}", key, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                self.warn(f"xattr-{key}", f"xattr {key} not kept ({exc.strerror}), first: {member.name}")

    def _whiteout(self, pfd: int, preal: tuple[str, ...], base: str) -> None:
        if base == _WH_OPAQUE:
            self._opaque(pfd, preal)
            self.stats.opaque += 1
            return
        if base.startswith(_WH_META):
            return
        name = base[len(_WH):]
        if name in ("", ".", ".."):
            raise ImageError(f"bad whiteout {base!r}")
        if (*preal, name) in self.created:
            return  # a whiteout hides lower layers only
        st = self._existing(pfd, name)
        if st is not None:
            self._touch(preal, pfd)
            self._remove(pfd, name, st)
            self.stats.whiteouts += 1

    def _opaque(self, fd: int, real: tuple[str, ...]) -> None:
        """Hide what lower layers put under this directory and keep what this layer adds. Inside
        directories this layer re-lists, lower content goes too: overlayfs merges nothing below an
        opaque directory."""
        self._touch(real, fd)
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            sub = (*real, name)
            if sub not in self.created:
                st = self._existing(fd, name)
                if st is not None:
                    self._remove(fd, name, st)
            elif is_dir:
                cfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    self._opaque(cfd, sub)
                finally:
                    os.close(cfd)


def apply_layers(image: Image, rootfs_dir: str | os.PathLike[str], *,
                 progress: Progress | None = None) -> ApplyStats:
    """Extract the image's layers in order into `rootfs_dir`, as overlayfs would merge them.

    `.wh.<name>` deletes <name> from lower layers and is not created; `.wh..wh..opq` hides what lower
    layers put in its directory but keeps what this layer adds there. Hard links, symlinks,
    devices and fifos (as root), numeric owners, modes, times and pax xattrs are kept. Each layer is
    checked against its diff_id. On ImageError the directory is left half-applied: use a scratch
    directory (build_from_image does). `progress(done, total, what)` counts stored layer bytes.
    """
    root = Path(rootfs_dir)
    if not root.is_dir():
        raise ImageError(f"{root}: not a directory")
    total = sum(layer.size or 0 for layer in image.layers)
    done = reported = 0
    what = "unpacking layers"

    def tick(n: int) -> None:
        nonlocal done, reported
        done += n
        if progress is not None and (done - reported >= _PROGRESS_STEP or (n == 0 and done != reported)):
            reported = done
            progress(done, max(total, done), what)

    stats = ApplyStats()
    applier = _Applier(root, stats, tick)
    try:
        for index, layer in enumerate(image.layers):
            what = f"unpacking layer {index + 1}/{len(image.layers)}"
            applier.apply(index, layer)
    finally:
        applier.close()
    if progress is not None:
        progress(max(total, done), max(total, done), "layers unpacked")
    return stats


# ---------------------------------------------------------------- build


def _rmtree(path: Path) -> None:
    def retry(func: Callable[..., Any], p: str, _exc: Any) -> None:
        # Not root: a 0555 directory from the image refuses deletion of its entries until opened up.
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError as exc:
            log.warning("scratch root %s not fully removed: %s", path, exc)

    shutil.rmtree(path, onerror=retry)


def build_from_image(path: str | os.PathLike[str], output: str | os.PathLike[str], store: Store, *,
                     progress: Progress | None = None, workers: int = 4,
                     workdir: str | os.PathLike[str] | None = None, ref: str | None = None,
                     platform: str | None = None, tags: Mapping[str, str] | None = None,
                     routes: Any = None) -> BuildReport:
    """Convert a docker-save archive or OCI layout into an flist at `output`, chunks into `store`.

    The layers are applied into a scratch root under `workdir` (default: the system temp dir;
    it needs room for the unpacked image), packed by builder.build_from_dir with the image's tags
    (`tags` given here win over them; `routes` go to the builder as they are), and the scratch root
    is removed afterwards, on failure too.
    """
    from g8os.fs import builder  # the packer; imported here so image reading works without it

    image = read_image(path, ref=ref, platform=platform)
    scratch = Path(tempfile.mkdtemp(prefix="g8os-image-", dir=workdir))
    try:
        rootfs = scratch / "rootfs"
        rootfs.mkdir()
        os.chmod(rootfs, 0o755)  # a layer without a "./" entry leaves the root as runtimes make it
        stats = apply_layers(image, rootfs, progress=progress)
        log.info("%s: %d layers, %d entries, %d whiteouts, %d opaque dirs", path, stats.layers,
                 stats.entries, stats.whiteouts, stats.opaque)
        return builder.build_from_dir(rootfs, Path(output), store, tags={**image.tags, **(tags or {})},
                                      routes=routes, progress=progress, workers=workers)
    finally:
        _rmtree(scratch)

