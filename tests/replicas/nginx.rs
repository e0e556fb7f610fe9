//! nginx from Debian's package in front of the replicas, started by the test: the shipped
//! examples/nginx/terrastream.conf with the test's ports, in a prefix directory of its own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

pub struct Nginx {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    child: Child,
    prefix: TempDir,
}

const EXAMPLE: &str = include_str!("../../examples/nginx/terrastream.conf");

/// The example with `listen` on `port` and one `server` line per replica port.
fn config(port: u16, replicas: &[u16]) -> String {
    let mut out = String::new();
    let mut servers_written = false;
    for line in EXAMPLE.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("server 127.0.0.1:") {
            if !servers_written {
                for replica in replicas {
                    out.push_str(&format!(
                        "    server 127.0.0.1:{replica} max_fails=1 fail_timeout=3s;\n"
                    ));
                }
                servers_written = true;
            }
            continue;
        }
        if trimmed.starts_with("listen ") {
            out.push_str(&format!("    listen 127.0.0.1:{port};\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(servers_written, "the example has no upstream servers");
    out
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    panic!("nginx is not installed: scripts/test.sh installs Debian's nginx")
}

impl Nginx {
    pub async fn start(replicas: &[u16]) -> Nginx {
        let prefix = tempfile::tempdir().expect("cannot create nginx's prefix");
        let port = crate::process_helpers::free_port();
        let root = prefix.path();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        let main = format!(
            "worker_processes 1;\n\
             error_log {root}/logs/error.log info;\n\
             pid {root}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
                 access_log {root}/logs/access.log;\n\
                 client_body_temp_path {root}/body;\n\
                 proxy_temp_path {root}/proxy;\n\
                 fastcgi_temp_path {root}/fastcgi;\n\
                 uwsgi_temp_path {root}/uwsgi;\n\
                 scgi_temp_path {root}/scgi;\n\
                 include {root}/terrastream.conf;\n\
             }}\n",
            root = root.display()
        );
        std::fs::write(root.join("nginx.conf"), main).unwrap();
        std::fs::write(root.join("terrastream.conf"), config(port, replicas)).unwrap();
        // Workers of a root master run as nobody: they must reach the temp paths.
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start nginx");
        let nginx = Nginx {
            address: format!("http://127.0.0.1:{port}"),
            child,
            prefix,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = client
                .get(format!("{}/healthz", nginx.address))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return nginx;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not answer: {}",
                nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
