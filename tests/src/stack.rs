//! The whole local install (`culvert local up`) in a scratch state directory, and the
//! `culvert` CLI pointed at it; stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::agent::binary;
use crate::cluster::{Cluster, free_port};

/// A running local stack.
pub struct Stack {
    state: PathBuf,
    /// API base URL.
    pub api: String,
    up: bool,
}

/// What a CLI call printed and how it exited.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// What a finished process printed and how it exited.
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Stack {
    /// `culvert local up` in `state` on a free port.
    pub fn up(state: &Path) -> Stack {
        Stack::up_with_env(state, &[])
    }

    /// `culvert local up` with extra settings in the stack's environment (they reach the
    /// control plane's app settings).
    pub fn up_with_env(state: &Path, env: &[(&str, &str)]) -> Stack {
        let port = free_port();
        let mut s = Stack {
            state: state.to_path_buf(),
            api: format!("http://127.0.0.1:{port}/api"),
            up: false,
        };
        s.start_with(port, env);
        s
    }

    /// The stack's state directory.
    pub fn state(&self) -> &Path {
        &self.state
    }

    fn start(&mut self, port: u16) {
        self.start_with(port, &[]);
    }

    fn start_with(&mut self, port: u16, env: &[(&str, &str)]) {
        let r = self.culvert_env(&["local", "up", "--port", &port.to_string()], env);
        assert_eq!(
            r.code, 0,
            "culvert local up failed:\n{}\n{}",
            r.stdout, r.stderr
        );
        self.up = true;
    }

    /// Run `culvert ARGS` against this stack.
    pub fn culvert(&self, args: &[&str]) -> Run {
        self.culvert_env(args, &[])
    }

    /// Run `culvert ARGS` with extra environment variables.
    pub fn culvert_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(binary("culvert"));
        cmd.args(["--state-dir", self.state.to_str().unwrap()])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run culvert"))
    }

    /// Run a CLI command that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let r = self.culvert(&all);
        assert_eq!(r.code, 0, "culvert {args:?} failed: {}", r.stderr);
        r.json()
    }

    /// A local environment `demo`, connectors `{name}-src` (database `app` on `src`) and
    /// `{name}-dst` (database `replica` on `dst`) with `password` sealed, and pipeline `name`
    /// over `public.*`, deployed.
    pub fn pipeline_between(&self, name: &str, src: &Cluster, dst: &Cluster, password: &str) {
        if self.culvert(&["env", "get", "demo"]).code != 0 {
            self.local_env("demo");
        } else {
            self.wait_ready("demo");
        }
        for (side, ty, c, db) in [
            ("src", "postgres-source", src, "app"),
            ("dst", "postgres-target", dst, "replica"),
        ] {
            let r = self.create_connector(&format!("{name}-{side}"), ty, c, db, password);
            assert_eq!(r.code, 0, "{}", r.stderr);
        }
        let (source, target) = (format!("{name}-src"), format!("{name}-dst"));
        let r = self.culvert(&[
            "pipeline", "create", name, "--source", &source, "--target", &target, "--tables",
            "public.*",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let r = self.culvert(&["pipeline", "deploy", name]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }

    /// `culvert env create NAME --local`, waited for until ready; returns the environment.
    pub fn local_env(&self, name: &str) -> serde_json::Value {
        let env = self.json(&["env", "create", name, "--local"]);
        self.wait_ready(name);
        env
    }

    /// `culvert env wait NAME --state ready`, which must succeed within two minutes.
    pub fn wait_ready(&self, name: &str) {
        let r = self.culvert(&["env", "wait", name, "--state", "ready", "--timeout", "120"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }

    /// `culvert connector create NAME` in environment `demo` for database `db` on `c`, with
    /// `password` passed through the environment and sealed.
    pub fn create_connector(
        &self,
        name: &str,
        ty: &str,
        c: &Cluster,
        db: &str,
        password: &str,
    ) -> Run {
        let (port, database) = (format!("port={}", c.port), format!("database={db}"));
        let args = [
            "connector",
            "create",
            name,
            "--env",
            "demo",
            "--type",
            ty,
            "--set",
            "host=127.0.0.1",
            "--set",
            &port,
            "--set",
            "user=postgres",
            "--set",
            &database,
            "--set",
            "sslmode=disable",
            "--secret-env",
            "password=CULVERT_TEST_PW",
        ];
        self.culvert_env(&args, &[("CULVERT_TEST_PW", password)])
    }

    /// `culvert local down`, then `up` again on the same port.
    pub fn restart(&mut self) {
        self.down();
        let port: u16 = self
            .api
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .expect("port of the API URL");
        self.start(port);
    }

    /// `culvert local down`.
    pub fn down(&mut self) {
        if self.up {
            let r = self.culvert(&["local", "down"]);
            assert_eq!(r.code, 0, "culvert local down failed: {}", r.stderr);
            self.up = false;
        }
    }

    /// Every log the stack wrote, concatenated.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(self.state.join("logs")) {
            for e in dir.flatten() {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.up {
            let _ = Command::new(binary("culvert"))
                .args(["--state-dir", self.state.to_str().unwrap(), "local", "down"])
                .output();
        }
    }
}
