//! The OCI runtime config (`bundle/config.json`) for a [`ContainerSpec`].
//!
//! A pure function so that what a container gets (namespaces, mounts,
//! masked paths, capabilities, limits) is decided in one place and tested
//! without root. The defaults follow runc's: the same standard mounts,
//! masked and read-only paths.

use crate::paths::cgroup_path;
use crate::spec::{ContainerSpec, NetworkMode};
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder, get_default_maskedpaths, get_default_mounts,
    get_default_readonly_paths,
};
use std::path::Path;

/// The cpu.max period; `cpu_millis` × 100 µs is the quota per period.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Open files per container process (containerd's default).
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// Why the OCI config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("could not build the OCI {part}")]
    Build {
        part: &'static str,
        #[source]
        source: OciSpecError,
    },
    #[error("resources.{field} {value} is too large")]
    TooLarge { field: &'static str, value: u64 },
}

fn build<T>(part: &'static str, r: Result<T, OciSpecError>) -> Result<T, BundleError> {
    r.map_err(|source| BundleError::Build { part, source })
}

fn signed(field: &'static str, value: u64) -> Result<i64, BundleError> {
    i64::try_from(value).map_err(|_| BundleError::TooLarge { field, value })
}

/// Builds the OCI runtime config for `spec`, with `rootfs` (the mounted
/// overlay) as its root.
///
/// # Errors
/// When a limit does not fit the OCI types or a builder refuses a value.
pub fn oci_spec(spec: &ContainerSpec, rootfs: &Path) -> Result<Spec, BundleError> {
    let caps: std::collections::HashSet<_> = spec.capabilities.iter().copied().collect();
    let capabilities = build(
        "capabilities",
        LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .inheritable(std::collections::HashSet::new())
            .ambient(std::collections::HashSet::new())
            .build(),
    )?;
    let user = build(
        "user",
        UserBuilder::default()
            .uid(spec.process.user.uid)
            .gid(spec.process.user.gid)
            .additional_gids(spec.process.user.additional_gids.clone())
            .build(),
    )?;
    let nofile = build(
        "rlimit",
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(NOFILE_LIMIT)
            .hard(NOFILE_LIMIT)
            .build(),
    )?;
    let process = build(
        "process",
        ProcessBuilder::default()
            .terminal(false)
            .args(spec.process.args.clone())
            .env(spec.process.env.clone())
            .cwd(spec.process.cwd.clone())
            .user(user)
            .no_new_privileges(spec.process.no_new_privileges)
            .capabilities(capabilities)
            .rlimits(vec![nofile])
            .build(),
    )?;

    let root = build(
        "root",
        RootBuilder::default()
            .path(rootfs)
            .readonly(spec.read_only_rootfs)
            .build(),
    )?;

    let mut mounts = get_default_mounts();
    for m in &spec.mounts {
        let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
        if m.read_only {
            options.push("ro".to_owned());
        }
        mounts.push(build(
            "mount",
            MountBuilder::default()
                .destination(m.destination.clone())
                .typ("bind")
                .source(m.source.clone())
                .options(options)
                .build(),
        )?);
    }

    let mut namespace_types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    match spec.network {
        NetworkMode::Host => {}
        NetworkMode::Private => namespace_types.push(LinuxNamespaceType::Network),
    }
    let namespaces = namespace_types
        .into_iter()
        .map(|typ| {
            build(
                "namespace",
                LinuxNamespaceBuilder::default().typ(typ).build(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(millis) = spec.resources.cpu_millis {
        let quota = millis
            .checked_mul(CPU_PERIOD_US / 1000)
            .ok_or(BundleError::TooLarge {
                field: "cpu_millis",
                value: millis,
            })?;
        resources = resources.cpu(build(
            "cpu",
            LinuxCpuBuilder::default()
                .quota(signed("cpu_millis", quota)?)
                .period(CPU_PERIOD_US)
                .build(),
        )?);
    }
    if let Some(bytes) = spec.resources.memory_bytes {
        let limit = signed("memory_bytes", bytes)?;
        // OCI's swap is memory + swap; equal to the limit means no swap
        // (memory.swap.max = 0), so the limit is a real limit. (libcgroups
        // skips writing a swap limit of 0, so the shim also writes
        // memory.swap.max itself.)
        resources = resources.memory(build(
            "memory",
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build(),
        )?);
    }
    if let Some(pids) = spec.resources.pids {
        resources = resources.pids(build(
            "pids",
            LinuxPidsBuilder::default()
                .limit(signed("pids", pids)?)
                .build(),
        )?);
    }
    let resources = build("resources", resources.build())?;

    let mut masked = get_default_maskedpaths();
    masked.push("/sys/devices/virtual/powercap".to_owned());
    let linux = build(
        "linux",
        LinuxBuilder::default()
            .namespaces(namespaces)
            .cgroups_path(cgroup_path(&spec.name))
            .resources(resources)
            .masked_paths(masked)
            .readonly_paths(get_default_readonly_paths())
            .build(),
    )?;

    let hostname = spec.hostname.clone().or_else(|| match spec.network {
        NetworkMode::Private => Some(spec.name.to_string()),
        NetworkMode::Host => None,
    });
    let builder = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .mounts(mounts)
        .linux(linux);
    let mut oci = build("spec", builder.build())?;
    // The builder starts from a default spec with a hostname of its own.
    oci.set_hostname(hostname);
    Ok(oci)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::sample;
    use oci_spec::runtime::Capability;
    use std::path::PathBuf;

    fn config() -> Spec {
        oci_spec(&sample(), Path::new("/var/lib/cairn/containers/web/rootfs")).expect("spec")
    }

    #[test]
    fn the_container_gets_its_own_namespaces_and_a_private_network_when_asked() {
        let spec = config();
        let linux = spec.linux().as_ref().expect("linux");
        let types: Vec<_> = linux
            .namespaces()
            .as_ref()
            .expect("namespaces")
            .iter()
            .map(|n| n.typ())
            .collect();
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Network,
        ] {
            assert!(types.contains(&t), "{t:?}");
        }
        assert!(!types.contains(&LinuxNamespaceType::User));
        assert_eq!(spec.hostname().as_deref(), Some("web"));

        let mut host = sample();
        host.network = NetworkMode::Host;
        host.hostname = None;
        let spec = oci_spec(&host, Path::new("/r")).expect("spec");
        let types: Vec<_> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .expect("namespaces")
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(!types.contains(&LinuxNamespaceType::Network));
        assert_eq!(spec.hostname(), &None);
    }

    #[test]
    fn standard_mounts_come_first_and_volumes_are_bind_mounted() {
        let spec = config();
        let mounts = spec.mounts().as_ref().expect("mounts");
        let dests: Vec<PathBuf> = mounts.iter().map(|m| m.destination().clone()).collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/data",
        ] {
            assert!(dests.contains(&PathBuf::from(d)), "{d}");
        }
        let sys = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .expect("/sys");
        assert!(
            sys.options()
                .as_ref()
                .expect("opts")
                .contains(&"ro".to_owned())
        );
        let data = mounts.last().expect("volume last");
        assert_eq!(data.destination(), Path::new("/data"));
        assert_eq!(data.typ().as_deref(), Some("bind"));
        assert_eq!(
            data.source().as_deref(),
            Some(Path::new("/var/lib/cairn/volumes/data"))
        );
        assert!(
            !data
                .options()
                .as_ref()
                .expect("opts")
                .contains(&"ro".to_owned())
        );

        let mut ro = sample();
        ro.mounts[0].read_only = true;
        ro.read_only_rootfs = true;
        let spec = oci_spec(&ro, Path::new("/r")).expect("spec");
        let data = spec
            .mounts()
            .as_ref()
            .and_then(|m| m.last().cloned())
            .expect("m");
        assert!(
            data.options()
                .as_ref()
                .expect("opts")
                .contains(&"ro".to_owned())
        );
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
    }

    #[test]
    fn limits_become_cgroup_v2_resources_under_cairn() {
        let spec = config();
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/cairn/web"))
        );
        let res = linux.resources().as_ref().expect("resources");
        let cpu = res.cpu().as_ref().expect("cpu");
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        let mem = res.memory().as_ref().expect("memory");
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), mem.limit(), "no swap on top of the limit");
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(100));

        let mut unlimited = sample();
        unlimited.resources = crate::spec::Resources::default();
        let spec = oci_spec(&unlimited, Path::new("/r")).expect("spec");
        let res = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .expect("resources");
        assert!(res.cpu().is_none() && res.memory().is_none() && res.pids().is_none());

        let mut huge = sample();
        huge.resources.memory_bytes = Some(u64::MAX);
        assert!(matches!(
            oci_spec(&huge, Path::new("/r")),
            Err(BundleError::TooLarge {
                field: "memory_bytes",
                ..
            })
        ));
    }

    #[test]
    fn the_process_gets_exactly_the_spec_capabilities_and_no_ambient_ones() {
        let spec = config();
        let process = spec.process().as_ref().expect("process");
        let caps = process.capabilities().as_ref().expect("caps");
        let want: std::collections::HashSet<Capability> =
            crate::DEFAULT_CAPABILITIES.iter().copied().collect();
        assert_eq!(caps.bounding().as_ref(), Some(&want));
        assert_eq!(caps.effective().as_ref(), Some(&want));
        assert_eq!(caps.permitted().as_ref(), Some(&want));
        assert!(caps.ambient().as_ref().is_none_or(|a| a.is_empty()));
        assert!(caps.inheritable().as_ref().is_none_or(|a| a.is_empty()));
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.args().as_ref().map(Vec::len), Some(3));
        assert_eq!(process.user().uid(), 0);
    }

    #[test]
    fn sensitive_proc_and_sys_paths_are_masked_or_read_only() {
        let spec = config();
        let linux = spec.linux().as_ref().expect("linux");
        let masked = linux.masked_paths().as_ref().expect("masked");
        for p in [
            "/proc/kcore",
            "/proc/keys",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ] {
            assert!(masked.contains(&p.to_owned()), "{p}");
        }
        let ro = linux.readonly_paths().as_ref().expect("readonly");
        for p in ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq"] {
            assert!(ro.contains(&p.to_owned()), "{p}");
        }
    }

    #[test]
    fn the_config_serializes_as_oci_json() {
        let json = serde_json::to_value(config()).expect("json");
        assert_eq!(json["root"]["path"], "/var/lib/cairn/containers/web/rootfs");
        assert_eq!(json["linux"]["cgroupsPath"], "/cairn/web");
        assert_eq!(json["process"]["noNewPrivileges"], true);
    }
}
