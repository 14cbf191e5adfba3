//! Kernel module loading: hardware detection by modalias, as udev and
//! modprobe do it together, without either.
//!
//! The image builder ships decompressed modules plus `modules.dep`,
//! `modules.alias`, `modules.softdep` and `modules.builtin` for exactly the
//! modules it ships. [`ModuleIndex`] parses those files once; [`ModuleIndex::plan`]
//! is the pure core: given the modules wanted and the ones already in the
//! kernel, it returns the load order (soft pre-dependencies, then hard
//! dependencies depth-first, then the module). [`Loader`] is the shell: it
//! reads device modaliases from sysfs, asks the index which modules claim
//! them, and loads them with `finit_module`, round after round, because
//! loading a bus driver (virtio_pci, xhci) makes new devices appear.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::log::Log;
use crate::sys::Sys;

/// A module name with `-` folded to `_`, as the kernel compares them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModName(String);

impl ModName {
    pub fn new(name: &str) -> Self {
        ModName(name.trim().replace('-', "_"))
    }

    /// The module name of a `modules.dep` path: `kernel/fs/ext4/ext4.ko` -> `ext4`.
    fn from_path(path: &str) -> Option<Self> {
        let file = path.rsplit('/').next()?;
        let stem = file
            .strip_suffix(".ko")
            .or_else(|| file.strip_suffix(".ko.xz"))
            .or_else(|| file.strip_suffix(".ko.zst"))?;
        (!stem.is_empty()).then(|| ModName::new(stem))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ModName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A line of a module index file that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file} line {line}: {reason}")]
pub struct IndexParseError {
    pub file: &'static str,
    pub line: usize,
    pub reason: &'static str,
}

/// What the image's module index files say.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    paths: HashMap<ModName, String>,
    deps: HashMap<ModName, Vec<ModName>>,
    softdeps_pre: HashMap<ModName, Vec<String>>,
    builtin: HashSet<ModName>,
    exact_aliases: HashMap<String, Vec<ModName>>,
    glob_aliases: Vec<(String, ModName)>,
}

impl ModuleIndex {
    /// Parses the four index files' contents. `softdep` may be empty.
    pub fn parse(
        dep: &str,
        alias: &str,
        softdep: &str,
        builtin: &str,
    ) -> Result<Self, IndexParseError> {
        let mut index = ModuleIndex::default();
        for (n, line) in content_lines(dep) {
            let err = |reason| IndexParseError {
                file: "modules.dep",
                line: n,
                reason,
            };
            let (module, deps) = line.split_once(':').ok_or(err("missing ':'"))?;
            let name = ModName::from_path(module.trim()).ok_or(err("not a .ko path"))?;
            let deps = deps
                .split_whitespace()
                .map(|d| ModName::from_path(d).ok_or(err("dependency is not a .ko path")))
                .collect::<Result<Vec<_>, _>>()?;
            index.paths.insert(name.clone(), module.trim().to_owned());
            index.deps.insert(name, deps);
        }
        for (n, line) in content_lines(alias) {
            let err = |reason| IndexParseError {
                file: "modules.alias",
                line: n,
                reason,
            };
            let mut words = line.split_whitespace();
            if words.next() != Some("alias") {
                return Err(err("expected 'alias'"));
            }
            let pattern = words.next().ok_or(err("missing pattern"))?;
            let module = ModName::new(words.next().ok_or(err("missing module"))?);
            if words.next().is_some() {
                return Err(err("trailing words"));
            }
            if pattern.contains(['*', '?', '[']) {
                index.glob_aliases.push((pattern.to_owned(), module));
            } else {
                index
                    .exact_aliases
                    .entry(pattern.to_owned())
                    .or_default()
                    .push(module);
            }
        }
        for (n, line) in content_lines(softdep) {
            let err = |reason| IndexParseError {
                file: "modules.softdep",
                line: n,
                reason,
            };
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                return Err(err("expected 'softdep'"));
            }
            let module = ModName::new(words.next().ok_or(err("missing module"))?);
            let mut pre = Vec::new();
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    name if in_pre => pre.push(name.to_owned()),
                    _ => {}
                }
            }
            index.softdeps_pre.entry(module).or_default().extend(pre);
        }
        for (_, line) in content_lines(builtin) {
            if let Some(name) = ModName::from_path(line) {
                index.builtin.insert(name);
            }
        }
        Ok(index)
    }

    /// Path of a module relative to the modules directory.
    pub fn path(&self, module: &ModName) -> Option<&str> {
        self.paths.get(module).map(String::as_str)
    }

    pub fn is_builtin(&self, module: &ModName) -> bool {
        self.builtin.contains(module)
    }

    /// The modules whose aliases match a device's modalias.
    pub fn modules_for_modalias(&self, modalias: &str) -> BTreeSet<ModName> {
        let mut out: BTreeSet<ModName> = self
            .exact_aliases
            .get(modalias)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for (pattern, module) in &self.glob_aliases {
            if glob_match(pattern.as_bytes(), modalias.as_bytes()) {
                out.insert(module.clone());
            }
        }
        out
    }

    /// A name as the fixed list or a softdep gives it: a module, or an alias.
    pub fn resolve(&self, name: &str) -> Vec<ModName> {
        let as_module = ModName::new(name);
        if self.paths.contains_key(&as_module) || self.builtin.contains(&as_module) {
            return vec![as_module];
        }
        self.modules_for_modalias(name).into_iter().collect()
    }

    /// Load order for `wanted`: every module after its soft pre-dependencies
    /// and hard dependencies; modules built in, already loaded or unknown
    /// are left out (unknown ones are returned separately).
    pub fn plan(&self, wanted: &[ModName], loaded: &HashSet<ModName>) -> LoadPlan {
        let mut plan = LoadPlan::default();
        let mut seen = HashSet::new();
        for m in wanted {
            self.visit(m, loaded, &mut seen, &mut plan);
        }
        plan
    }

    fn visit(
        &self,
        module: &ModName,
        loaded: &HashSet<ModName>,
        seen: &mut HashSet<ModName>,
        plan: &mut LoadPlan,
    ) {
        if !seen.insert(module.clone()) || loaded.contains(module) || self.is_builtin(module) {
            return;
        }
        let Some(deps) = self.deps.get(module) else {
            plan.unknown.push(module.clone());
            return;
        };
        for soft in self.softdeps_pre.get(module).into_iter().flatten() {
            for m in self.resolve(soft) {
                self.visit(&m, loaded, seen, plan);
            }
        }
        for dep in deps {
            self.visit(dep, loaded, seen, plan);
        }
        plan.order.push(module.clone());
    }
}

/// The result of [`ModuleIndex::plan`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadPlan {
    pub order: Vec<ModName>,
    /// Wanted modules the image does not ship.
    pub unknown: Vec<ModName>,
}

fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// fnmatch(3) without flags: `*`, `?` and `[...]` (with ranges and `!`/`^`),
/// which is what modules.alias patterns use.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    backtrack = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        // An unterminated class matches a literal '['.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match backtrack {
            Some((bp, bt)) => {
                p = bp;
                t = bt + 1;
                backtrack = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against a `[...]` class at the start of `pattern`.
/// Returns whether it matched and the class's length, or None when the
/// class is not terminated.
fn match_class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

/// Loads modules into the running kernel and remembers what it tried.
#[derive(Debug)]
pub struct Loader {
    index: ModuleIndex,
    root: PathBuf,
    loaded: HashSet<ModName>,
    /// Modules that failed once are not retried every round.
    failed: HashSet<ModName>,
}

/// Why the module index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoaderInitError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing the module index under {root}")]
    Parse {
        root: PathBuf,
        #[source]
        source: IndexParseError,
    },
}

impl Loader {
    /// Reads the index under `root` (`/lib/modules/<release>`) and the list
    /// of modules already in the kernel from `/proc/modules`.
    pub fn open(sys: &mut dyn Sys, root: &Path) -> Result<Self, LoaderInitError> {
        let mut read = |name: &str, required: bool| -> Result<String, LoaderInitError> {
            let path = root.join(name);
            match sys.read(&path) {
                Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) if !required && e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
                Err(source) => Err(LoaderInitError::Read { path, source }),
            }
        };
        let dep = read("modules.dep", true)?;
        let alias = read("modules.alias", true)?;
        let softdep = read("modules.softdep", false)?;
        let builtin = read("modules.builtin", false)?;
        let index = ModuleIndex::parse(&dep, &alias, &softdep, &builtin).map_err(|source| {
            LoaderInitError::Parse {
                root: root.to_path_buf(),
                source,
            }
        })?;
        let loaded = sys
            .read(Path::new("/proc/modules"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .filter_map(|l| l.split_whitespace().next().map(ModName::new))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Loader {
            index,
            root: root.to_path_buf(),
            loaded,
            failed: HashSet::new(),
        })
    }

    pub fn index(&self) -> &ModuleIndex {
        &self.index
    }

    /// Loads `wanted` (names or aliases) with their dependencies. Returns how
    /// many modules were newly loaded.
    pub fn load(&mut self, sys: &mut dyn Sys, log: &Log, wanted: &[String]) -> usize {
        let wanted: Vec<ModName> = wanted
            .iter()
            .flat_map(|w| {
                let found = self.index.resolve(w);
                if found.is_empty() {
                    log.warn(format_args!("module {w} is not in the image"));
                }
                found
            })
            .collect();
        let mut skip = self.loaded.clone();
        skip.extend(self.failed.iter().cloned());
        let plan = self.index.plan(&wanted, &skip);
        for m in &plan.unknown {
            log.warn(format_args!(
                "module {m} is named by the index but not shipped"
            ));
            self.failed.insert(m.clone());
        }
        let mut count = 0;
        for m in plan.order {
            let Some(rel) = self.index.path(&m) else {
                continue;
            };
            let path = self.root.join(rel);
            match sys.load_module(&path) {
                Ok(()) => {
                    log.debug(format_args!("loaded module {m}"));
                    count += 1;
                    self.loaded.insert(m);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.loaded.insert(m);
                }
                Err(e) => {
                    // ENODEV and friends: the driver found nothing to drive.
                    log.debug(format_args!("module {m} did not load: {e}"));
                    self.failed.insert(m);
                }
            }
        }
        count
    }

    /// One round of hardware detection: loads the modules claiming the
    /// modaliases of the devices present now. Returns how many loaded.
    pub fn load_for_hardware(&mut self, sys: &mut dyn Sys, log: &Log, sys_root: &Path) -> usize {
        let mut wanted = BTreeSet::new();
        for modalias in device_modaliases(sys, sys_root) {
            wanted.extend(self.index.modules_for_modalias(&modalias));
        }
        let wanted: Vec<String> = wanted
            .into_iter()
            .filter(|m| !self.loaded.contains(m) && !self.failed.contains(m))
            .map(|m| m.0)
            .collect();
        if wanted.is_empty() {
            return 0;
        }
        self.load(sys, log, &wanted)
    }
}

/// Every device's modalias, read from `/sys/bus/*/devices/*/modalias`.
pub fn device_modaliases(sys: &mut dyn Sys, sys_root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bus_dir = sys_root.join("bus");
    for bus in sys.list_dir(&bus_dir).unwrap_or_default() {
        let devices = bus_dir.join(&bus).join("devices");
        for dev in sys.list_dir(&devices).unwrap_or_default() {
            if let Ok(bytes) = sys.read(&devices.join(&dev).join("modalias")) {
                let alias = String::from_utf8_lossy(&bytes).trim().to_owned();
                if !alias.is_empty() {
                    out.insert(alias);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;
    use proptest::prelude::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias crypto-crc32c crc32c_generic
alias fs-ext4 ext4
";
    const SOFTDEP: &str = "softdep ext4 pre: crc32c\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(DEP, ALIAS, SOFTDEP, "kernel/drivers/block/loop.ko\n").unwrap()
    }

    #[test]
    fn dependencies_load_before_the_module_that_needs_them() {
        let plan = index().plan(&[ModName::new("virtio_net")], &HashSet::new());
        let order: Vec<&str> = plan.order.iter().map(ModName::as_str).collect();
        assert_eq!(order, ["failover", "net_failover", "virtio_net"]);
    }

    #[test]
    fn soft_pre_dependencies_resolve_through_aliases_and_load_first() {
        let idx = ModuleIndex::parse(
            DEP,
            &format!("{ALIAS}alias crc32c crc32c_generic\n"),
            SOFTDEP,
            "",
        )
        .unwrap();
        let plan = idx.plan(&[ModName::new("ext4")], &HashSet::new());
        let order: Vec<&str> = plan.order.iter().map(ModName::as_str).collect();
        assert_eq!(order, ["crc32c_generic", "mbcache", "jbd2", "ext4"]);
    }

    #[test]
    fn loaded_and_builtin_modules_are_not_loaded_again() {
        let loaded: HashSet<_> = [ModName::new("virtio")].into();
        let plan = index().plan(&[ModName::new("virtio_pci"), ModName::new("loop")], &loaded);
        let order: Vec<&str> = plan.order.iter().map(ModName::as_str).collect();
        assert_eq!(
            order,
            ["virtio_pci_modern_dev", "virtio_ring", "virtio_pci"]
        );
        assert!(plan.unknown.is_empty());
    }

    #[test]
    fn a_pci_modalias_finds_its_driver() {
        let found =
            index().modules_for_modalias("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00");
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [ModName::new("virtio_pci")]
        );
        assert!(
            index()
                .modules_for_modalias("pci:v00008086d00001234sv0sd0bc0sc0i0")
                .is_empty()
        );
    }

    #[test]
    fn dashes_and_underscores_name_the_same_module() {
        assert_eq!(ModName::new("usb-storage"), ModName::new("usb_storage"));
    }

    #[test]
    fn a_malformed_index_line_is_named() {
        let err = ModuleIndex::parse("kernel/a.ko kernel/b.ko\n", "", "", "").unwrap_err();
        assert_eq!(
            err,
            IndexParseError {
                file: "modules.dep",
                line: 1,
                reason: "missing ':'"
            }
        );
        let err = ModuleIndex::parse("", "alias onlypattern\n", "", "").unwrap_err();
        assert_eq!(err.file, "modules.alias");
    }

    #[test]
    fn glob_supports_star_question_and_classes() {
        assert!(glob_match(
            b"usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            b"usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"
        ));
        assert!(glob_match(b"acpi*:PNP0C0C:*", b"acpi:PNP0C0C:"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[!a-c]x", b"bx"));
        assert!(glob_match(b"[]]", b"]"));
        assert!(!glob_match(b"abc", b"abcd"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn hardware_rounds_load_drivers_for_present_devices_only() {
        let mut sys = FakeSys::new();
        let root = "/lib/modules/6.1.0";
        sys.file(&format!("{root}/modules.dep"), DEP)
            .file(&format!("{root}/modules.alias"), ALIAS)
            .file("/proc/modules", "virtio 16384 0 - Live 0x0\n")
            .file(
                "/sys/bus/pci/devices/0000:00:03.0/modalias",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
            )
            .file(
                "/sys/bus/pci/devices/0000:00:1f.0/modalias",
                "pci:v00008086d00002918sv0sd0bc06sc01i00\n",
            );
        for line in DEP.lines() {
            let path = line.split(':').next().unwrap();
            sys.file(&format!("{root}/{path}"), b"\x7fELF");
        }
        let log = Log::stderr();
        let mut loader = Loader::open(&mut sys, Path::new(root)).unwrap();
        assert_eq!(
            loader.load_for_hardware(&mut sys, &log, Path::new("/sys")),
            3
        );
        assert_eq!(
            sys.loaded_modules(),
            ["virtio_pci_modern_dev", "virtio_ring", "virtio_pci"]
        );
        // The virtio bus now shows a network device: the next round finds its driver.
        sys.file(
            "/sys/bus/virtio/devices/virtio0/modalias",
            "virtio:d00000001v00001AF4\n",
        );
        assert_eq!(
            loader.load_for_hardware(&mut sys, &log, Path::new("/sys")),
            3
        );
        assert_eq!(
            loader.load_for_hardware(&mut sys, &log, Path::new("/sys")),
            0
        );
    }

    proptest! {
        #[test]
        fn index_parsers_never_panic(dep in ".{0,200}", alias in ".{0,200}", soft in ".{0,100}") {
            let _ = ModuleIndex::parse(&dep, &alias, &soft, &dep);
        }

        #[test]
        fn a_literal_pattern_matches_only_itself(s in "[a-zA-Z0-9:]{0,30}", t in "[a-zA-Z0-9:]{0,30}") {
            prop_assert_eq!(glob_match(s.as_bytes(), t.as_bytes()), s == t);
        }

        #[test]
        fn star_matches_any_suffix(prefix in "[a-z:]{0,10}", rest in "[ -~]{0,20}") {
            let pattern = format!("{prefix}*");
            let text = format!("{prefix}{rest}");
            prop_assert!(glob_match(pattern.as_bytes(), text.as_bytes()));
        }
    }
}
