"""Build the guest image once and cache it by content; find it again by its key.

``ensure()`` returns the cached image for the current recipe, building it first
if needed. A build works in ``<cache>/.build-<key>-<pid>/`` and becomes
``<cache>/<key>/`` by one rename at the very end, so a cache entry is always
complete; a build that fails (or is killed) leaves only its build directory,
which the failing build removes itself and the next build of any key removes
when its owner is gone. Steps:

1. ``debootstrap --variant=minbase`` with the recipe's packages, from the
   mirror apt already uses (debs kept in ``<cache>/debs`` for the next build);
2. the guest files (identity service, sshd settings), services the deploy
   starts itself switched off, fstab, an empty machine-id;
3. the agent's venv (``/opt/podlab/venv``): the node requirements' whole
   dependency closure at the host's versions, as wheels the host's pip builds
   (compiled ones included, for the host's Python: the guest's is the same
   Debian 12 Python 3.11), installed by the guest's own Python in a chroot and
   byte-compiled there, plus pip unpacked and byte-compiled under
   ``/opt/podlab/pip/``. Under emulation, installing and first importing these
   in every guest took most of a deploy (pip install 70–240 s, the agent's
   first start ~3 min compiling pydantic, pyroute2 …); here it costs seconds
   on the host, once per image. The venv says what it holds in
   ``.podlab-requirements``, so the agent role installs only podlab's wheel;
4. a small initrd (virtio + ext4 only: under emulation the kernel unpacks a
   36 MB initrd for 20 s) made in a private mount namespace, so the bind
   mounts it needs vanish with the process whatever happens;
5. ``mkfs.ext4 -d`` of the tree (no loop mounts) and ``qemu-img convert`` to
   the qcow2 base every node's overlay is backed by.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.deploy import wheel
from harness.errors import LabError, ToolError
from harness.exec import run
from harness.lab.image import recipe

DISK_SIZE = "3G"
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4", "qemu_fw_cfg")
DISABLED = ("etcd.service", "bird.service", "supervisor.service", "iperf3.service")
MASKED = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-networkd-wait-online.service",
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
)
# debootstrap mounts /proc and /sys in the tree, mkinitramfs needs them too: in a
# private mount namespace those mounts die with the process, even if it is killed.
PRIVATE_MOUNTS = ("unshare", "--mount", "--propagation", "private")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    """A complete cached image: kernel, initrd and qcow2 base disk."""

    key: str
    root: Path

    @property
    def kernel(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.root / "initrd.img"

    @property
    def disk(self) -> Path:
        return self.root / "base.qcow2"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def info(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.manifest.read_text())
        return data


def cached(key: str | None = None) -> Image | None:
    """The cached image for ``key`` (default: the current recipe's), if complete."""
    key = key or recipe.key()
    image = Image(key, recipe.cache_root() / key)
    ok = all(p.is_file() for p in (image.kernel, image.initrd, image.disk, image.manifest))
    return image if ok else None


def cached_images() -> list[Image]:
    """Every complete image in the cache (any key)."""
    root = recipe.cache_root()
    if not root.is_dir():
        return []
    found = (cached(p.name) for p in sorted(root.iterdir()) if not p.name.startswith("."))
    return [image for image in found if image is not None]


def prune(keep: set[str]) -> list[str]:
    """Remove cached images whose key is not in ``keep`` (the current recipe's, and
    those labs that are up still boot from: their overlays are backed by them)."""
    removed = []
    for image in cached_images():
        if image.key not in keep:
            with _lock(image.key):
                shutil.rmtree(image.root, ignore_errors=True)
            (recipe.cache_root() / f".lock-{image.key}").unlink(missing_ok=True)
            removed.append(image.key)
    return removed


def ensure(
    log: Log = lambda _msg: None, packages: tuple[str, ...] = recipe.PACKAGES
) -> tuple[Image, bool]:
    """The image for the recipe, built now if not cached: (image, built_now)."""
    venv = recipe.venv_pins()
    key = recipe.key(packages, venv=venv)
    found = cached(key)
    if found:
        return found, False
    with _lock(key):
        found = cached(key)  # another build finished while we waited
        if found:
            return found, False
        return build(key, packages, log, venv), True


@contextmanager
def _lock(key: str) -> Iterator[None]:
    root = recipe.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f".lock-{key}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build(
    key: str, packages: tuple[str, ...], log: Log, venv: tuple[str, ...] | None = None
) -> Image:
    """Build image ``key`` from scratch; on any failure nothing is left behind."""
    venv = recipe.venv_pins() if venv is None else venv
    root = recipe.cache_root()
    _remove_orphans(root)
    work = root / f".build-{key}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    try:
        tree = work / "rootfs"
        steps: list[tuple[str, Callable[[], None]]] = [
            ("debootstrap", lambda: _debootstrap(tree, packages, root / "debs")),
            ("configure", lambda: _configure(tree)),
            ("venv", lambda: _venv(tree, venv)),
            ("initrd", lambda: _initrd(tree, work)),
            ("disk", lambda: _disk(tree, work)),
        ]
        timings = {}
        for name, step in steps:
            log(f"image {key}: {name}")
            t0 = time.monotonic()
            step()
            timings[name] = round(time.monotonic() - t0, 1)
        manifest = {
            "key": key,
            "recipe_version": recipe.RECIPE_VERSION,
            "suite": recipe.SUITE,
            "packages": sorted(packages),
            "venv": sorted(venv),
            "kernel_release": _kernel_release(work),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_s": round(time.monotonic() - started, 1),
            "step_s": timings,
            "disk_bytes": (work / "base.qcow2").stat().st_size,
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
        final = root / key
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Image(key, final)


def _remove_orphans(root: Path) -> None:
    """Build directories whose building process is gone (killed mid-build)."""
    for entry in root.glob(".build-*"):
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def _debootstrap(tree: Path, packages: tuple[str, ...], debs: Path) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    argv = [
        *PRIVATE_MOUNTS,
        "debootstrap",
        "--variant=minbase",
        f"--cache-dir={debs}",
        "--include=" + ",".join(packages),
        recipe.SUITE,
        str(tree),
        recipe.mirror(),
    ]
    try:
        run(argv, timeout=1500)
    except ToolError as exc:
        raise LabError(f"image build failed in debootstrap: {_reason(tree, exc)}") from exc


def _reason(tree: Path, exc: ToolError) -> str:
    """debootstrap's own last error line (its log), else the tool's output tail."""
    for line in reversed(exc.output.strip().splitlines()):
        if line.startswith("E:"):
            return line[2:].strip()
    log = tree / "debootstrap" / "debootstrap.log"
    if log.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        if tail:
            return tail[0]
    return str(exc)


def _configure(tree: Path) -> None:
    guest = recipe.GUEST_DIR
    ident = tree / "usr/local/sbin/podlab-identity"
    shutil.copyfile(guest / "podlab-identity", ident)
    ident.chmod(0o755)
    shutil.copyfile(
        guest / "podlab-identity.service", tree / "etc/systemd/system/podlab-identity.service"
    )
    sshd_d = tree / "etc/ssh/sshd_config.d"
    sshd_d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(guest / "sshd-podlab.conf", sshd_d / "podlab.conf")
    # sorts before systemd's 99-default.link: the first matching .link file wins
    shutil.copyfile(guest / "99-podlab-keep-mac.link", tree / "etc/systemd/network/80-podlab.link")
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tree / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    (tree / "etc/hostname").unlink(missing_ok=True)
    (tree / "etc/machine-id").write_text("")
    (tree / "etc/modules-load.d/podlab.conf").write_text("qemu_fw_cfg\n")
    chroot = ["chroot", str(tree), "systemctl"]
    run([*chroot, "enable", "systemd-networkd.service", "podlab-identity.service"], timeout=60)
    run([*chroot, "disable", *DISABLED], timeout=60, check=False)
    run([*chroot, "mask", *MASKED], timeout=60)


# Runs in a private mount namespace: $1 the tree, $2 the venv, $3 pip's wheel, $4
# where pip goes, then the pins. The chroot's own Python builds the venv and
# compiles it (hash-checked bytecode: valid whatever mtimes the disk keeps).
_VENV_SCRIPT = """set -eu
t=$1 venv=$2 pipwhl=$3 pipdir=$4; shift 4
for d in proc sys dev; do mount --bind /$d "$t/$d"; done
inside() { chroot "$t" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PIP_CONFIG_FILE=/dev/null \
  PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
inside python3 -m venv --without-pip "$venv"
inside python3 -m zipfile -e "/tmp/podlab-wheels/$pipwhl" "$pipdir"
inside "$venv/bin/python" "$pipdir/pip" install -q --no-index --root-user-action=ignore \
  --find-links /tmp/podlab-wheels "$@"
inside "$venv/bin/python" -m compileall -q -f --invalidation-mode checked-hash \
  "$venv/lib" "$pipdir"
"""


def _venv(tree: Path, pins: tuple[str, ...]) -> None:
    """The agent's dependencies and pip, installed and compiled in the image."""
    wheels = tree / "tmp/podlab-wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "-q"]
    try:
        run([*argv, "--no-deps", "-w", str(wheels), *pins], timeout=900)
    except ToolError as exc:
        tail = (exc.output.strip().splitlines() or [str(exc)])[-1]
        raise LabError(f"image build failed building the agent's wheels: {tail}") from exc
    pips = sorted(wheels.glob("pip-*.whl"))
    if len(pips) != 1:
        raise LabError(f"image build: expected one pip wheel among {pins}, found {pips}")
    deps = [p for p in pins if not p.startswith("pip==")]
    pip_dir = f"{recipe.PIP_DIR}/{pips[0].stem}"
    try:
        run(
            [*PRIVATE_MOUNTS, "sh", "-c", _VENV_SCRIPT, "sh", str(tree), recipe.VENV,
             pips[0].name, pip_dir, *deps],
            timeout=900,
        )  # fmt: skip
    except ToolError as exc:
        tail = (exc.output.strip().splitlines() or [str(exc)])[-1]
        raise LabError(f"image build failed installing the agent's venv: {tail}") from exc
    shutil.rmtree(wheels)
    marker = tree / recipe.VENV.lstrip("/") / wheel.REQUIREMENTS_MARKER
    marker.write_text(wheel.requirements_line(wheel.pinned_requirements()))


def _kernel_release(work: Path) -> str:
    return (work / "kernel_release").read_text().strip()


def _initrd(tree: Path, work: Path) -> None:
    releases = sorted(p.name for p in (tree / "lib/modules").iterdir())
    if len(releases) != 1:
        raise LabError(f"image build: expected one kernel in the image, found {releases}")
    release = releases[0]
    conf = tree / "etc/initramfs-podlab"
    shutil.copytree(tree / "etc/initramfs-tools", conf, dirs_exist_ok=True)
    text = (conf / "initramfs.conf").read_text()
    lines = [("MODULES=list" if ln.startswith("MODULES=") else ln) for ln in text.splitlines()]
    (conf / "initramfs.conf").write_text("\n".join(lines) + "\n")
    (conf / "modules").write_text("".join(f"{m}\n" for m in INITRD_MODULES))
    script = (
        'set -e; for d in proc sys dev; do mount --bind /$d "$1/$d"; done; '
        'chroot "$1" mkinitramfs -d /etc/initramfs-podlab -o /boot/initrd.podlab "$2"'
    )
    run([*PRIVATE_MOUNTS, "sh", "-c", script, "sh", str(tree), release], timeout=600)
    shutil.move(tree / "boot/initrd.podlab", work / "initrd.img")
    shutil.copyfile(tree / f"boot/vmlinuz-{release}", work / "vmlinuz")
    for old in (tree / "boot").glob("initrd.img-*"):
        old.unlink()  # the distribution's big initrd: never booted, 36 MB less disk
    (work / "kernel_release").write_text(release + "\n")


def _disk(tree: Path, work: Path) -> None:
    raw = work / "base.raw"
    run(
        ["mkfs.ext4", "-q", "-F", "-L", "podlab-root", "-d", str(tree), str(raw), DISK_SIZE],
        timeout=600,
    )
    shutil.rmtree(tree)
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "base.qcow2")], timeout=600)
    raw.unlink()
