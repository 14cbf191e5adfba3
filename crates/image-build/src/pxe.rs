//! The PXE set: kernel, initramfs and an iPXE script that boots them.
//!
//! The script names both files relative to itself, so the same three files
//! work from any TFTP root or HTTP directory: iPXE resolves a relative URI
//! against the URI the script was loaded from. `initrd=` on the kernel
//! line is what the EFI stub needs to find the initramfs iPXE registered.

use crate::profile::KernelCmdline;

pub const KERNEL_NAME: &str = "vmlinuz";
pub const INITRAMFS_NAME: &str = "initramfs.img";
pub const SCRIPT_NAME: &str = "boot.ipxe";

/// Renders `boot.ipxe`.
pub fn ipxe_script(cmdline: &KernelCmdline) -> String {
    format!(
        "#!ipxe\n\
         kernel {KERNEL_NAME} initrd={INITRAMFS_NAME} {cmdline}\n\
         initrd {INITRAMFS_NAME}\n\
         boot\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_boots_relative_names_with_the_profile_cmdline() {
        let cmdline =
            KernelCmdline::try_from("console=tty0 console=ttyS0,115200 panic=10".to_owned())
                .unwrap();
        assert_eq!(
            ipxe_script(&cmdline),
            "#!ipxe\nkernel vmlinuz initrd=initramfs.img console=tty0 console=ttyS0,115200 panic=10\n\
             initrd initramfs.img\nboot\n"
        );
    }
}
