//! The local stack's state directory and `stack.json`, the record of what runs where.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The directory holding everything of one local stack: data, keys, logs, agents' state.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    /// `$HOME/.culvert/local`.
    pub fn default_root() -> PathBuf {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".culvert").join("local")
    }

    /// Create the directory and its subdirectories, readable by the owner only.
    ///
    /// As root the top directory is also searchable by others (never listable), because
    /// PostgreSQL runs as the `postgres` user and must reach its own directory inside.
    pub fn create(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.keys_dir(),
            self.logs_dir(),
            self.agents_dir(),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let top = if nix::unistd::Uid::effective().is_root() {
            0o711
        } else {
            0o700
        };
        fs::set_permissions(&self.root, fs::Permissions::from_mode(top))?;
        for d in [self.keys_dir(), self.logs_dir(), self.agents_dir()] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The directory, made absolute so children and symlinks do not depend on the working directory.
    pub fn absolute(&self) -> Result<StateDir> {
        let root = if self.root.is_absolute() {
            self.root.clone()
        } else {
            std::env::current_dir()?.join(&self.root)
        };
        Ok(StateDir { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `stack.json`.
    pub fn stack_json(&self) -> PathBuf {
        self.root.join("stack.json")
    }

    /// `supervisor.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }

    /// `keys/`.
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// `logs/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `logs/NAME.log`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }

    /// `pg/`: the PostgreSQL cluster (data, socket, server log).
    pub fn pg_dir(&self) -> PathBuf {
        self.root.join("pg")
    }

    /// `azurite/`: Azurite's storage.
    pub fn azurite_dir(&self) -> PathBuf {
        self.root.join("azurite")
    }

    /// `agents/`: per environment, the registration token and each agent's state directory.
    pub fn agents_dir(&self) -> PathBuf {
        self.root.join("agents")
    }

    /// `app/`: the Functions app root.
    pub fn app_dir(&self) -> PathBuf {
        self.root.join("app")
    }

    /// `admin.key`: the first admin API key.
    pub fn admin_key(&self) -> PathBuf {
        self.root.join("admin.key")
    }

    /// `compute.json`: the agent pools the local compute provider keeps running.
    pub fn compute_json(&self) -> PathBuf {
        self.root.join("compute.json")
    }
}

/// Ports of the stack's components on 127.0.0.1 (0 when not chosen yet).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ports {
    /// The functions runtime (the API).
    #[serde(default)]
    pub functions: u16,
    /// PostgreSQL.
    #[serde(default)]
    pub postgres: u16,
    /// Azurite blob service.
    #[serde(default)]
    pub azurite_blob: u16,
    /// Azurite queue service.
    #[serde(default)]
    pub azurite_queue: u16,
    /// Azurite table service.
    #[serde(default)]
    pub azurite_table: u16,
    /// The local compute provider.
    #[serde(default)]
    pub compute: u16,
    /// The managed-identity token endpoint stand-in.
    #[serde(default)]
    pub identity: u16,
    /// The control plane's Key Vault stand-in.
    #[serde(default)]
    pub vault_platform: u16,
    /// The environments' Key Vault stand-in.
    #[serde(default)]
    pub vault_env: u16,
    /// The Azure Resource Manager stand-in.
    #[serde(default)]
    pub arm: u16,
}

/// `stack.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stack {
    /// The state directory.
    #[serde(default)]
    pub state_dir: PathBuf,
    /// API base URL.
    #[serde(default)]
    pub api_url: String,
    /// The admin API key file.
    #[serde(default)]
    pub admin_key_file: PathBuf,
    /// Where the logs are.
    #[serde(default)]
    pub log_dir: PathBuf,
    /// The control store's connection string.
    #[serde(default)]
    pub control_store: String,
    /// Ports.
    #[serde(default)]
    pub ports: Ports,
    /// Whether the supervisor finished starting everything (agents included).
    #[serde(default)]
    pub ready: bool,
    /// Process ids by component (`supervisor`, `postgres`, `azurite`, `functions_host`,
    /// `agent:ENV:I`), present while it runs.
    #[serde(default)]
    pub pids: BTreeMap<String, u32>,
}

impl Stack {
    /// Read `stack.json`; `None` when there is none yet.
    pub fn load(state: &StateDir) -> Result<Option<Stack>> {
        let path = state.stack_json();
        match fs::read_to_string(&path) {
            Ok(text) => {
                Ok(Some(serde_json::from_str(&text).with_context(|| {
                    format!("{} is not valid", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// Write `text` to `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `stack.json` shared by the supervisor's tasks; every change is written at once.
pub struct StackFile {
    path: PathBuf,
    stack: Mutex<Stack>,
}

impl StackFile {
    /// The file of `state`, starting from what it holds.
    pub fn open(state: &StateDir) -> Result<StackFile> {
        let stack = Stack::load(state)?.unwrap_or_default();
        Ok(StackFile {
            path: state.stack_json(),
            stack: Mutex::new(stack),
        })
    }

    /// A copy of the record.
    pub fn get(&self) -> Stack {
        self.stack.lock().expect("stack lock").clone()
    }

    /// Change the record and write it.
    pub fn update(&self, f: impl FnOnce(&mut Stack)) {
        let mut s = self.stack.lock().expect("stack lock");
        f(&mut s);
        let text = serde_json::to_string_pretty(&*s).expect("stack serializes");
        if let Err(e) = write_atomic(&self.path, &format!("{text}\n"), 0o600) {
            tracing::warn!("cannot record the stack: {e:#}");
        }
    }

    /// Record `pid` for `component`, or forget it.
    pub fn set_pid(&self, component: &str, pid: Option<u32>) {
        self.update(|s| match pid {
            Some(p) => {
                s.pids.insert(component.to_string(), p);
            }
            None => {
                s.pids.remove(component);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_round_trips_and_writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        state.create().unwrap();
        assert!(Stack::load(&state).unwrap().is_none());
        let file = StackFile::open(&state).unwrap();
        file.update(|s| {
            s.api_url = "http://127.0.0.1:7071/api".into();
            s.ports.postgres = 5555;
        });
        file.set_pid("azurite", Some(42));
        let back = Stack::load(&state).unwrap().unwrap();
        assert_eq!(back.api_url, "http://127.0.0.1:7071/api");
        assert_eq!(back.ports.postgres, 5555);
        assert_eq!(back.pids.get("azurite"), Some(&42));
        file.set_pid("azurite", None);
        assert!(Stack::load(&state).unwrap().unwrap().pids.is_empty());
        let mode = fs::metadata(state.stack_json())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
