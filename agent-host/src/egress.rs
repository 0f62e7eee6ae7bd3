//! The egress allow-list of one connector instance.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// Endpoints a connector may reach, as `host:port` pairs from its configuration.
#[derive(Debug, Default)]
pub struct Egress {
    names: Mutex<Vec<(String, u16)>>,
    allowed: Mutex<HashSet<SocketAddr>>,
}

impl Egress {
    /// An allow-list of `(host, port)` pairs. Literal IPs are allowed at once; names
    /// only after the connector resolves them through the agent.
    pub fn new(endpoints: &[(String, u16)]) -> Egress {
        let egress = Egress::default();
        for (host, port) in endpoints {
            egress.allow(host, *port);
        }
        egress
    }

    /// Add one endpoint.
    pub fn allow(&self, host: &str, port: u16) {
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => {
                self.allowed
                    .lock()
                    .expect("egress lock")
                    .insert(SocketAddr::new(canonical(ip), port));
            }
            Err(_) => self
                .names
                .lock()
                .expect("egress lock")
                .push((host.to_ascii_lowercase(), port)),
        }
    }

    /// Whether a TCP connection to `addr` is allowed.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        let allowed = self.allowed.lock().expect("egress lock");
        allowed.contains(&addr)
            || allowed.contains(&SocketAddr::new(canonical(addr.ip()), addr.port()))
    }

    /// Whether `host` (a name or a literal IP) on `port` is in the allow-list.
    pub fn permits(&self, host: &str, port: u16) -> bool {
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self.allows(SocketAddr::new(ip, port)),
            Err(_) => {
                let lower = host.to_ascii_lowercase();
                self.names
                    .lock()
                    .expect("egress lock")
                    .iter()
                    .any(|(n, p)| *n == lower && *p == port)
            }
        }
    }

    /// Resolve an allowed name and allow its addresses on the configured ports.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let lower = name.to_ascii_lowercase();
        let ports: Vec<u16> = self
            .names
            .lock()
            .expect("egress lock")
            .iter()
            .filter(|(n, _)| *n == lower)
            .map(|(_, p)| *p)
            .collect();
        if ports.is_empty() {
            return Err(format!(
                "`{name}` is not in this pipeline's egress allow-list"
            ));
        }
        let ips: Vec<IpAddr> = tokio::net::lookup_host((lower.as_str(), 0))
            .await
            .map_err(|e| format!("resolving `{name}`: {e}"))?
            .map(|a| a.ip())
            .collect();
        let mut allowed = self.allowed.lock().expect("egress lock");
        for ip in &ips {
            for port in &ports {
                allowed.insert(SocketAddr::new(*ip, *port));
            }
        }
        Ok(ips)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_configured_endpoints_are_reachable() {
        let egress = Egress::new(&[("127.0.0.1".into(), 5432), ("localhost".into(), 6000)]);
        assert!(egress.allows("127.0.0.1:5432".parse().unwrap()));
        assert!(!egress.allows("127.0.0.1:5433".parse().unwrap()));
        assert!(!egress.allows("127.0.0.2:5432".parse().unwrap()));
        assert!(egress.resolve("example.invalid").await.is_err());
        let ips = egress.resolve("LOCALHOST").await.unwrap();
        assert!(!ips.is_empty());
        assert!(egress.allows(SocketAddr::new(ips[0], 6000)));
        assert!(!egress.allows(SocketAddr::new(ips[0], 6001)));
    }
}
