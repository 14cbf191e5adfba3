//! Docker's rules for turning an image config and `ctr run` flags into the
//! process to run.

use crate::spec::{Process, User};
use oci_spec::image::ImageConfiguration;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// `PATH` when neither the image nor the operator sets one (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the operator asked for on `ctr run`, each replacing the image's
/// value when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOverrides {
    /// `--entrypoint`: replaces the image's Entrypoint, and drops its Cmd
    /// (as Docker does) unless `command` is also given.
    pub entrypoint: Option<Vec<String>>,
    /// The words after `--`: replace the image's Cmd.
    pub command: Option<Vec<String>>,
    /// `--env K=V`: added, replacing image entries with the same key.
    pub env: Vec<String>,
    /// `--workdir`.
    pub cwd: Option<String>,
    /// `--user`: `name`, `uid`, `name:group`, `uid:gid` (any mix).
    pub user: Option<String>,
    /// Whether setuid binaries may gain privileges (false by default).
    pub allow_new_privileges: bool,
}

/// Why the process could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("neither the image nor the command line gives a command to run")]
    NoCommand,
    #[error("environment entry {0:?} has no '='")]
    BadEnv(String),
    #[error("working directory {0:?} is not absolute")]
    RelativeCwd(String),
    #[error("user {0:?} is not in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} is not in the image's /etc/group")]
    UnknownGroup(String),
    #[error("user spec {0:?} is empty or malformed")]
    BadUserSpec(String),
    #[error("could not read {path} in the image")]
    ReadImageFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Builds the container process: Entrypoint + Cmd with the overrides
/// applied, the environment (with `PATH` and `HOME` defaults), the working
/// directory and numeric user ids resolved through the image's
/// `/etc/passwd` and `/etc/group` (read without following links out of
/// `rootfs`).
///
/// # Errors
/// See [`ResolveError`].
pub fn resolve_process(
    image_config: &ImageConfiguration,
    overrides: &ProcessOverrides,
    rootfs: &Path,
) -> Result<Process, ResolveError> {
    let config = image_config.config().as_ref();
    let image_entrypoint = config.and_then(|c| c.entrypoint().clone());
    let image_cmd = config.and_then(|c| c.cmd().clone());
    let (entrypoint, cmd) = match (&overrides.entrypoint, &overrides.command) {
        (Some(ep), Some(cmd)) => (ep.clone(), cmd.clone()),
        (Some(ep), None) => (ep.clone(), Vec::new()),
        (None, Some(cmd)) => (image_entrypoint.unwrap_or_default(), cmd.clone()),
        (None, None) => (
            image_entrypoint.unwrap_or_default(),
            image_cmd.unwrap_or_default(),
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(ResolveError::NoCommand);
    }

    let mut env: Vec<String> = Vec::new();
    let image_env = config.and_then(|c| c.env().clone()).unwrap_or_default();
    for entry in image_env.iter().chain(&overrides.env) {
        let Some((key, _)) = entry.split_once('=') else {
            return Err(ResolveError::BadEnv(entry.clone()));
        };
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(entry.clone());
    }
    let has = |env: &[String], key: &str| {
        env.iter()
            .any(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
    };
    if !has(&env, "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }

    let cwd = overrides
        .cwd
        .clone()
        .or_else(|| config.and_then(|c| c.working_dir().clone()))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        return Err(ResolveError::RelativeCwd(cwd));
    }

    let user_spec = overrides
        .user
        .clone()
        .or_else(|| config.and_then(|c| c.user().clone()))
        .unwrap_or_default();
    let (user, home) = resolve_user(&user_spec, rootfs)?;
    if !has(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }

    Ok(Process {
        args,
        env,
        cwd,
        user,
        no_new_privileges: !overrides.allow_new_privileges,
    })
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// Resolves `user[:group]` to ids (and the home directory for `HOME`).
fn resolve_user(spec: &str, rootfs: &Path) -> Result<(User, String), ResolveError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_part == Some("") || (user_part.is_empty() && group_part.is_some()) {
        return Err(ResolveError::BadUserSpec(spec.to_owned()));
    }
    let passwd = read_in_root(rootfs, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let groups = read_in_root(rootfs, "etc/group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default();

    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) => Some(
            passwd
                .iter()
                .find(|e| e.name == user_part)
                .ok_or_else(|| ResolveError::UnknownUser(user_part.to_owned()))?,
        ),
    };
    let uid = match (user_part.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(e)) => e.uid,
        (Err(_), None) => return Err(ResolveError::UnknownUser(user_part.to_owned())),
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| ResolveError::UnknownGroup(g.to_owned()))?
                    .gid
            }
        },
        None => entry.map_or(0, |e| e.gid),
    };
    // Supplementary groups come from /etc/group membership, and only when
    // the group was not given explicitly (as Docker does).
    let additional_gids = match (group_part, entry) {
        (None, Some(e)) => {
            let mut gids: Vec<u32> = groups
                .iter()
                .filter(|g| g.members.contains(&e.name) && g.gid != gid)
                .map(|g| g.gid)
                .collect();
            gids.sort_unstable();
            gids.dedup();
            gids
        }
        (Some(_), _) | (None, None) => Vec::new(),
    };
    let home = entry
        .map(|e| e.home.clone())
        .filter(|h| h.starts_with('/'))
        .unwrap_or_else(|| "/".to_owned());
    Ok((
        User {
            uid,
            gid,
            additional_gids,
        },
        home,
    ))
}

/// The largest /etc/passwd or /etc/group read (a hostile image should not
/// make cairnd read gigabytes).
const MAX_FILE: u64 = 4 << 20;
/// How many symlinks one lookup follows (the kernel's limit).
const MAX_LINKS: u32 = 40;

/// Reads `relative` inside `root` as if `root` were `/`: symlinks are
/// followed by hand, absolute targets and `..` stay inside `root`. `None`
/// when the file (or a directory on the way) does not exist.
fn read_in_root(root: &Path, relative: &str) -> Result<Option<String>, ResolveError> {
    let err = |source| ResolveError::ReadImageFile {
        path: format!("/{relative}"),
        source,
    };
    let Some(path) = resolve_in_root(root, Path::new(relative)).map_err(err)? else {
        return Ok(None);
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    if !file.metadata().map_err(err)?.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut bytes).map_err(err)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The host path `relative` names inside `root`, with every symlink
/// resolved within `root`. The final component is resolved too, so the
/// result is never a symlink (unless it changes under us, which an image's
/// read-only root does not).
fn resolve_in_root(root: &Path, relative: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: Vec<OsString> = relative
        .components()
        .rev()
        .filter_map(component_name)
        .collect();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str().to_owned())
            .chain(done.iter().cloned())
            .chain(std::iter::once(name.clone()))
            .collect();
        let meta = match std::fs::symlink_metadata(&candidate) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(std::io::Error::other("too many levels of symbolic links"));
            }
            let target = std::fs::read_link(&candidate)?;
            if target.is_absolute() {
                done.clear();
            }
            todo.extend(target.components().rev().filter_map(component_name));
        } else {
            done.push(name);
        }
    }
    Ok(Some(
        std::iter::once(root.as_os_str().to_owned())
            .chain(done)
            .collect(),
    ))
}

fn component_name(c: Component<'_>) -> Option<OsString> {
    match c {
        Component::Normal(n) => Some(n.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    fn image(
        entrypoint: Option<&[&str]>,
        cmd: Option<&[&str]>,
        env: &[&str],
        user: Option<&str>,
        workdir: Option<&str>,
    ) -> ImageConfiguration {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut config = ConfigBuilder::default().env(strings(env));
        if let Some(ep) = entrypoint {
            config = config.entrypoint(strings(ep));
        }
        if let Some(cmd) = cmd {
            config = config.cmd(strings(cmd));
        }
        if let Some(user) = user {
            config = config.user(user.to_owned());
        }
        if let Some(w) = workdir {
            config = config.working_dir(w.to_owned());
        }
        ImageConfigurationBuilder::default()
            .config(config.build().expect("config"))
            .build()
            .expect("image config")
    }

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nredis:x:999:998::/var/lib/redis:/bin/false\nweird:x:notanumber:1::/:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nredis:x:998:\naudio:x:29:redis,other\nvideo:x:44:redis\n",
        )
        .expect("group");
        dir
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker_rules() {
        let root = rootfs();
        let img = image(Some(&["/ep", "-x"]), Some(&["serve"]), &[], None, None);
        let p = resolve_process(&img, &ProcessOverrides::default(), root.path()).expect("p");
        assert_eq!(p.args, strings(&["/ep", "-x", "serve"]));

        let o = ProcessOverrides {
            command: Some(strings(&["debug"])),
            ..ProcessOverrides::default()
        };
        let p = resolve_process(&img, &o, root.path()).expect("p");
        assert_eq!(
            p.args,
            strings(&["/ep", "-x", "debug"]),
            "command replaces Cmd only"
        );

        let o = ProcessOverrides {
            entrypoint: Some(strings(&["/bin/sh"])),
            ..ProcessOverrides::default()
        };
        let p = resolve_process(&img, &o, root.path()).expect("p");
        assert_eq!(
            p.args,
            strings(&["/bin/sh"]),
            "--entrypoint drops the image Cmd"
        );

        let o = ProcessOverrides {
            entrypoint: Some(strings(&["/bin/sh"])),
            command: Some(strings(&["-c", "true"])),
            ..ProcessOverrides::default()
        };
        let p = resolve_process(&img, &o, root.path()).expect("p");
        assert_eq!(p.args, strings(&["/bin/sh", "-c", "true"]));

        let empty = image(None, None, &[], None, None);
        assert!(matches!(
            resolve_process(&empty, &ProcessOverrides::default(), root.path()),
            Err(ResolveError::NoCommand)
        ));
    }

    #[test]
    fn env_overrides_replace_by_key_and_path_and_home_default() {
        let root = rootfs();
        let img = image(None, Some(&["x"]), &["A=1", "B=2"], None, None);
        let o = ProcessOverrides {
            env: strings(&["B=3", "C=4"]),
            ..ProcessOverrides::default()
        };
        let p = resolve_process(&img, &o, root.path()).expect("p");
        assert_eq!(
            p.env,
            strings(&[
                &format!("PATH={DEFAULT_PATH}"),
                "A=1",
                "B=3",
                "C=4",
                "HOME=/root"
            ])
        );
        let img = image(None, Some(&["x"]), &["PATH=/only", "HOME=/h"], None, None);
        let p = resolve_process(&img, &ProcessOverrides::default(), root.path()).expect("p");
        assert_eq!(p.env, strings(&["PATH=/only", "HOME=/h"]));
        let o = ProcessOverrides {
            env: strings(&["NOEQ"]),
            ..ProcessOverrides::default()
        };
        assert!(matches!(
            resolve_process(&img, &o, root.path()),
            Err(ResolveError::BadEnv(_))
        ));
    }

    #[test]
    fn users_resolve_through_passwd_and_group_with_numeric_fallbacks() {
        let root = rootfs();
        let run = |user: &str| {
            let o = ProcessOverrides {
                user: Some(user.to_owned()),
                ..ProcessOverrides::default()
            };
            resolve_process(&image(None, Some(&["x"]), &[], None, None), &o, root.path())
        };
        let p = run("redis").expect("name");
        assert_eq!(
            p.user,
            User {
                uid: 999,
                gid: 998,
                additional_gids: vec![29, 44]
            }
        );
        assert!(p.env.contains(&"HOME=/var/lib/redis".to_owned()));
        assert_eq!(
            run("999").expect("uid").user.gid,
            998,
            "uid finds its passwd entry"
        );
        let p = run("1234").expect("unknown uid");
        assert_eq!((p.user.uid, p.user.gid), (1234, 0));
        assert!(p.env.contains(&"HOME=/".to_owned()));
        let p = run("1234:5678").expect("uid:gid");
        assert_eq!((p.user.uid, p.user.gid), (1234, 5678));
        let p = run("redis:audio").expect("name:group");
        assert_eq!(
            p.user,
            User {
                uid: 999,
                gid: 29,
                additional_gids: vec![]
            }
        );
        assert!(matches!(run("nobody"), Err(ResolveError::UnknownUser(_))));
        assert!(matches!(
            run("redis:nogroup"),
            Err(ResolveError::UnknownGroup(_))
        ));
        assert!(matches!(run("redis:"), Err(ResolveError::BadUserSpec(_))));
        assert!(matches!(run(":5"), Err(ResolveError::BadUserSpec(_))));
    }

    #[test]
    fn the_image_user_and_workdir_are_used_unless_overridden() {
        let root = rootfs();
        let img = image(None, Some(&["x"]), &[], Some("redis"), Some("/data"));
        let p = resolve_process(&img, &ProcessOverrides::default(), root.path()).expect("p");
        assert_eq!((p.user.uid, p.cwd.as_str()), (999, "/data"));
        assert!(p.no_new_privileges);
        let o = ProcessOverrides {
            user: Some("0".into()),
            cwd: Some("/tmp".into()),
            ..ProcessOverrides::default()
        };
        let p = resolve_process(&img, &o, root.path()).expect("p");
        assert_eq!((p.user.uid, p.cwd.as_str()), (0, "/tmp"));
        let o = ProcessOverrides {
            cwd: Some("rel".into()),
            ..ProcessOverrides::default()
        };
        assert!(matches!(
            resolve_process(&img, &o, root.path()),
            Err(ResolveError::RelativeCwd(_))
        ));
    }

    #[test]
    fn an_image_without_passwd_runs_as_root_by_number() {
        let root = tempfile::tempdir().expect("tempdir");
        let img = image(None, Some(&["x"]), &[], None, None);
        let p = resolve_process(&img, &ProcessOverrides::default(), root.path()).expect("p");
        assert_eq!(p.user, User::default());
    }

    #[test]
    fn symlinks_in_the_image_do_not_reach_the_host() {
        // The image's /etc/passwd is an absolute symlink to /etc/passwd: it
        // must resolve inside the image's root (where it does not exist),
        // never to the host's file.
        let outer = tempfile::tempdir().expect("tempdir");
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("etc");
        std::fs::write(outer.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").expect("host");
        std::os::unix::fs::symlink("../../passwd", root.join("etc/passwd")).expect("link");
        std::os::unix::fs::symlink("/../../../passwd", root.join("etc/group")).expect("link");
        let img = image(None, Some(&["x"]), &[], Some("evil"), None);
        let err = resolve_process(&img, &ProcessOverrides::default(), &root).expect_err("escape");
        assert!(matches!(err, ResolveError::UnknownUser(_)), "{err:?}");

        // A link that stays inside is followed.
        std::fs::remove_file(root.join("etc/passwd")).expect("rm");
        std::fs::create_dir_all(root.join("usr/share")).expect("dir");
        std::fs::write(root.join("usr/share/passwd"), "app:x:5:6::/app:/bin/sh\n").expect("w");
        std::os::unix::fs::symlink("/usr/share/passwd", root.join("etc/passwd")).expect("link");
        let img = image(None, Some(&["x"]), &[], Some("app"), None);
        let p = resolve_process(&img, &ProcessOverrides::default(), &root).expect("inside");
        assert_eq!((p.user.uid, p.user.gid), (5, 6));

        // A loop is an error, not a hang.
        std::fs::remove_file(root.join("etc/passwd")).expect("rm");
        std::os::unix::fs::symlink("passwd", root.join("etc/passwd")).expect("loop");
        assert!(matches!(
            resolve_process(&img, &ProcessOverrides::default(), &root),
            Err(ResolveError::ReadImageFile { .. })
        ));
    }
}
