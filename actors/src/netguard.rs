//! Where outgoing webhooks may go: public addresses only. A provider names the URL, so without
//! this a provider could make the platform call its own internal services (the gateway sandboxes'
//! control endpoints, a metadata service at 169.254.169.254) and read the answer back.
//!
//! The address is checked after resolution, at connect time (`GuardedResolver`, so a name that
//! resolves to a private address is refused however it was registered), and for addresses
//! written in the URL itself (which are never resolved) before the request is made. Loopback is
//! allowed only with the explicit development setting `MEDPAY_WEBHOOK_ALLOW_LOOPBACK`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Why an address may not be called, or `None` when it may.
pub fn refused(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4, allow_loopback),
        IpAddr::V6(v6) => {
            // An IPv4 address written as IPv6 (::ffff:a.b.c.d) is that IPv4 address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4, allow_loopback);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                (!allow_loopback).then_some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else if first == 0x0064 && v6.segments()[1] == 0xff9b {
                // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
                let [.., a, b] = v6.segments();
                refused_v4(Ipv4Addr::from((u32::from(a) << 16) | u32::from(b)), allow_loopback)
            } else {
                None
            }
        }
    }
}

fn refused_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        (!allow_loopback).then_some("loopback")
    } else if a == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        // 169.254.169.254 is the cloud metadata service.
        Some("link-local or metadata")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (100.64.0.0/10)")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignments (192.0.0.0/24)")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking (198.18.0.0/15)")
    } else if (a == 192 && b == 0 && c == 2) || (a == 198 && b == 51 && c == 100) || (a == 203 && b == 0 && c == 113) {
        Some("documentation")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast, broadcast or reserved")
    } else {
        None
    }
}

/// The host a webhook URL names, as the URL parser reads it (so `2130706433`, `0x7f.1`,
/// `127.1` and `[::1]` are the addresses they spell).
pub fn literal_address(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Names that are loopback by definition (RFC 6761), whatever a resolver says.
pub fn loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Checks a webhook URL before anything is sent: its scheme (https; http only to loopback under
/// the development setting) and, when it is written as an address or a loopback name, that
/// address. `Err` is a fixed reason, fit to show the provider.
pub fn check_url(raw: &str, allow_loopback: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|_| "not a URL".to_owned())?;
    let host = url.host_str().filter(|host| !host.is_empty()).ok_or("the URL has no host")?.to_owned();
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not accepted".into());
    }
    let loopback = match literal_address(&url) {
        Some(ip) => {
            if let Some(why) = refused(ip, allow_loopback) {
                return Err(format!("the address is {why}: webhooks go to public addresses"));
            }
            ip.is_loopback() || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
        }
        None if loopback_name(&host) => {
            if !allow_loopback {
                return Err("the address is loopback: webhooks go to public addresses".into());
            }
            true
        }
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback && allow_loopback => Ok(url),
        _ => Err("webhook URLs must be https".into()),
    }
}

/// A resolver for the webhook client that drops every address `refused` names; a name with no
/// address left fails to connect ("address not allowed").
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_loopback: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("address not allowed: {0}")]
pub struct NotAllowed(String);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if loopback_name(&host) && !allow_loopback {
                return Err(
                    Box::new(NotAllowed(format!("{host} is loopback"))) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.iter().copied().filter(|address| refused(address.ip(), allow_loopback).is_none()).collect();
            if allowed.is_empty() {
                return Err(Box::new(NotAllowed(format!("{host} resolves to no public address")))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_metadata_ranges_are_refused() {
        for blocked in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            assert!(refused(ip(blocked), false).is_some(), "{blocked} must be refused");
        }
        for public in ["8.8.8.8", "200.160.2.3", "172.32.0.1", "100.128.0.1", "2804:14c::1", "2606:4700::1111"] {
            assert_eq!(refused(ip(public), false), None, "{public} is public");
        }
        assert_eq!(refused(ip("127.0.0.1"), true), None, "loopback under the development setting");
        assert!(refused(ip("10.0.0.1"), true).is_some(), "the setting allows loopback only");
    }

    #[test]
    fn every_spelling_of_loopback_is_read_as_the_address_it_is() {
        for spelling in [
            "https://127.0.0.1/hook",
            "https://127.1.2.3/hook",
            "https://2130706433/hook",
            "https://0x7f000001/hook",
            "https://127.1/hook",
            "https://0177.0.0.1/hook",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://localhost/hook",
            "https://LocalHost./hook",
            "https://api.localhost/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://10.1.2.3/hook",
        ] {
            assert!(check_url(spelling, false).is_err(), "{spelling} must be refused");
        }
        assert!(check_url("https://hooks.clinica.com.br/medpay", false).is_ok());
        assert_eq!(check_url("http://hooks.clinica.com.br/medpay", false).unwrap_err(), "webhook URLs must be https");
        assert!(check_url("https://user:pw@hooks.clinica.com.br/", false).is_err());
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok(), "development: loopback over http");
        assert!(check_url("http://10.0.0.1/hook", true).is_err(), "development allows loopback, nothing else");
        assert!(check_url("not a url", false).is_err());
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let guarded = GuardedResolver { allow_loopback: false };
        let name = |raw: &str| reqwest::dns::Name::from_str(raw).unwrap();
        assert!(guarded.resolve(name("localhost")).await.is_err(), "loopback by name");
        // A name the resolver maps to loopback (as /etc/hosts does): every address dropped.
        for host in ["127.0.0.1", "ip6-localhost"] {
            if tokio::net::lookup_host((host, 0)).await.is_ok() {
                assert!(guarded.resolve(name(host)).await.is_err(), "{host} resolves to loopback only");
            }
        }
        let development = GuardedResolver { allow_loopback: true };
        let found: Vec<SocketAddr> = development.resolve(name("localhost")).await.unwrap().collect();
        assert!(found.iter().all(|address| address.ip().is_loopback()) && !found.is_empty(), "{found:?}");
    }
}
