//! The OVA: a VMware template made of an OVF descriptor, a manifest and
//! the streamOptimized VMDK, in one tar archive.
//!
//! DSP0243 (OVF) fixes the archive order: descriptor first, the manifest
//! right after it (the other allowed place is the very end), then the
//! files in `References` order, so an importer can read the descriptor
//! and manifest before streaming the disk. The descriptor declares
//! EFI firmware (`vmw:Config firmware=efi`; BIOS boot would find no boot
//! loader), a VMware Paravirtual SCSI controller (`VirtualSCSI`) holding
//! the disk, and a VMXNET3 NIC, all drivers the initramfs ships. Tar
//! headers carry root ownership, mode 0644 and `SOURCE_DATE_EPOCH`, so the
//! archive is as reproducible as the VMDK inside it.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::reproducible::SourceDateEpoch;

/// What the descriptor describes.
#[derive(Debug, Clone)]
pub struct OvfParams<'a> {
    /// Name shown in the vSphere inventory.
    pub vm_name: &'a str,
    pub version: &'a str,
    /// File name of the VMDK inside the OVA.
    pub vmdk_name: &'a str,
    /// Size of the VMDK file in bytes.
    pub vmdk_file_bytes: u64,
    /// Virtual disk capacity in bytes (the raw image size).
    pub capacity_bytes: u64,
    pub cpus: u32,
    pub memory_mib: u32,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the OVF 1.0 descriptor.
pub fn ovf_descriptor(p: &OvfParams<'_>) -> String {
    let name = xml_escape(p.vm_name);
    let version = xml_escape(p.version);
    let vmdk = xml_escape(p.vmdk_name);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="cairn-image" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{vmdk}" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The node's primary network; Cairn configures it by DHCP unless its machine config says otherwise</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A Cairn node</Info>
    <Name>{name}</Name>
    <ProductSection>
      <Info>Product information</Info>
      <Product>Cairn</Product>
      <Version>{version}</Version>
      <FullVersion>{version}</FullVersion>
    </ProductSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="other4xLinux64Guest">
      <Info>Linux 6.x, 64-bit</Info>
      <Description>Cairn {version} (Linux 6.x, 64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{memory} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VMXNET3 ethernet adapter on "VM Network"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VMXNET3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>Video card</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="powerOpInfo.powerOffType" vmw:value="soft"/>
      <vmw:Config ovf:required="false" vmw:key="powerOpInfo.resetType" vmw:value="soft"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        vmdk_size = p.vmdk_file_bytes,
        capacity = p.capacity_bytes,
        cpus = p.cpus,
        memory = p.memory_mib,
    )
}

/// An OVF manifest: one `SHA256(name)= hex` line per file.
pub fn manifest(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(name, sha)| format!("SHA256({name})= {sha}\n"))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum OvaError {
    #[error("writing {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A file going into the OVA.
#[derive(Debug)]
pub enum OvaMember<'a> {
    Bytes { name: &'a str, data: &'a [u8] },
    File { name: &'a str, path: &'a Path },
}

fn header(name: &str, size: u64, epoch: SourceDateEpoch) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch.secs());
    h.set_username("root")?;
    h.set_groupname("root")?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Writes the members, in the order given, as a ustar archive at `out`.
pub fn write_ova(
    out: &Path,
    members: &[OvaMember<'_>],
    epoch: SourceDateEpoch,
) -> Result<(), OvaError> {
    let io = |source| OvaError::Io {
        path: out.display().to_string(),
        source,
    };
    let file = File::create(out).map_err(io)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for member in members {
        match member {
            OvaMember::Bytes { name, data } => {
                let h = header(name, data.len() as u64, epoch).map_err(io)?;
                builder.append(&h, *data).map_err(io)?;
            }
            OvaMember::File { name, path } => {
                let mut f = File::open(path).map_err(io)?;
                let len = f.metadata().map_err(io)?.len();
                let h = header(name, len, epoch).map_err(io)?;
                builder.append(&h, &mut f).map_err(io)?;
            }
        }
    }
    let mut inner = builder.into_inner().map_err(io)?;
    inner.flush().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> OvfParams<'static> {
        OvfParams {
            vm_name: "cairn-0.1.0",
            version: "0.1.0",
            vmdk_name: "cairn.vmdk",
            vmdk_file_bytes: 1234,
            capacity_bytes: 770 * 1024 * 1024,
            cpus: 2,
            memory_mib: 2048,
        }
    }

    #[test]
    fn the_descriptor_declares_efi_pvscsi_vmxnet3_and_sizes() {
        let ovf = ovf_descriptor(&params());
        assert!(ovf.contains(r#"vmw:key="firmware" vmw:value="efi""#));
        assert!(ovf.contains("<rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>"));
        assert!(ovf.contains("<rasd:ResourceSubType>VMXNET3</rasd:ResourceSubType>"));
        assert!(ovf.contains(r#"ovf:href="cairn.vmdk" ovf:id="file1" ovf:size="1234""#));
        assert!(ovf.contains(&format!(r#"ovf:capacity="{}""#, 770 * 1024 * 1024)));
        assert!(ovf.contains("<rasd:VirtualQuantity>2048</rasd:VirtualQuantity>"));
        // The disk hangs off the SCSI controller (InstanceID 3).
        let disk = ovf.find("ovf:/disk/vmdisk1").unwrap();
        assert!(ovf[disk..].contains("<rasd:Parent>3</rasd:Parent>"));
    }

    #[test]
    fn the_descriptor_is_well_formed_enough_to_balance_tags() {
        let ovf = ovf_descriptor(&params());
        for tag in [
            "Envelope",
            "References",
            "DiskSection",
            "VirtualSystem",
            "VirtualHardwareSection",
            "Item",
        ] {
            let open =
                ovf.matches(&format!("<{tag}>")).count() + ovf.matches(&format!("<{tag} ")).count();
            let close = ovf.matches(&format!("</{tag}>")).count();
            assert_eq!(open, close, "{tag}");
        }
    }

    #[test]
    fn names_are_xml_escaped() {
        let mut p = params();
        p.vm_name = "a<b&\"c";
        let ovf = ovf_descriptor(&p);
        assert!(ovf.contains("<Name>a&lt;b&amp;&quot;c</Name>"));
    }

    #[test]
    fn the_manifest_uses_ovf_sha256_lines() {
        assert_eq!(
            manifest(&[("cairn.ovf", "ab"), ("cairn.vmdk", "cd")]),
            "SHA256(cairn.ovf)= ab\nSHA256(cairn.vmdk)= cd\n"
        );
    }

    #[test]
    fn the_archive_keeps_member_order_and_fixed_headers() {
        let dir = tempfile::tempdir().unwrap();
        let vmdk = dir.path().join("cairn.vmdk");
        std::fs::write(&vmdk, vec![9u8; 3000]).unwrap();
        let epoch = SourceDateEpoch::new(1_700_000_000).unwrap();
        let write = |out: &Path| {
            write_ova(
                out,
                &[
                    OvaMember::Bytes {
                        name: "cairn.ovf",
                        data: b"<Envelope/>",
                    },
                    OvaMember::Bytes {
                        name: "cairn.mf",
                        data: b"SHA256(x)= y\n",
                    },
                    OvaMember::File {
                        name: "cairn.vmdk",
                        path: &vmdk,
                    },
                ],
                epoch,
            )
            .unwrap();
        };
        let a = dir.path().join("a.ova");
        let b = dir.path().join("b.ova");
        write(&a);
        write(&b);
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        let mut archive = tar::Archive::new(File::open(&a).unwrap());
        let entries: Vec<(String, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.size().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("cairn.ovf".to_owned(), 11, 1_700_000_000, 0),
                ("cairn.mf".to_owned(), 13, 1_700_000_000, 0),
                ("cairn.vmdk".to_owned(), 3000, 1_700_000_000, 0),
            ]
        );
    }
}
