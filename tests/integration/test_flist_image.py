"""Container images to flists (fs/image.py): docker-save archives and OCI layouts are built by hand
in each test from two layers (files, dirs, a symlink, a hardlink, a fifo, a device; then a whiteout,
an opaque directory, a changed file). No Docker daemon or registry is used. The tests check that the
layers merge like overlayfs, that tampering is caught, and that no layer can touch anything outside
the root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zstandard

from g8os.fs import image as img
from g8os.fs.image import ImageError, Layer

pytestmark = pytest.mark.timeout(120)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="owners, devices and security.capability need root")
T1 = 1_600_000_000              # layer 1 mtimes
T2 = 1_700_000_000              # layer 2 mtimes
PRECISE = "1650000000.123456789"  # a pax mtime with nanoseconds
# A VFS_CAP_REVISION_2 blob granting cap_net_raw (bit 13), effective: what `setcap cap_net_raw+ep` writes.
CAPABILITY = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)


# ---------------------------------------------------------------- building images by hand


@dataclass
class E:
    """One tar entry of a hand-made layer."""

    kind: str                   # dir, file, symlink, hardlink, fifo, chr
    name: str
    data: bytes = b""
    target: str = ""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = T1
    pax: dict[str, str] = field(default_factory=dict)
    dev: tuple[int, int] = (0, 0)


def tar_bytes(entries: list[E]) -> bytes:
    types = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}
    default_mode = {"dir": 0o755, "symlink": 0o777}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = types[e.kind]
            info.mode = e.mode if e.mode is not None else default_mode.get(e.kind, 0o644)
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.linkname = e.target
            info.devmajor, info.devminor = e.dev
            info.pax_headers = dict(e.pax)
            if e.kind == "file":
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def xattr_pax(name: str, value: bytes) -> dict[str, str]:
    # How Go's archive/tar (and so Docker) records an xattr: raw bytes in a SCHILY.xattr record.
    return {f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape")}


LAYER1 = [
    E("dir", "./", mode=0o755),
    E("dir", "etc/"),
    E("dir", "etc/app/", mode=0o750),
    E("file", "etc/app/conf1", b"one\n"),
    E("file", "etc/app/conf2", b"two\n", mode=0o600, uid=1000, gid=1000),
    E("symlink", "etc/app/current", target="conf1"),
    E("dir", "etc/app/sub/"),
    E("file", "etc/app/sub/deep", b"deep\n"),
    E("dir", "usr/"),
    E("dir", "usr/bin/"),
    E("file", "usr/bin/tool", b"#!/bin/sh\necho v1\n", mode=0o755,
      pax={**xattr_pax("user.origin", b"layer1"), **xattr_pax("security.capability", CAPABILITY)}),
    E("hardlink", "usr/bin/tool-link", target="usr/bin/tool"),
    E("dir", "usr/lib/"),
    E("file", "usr/lib/libx.so", b"\x7fELF libx", mode=0o755),
    E("symlink", "lib", target="usr/lib"),  # merged /usr, as in Debian images
    E("dir", "data/"),
    E("file", "data/keep.txt", b"keep\n", pax={"mtime": PRECISE}),
    E("file", "data/gone.txt", b"gone\n"),
    E("dir", "cache/"),
    E("file", "cache/a", b"a"),
    E("dir", "cache/b/"),
    E("file", "cache/b/c", b"c"),
    E("dir", "run/"),
    E("fifo", "run/fifo", mode=0o640),
    E("dir", "dev/"),
    E("chr", "dev/null", mode=0o666, dev=(1, 3)),
    E("dir", "srv/"),
    E("file", "srv/setuid", b"suid", mode=0o4755, uid=0, gid=50),
    E("file", "srv/sparse", b"\0" * (3 << 20) + b"end"),
]

LAYER2 = [
    E("dir", "data/", mtime=T2),
    E("file", "data/.wh.gone.txt", mtime=T2),
    E("file", ".wh.cache", mtime=T2),
    E("file", "data/.wh.never-was", mtime=T2),
    E("file", "etc/app/new.conf", b"new\n", mtime=T2),  # before the marker: kept all the same
    E("dir", "etc/app/", mode=0o755, mtime=T2),
    E("file", "etc/app/.wh..wh..opq", mtime=T2),
    E("dir", "etc/app/sub/", mtime=T2),                  # re-listed: its lower content goes
    E("file", "etc/app/sub/fresh", b"fresh\n", mtime=T2),
    E("file", "usr/bin/tool", b"#!/bin/sh\necho v2\n", mode=0o755, mtime=T2),
    E("file", "lib/libnew.so", b"\x7fELF libnew", mode=0o755, mtime=T2),  # through lib -> usr/lib
]


def expected_tree() -> dict[str, tuple[Any, ...]]:
    d = ("dir", 0o755, 0, 0)
    tree: dict[str, tuple[Any, ...]] = {
        "": d, "etc": d, "etc/app": d,
        "etc/app/new.conf": ("file", 0o644, 0, 0, b"new\n", 1),
        "etc/app/sub": d,
        "etc/app/sub/fresh": ("file", 0o644, 0, 0, b"fresh\n", 1),
        "usr": d, "usr/bin": d,
        "usr/bin/tool": ("file", 0o755, 0, 0, b"#!/bin/sh\necho v2\n", 1),
        "usr/bin/tool-link": ("file", 0o755, 0, 0, b"#!/bin/sh\necho v1\n", 1),  # copy-up broke the link
        "usr/lib": d,
        "usr/lib/libx.so": ("file", 0o755, 0, 0, b"\x7fELF libx", 1),
        "usr/lib/libnew.so": ("file", 0o755, 0, 0, b"\x7fELF libnew", 1),
        "lib": ("symlink", 0, 0, "usr/lib"),
        "data": d,
        "data/keep.txt": ("file", 0o644, 0, 0, b"keep\n", 1),
        "run": d,
        "run/fifo": ("fifo", 0o640, 0, 0),
        "dev": d,
        "srv": d,
        "srv/setuid": ("file", 0o4755, 0, 50, b"suid", 1),
        "srv/sparse": ("file", 0o644, 0, 0, b"\0" * (3 << 20) + b"end", 1),
        "dev/null": ("chr", 0o666, 0, 0, 1, 3),
    }
    return tree


def describe(st: os.stat_result, *, content: bytes | None = None,
             target: str | None = None) -> tuple[Any, ...]:
    perms = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", perms, st.st_uid, st.st_gid)
    if stat.S_ISREG(st.st_mode):
        return ("file", perms, st.st_uid, st.st_gid, content, st.st_nlink)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", st.st_uid, st.st_gid, target)
    if stat.S_ISFIFO(st.st_mode):
        return ("fifo", perms, st.st_uid, st.st_gid)
    if stat.S_ISCHR(st.st_mode):
        return ("chr", perms, st.st_uid, st.st_gid, os.major(st.st_rdev), os.minor(st.st_rdev))
    return ("other", st.st_mode)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under root (no symlink followed) with its type, mode, owner and content."""
    out = {"": describe(os.lstat(root))}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            out[path.relative_to(root).as_posix()] = describe(
                st, content=path.read_bytes() if stat.S_ISREG(st.st_mode) else None,
                target=os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
    return out


CONFIG_SETTINGS = {
    "Entrypoint": ["/usr/bin/tool"],
    "Cmd": ["--serve", "a b"],
    "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"],
    "WorkingDir": "/etc/app",
    "User": "1000:1000",
    "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
    "Volumes": {"/data": {}},
    "Labels": {"org.opencontainers.image.title": "test app"},
    "StopSignal": "SIGTERM",
}
EXPECTED_TAGS = {
    "entrypoint": '["/usr/bin/tool"]',
    "cmd": '["--serve","a b"]',
    "env": '["PATH=/usr/bin:/bin","GREETING=hello world"]',
    "workdir": "/etc/app",
    "user": "1000:1000",
    "ports": '["53/udp","8080/tcp"]',
    "volumes": '["/data"]',
    "stopsignal": "SIGTERM",
    "label.org.opencontainers.image.title": "test app",
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_bytes(layers: list[bytes], arch: str = "amd64") -> bytes:
    return json.dumps({
        "architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": CONFIG_SETTINGS,
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]},
        "history": [{"created_by": "layer 1"}, {"created_by": "layer 2"}],
    }).encode()


def add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = T1
    tf.addfile(info, io.BytesIO(data))


def docker_save(path: Path, layers: list[bytes], *, style: str = "legacy",
                images: list[tuple[list[str], bytes]] | None = None) -> Path:
    """A `docker save` archive: legacy (<id>/layer.tar, <config hex>.json, before Docker 25) or
    blobs (blobs/sha256/<hex> named by digest, Docker 25+)."""
    config = config_bytes(layers)
    images = images or [(["test/app:1"], config)]
    with tarfile.open(path, "w") as tf:
        entries = []
        names = []
        for i, layer in enumerate(layers):
            hexd = hashlib.sha256(layer).hexdigest()
            if style == "legacy":
                layer_id = hashlib.sha256(b"v1 id %d" % i + layer).hexdigest()  # not the content's digest
                name = f"{layer_id}/layer.tar"
                add_bytes(tf, f"{layer_id}/VERSION", b"1.0")
            else:
                name = f"blobs/sha256/{hexd}"
            add_bytes(tf, name, layer)
            names.append(name)
        for repo_tags, cfg in images:
            chex = hashlib.sha256(cfg).hexdigest()
            cname = f"{chex}.json" if style == "legacy" else f"blobs/sha256/{chex}"
            add_bytes(tf, cname, cfg)
            entries.append({"Config": cname, "RepoTags": repo_tags, "Layers": names})
        add_bytes(tf, "manifest.json", json.dumps(entries).encode())
        add_bytes(tf, "repositories", b"{}")
    return path


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = sha256(data)
    blob = layout / "blobs" / "sha256" / digest.split(":")[1]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def oci_manifest(layout: Path, layers: list[bytes], arch: str = "amd64") -> dict[str, Any]:
    """Layer 1 stored gzip-compressed, layer 2 zstd-compressed, as registries serve them."""
    stored = [(gzip.compress(layers[0], mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"),
              (zstandard.ZstdCompressor().compress(layers[1]), "application/vnd.oci.image.layer.v1.tar+zstd")]
    manifest = {
        "schemaVersion": 2,
        "mediaType": img.MT_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **put_blob(layout, config_bytes(layers, arch))},
        "layers": [{"mediaType": media, **put_blob(layout, data)} for data, media in stored],
    }
    return {"mediaType": img.MT_OCI_MANIFEST, **put_blob(layout, json.dumps(manifest).encode()),
            "platform": {"os": "linux", "architecture": arch}}


def oci_layout(layout: Path, layers: list[bytes], *, multi: bool = False) -> Path:
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    if multi:  # a multi-platform index, with an attestation manifest as BuildKit adds
        manifests = [oci_manifest(layout, layers, "arm64"), oci_manifest(layout, layers, "amd64")]
        attest = put_blob(layout, b'{"schemaVersion": 2}')
        manifests.append({"mediaType": img.MT_OCI_MANIFEST, **attest,
                          "platform": {"os": "unknown", "architecture": "unknown"},
                          "annotations": {"vnd.docker.reference.type": "attestation-manifest"}})
        desc = {"mediaType": img.MT_OCI_INDEX,
                **put_blob(layout, json.dumps({"schemaVersion": 2, "manifests": manifests}).encode())}
    else:
        desc = oci_manifest(layout, layers)
        desc.pop("platform")
    desc["annotations"] = {"org.opencontainers.image.ref.name": "1"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return layout


def tar_of(directory: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tf:
        tf.add(directory, arcname=".")
    return out


def mem_image(*layers: list[E]) -> img.Image:
    """An Image straight from tar bytes in memory, for the layer-application tests."""
    blobs = [tar_bytes(entries) for entries in layers]
    return img.Image(format=img.OCI_LAYOUT, source=Path("mem"), config={}, tags={}, layers=[
        Layer(name=f"layer{i}", media_type="", digest=None, diff_id=sha256(blob), size=len(blob),
              opener=lambda blob=blob: io.BytesIO(blob))
        for i, blob in enumerate(blobs)])


@pytest.fixture
def work() -> Iterator[Path]:
    """A scratch directory removed afterwards, device nodes and fifos included."""
    path = Path(tempfile.mkdtemp(prefix="g8os-test-image-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


LAYERS = [tar_bytes(LAYER1), tar_bytes(LAYER2)]
FORMATS = ["docker-save-legacy", "docker-save-blobs", "docker-save-gz", "oci-dir", "oci-tar", "oci-multi"]


def make_image(kind: str, work: Path) -> Path:
    if kind == "docker-save-legacy":
        return docker_save(work / "image.tar", LAYERS)
    if kind == "docker-save-blobs":
        return docker_save(work / "image.tar", LAYERS, style="blobs")
    if kind == "docker-save-gz":  # `docker save | gzip`
        raw = docker_save(work / "image.tar", LAYERS).read_bytes()
        (work / "image.tar.gz").write_bytes(gzip.compress(raw, mtime=0))
        return work / "image.tar.gz"
    if kind == "oci-dir":
        return oci_layout(work / "layout", LAYERS)
    if kind == "oci-tar":
        return tar_of(oci_layout(work / "layout", LAYERS), work / "layout.tar")
    if kind == "oci-multi":
        return oci_layout(work / "layout", LAYERS, multi=True)
    raise AssertionError(kind)


# ---------------------------------------------------------------- detect and read


def test_detect(work):
    assert img.detect(docker_save(work / "save.tar", LAYERS)) == img.DOCKER_SAVE
    assert img.detect(docker_save(work / "save-blobs.tar", LAYERS, style="blobs")) == img.DOCKER_SAVE
    layout = oci_layout(work / "layout", LAYERS)
    assert img.detect(layout) == img.OCI_LAYOUT
    assert img.detect(tar_of(layout, work / "layout.tar")) == img.OCI_LAYOUT
    (work / "rootfs.tar").write_bytes(LAYERS[0])          # a root filesystem tar is not an image
    assert img.detect(work / "rootfs.tar") is None
    (work / "plain").mkdir()
    assert img.detect(work / "plain") is None
    (work / "junk").write_bytes(b"not a tar at all" * 100)
    assert img.detect(work / "junk") is None
    assert img.detect(work / "missing") is None


@pytest.mark.parametrize("kind", FORMATS)
def test_read_image(work, kind):
    image = img.read_image(make_image(kind, work), platform="linux/amd64")
    assert image.format == (img.DOCKER_SAVE if kind.startswith("docker") else img.OCI_LAYOUT)
    assert len(image.layers) == 2
    assert [layer.diff_id for layer in image.layers] == [sha256(layer) for layer in LAYERS]
    assert image.config["config"] == CONFIG_SETTINGS
    assert image.tags.items() >= EXPECTED_TAGS.items()
    assert image.tags["image.os"] == "linux" and image.tags["image.architecture"] == "amd64"
    assert image.tags["image.ref"] == ("test/app:1" if kind.startswith("docker") else "1")
    if kind.startswith("oci"):
        assert [layer.media_type.rsplit("+", 1)[1] for layer in image.layers] == ["gzip", "zstd"]
        assert image.tags["image.manifest"] == image.manifest_digest
    if kind == "docker-save-blobs" or kind.startswith("oci"):  # legacy layer.tar names are not digests
        assert all(layer.digest for layer in image.layers)


def test_multi_platform_index_picks_the_platform(work):
    layout = oci_layout(work / "layout", LAYERS, multi=True)
    assert img.read_image(layout, platform="linux/arm64").config["architecture"] == "arm64"
    assert img.read_image(layout, platform="linux/amd64").config["architecture"] == "amd64"
    with pytest.raises(ImageError, match=r"platform linux/s390x \(has: linux/arm64, linux/amd64\)"):
        img.read_image(layout, platform="linux/s390x")


def test_docker_save_chooses_by_repo_tag(work):
    other = json.dumps({**json.loads(config_bytes(LAYERS)), "config": {"Cmd": ["other"]}}).encode()
    path = docker_save(work / "two.tar", LAYERS, images=[(["test/app:1"], config_bytes(LAYERS)),
                                                        (["test/other:latest"], other)])
    assert img.read_image(path).tags["cmd"] == '["--serve","a b"]'
    chosen = img.read_image(path, ref="test/other")
    assert chosen.tags["cmd"] == '["other"]' and chosen.ref == "test/other"
    with pytest.raises(ImageError, match=r"no image 'nope:1'.*test/app:1, test/other:latest"):
        img.read_image(path, ref="nope:1")


def test_docker_save_repeated_layer_is_a_symlink(work):
    """docker save writes a layer that occurs twice once, and a symlink to it for the second."""
    path = docker_save(work / "image.tar", [LAYERS[0], LAYERS[0]])
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf]
    first, second = json.loads(members[-2][1])[0]["Layers"]
    with tarfile.open(work / "linked.tar", "w") as out:
        for m, data in members:
            if m.name == second:
                m.type, m.linkname, m.size, data = tarfile.SYMTYPE, f"../{first}", 0, None
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    image = img.read_image(work / "linked.tar")
    (work / "root").mkdir()
    img.apply_layers(image, work / "root")
    assert (work / "root/data/gone.txt").read_bytes() == b"gone\n"


def test_not_an_image(work):
    (work / "rootfs.tar").write_bytes(LAYERS[0])
    with pytest.raises(ImageError, match="neither a docker-save archive nor an OCI image layout"):
        img.read_image(work / "rootfs.tar")


# ---------------------------------------------------------------- tags


def test_tags_from_config():
    assert img.tags_from_config({"config": CONFIG_SETTINGS, "rootfs": {}}) == EXPECTED_TAGS
    assert img.tags_from_config(CONFIG_SETTINGS) == EXPECTED_TAGS  # the inner object alone
    assert json.loads(img.tags_from_config(CONFIG_SETTINGS)["cmd"]) == ["--serve", "a b"]
    # scratch images: no config at all, or only empty settings
    assert img.tags_from_config({"architecture": "amd64", "os": "linux"}) == {}
    empty = {"Entrypoint": None, "Cmd": [], "Env": None, "WorkingDir": ""}
    assert img.tags_from_config({"config": empty}) == {}
    with pytest.raises(ImageError, match="Entrypoint must be a list of strings"):
        img.tags_from_config({"config": {"Entrypoint": "/bin/sh -c x"}})
    with pytest.raises(ImageError, match="ExposedPorts must be an object"):
        img.tags_from_config({"config": {"ExposedPorts": ["80/tcp"]}})


# ---------------------------------------------------------------- apply


@needs_root
@pytest.mark.parametrize("kind", FORMATS)
def test_apply_layers_merges_like_overlayfs(work, kind):
    image = img.read_image(make_image(kind, work), platform="linux/amd64")
    root = work / "rootfs"
    root.mkdir()
    calls: list[tuple[int, int, str]] = []
    stats = img.apply_layers(image, root, progress=lambda *call: calls.append(call))

    assert snapshot(root) == expected_tree()
    assert not [p for p in root.rglob("*") if p.name.startswith(".wh.")]
    assert stats.layers == 2 and stats.entries == len(LAYER1) + len(LAYER2)
    assert stats.whiteouts == 2 and stats.opaque == 1      # gone.txt and cache; never-was is a no-op
    assert stats.warnings == []
    stored = sum(layer.size for layer in image.layers)       # progress counts the blobs as stored
    assert calls[-1] == (stored, stored, "layers unpacked") and len(calls) >= 2

    # times: from the headers, to the nanosecond; directories a layer only changed keep theirs
    assert os.lstat(root / "data/keep.txt").st_mtime_ns == 1650000000_123456789
    assert os.lstat(root / "usr/bin/tool").st_mtime == T2
    assert os.lstat(root / "lib").st_mtime == T1
    assert os.lstat(root / "etc/app").st_mtime == T2 and os.lstat(root / "data").st_mtime == T2
    assert os.lstat(root / "usr/lib").st_mtime == T1     # layer 2 wrote into it through lib/
    assert os.lstat(root).st_mtime == T1                  # layer 2 removed cache/ from it
    # xattrs stay with the inode: the old tool's hardlink still has layer 1's
    assert os.getxattr(root / "usr/bin/tool-link", "user.origin") == b"layer1"
    assert os.getxattr(root / "usr/bin/tool-link", "security.capability") == CAPABILITY
    assert os.listxattr(root / "usr/bin/tool") == []
    # a file of zeros stays sparse
    assert os.lstat(root / "srv/sparse").st_blocks * 512 < (1 << 20)


def test_hardlinks_within_a_layer_share_the_inode(work):
    image = mem_image([E("file", "a", b"x"), E("hardlink", "b", target="a"),
                       E("dir", "d/"), E("hardlink", "d/c", target="./a")])
    img.apply_layers(image, work)
    a, b, c = (os.lstat(work / n) for n in ("a", "b", "d/c"))
    assert a.st_ino == b.st_ino == c.st_ino and a.st_nlink == 3


def test_layer_order_and_replacement(work):
    image = mem_image(
        [E("dir", "x/"), E("file", "x/inner", b"1"), E("file", "f", b"file"), E("symlink", "s", target="f")],
        [E("file", "x", b"now a file"), E("dir", "f/"), E("file", "s", b"was a link")],
        [E("file", "x", b"same layer: whiteout hides lower layers only"), E("file", ".wh.x")],
    )
    img.apply_layers(image, work)
    snap = snapshot(work)
    assert snap["x"][4] == b"same layer: whiteout hides lower layers only"
    assert snap["f"][0] == "dir" and snap["s"][0] == "file" and "x/inner" not in snap


def test_empty_layers(work):
    empty = [b"", b"\0" * 1024, gzip.compress(b"\0" * 1024)]  # the last is Docker's well-known empty layer
    plain = [b"", b"\0" * 1024, b"\0" * 1024]
    image = img.Image(format=img.DOCKER_SAVE, source=Path("mem"), config={}, tags={}, layers=[
        Layer(name=f"empty{i}", media_type="", digest=None, diff_id=sha256(plain[i]), size=None,
              opener=lambda b=b: io.BytesIO(b)) for i, b in enumerate(empty)])
    assert img.apply_layers(image, work).layers == 3
    assert list(work.iterdir()) == []


# ---------------------------------------------------------------- tampering


def test_oci_blob_digest_mismatch_is_refused(work):
    layout = oci_layout(work / "layout", LAYERS)
    manifest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    blobs = json.loads((layout / "blobs/sha256" / manifest.split(":")[1]).read_bytes())
    victim = layout / "blobs/sha256" / blobs["layers"][1]["digest"].split(":")[1]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF                                         # same size, other content
    victim.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=f"{victim.name}: content does not match its digest"):
        img.read_image(layout)
    with pytest.raises(ImageError, match="content does not match its digest"):
        img.read_image(tar_of(layout, work / "layout.tar"))


def test_oci_config_tampered_is_refused(work):
    layout = oci_layout(work / "layout", LAYERS)
    for blob in (layout / "blobs/sha256").iterdir():
        text = blob.read_bytes()
        if b'"Entrypoint"' in text:
            blob.write_bytes(text.replace(b"/usr/bin/tool", b"/usr/bin/evil"))
    with pytest.raises(ImageError, match=r"bytes, but its descriptor says|does not match its digest"):
        img.read_image(layout)


def test_docker_save_blob_mismatch_is_refused(work):
    tampered = [LAYERS[0], LAYERS[1].replace(b"echo v2", b"echo v3")]
    path = docker_save(work / "image.tar", tampered, style="blobs")
    # rename the tampered blob to the digest of the original content
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf]
    bad, good = hashlib.sha256(tampered[1]).hexdigest(), hashlib.sha256(LAYERS[1]).hexdigest()
    with tarfile.open(work / "renamed.tar", "w") as out:
        for m, data in members:
            m.name = m.name.replace(bad, good)
            if m.name == "manifest.json":
                data = data.replace(bad.encode(), good.encode())
                m.size = len(data)
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    with pytest.raises(ImageError, match=f"blobs/sha256/{good}: content does not match its digest"):
        img.read_image(work / "renamed.tar")


def test_legacy_docker_save_layer_checked_against_diff_id(work):
    # legacy layer.tar names are not digests: the config's diff_id is what catches the change
    path = docker_save(work / "image.tar", LAYERS)
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf]
    with tarfile.open(work / "tampered.tar", "w") as out:
        for m, data in members:
            if data == LAYERS[1]:
                data = data.replace(b"echo v2", b"echo v3")
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    image = img.read_image(work / "tampered.tar")
    (work / "root").mkdir()
    with pytest.raises(ImageError, match=r"layer 1 \(.*/layer.tar\): content does not match its diff_id"):
        img.apply_layers(image, work / "root")


def test_unsupported_layer_media_type(work):
    layout = oci_layout(work / "layout", LAYERS)
    index = json.loads((layout / "index.json").read_text())
    mpath = layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(mpath.read_bytes())
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
    index["manifests"][0].update(put_blob(layout, json.dumps(manifest).encode()))
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="unsupported media type"):
        img.read_image(layout)


# ---------------------------------------------------------------- escapes


@pytest.fixture
def jail(work) -> Iterator[tuple[Path, Path]]:
    """A root to apply into and, beside it, an outside directory that must come out untouched."""
    root, outside = work / "root", work / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    before = snapshot(outside)
    yield root, outside
    assert snapshot(outside) == before
    assert sorted(p.name for p in work.iterdir()) == ["outside", "root"]


@pytest.mark.parametrize("layers, error", [
    ([[E("file", "../x", b"x")]], r"'\.\.' in layer path"),
    ([[E("file", "a/../../x", b"x")]], r"'\.\.' in layer path"),
    ([[E("file", "/OUTSIDE/planted", b"x")]], "absolute path"),
    ([[E("dir", "/OUTSIDE/")]], "absolute path"),
    ([[E("hardlink", "stolen", target="../outside/secret")]], r"'\.\.' in layer path"),
    ([[E("hardlink", "stolen", target="/OUTSIDE/secret")]], "absolute path"),
    # a hardlink through a symlink resolves inside the root, where there is no such file
    ([[E("symlink", "out", target="/OUTSIDE")], [E("hardlink", "stolen", target="out/secret")]],
     "hard link target 'out/secret' does not exist"),
    ([[E("symlink", "loop1", target="loop2"), E("symlink", "loop2", target="loop1")],
      [E("file", "loop1/x", b"x")]], "too many levels of symbolic links"),
], ids=["dotdot", "dotdot-inside", "absolute", "absolute-dir", "hardlink-dotdot", "hardlink-absolute",
        "hardlink-through-symlink", "symlink-loop"])
def test_escapes_are_refused(jail, layers, error):
    root, outside = jail
    layers = [[_outside(e, outside) for e in layer] for layer in layers]
    with pytest.raises(ImageError, match=error):
        img.apply_layers(mem_image(*layers), root)


def _outside(e: E, outside: Path) -> E:
    e = E(**{**e.__dict__})
    e.name = e.name.replace("/OUTSIDE", str(outside))
    e.target = e.target.replace("/OUTSIDE", str(outside))
    return e


def test_symlinks_from_earlier_layers_resolve_inside_the_root(jail):
    """A symlink to / (or to any outside path, or climbing with ..) is followed by later entries
    as a chroot would: into the root, never out of it."""
    root, outside = jail
    marker = f"g8os-escape-{uuid.uuid4().hex}"
    image = mem_image(
        [E("symlink", "to-root", target="/"), E("symlink", "to-outside", target=str(outside)),
         E("symlink", "up", target="../../../../.."), E("dir", "etc/"),
         E("symlink", "etc/passwd", target=str(outside / "secret"))],
        [E("file", f"to-root/{marker}", b"1"),
         E("file", "to-outside/secret", b"overwritten?"),
         E("dir", "up/updir/"),
         E("file", "up/updir/x", b"2"),
         E("file", "etc/passwd", b"root:x:0:0::/root:/bin/sh\n")],  # replaces the link, not its target
        [E("file", "to-outside/.wh.secret"), E("file", "to-outside/.wh..wh..opq")],
    )
    try:
        img.apply_layers(image, root)
        assert not Path("/", marker).exists()
    finally:
        Path("/", marker).unlink(missing_ok=True)
    inside = root / str(outside).lstrip("/")
    assert (root / marker).read_bytes() == b"1"
    assert (root / "updir/x").read_bytes() == b"2"
    assert os.listdir(inside) == []     # made, written, whited out and made opaque: all in the root
    assert (root / "etc/passwd").read_bytes().startswith(b"root:") and not (root / "etc/passwd").is_symlink()


# ---------------------------------------------------------------- end to end


def _builder_or_skip() -> Any:
    try:
        from g8os.fs import builder
    except ImportError as exc:
        pytest.skip(f"g8os.fs.builder is not importable yet ({exc}): end-to-end conversion needs it")
    return builder


def flist_tree(flist: Any, store: Any) -> dict[str, tuple[Any, ...]]:
    from g8os.fs import chunks

    out = {}
    for path, inode in flist.walk():
        rel = path.decode("utf-8", "surrogateescape").lstrip("/")
        perms = stat.S_IMODE(inode.mode)
        kind = stat.S_IFMT(inode.mode)
        if kind == stat.S_IFDIR:
            out[rel] = ("dir", perms, inode.uid, inode.gid)
        elif kind == stat.S_IFREG:
            data = flist.inline(inode.ino)
            if data is None:
                ids = flist.chunks(inode.ino)
                blobs = store.get([cid for cid, _ in ids])
                data = b"".join(chunks.decompress(blobs[cid], cid) for cid, _ in ids)
            out[rel] = ("file", perms, inode.uid, inode.gid, data, inode.nlink)
        elif kind == stat.S_IFLNK:
            out[rel] = ("symlink", inode.uid, inode.gid, flist.readlink(inode.ino).decode())
        elif kind == stat.S_IFIFO:
            out[rel] = ("fifo", perms, inode.uid, inode.gid)
        elif kind == stat.S_IFCHR:
            out[rel] = ("chr", perms, inode.uid, inode.gid, os.major(inode.rdev), os.minor(inode.rdev))
        else:
            out[rel] = ("other", inode.mode)
    return out


@needs_root
@pytest.mark.parametrize("kind", ["docker-save-legacy", "oci-tar"])
def test_build_from_image_end_to_end(work, kind):
    _builder_or_skip()
    from g8os.fs.format import Flist
    from g8os.fs.store import DirStore

    source = make_image(kind, work)
    scratch = work / "scratch"
    scratch.mkdir()
    store = DirStore(work / "store")
    out = work / "image.flist"
    report = img.build_from_image(source, out, store, workers=2, workdir=scratch, tags={"cmd": '["sh"]'})
    assert list(scratch.iterdir()) == []                   # the unpacked root is gone
    assert report.files == 9 and report.symlinks == 1
    (work / "open").mkdir()
    with Flist.open(out, work / "open") as flist:
        assert flist_tree(flist, store) == expected_tree()
        assert flist.tags().items() >= {**EXPECTED_TAGS, "cmd": '["sh"]'}.items()  # given tags win
        assert flist.tags()["image.ref"] in ("test/app:1", "1")
        tool_link = flist.lookup(flist.lookup(flist.lookup(flist.root, b"usr").ino, b"bin").ino, b"tool-link")
        assert flist.xattrs(tool_link.ino)[b"user.origin"] == b"layer1"


def test_build_from_image_cleans_up_on_failure(work):
    _builder_or_skip()
    from g8os.fs.store import DirStore

    evil = [LAYERS[0], tar_bytes([E("file", "../escape", b"x")])]
    source = docker_save(work / "evil.tar", evil)
    scratch = work / "scratch"
    scratch.mkdir()
    with pytest.raises(ImageError, match=r"'\.\.' in layer path"):
        img.build_from_image(source, work / "evil.flist", DirStore(work / "store"), workdir=scratch)
    assert list(scratch.iterdir()) == []
    assert not (work / "evil.flist").exists() and not (work / "escape").exists()
