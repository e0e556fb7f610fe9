//! Run isolation: every terraform command (and so its providers and provisioners) runs inside
//! bubblewrap, with a user namespace (an unprivileged uid), its own pid namespace and a root
//! that holds only the toolchain (read-only), the run's own working and sandbox directories,
//! a private `/tmp`, and what terraform needs from `/etc`. The gateway's data directory (its
//! admin token, state key, database, other twins' workspaces) does not exist in there, and
//! no other process (the gateway, another run) can be seen. The network stays shared:
//! providers talk to clouds and terraform to the gateway's state backend.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::ProcessSpec;

/// The uid and gid a run has inside its user namespace (`nobody`).
const RUN_UID: &str = "65534";
/// Files of `/etc` terraform, its providers and ordinary provisioners need: name resolution,
/// CA certificates, user and group names. Nothing secret (`shadow` and the like stay out).
const ETC_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];
/// The system's programs and libraries, read-only.
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"];

/// How runs are isolated, as `--run-isolation` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationMode {
    /// bubblewrap (the default); the gateway refuses to start if it cannot run.
    #[default]
    Bubblewrap,
    /// None: any twin's configuration can read everything the gateway's user can.
    None,
}

impl IsolationMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Bubblewrap => "bubblewrap",
            IsolationMode::None => "none",
        }
    }
}

impl std::str::FromStr for IsolationMode {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "bubblewrap" | "bwrap" => Ok(IsolationMode::Bubblewrap),
            "none" => Ok(IsolationMode::None),
            other => Err(format!(
                "unknown run isolation '{other}' (one of: bubblewrap, none)"
            )),
        }
    }
}

/// What one command may see besides the system: its directories, writable, and the
/// toolchain, read-only.
#[derive(Debug, Clone, Default)]
pub struct Jail {
    pub writable: Vec<PathBuf>,
    pub readable: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("bubblewrap (bwrap) is not installed; install Debian's bubblewrap package, or start with --run-isolation none (any twin's configuration can then read the gateway's secrets)")]
    NotInstalled,
    #[error("bubblewrap cannot run here ({0}); fix that (user namespaces must be allowed), or start with --run-isolation none (any twin's configuration can then read the gateway's secrets)")]
    Broken(String),
}

/// The isolation in force, ready to wrap command lines.
#[derive(Debug, Clone)]
pub struct Isolation {
    mode: IsolationMode,
    bwrap: PathBuf,
}

impl Isolation {
    /// Finds what `mode` needs and proves it works with a probe run; a failure says how to fix
    /// it.
    pub fn start(mode: IsolationMode) -> Result<Self, IsolationError> {
        let isolation = match mode {
            IsolationMode::None => Self {
                mode,
                bwrap: PathBuf::new(),
            },
            IsolationMode::Bubblewrap => Self {
                mode,
                bwrap: find_bwrap().ok_or(IsolationError::NotInstalled)?,
            },
        };
        isolation.probe()?;
        Ok(isolation)
    }

    pub fn mode(&self) -> IsolationMode {
        self.mode
    }

    /// Runs `true` in an empty jail: the namespaces and mounts work here.
    fn probe(&self) -> Result<(), IsolationError> {
        if self.mode == IsolationMode::None {
            return Ok(());
        }
        let probe = ProcessSpec {
            program: PathBuf::from("true"),
            args: Vec::new(),
            cwd: PathBuf::from("/"),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            command_depth: 0,
        };
        let wrapped = self.wrap(probe, &Jail::default());
        let mut child = std::process::Command::new(&wrapped.program)
            .args(&wrapped.args)
            .env_clear()
            .envs(wrapped.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&wrapped.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| IsolationError::Broken(format!("cannot start bwrap: {e}")))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        use std::io::Read;
                        let _ = pipe.read_to_string(&mut stderr);
                    }
                    let why = stderr.trim();
                    return Err(IsolationError::Broken(if why.is_empty() {
                        format!("the probe exited with {status}")
                    } else {
                        why.to_owned()
                    }));
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(IsolationError::Broken("the probe did not finish".into()));
                }
                Err(err) => return Err(IsolationError::Broken(err.to_string())),
            }
        }
    }

    /// The command line that runs `spec` in `jail`. The environment is passed to bwrap's own
    /// process (never in its arguments, which other users can read), and bwrap hands it on.
    pub fn wrap(&self, spec: ProcessSpec, jail: &Jail) -> ProcessSpec {
        if self.mode == IsolationMode::None {
            return spec;
        }
        let mut args: Vec<OsString> = [
            "--unshare-user",
            "--uid",
            RUN_UID,
            "--gid",
            RUN_UID,
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "terrastream-run",
            // Dies with whatever started it (a run's monitor: a lost monitor is a lost run), and
            // gets no controlling terminal to push input into.
            "--die-with-parent",
            "--new-session",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match std::fs::read_link(path) {
                // Merged /usr: /bin -> usr/bin and so on, kept as links.
                Ok(target) => push(&mut args, "--symlink", &target, path),
                Err(_) if path.is_dir() => push(&mut args, "--ro-bind", path, path),
                Err(_) => {}
            }
        }
        for file in ETC_FILES {
            push(&mut args, "--ro-bind-try", Path::new(file), Path::new(file));
        }
        for path in &jail.readable {
            push(&mut args, "--ro-bind-try", path, path);
        }
        for path in &jail.writable {
            push(&mut args, "--bind", path, path);
        }
        args.push("--chdir".into());
        args.push(spec.cwd.clone().into_os_string());
        args.push("--".into());
        args.push(spec.program.into_os_string());
        args.extend(spec.args.into_iter().map(OsString::from));
        let mut env = spec.env;
        // Inside, $HOME and $TMPDIR are the private /tmp: nothing of the gateway's home.
        env.retain(|(name, _)| name != "HOME" && name != "TMPDIR");
        env.push(("HOME".into(), "/tmp".into()));
        env.push(("TMPDIR".into(), "/tmp".into()));
        ProcessSpec {
            program: self.bwrap.clone(),
            args: args
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            cwd: PathBuf::from("/"),
            env,
            // bwrap, then its init in the new pid namespace, then the command.
            command_depth: spec.command_depth + 2,
        }
    }
}

fn push(args: &mut Vec<OsString>, flag: &str, source: &Path, target: &Path) {
    args.push(flag.into());
    args.push(source.as_os_str().to_owned());
    args.push(target.as_os_str().to_owned());
}

fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("bwrap"))
        .find(|candidate| candidate.is_file())
}

/// The directories a terraform program needs to run besides the system's: its own folder and,
/// for a script (the tools folder's launcher is Python), the installation of its interpreter
/// and of every interpreter its links lead to (a virtualenv's `python` links to the real one).
pub fn program_paths(program: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let program = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    if let Some(dir) = program.parent() {
        paths.push(dir.to_path_buf());
    }
    if let Some(interpreter) = shebang(&program) {
        let mut hop = interpreter;
        for _ in 0..8 {
            // An interpreter's installation is the folder above its bin/.
            if let Some(install) = hop.parent().and_then(Path::parent) {
                if install != Path::new("/") && install != Path::new("/usr") {
                    paths.push(install.to_path_buf());
                }
            }
            match std::fs::read_link(&hop) {
                Ok(next) => hop = hop.parent().map_or(next.clone(), |dir| dir.join(next)),
                Err(_) => break,
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// The interpreter named by a script's `#!` line.
fn shebang(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let read = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..read].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let interpreter = text.split_whitespace().next()?;
    Some(PathBuf::from(interpreter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProcessSpec {
        ProcessSpec {
            program: "/tools/bin/terraform".into(),
            args: vec!["apply".into()],
            cwd: "/data/work/twin_1".into(),
            env: vec![
                ("HOME".into(), "/root".into()),
                ("TF_HTTP_PASSWORD".into(), "run_secret_x".into()),
            ],
            command_depth: 0,
        }
    }

    #[test]
    fn no_isolation_leaves_the_command_as_it_is() {
        let isolation = Isolation {
            mode: IsolationMode::None,
            bwrap: PathBuf::new(),
        };
        let wrapped = isolation.wrap(spec(), &Jail::default());
        assert_eq!(wrapped.program, PathBuf::from("/tools/bin/terraform"));
        assert_eq!(wrapped.command_depth, 0);
    }

    #[test]
    fn bubblewrap_binds_only_the_jail_and_keeps_secrets_out_of_the_arguments() {
        let isolation = Isolation {
            mode: IsolationMode::Bubblewrap,
            bwrap: "/usr/bin/bwrap".into(),
        };
        let jail = Jail {
            writable: vec!["/data/work/twin_1".into()],
            readable: vec!["/tools".into()],
        };
        let wrapped = isolation.wrap(spec(), &jail);
        let args = wrapped.args.join(" ");
        assert!(
            args.contains("--bind /data/work/twin_1 /data/work/twin_1"),
            "{args}"
        );
        assert!(args.contains("--ro-bind-try /tools /tools"), "{args}");
        assert!(args.contains("--unshare-pid") && args.contains("--unshare-user"));
        assert!(args.ends_with("-- /tools/bin/terraform apply"), "{args}");
        assert!(!args.contains("run_secret_x"), "{args}");
        assert!(
            !args.contains("/data "),
            "the data dir itself is never bound: {args}"
        );
        assert!(wrapped.env.iter().any(|(k, v)| k == "HOME" && v == "/tmp"));
        assert_eq!(wrapped.command_depth, 2);
    }

    #[test]
    fn a_scripts_interpreter_installation_is_part_of_its_paths() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let script = dir.path().join("bin").join("terraform");
        std::fs::create_dir_all(script.parent().unwrap_or(dir.path()))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&script, "#!/opt/python/3.11/bin/python -I\nprint()\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let paths = program_paths(&script);
        assert!(
            paths.contains(&PathBuf::from("/opt/python/3.11")),
            "{paths:?}"
        );
        assert!(paths.iter().any(|p| p.ends_with("bin")), "{paths:?}");
    }
}
