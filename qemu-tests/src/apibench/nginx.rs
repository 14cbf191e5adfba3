//! The reference server's configuration.
//!
//! nginx is what a TLS-terminating front end costs when the application
//! behind it costs nothing: it serves the body `GET /v1/node` returned from
//! a file, over the same TLS 1.3 with the same node certificate, and checks
//! client certificates against the same cluster CA. One worker process,
//! because cairnd's tokio runtime is single-threaded: both servers get one
//! core's worth of event loop. Everything nginx writes (pid, error log,
//! temp files) goes into the bench's temporary directory, and `daemon off`
//! keeps it a child the bench can stop.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What the rendered configuration points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxConfig {
    /// nginx's own directory: pid file, error log, temp paths.
    pub dir: PathBuf,
    /// The listening address.
    pub listen: SocketAddr,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA client certificates must chain to (PEM).
    pub client_ca: PathBuf,
    /// The URL path served.
    pub location: String,
    /// The file served at `location`, as `application/json`.
    pub body: PathBuf,
}

impl NginxConfig {
    /// The error log path the config names (also passed with `-e` so that
    /// nginx never opens its compiled-in default under /var/log).
    #[must_use]
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The pid file path.
    #[must_use]
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("nginx.pid")
    }

    /// The `nginx.conf` text.
    #[must_use]
    pub fn render(&self) -> String {
        let p = |path: &Path| quote(&path.display().to_string());
        let temp = |name: &str| p(&self.dir.join(name));
        let mut out = String::new();
        // `user root`: the temporary directory is private to root, and a
        // worker running as nobody could not read the body file.
        let _ = writeln!(out, "daemon off;");
        let _ = writeln!(out, "master_process on;");
        let _ = writeln!(out, "user root;");
        let _ = writeln!(out, "worker_processes 1;");
        let _ = writeln!(out, "pid {};", p(&self.pid_file()));
        let _ = writeln!(out, "error_log {} warn;", p(&self.error_log()));
        let _ = writeln!(out, "events {{");
        let _ = writeln!(out, "    worker_connections 1024;");
        let _ = writeln!(out, "}}");
        let _ = writeln!(out, "http {{");
        let _ = writeln!(out, "    access_log off;");
        let _ = writeln!(out, "    client_body_temp_path {};", temp("client_body"));
        let _ = writeln!(out, "    proxy_temp_path {};", temp("proxy"));
        let _ = writeln!(out, "    fastcgi_temp_path {};", temp("fastcgi"));
        let _ = writeln!(out, "    uwsgi_temp_path {};", temp("uwsgi"));
        let _ = writeln!(out, "    scgi_temp_path {};", temp("scgi"));
        // The keep-alive table must not be shaped by nginx closing
        // connections every 1000 requests (its default).
        let _ = writeln!(out, "    keepalive_requests 1000000;");
        let _ = writeln!(out, "    server {{");
        let _ = writeln!(out, "        listen {} ssl;", self.listen);
        let _ = writeln!(out, "        ssl_protocols TLSv1.3;");
        let _ = writeln!(out, "        ssl_certificate {};", p(&self.cert));
        let _ = writeln!(out, "        ssl_certificate_key {};", p(&self.key));
        let _ = writeln!(
            out,
            "        ssl_client_certificate {};",
            p(&self.client_ca)
        );
        let _ = writeln!(out, "        ssl_verify_client on;");
        let _ = writeln!(out, "        location = {} {{", self.location);
        let _ = writeln!(out, "            default_type application/json;");
        let _ = writeln!(out, "            alias {};", p(&self.body));
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "        location / {{");
        let _ = writeln!(out, "            return 404;");
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out, "}}");
        out
    }
}

/// A double-quoted nginx string: backslashes and quotes escaped, so a
/// temporary path with odd characters cannot end the directive early.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NginxConfig {
        NginxConfig {
            dir: PathBuf::from("/tmp/b/nginx"),
            listen: "127.0.0.1:8443".parse().unwrap(),
            cert: PathBuf::from("/tmp/b/state/pki/node.pem"),
            key: PathBuf::from("/tmp/b/state/pki/node-key.pem"),
            client_ca: PathBuf::from("/tmp/b/state/pki/ca.pem"),
            location: "/v1/node".to_owned(),
            body: PathBuf::from("/tmp/b/node.json"),
        }
    }

    fn directives(text: &str) -> Vec<String> {
        text.lines().map(|l| l.trim().to_owned()).collect()
    }

    #[test]
    fn the_reference_verifies_clients_over_tls13_with_one_worker() {
        let lines = directives(&config().render());
        for wanted in [
            "daemon off;",
            "worker_processes 1;",
            "access_log off;",
            "listen 127.0.0.1:8443 ssl;",
            "ssl_protocols TLSv1.3;",
            "ssl_certificate \"/tmp/b/state/pki/node.pem\";",
            "ssl_certificate_key \"/tmp/b/state/pki/node-key.pem\";",
            "ssl_client_certificate \"/tmp/b/state/pki/ca.pem\";",
            "ssl_verify_client on;",
            "location = /v1/node {",
            "default_type application/json;",
            "alias \"/tmp/b/node.json\";",
        ] {
            assert!(
                lines.iter().any(|l| l == wanted),
                "missing {wanted:?} in\n{}",
                lines.join("\n")
            );
        }
    }

    #[test]
    fn everything_nginx_writes_stays_in_its_directory() {
        let text = config().render();
        for line in directives(&text) {
            let writes = [
                "pid ",
                "error_log ",
                "client_body_temp_path ",
                "proxy_temp_path ",
                "fastcgi_temp_path ",
                "uwsgi_temp_path ",
                "scgi_temp_path ",
            ];
            if writes.iter().any(|w| line.starts_with(w)) {
                assert!(line.contains("\"/tmp/b/nginx/"), "{line}");
            }
        }
        assert!(!text.contains("/var/"), "{text}");
        assert_eq!(
            config().error_log(),
            PathBuf::from("/tmp/b/nginx/error.log")
        );
    }

    #[test]
    fn braces_balance() {
        let text = config().render();
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn quotes_and_backslashes_in_paths_are_escaped() {
        assert_eq!(quote(r#"/tmp/a"b\c"#), r#""/tmp/a\"b\\c""#);
        let mut odd = config();
        odd.body = PathBuf::from("/tmp/x\";evil");
        assert!(odd.render().contains(r#"alias "/tmp/x\";evil";"#));
    }
}
