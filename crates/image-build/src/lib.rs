//! `image-build`: turns a profile, a pinned Debian kernel and Cairn's own
//! static binaries into every boot medium Cairn ships.
//!
//! # What comes out
//!
//! `cairn-image build --output DIR` writes:
//!
//! | artifact | what it is for |
//! |---|---|
//! | `cairn.raw` | GPT UEFI disk: USB sticks, bare metal, `dd` |
//! | `cairn.qcow2` | KVM/libvirt/OpenStack template |
//! | `cairn.vmdk` | streamOptimized VMDK (vSphere import) |
//! | `cairn.ova` | OVF template: EFI, pvscsi disk, vmxnet3 NIC |
//! | `pxe/{vmlinuz,initramfs.img,boot.ipxe}` | network boot from any TFTP/HTTP root |
//! | `SHA256SUMS` | `sha256sum -c` over all of the above |
//!
//! and `cairn-image baseline --output DIR` writes `baseline.raw`, the
//! benchmark's reference: the same firmware path, boot loader and kernel,
//! booting a busybox `/init` that powers off immediately.
//!
//! `cairn-image oci from-dir|from-debs … --ref NAME:TAG --out LAYOUT` builds
//! one-layer OCI images for tests and the catalog ([`oci_image`]): a
//! directory, or Debian packages with the dependency closure apt resolves
//! for an empty system, fetched and unpacked by the same [`deb`] code as
//! the kernel. `cairn-image oci archive LAYOUT FILE` packs a layout as an
//! `oci-archive` tar. The format itself lives in the `oci` crate; see
//! `docs/oci-images.md`.
//!
//! # The pipeline
//!
//! Cairn is a kernel plus an initramfs; every medium carries the same two
//! files. The build ([`build::build`]) runs these steps in order:
//!
//! 1. **Profile** ([`profile`]): TOML from `configs/profiles/`, parsed into
//!    newtypes with unknown keys rejected. It pins the kernel package and
//!    version, the command line, the module sets, partition sizes and the
//!    OVA's hardware.
//! 2. **Timestamp** ([`reproducible`]): `SOURCE_DATE_EPOCH`, else the last
//!    git commit time, else a constant. All times and all "random" ids
//!    (GUIDs, volume ids, the VMDK CID) derive from it and the version.
//! 3. **Kernel** ([`deb`]): `apt-get download pkg=ver` into a cache,
//!    checked against the SHA256 `apt-cache show` reports, unpacked with
//!    `dpkg-deb -x`.
//! 4. **Binaries** ([`binaries`]): `cargo build --release` of `init` and
//!    `nodeagent` with `+crt-static`, or prebuilt ones from `--binaries`;
//!    either way each must be an x86_64 ELF with no interpreter and no
//!    `DT_NEEDED`, because the initramfs has no loader.
//! 5. **Modules** ([`modules`]): the package has no `modules.dep` (depmod
//!    runs at install time), so the builder reads each wanted module's
//!    `.modinfo`, follows `depends=` to a closure, decompresses `.ko.xz`,
//!    and writes `modules.dep`/`.alias`/`.softdep`/`.order` for exactly the
//!    shipped set. Requested names built into vmlinuz are reported; a name
//!    that is neither is an error naming it.
//! 6. **Initramfs** ([`initramfs`]): an in-memory sorted tree encoded as
//!    newc cpio (root-owned, epoch mtimes, sequential inodes,
//!    `/dev/console` as char 5:1), optionally gzip.
//! 7. **ESP** ([`esp`]): FAT32 via `fatfs` with systemd-boot, `loader.conf`
//!    (`timeout 0`, never `default`) and one BLS entry
//!    `cairn-<version>.conf`; with `--bake-image`, the checked
//!    oci-archives ([`bake`]) under `cairn/<version>/images/`, the ESP
//!    grown past the profile's size when they need it.
//! 8. **STATE** ([`state`]): an empty ext4 made by `mkfs.ext4` on a plain
//!    file with pinned UUID, hash seed and fake time.
//! 9. **Disk** ([`disk`]): GPT (protective MBR + both tables) with the two
//!    partitions at 1 MiB-aligned offsets; the file systems are copied in
//!    sparsely. No root, no loop devices.
//! 10. **Conversions** ([`convert`], [`ova`]): `qemu-img` to qcow2 and
//!     streamOptimized VMDK (its random CID replaced), then the OVA tar.
//! 11. **PXE** ([`pxe`]) and **checksums** ([`checksums`]).
//!
//! The decision logic (layout arithmetic, module closure, index files,
//! cpio encoding, BLS/OVF/iPXE text, manifests) is pure and unit-tested
//! in memory; [`build`] is the thin shell that does the I/O and shows
//! progress ([`progress`]). External programs are reached only through
//! [`tools`], so a missing one is reported with the Debian package that
//! provides it.
//!
//! # Reproducibility
//!
//! Same profile, same pinned packages, same binaries, same epoch: the
//! initramfs, ESP, STATE, `cairn.raw`, qcow2, VMDK, OVA and PXE files are
//! byte-identical. The inputs the builder does not pin are the host's
//! systemd-boot EFI binary and the host's qemu-img and mke2fs versions;
//! see `docs/image-build.md`.

#![forbid(unsafe_code)]

pub mod bake;
pub mod binaries;
pub mod build;
pub mod checksums;
pub mod convert;
pub mod deb;
pub mod disk;
pub mod esp;
pub mod fat_dots;
pub mod initramfs;
pub mod modules;
pub mod oci_image;
pub mod ova;
pub mod profile;
pub mod progress;
pub mod pxe;
pub mod reproducible;
pub mod state;
pub mod tools;
