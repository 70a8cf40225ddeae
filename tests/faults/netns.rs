//! A network namespace for one broker node, made with iproute2 (needs root, or CAP_NET_ADMIN):
//! two veth pairs to the test's own namespace, one that its clients use and one that its Redis
//! traffic uses, so the Redis link can be cut while the clients stay connected. Removed on drop.

use std::{net::Ipv4Addr, process::Command};

pub struct Netns {
    pub name: String,
    /// The node's address on the client link (clients connect here).
    pub node_ip: Ipv4Addr,
    /// The test namespace's address on the Redis link (Redis listens here too).
    pub redis_ip: Ipv4Addr,
    redis_link: String,
    links: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// `Err` with the reason where namespaces cannot be made (no root, no iproute2).
    pub fn create() -> Result<Netns, String> {
        let id = std::process::id();
        let name = format!("rcf{id}");
        // A /24 per process, so concurrent test runs do not collide.
        let (a, b) = ((id >> 8) as u8, id as u8);
        let client = (format!("rcf{id}c"), format!("rcf{id}C"));
        let redis = (format!("rcf{id}r"), format!("rcf{id}R"));
        let mut ns = Netns {
            name: name.clone(),
            node_ip: Ipv4Addr::new(10, 200 + a % 50, b, 2),
            redis_ip: Ipv4Addr::new(10, 150 + a % 50, b, 1),
            redis_link: redis.0.clone(),
            links: Vec::new(),
        };
        ip(&["netns", "add", &name])?;
        ns.links = vec![client.0.clone(), redis.0.clone()];
        let client_host = Ipv4Addr::new(10, 200 + a % 50, b, 1);
        let redis_node = Ipv4Addr::new(10, 150 + a % 50, b, 2);
        for ((host, inner), (host_ip, inner_ip)) in [
            (&client, (client_host, ns.node_ip)),
            (&redis, (ns.redis_ip, redis_node)),
        ] {
            ip(&[
                "link", "add", host, "type", "veth", "peer", "name", inner, "netns", &name,
            ])?;
            ip(&["addr", "add", &format!("{host_ip}/24"), "dev", host])?;
            ip(&["link", "set", host, "up"])?;
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{inner_ip}/24"),
                "dev",
                inner,
            ])?;
            ip(&["-n", &name, "link", "set", inner, "up"])?;
        }
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Cuts (`false`) or restores (`true`) the Redis link: packets are dropped, no reset is
    /// sent, the node's connections to Redis stay open and hear nothing.
    pub fn redis_link(&self, up: bool) {
        ip(&[
            "link",
            "set",
            &self.redis_link,
            if up { "up" } else { "down" },
        ])
        .expect("set the redis link");
    }

    /// `ip netns exec NAME`: the prefix that runs a command inside.
    pub fn exec_prefix(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.name]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = ip(&["link", "del", l]);
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}
