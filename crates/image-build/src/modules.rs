//! Kernel modules: which ones ship, and the index files that describe them.
//!
//! Debian's kernel package carries every module (about 4000) but no
//! `modules.dep` or `modules.alias`: those are made by `depmod` when the
//! package is installed. The builder therefore does depmod's job for the
//! modules it ships, reading each module's `.modinfo` ELF section
//! (`depends=`, `alias=`, `softdep=`, `name=`):
//!
//! 1. [`ModuleTree`] indexes the package: module name -> file, plus the
//!    names in `modules.builtin` (compiled into vmlinuz; nothing to ship).
//! 2. [`ClosureResolver`] starts from the profile's module names and asks,
//!    one module at a time, for that module's modinfo
//!    ([`ClosureResolver::next_request`] / [`ClosureResolver::provide`]).
//!    It never does I/O, so the whole closure logic is tested in memory.
//!    A requested name that is neither a module nor built in is an error
//!    naming it; a `depends=` that cannot be satisfied is an error too.
//!    Soft dependencies that name a module are followed; ones that name
//!    an alias (e.g. `crypto-crc32c`) are met when a shipped module carries
//!    that alias, and reported otherwise so the profile can list the
//!    provider explicitly (the builder does not guess among providers).
//! 3. [`Closure`] renders `modules.dep`, `modules.alias`, `modules.softdep`
//!    and a filtered `modules.order`, all with uncompressed `.ko` paths.
//!
//! `modules.dep` follows depmod's convention: each line lists the
//! module's *transitive* dependencies, every module before the ones it
//! depends on, so loading the list from the end towards the start (then
//! the module itself) never hits an unresolved symbol.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use crate::profile::{ModuleName, ValueError};

/// A module file's compression, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleCompression {
    None,
    Xz,
    Zstd,
    Gzip,
}

impl ModuleCompression {
    fn from_path(path: &str) -> Option<Self> {
        if path.ends_with(".ko") {
            Some(Self::None)
        } else if path.ends_with(".ko.xz") {
            Some(Self::Xz)
        } else if path.ends_with(".ko.zst") {
            Some(Self::Zstd)
        } else if path.ends_with(".ko.gz") {
            Some(Self::Gzip)
        } else {
            None
        }
    }
}

/// `kernel/fs/ext4/ext4.ko.xz` -> `kernel/fs/ext4/ext4.ko`.
pub fn uncompressed_path(path: &str) -> &str {
    for suffix in [".xz", ".zst", ".gz"] {
        if let Some(stripped) = path.strip_suffix(suffix)
            && stripped.ends_with(".ko")
        {
            return stripped;
        }
    }
    path
}

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("{path}: xz data is corrupt")]
    Xz {
        path: String,
        #[source]
        source: lzma_rs::error::Error,
    },
    #[error("{path}: {kind:?} compressed modules are not supported (only none and xz)")]
    Unsupported {
        path: String,
        kind: ModuleCompression,
    },
}

/// Returns the plain ELF bytes of a module file as stored in the package.
pub fn decompress_module(path: &str, data: Vec<u8>) -> Result<Vec<u8>, DecompressError> {
    match ModuleCompression::from_path(path) {
        Some(ModuleCompression::None) | None => Ok(data),
        Some(ModuleCompression::Xz) => {
            let mut out = Vec::with_capacity(data.len() * 4);
            lzma_rs::xz_decompress(&mut data.as_slice(), &mut out).map_err(|source| {
                DecompressError::Xz {
                    path: path.to_owned(),
                    source,
                }
            })?;
            Ok(out)
        }
        Some(kind @ (ModuleCompression::Zstd | ModuleCompression::Gzip)) => {
            Err(DecompressError::Unsupported {
                path: path.to_owned(),
                kind,
            })
        }
    }
}

/// Why a `.modinfo` section could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModinfoError {
    #[error("not an ELF object")]
    NotElf,
    #[error("no .modinfo section")]
    NoSection,
    #[error("modinfo entry {0:?} has no '='")]
    NoEquals(String),
    #[error("modinfo entry is not UTF-8")]
    NotUtf8,
    #[error("modinfo names module {0:?}, which is not a valid module name")]
    BadName(String),
    #[error("modinfo depends on {0:?}, which is not a valid module name")]
    BadDepends(String),
}

/// The parts of a module's `.modinfo` the builder uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModInfo {
    /// `name=`; absent in very old modules, then the file name decides.
    pub name: Option<ModuleName>,
    /// `depends=`: modules whose symbols this one uses.
    pub depends: Vec<ModuleName>,
    /// `alias=`: modalias patterns this driver binds to.
    pub aliases: Vec<String>,
    /// `softdep=` values, verbatim (`pre: a b post: c`).
    pub softdeps: Vec<String>,
}

/// Splits a `.modinfo` section (`key=value\0key=value\0...`, with NUL
/// padding between entries) into pairs.
pub fn parse_modinfo_pairs(section: &[u8]) -> Result<Vec<(&str, &str)>, ModinfoError> {
    section
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let text = std::str::from_utf8(entry).map_err(|_| ModinfoError::NotUtf8)?;
            text.split_once('=')
                .ok_or_else(|| ModinfoError::NoEquals(text.to_owned()))
        })
        .collect()
}

impl ModInfo {
    /// Interprets a `.modinfo` section.
    pub fn parse(section: &[u8]) -> Result<Self, ModinfoError> {
        let mut info = ModInfo::default();
        for (key, value) in parse_modinfo_pairs(section)? {
            match key {
                "name" => {
                    info.name = Some(
                        ModuleName::new(value)
                            .map_err(|_| ModinfoError::BadName(value.to_owned()))?,
                    );
                }
                "depends" => {
                    for dep in value.split(',').filter(|d| !d.is_empty()) {
                        info.depends.push(
                            ModuleName::new(dep)
                                .map_err(|_| ModinfoError::BadDepends(dep.to_owned()))?,
                        );
                    }
                }
                "alias" => info.aliases.push(value.to_owned()),
                "softdep" => info.softdeps.push(value.to_owned()),
                _ => {}
            }
        }
        Ok(info)
    }

    /// Reads the `.modinfo` section out of a (decompressed) module.
    pub fn from_elf(ko: &[u8]) -> Result<Self, ModinfoError> {
        use object::read::elf::{FileHeader, SectionHeader};
        let header = object::elf::FileHeader64::<object::Endianness>::parse(ko)
            .map_err(|_| ModinfoError::NotElf)?;
        let endian = header.endian().map_err(|_| ModinfoError::NotElf)?;
        let sections = header
            .sections(endian, ko)
            .map_err(|_| ModinfoError::NotElf)?;
        let (_, section) = sections
            .section_by_name(endian, b".modinfo")
            .ok_or(ModinfoError::NoSection)?;
        let data = section.data(endian, ko).map_err(|_| ModinfoError::NotElf)?;
        Self::parse(data)
    }

    /// Module names a `softdep=` value mentions (both `pre:` and `post:`).
    pub fn softdep_targets(&self) -> Vec<&str> {
        self.softdeps
            .iter()
            .flat_map(|v| v.split_ascii_whitespace())
            .filter(|tok| !tok.ends_with(':'))
            .collect()
    }
}

/// Parses a list of module paths (`modules.order`, `modules.builtin`):
/// one relative path per line, blank lines and `#` comments ignored.
pub fn parse_path_list(text: &str) -> Result<Vec<&str>, PathListError> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(line, l)| {
            let ok = ModuleCompression::from_path(l).is_some()
                && !l.starts_with('/')
                && !l.split('/').any(|part| part == ".." || part.is_empty())
                && !l.contains(char::is_whitespace);
            if ok {
                Ok(l)
            } else {
                Err(PathListError { line })
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} is not a relative .ko path")]
pub struct PathListError {
    pub line: usize,
}

/// One line of `modules.dep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepLine {
    pub module: String,
    pub deps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexParseError {
    #[error("modules.dep line {0} has no ':'")]
    DepNoColon(usize),
    #[error("modules.alias line {0} is not `alias <pattern> <module>`")]
    AliasShape(usize),
    #[error("line {0} names an invalid module")]
    BadModule(usize),
}

/// Parses `modules.dep` (`path: dep dep ...` per line).
pub fn parse_modules_dep(text: &str) -> Result<Vec<DepLine>, IndexParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let (module, deps) = l
                .split_once(':')
                .ok_or(IndexParseError::DepNoColon(i + 1))?;
            let module = module.trim();
            if module.is_empty() || module.contains(char::is_whitespace) {
                return Err(IndexParseError::DepNoColon(i + 1));
            }
            Ok(DepLine {
                module: module.to_owned(),
                deps: deps.split_ascii_whitespace().map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// One line of `modules.alias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasLine {
    pub pattern: String,
    pub module: ModuleName,
}

/// Parses `modules.alias` (`alias <pattern> <module>` per line).
pub fn parse_modules_alias(text: &str) -> Result<Vec<AliasLine>, IndexParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let mut parts = l.split_ascii_whitespace();
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("alias"), Some(pattern), Some(module), None) => Ok(AliasLine {
                    pattern: pattern.to_owned(),
                    module: ModuleName::new(module)
                        .map_err(|_| IndexParseError::BadModule(i + 1))?,
                }),
                _ => Err(IndexParseError::AliasShape(i + 1)),
            }
        })
        .collect()
}

/// The modules a kernel package provides.
#[derive(Debug, Clone, Default)]
pub struct ModuleTree {
    /// Module name -> path relative to `/lib/modules/<kver>/`, as stored
    /// in the package (possibly `.ko.xz`).
    pub files: BTreeMap<ModuleName, String>,
    /// Names compiled into the kernel image.
    pub builtin: BTreeSet<ModuleName>,
    /// `modules.order` as shipped (uncompressed paths), for ordering output.
    pub order: Vec<String>,
}

impl ModuleTree {
    /// Builds the index from the relative paths of every module file plus
    /// the text of `modules.builtin` and `modules.order`.
    pub fn new<'a>(
        module_paths: impl IntoIterator<Item = &'a str>,
        builtin_text: &str,
        order_text: &str,
    ) -> Result<Self, ModuleTreeError> {
        let mut files = BTreeMap::new();
        for path in module_paths {
            let name = ModuleName::from_ko_path(path).map_err(ModuleTreeError::BadFileName)?;
            if let Some(previous) = files.insert(name.clone(), path.to_owned()) {
                return Err(ModuleTreeError::Duplicate {
                    name,
                    first: previous,
                    second: path.to_owned(),
                });
            }
        }
        let builtin = parse_path_list(builtin_text)
            .map_err(ModuleTreeError::Builtin)?
            .into_iter()
            .map(ModuleName::from_ko_path)
            .collect::<Result<_, _>>()
            .map_err(ModuleTreeError::BadFileName)?;
        let order = parse_path_list(order_text)
            .map_err(ModuleTreeError::Order)?
            .into_iter()
            .map(|p| uncompressed_path(p).to_owned())
            .collect();
        Ok(Self {
            files,
            builtin,
            order,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleTreeError {
    #[error("a module file name is not a valid module name")]
    BadFileName(#[source] ValueError),
    #[error("module {name} exists twice: {first} and {second}")]
    Duplicate {
        name: ModuleName,
        first: String,
        second: String,
    },
    #[error("modules.builtin is malformed")]
    Builtin(#[source] PathListError),
    #[error("modules.order is malformed")]
    Order(#[source] PathListError),
}

/// Why the requested module set cannot be shipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClosureError {
    #[error(
        "module {name} (named in {origin}) is neither a module file in the kernel package nor built into the kernel"
    )]
    Unknown { name: ModuleName, origin: String },
    #[error("module {module} depends on {dependency}, which the kernel package does not provide")]
    MissingDependency {
        module: ModuleName,
        dependency: ModuleName,
    },
    #[error("modinfo of {file} names the module {found}, not {expected}")]
    NameMismatch {
        file: String,
        expected: ModuleName,
        found: ModuleName,
    },
}

/// The resolver asks for one module's modinfo at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModinfoRequest {
    pub name: ModuleName,
    /// Path relative to the module directory, as stored in the package.
    pub path: String,
}

/// Computes the dependency closure of the requested modules without doing
/// I/O: the caller reads the files it is asked for.
#[derive(Debug)]
pub struct ClosureResolver<'t> {
    tree: &'t ModuleTree,
    queue: VecDeque<ModuleName>,
    queued: BTreeSet<ModuleName>,
    infos: BTreeMap<ModuleName, ModInfo>,
    builtin_requested: Vec<(ModuleName, String)>,
    softdeps_not_followed: Vec<(ModuleName, String)>,
    waiting: Option<ModinfoRequest>,
}

impl<'t> ClosureResolver<'t> {
    /// `requested`: module names with where each was named (for errors).
    pub fn new(
        tree: &'t ModuleTree,
        requested: &[(ModuleName, String)],
    ) -> Result<Self, ClosureError> {
        let mut r = Self {
            tree,
            queue: VecDeque::new(),
            queued: BTreeSet::new(),
            infos: BTreeMap::new(),
            builtin_requested: Vec::new(),
            softdeps_not_followed: Vec::new(),
            waiting: None,
        };
        for (name, origin) in requested {
            if tree.files.contains_key(name) {
                r.enqueue(name.clone());
            } else if tree.builtin.contains(name) {
                r.builtin_requested.push((name.clone(), origin.clone()));
            } else {
                return Err(ClosureError::Unknown {
                    name: name.clone(),
                    origin: origin.clone(),
                });
            }
        }
        Ok(r)
    }

    fn enqueue(&mut self, name: ModuleName) {
        if self.queued.insert(name.clone()) {
            self.queue.push_back(name);
        }
    }

    /// The next module whose modinfo is needed, or `None` when the closure
    /// is complete.
    pub fn next_request(&mut self) -> Option<ModinfoRequest> {
        if let Some(w) = &self.waiting {
            return Some(w.clone());
        }
        let name = self.queue.pop_front()?;
        let path = self.tree.files.get(&name)?.clone();
        let req = ModinfoRequest { name, path };
        self.waiting = Some(req.clone());
        Some(req)
    }

    /// Hands in the modinfo for the last request.
    pub fn provide(&mut self, info: ModInfo) -> Result<(), ClosureError> {
        let Some(req) = self.waiting.take() else {
            return Ok(());
        };
        if let Some(found) = &info.name
            && *found != req.name
        {
            return Err(ClosureError::NameMismatch {
                file: req.path,
                expected: req.name,
                found: found.clone(),
            });
        }
        for dep in &info.depends {
            if self.tree.files.contains_key(dep) {
                self.enqueue(dep.clone());
            } else if !self.tree.builtin.contains(dep) {
                return Err(ClosureError::MissingDependency {
                    module: req.name,
                    dependency: dep.clone(),
                });
            }
        }
        for target in info.softdep_targets() {
            match ModuleName::new(target) {
                Ok(t) if self.tree.files.contains_key(&t) => self.enqueue(t),
                Ok(t) if self.tree.builtin.contains(&t) => {}
                _ => self
                    .softdeps_not_followed
                    .push((req.name.clone(), target.to_owned())),
            }
        }
        self.infos.insert(req.name, info);
        Ok(())
    }

    /// The finished closure. Call after `next_request` returned `None`.
    pub fn finish(self) -> Closure {
        let modules: BTreeMap<ModuleName, ShippedModule> = self
            .infos
            .into_iter()
            .filter_map(|(name, info)| {
                let stored = self.tree.files.get(&name)?.clone();
                Some((
                    name,
                    ShippedModule {
                        stored_path: stored,
                        info,
                    },
                ))
            })
            .collect();
        // A soft dependency on an alias is met when some shipped module
        // carries that alias (crc32c_generic provides "crypto-crc32c").
        let provided: BTreeSet<&str> = modules
            .values()
            .flat_map(|m| m.info.aliases.iter().map(String::as_str))
            .collect();
        let softdeps_unmet = self
            .softdeps_not_followed
            .into_iter()
            .filter(|(_, target)| !provided.contains(target.as_str()))
            .collect();
        Closure {
            modules,
            builtin_requested: self.builtin_requested,
            softdeps_unmet,
            order: self.tree.order.clone(),
        }
    }
}

/// One module that goes into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedModule {
    /// Path as stored in the package (maybe `.ko.xz`).
    pub stored_path: String,
    pub info: ModInfo,
}

impl ShippedModule {
    /// Path inside `/lib/modules/<kver>/`, always an uncompressed `.ko`.
    pub fn path(&self) -> &str {
        uncompressed_path(&self.stored_path)
    }
}

/// The shipped module set and what was learnt resolving it.
#[derive(Debug, Clone)]
pub struct Closure {
    pub modules: BTreeMap<ModuleName, ShippedModule>,
    /// Requested names that are built into the kernel (nothing to ship).
    pub builtin_requested: Vec<(ModuleName, String)>,
    /// `(module, softdep target)` pairs whose target is neither a shipped
    /// module nor an alias of one: the module may miss a helper at run time.
    pub softdeps_unmet: Vec<(ModuleName, String)>,
    order: Vec<String>,
}

impl Closure {
    /// Shipped modules in `modules.order` order (then by path for any the
    /// order file does not list), the order depmod writes its indexes in.
    pub fn ordered(&self) -> Vec<(&ModuleName, &ShippedModule)> {
        let rank: BTreeMap<&str, usize> = self
            .order
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let mut all: Vec<_> = self.modules.iter().collect();
        all.sort_by_key(|(_, m)| {
            (
                rank.get(m.path()).copied().unwrap_or(usize::MAX),
                m.path().to_owned(),
            )
        });
        all
    }

    /// Every module `name` needs, transitively, in load order (dependencies
    /// first), excluding `name` itself. Built-in dependencies are omitted.
    pub fn load_order(&self, name: &ModuleName) -> Vec<ModuleName> {
        fn visit(
            c: &Closure,
            n: &ModuleName,
            seen: &mut BTreeSet<ModuleName>,
            out: &mut Vec<ModuleName>,
        ) {
            if !seen.insert(n.clone()) {
                return;
            }
            if let Some(m) = c.modules.get(n) {
                for d in &m.info.depends {
                    visit(c, d, seen, out);
                }
                out.push(n.clone());
            }
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        visit(self, name, &mut seen, &mut out);
        out.pop();
        out
    }

    /// `modules.dep`, depmod style: transitive dependencies, dependents first.
    pub fn modules_dep(&self) -> String {
        let mut out = String::new();
        for (name, module) in self.ordered() {
            out.push_str(module.path());
            out.push(':');
            for dep in self.load_order(name).iter().rev() {
                if let Some(d) = self.modules.get(dep) {
                    out.push(' ');
                    out.push_str(d.path());
                }
            }
            out.push('\n');
        }
        out
    }

    /// `modules.alias` for the shipped modules.
    pub fn modules_alias(&self) -> String {
        let mut out = String::from("# Aliases extracted from modules themselves.\n");
        for (name, module) in self.ordered() {
            for alias in &module.info.aliases {
                let _ = writeln!(out, "alias {alias} {name}");
            }
        }
        out
    }

    /// `modules.softdep` for the shipped modules.
    pub fn modules_softdep(&self) -> String {
        let mut out = String::from("# Soft dependencies extracted from modules themselves.\n");
        for (name, module) in self.ordered() {
            for soft in &module.info.softdeps {
                let _ = writeln!(out, "softdep {name} {soft}");
            }
        }
        out
    }

    /// `modules.order` restricted to the shipped modules.
    pub fn modules_order(&self) -> String {
        let mut out = String::new();
        for (_, module) in self.ordered() {
            out.push_str(module.path());
            out.push('\n');
        }
        out
    }
}

/// Runs a resolver to completion with a modinfo source (the I/O shell).
pub fn resolve<E>(
    tree: &ModuleTree,
    requested: &[(ModuleName, String)],
    mut read_modinfo: impl FnMut(&ModinfoRequest) -> Result<ModInfo, E>,
) -> Result<Closure, ResolveError<E>>
where
    E: std::error::Error + 'static,
{
    let mut resolver = ClosureResolver::new(tree, requested).map_err(ResolveError::Closure)?;
    while let Some(req) = resolver.next_request() {
        let info = read_modinfo(&req).map_err(ResolveError::Read)?;
        resolver.provide(info).map_err(ResolveError::Closure)?;
    }
    Ok(resolver.finish())
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError<E: std::error::Error + 'static> {
    #[error("resolving the module closure")]
    Closure(#[source] ClosureError),
    #[error("reading module information")]
    Read(#[source] E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> ModuleName {
        ModuleName::new(s).unwrap()
    }

    fn modinfo(name: &str, depends: &str, extra: &[&str]) -> Vec<u8> {
        let mut s = format!("license=GPL\0name={name}\0depends={depends}\0");
        for e in extra {
            s.push_str(e);
            s.push('\0');
        }
        s.push_str("\0\0\0");
        s.into_bytes()
    }

    /// ext4 -> jbd2, mbcache, crc16; jbd2 -> nothing; a module with a
    /// softdep on an alias and one on a module.
    fn tree() -> (ModuleTree, BTreeMap<String, Vec<u8>>) {
        let mut files = BTreeMap::new();
        files.insert(
            "kernel/fs/ext4/ext4.ko.xz".to_owned(),
            modinfo(
                "ext4",
                "mbcache,jbd2,crc16",
                &["softdep=pre: crc32c", "alias=fs-ext4"],
            ),
        );
        files.insert(
            "kernel/fs/jbd2/jbd2.ko.xz".to_owned(),
            modinfo("jbd2", "", &[]),
        );
        files.insert(
            "kernel/fs/mbcache.ko.xz".to_owned(),
            modinfo("mbcache", "", &[]),
        );
        files.insert(
            "kernel/lib/crc16.ko.xz".to_owned(),
            modinfo("crc16", "", &[]),
        );
        files.insert(
            "kernel/crypto/crc32c_generic.ko.xz".to_owned(),
            modinfo("crc32c_generic", "", &["alias=crc32c"]),
        );
        files.insert(
            "kernel/drivers/virtio/virtio_pci.ko.xz".to_owned(),
            modinfo(
                "virtio_pci",
                "virtio_pci_modern_dev",
                &[
                    "alias=pci:v00001AF4d*sv*sd*bc*sc*i*",
                    "softdep=pre: virtio_ring",
                ],
            ),
        );
        files.insert(
            "kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz".to_owned(),
            modinfo("virtio_pci_modern_dev", "", &[]),
        );
        files.insert(
            "kernel/drivers/virtio/virtio_ring.ko.xz".to_owned(),
            modinfo("virtio_ring", "", &[]),
        );
        files.insert(
            "kernel/drivers/char/hw_random/virtio-rng.ko.xz".to_owned(),
            modinfo("virtio_rng", "", &[]),
        );
        files.insert(
            "kernel/drivers/broken.ko.xz".to_owned(),
            modinfo("broken", "not_there", &[]),
        );
        let order = "kernel/lib/crc16.ko\nkernel/fs/mbcache.ko\nkernel/fs/jbd2/jbd2.ko\nkernel/fs/ext4/ext4.ko\n";
        let t = ModuleTree::new(
            files.keys().map(String::as_str),
            "kernel/fs/nls/nls_base.ko\n",
            order,
        )
        .unwrap();
        (t, files)
    }

    fn run(req: &[&str]) -> Result<Closure, ResolveError<ModinfoError>> {
        let (t, files) = tree();
        let requested: Vec<_> = req
            .iter()
            .map(|r| (n(r), "modules.sets.test".to_owned()))
            .collect();
        resolve(&t, &requested, |r| ModInfo::parse(&files[&r.path]))
    }

    #[test]
    fn the_closure_includes_every_transitive_dependency() {
        let c = run(&["ext4"]).unwrap();
        let names: Vec<_> = c.modules.keys().map(ModuleName::as_str).collect();
        assert_eq!(names, ["crc16", "ext4", "jbd2", "mbcache"]);
    }

    #[test]
    fn softdeps_on_aliases_are_reported_not_guessed() {
        let c = run(&["ext4"]).unwrap();
        assert_eq!(c.softdeps_unmet, [(n("ext4"), "crc32c".to_owned())]);
        assert!(!c.modules.contains_key(&n("crc32c_generic")));
    }

    #[test]
    fn a_softdep_alias_provided_by_a_shipped_module_is_met() {
        let c = run(&["ext4", "crc32c_generic"]).unwrap();
        assert!(c.softdeps_unmet.is_empty(), "{:?}", c.softdeps_unmet);
    }

    #[test]
    fn softdeps_naming_a_module_are_shipped() {
        let c = run(&["virtio_pci"]).unwrap();
        assert!(c.modules.contains_key(&n("virtio_ring")));
        assert!(c.modules.contains_key(&n("virtio_pci_modern_dev")));
    }

    #[test]
    fn a_name_that_is_neither_module_nor_builtin_is_an_error_naming_it() {
        let err = run(&["ext4", "nosuchmod"]).unwrap_err();
        let ResolveError::Closure(ClosureError::Unknown { name, origin }) = err else {
            panic!("unexpected {err:?}")
        };
        assert_eq!(
            (name.as_str(), origin.as_str()),
            ("nosuchmod", "modules.sets.test")
        );
    }

    #[test]
    fn builtin_modules_are_reported_and_not_shipped() {
        let c = run(&["nls_base", "jbd2"]).unwrap();
        assert_eq!(
            c.builtin_requested,
            [(n("nls_base"), "modules.sets.test".to_owned())]
        );
        assert_eq!(c.modules.len(), 1);
    }

    #[test]
    fn an_unsatisfiable_dependency_is_an_error() {
        assert!(matches!(
            run(&["broken"]),
            Err(ResolveError::Closure(
                ClosureError::MissingDependency { .. }
            ))
        ));
    }

    #[test]
    fn dashed_file_names_match_underscored_requests() {
        let c = run(&["virtio-rng"]).unwrap();
        assert_eq!(
            c.modules[&n("virtio_rng")].path(),
            "kernel/drivers/char/hw_random/virtio-rng.ko"
        );
    }

    #[test]
    fn modules_dep_lists_dependents_before_their_dependencies_without_xz() {
        let c = run(&["ext4", "virtio_pci"]).unwrap();
        let dep = c.modules_dep();
        let lines = parse_modules_dep(&dep).unwrap();
        // modules.order order first, then the rest by path.
        assert_eq!(lines[0].module, "kernel/lib/crc16.ko");
        let ext4 = lines
            .iter()
            .find(|l| l.module == "kernel/fs/ext4/ext4.ko")
            .unwrap();
        assert_eq!(
            ext4.deps,
            [
                "kernel/lib/crc16.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/mbcache.ko"
            ]
        );
        assert!(!dep.contains(".xz"));
    }

    #[test]
    fn every_dependency_precedes_in_load_order() {
        let c = run(&["ext4", "virtio_pci"]).unwrap();
        for (name, m) in &c.modules {
            let order = c.load_order(name);
            for d in &m.info.depends {
                assert!(order.contains(d), "{name} lacks {d}");
            }
        }
    }

    #[test]
    fn modules_alias_round_trips_through_its_parser() {
        let c = run(&["ext4", "virtio_pci", "crc32c_generic"]).unwrap();
        let aliases = parse_modules_alias(&c.modules_alias()).unwrap();
        assert!(aliases.contains(&AliasLine {
            pattern: "fs-ext4".into(),
            module: n("ext4")
        }));
        assert!(aliases.contains(&AliasLine {
            pattern: "crc32c".into(),
            module: n("crc32c_generic")
        }));
        assert_eq!(aliases.len(), 3);
    }

    #[test]
    fn modinfo_with_padding_and_missing_equals_is_handled() {
        assert_eq!(
            parse_modinfo_pairs(b"\0\0a=b\0\0c=d=e\0").unwrap(),
            [("a", "b"), ("c", "d=e")]
        );
        assert!(parse_modinfo_pairs(b"novalue\0").is_err());
    }

    #[test]
    fn xz_modules_are_decompressed() {
        // "hello" compressed by `xz -9 --check=crc32`; kept as bytes so the
        // test needs no xz binary.
        let xz: &[u8] = &[
            0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01, 0x69, 0x22, 0xde, 0x36, 0x02, 0x00,
            0x21, 0x01, 0x1c, 0x00, 0x00, 0x00, 0x10, 0xcf, 0x58, 0xcc, 0x01, 0x00, 0x04, 0x68,
            0x65, 0x6c, 0x6c, 0x6f, 0x00, 0x00, 0x00, 0x00, 0x86, 0xa6, 0x10, 0x36, 0x00, 0x01,
            0x19, 0x05, 0xbc, 0xe8, 0xec, 0xcb, 0x90, 0x42, 0x99, 0x0d, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x01, 0x59, 0x5a,
        ];
        assert_eq!(decompress_module("a.ko.xz", xz.to_vec()).unwrap(), b"hello");
        assert!(decompress_module("a.ko.xz", b"garbage".to_vec()).is_err());
        assert_eq!(decompress_module("a.ko", b"raw".to_vec()).unwrap(), b"raw");
    }

    proptest! {
        #[test]
        fn modinfo_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ModInfo::parse(&bytes);
        }

        #[test]
        fn modinfo_pairs_round_trip(pairs in proptest::collection::vec(("[a-z_]{1,10}", "[ -~]{0,20}"), 0..10)) {
            let mut section = Vec::new();
            for (k, v) in &pairs {
                section.extend_from_slice(format!("{k}={v}").as_bytes());
                section.push(0);
            }
            let parsed = parse_modinfo_pairs(&section).unwrap();
            let expected: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn modules_dep_parser_never_panics(text in "\\PC{0,300}") {
            let _ = parse_modules_dep(&text);
        }

        #[test]
        fn modules_dep_round_trips(lines in proptest::collection::vec(("[a-z/_]{1,20}\\.ko", proptest::collection::vec("[a-z/_]{1,20}\\.ko", 0..4)), 0..8)) {
            let text: String = lines.iter().map(|(m, d)| {
                let mut l = format!("{m}:");
                for x in d { l.push(' '); l.push_str(x); }
                l.push('\n');
                l
            }).collect();
            let parsed = parse_modules_dep(&text).unwrap();
            prop_assert_eq!(parsed.len(), lines.len());
            for (p, (m, d)) in parsed.iter().zip(&lines) {
                prop_assert_eq!(&p.module, m);
                prop_assert_eq!(&p.deps, d);
            }
        }

        #[test]
        fn modules_alias_parser_never_panics(text in "\\PC{0,300}") {
            let _ = parse_modules_alias(&text);
        }

        #[test]
        fn path_list_parser_accepts_only_relative_ko_paths(text in "[a-z/._ \n#-]{0,200}") {
            if let Ok(paths) = parse_path_list(&text) {
                for p in paths {
                    prop_assert!(!p.starts_with('/'));
                    prop_assert!(p.ends_with(".ko") || p.ends_with(".ko.xz") || p.ends_with(".ko.zst") || p.ends_with(".ko.gz"));
                    prop_assert!(!p.split('/').any(|c| c == ".."));
                }
            }
        }
    }
}
