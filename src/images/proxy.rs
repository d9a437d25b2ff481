//! Which proxy a URL goes through. Labs set proxies in the inventory (`[images] proxy`,
//! `no_proxy`) or, as for LAVA's python-requests, in `http_proxy`/`https_proxy`/`no_proxy`.
//! labd resolves the proxy itself (rather than letting reqwest read the environment) so that an
//! error can say which proxy failed.

use std::net::IpAddr;

use reqwest::Url;

/// One `no_proxy` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `*`: no URL uses a proxy.
    All,
    /// `example.com` or `.example.com`: the host and its subdomains.
    Domain(String, Option<u16>),
    /// `10.0.0.0/8`, `::1`, `192.168.1.5` (a bare address is a /32 or /128).
    Net(IpAddr, u8, Option<u16>),
}

/// A parsed `no_proxy` list (comma or space separated, as curl and python-requests read it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(Vec<Rule>);

impl NoProxy {
    pub fn parse(list: &str) -> Self {
        let rules = list
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                if entry == "*" {
                    return Rule::All;
                }
                let (addr, prefix) = match entry.split_once('/') {
                    Some((a, p)) => (a, p.parse::<u8>().ok()),
                    None => (entry, None),
                };
                let bare = addr.trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = bare.parse::<IpAddr>() {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    return Rule::Net(ip, prefix.unwrap_or(max).min(max), None);
                }
                // host:port, [v6]:port
                let (host, port) = split_port(addr);
                if let Ok(ip) = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    return Rule::Net(ip, max, port);
                }
                let host = host.trim_start_matches("*.").trim_start_matches('.');
                Rule::Domain(host.to_ascii_lowercase(), port)
            })
            .collect();
        Self(rules)
    }

    /// True when `url` must be fetched directly.
    pub fn matches(&self, url: &Url) -> bool {
        let port = url.port_or_known_default();
        let host = url.host_str().unwrap_or("");
        let host_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|rule| match rule {
            Rule::All => true,
            Rule::Domain(d, p) => {
                p.is_none_or(|p| Some(p) == port)
                    && (host == *d
                        || (host.len() > d.len()
                            && host.ends_with(d.as_str())
                            && host.as_bytes()[host.len() - d.len() - 1] == b'.'))
            }
            Rule::Net(net, prefix, p) => {
                p.is_none_or(|p| Some(p) == port)
                    && host_ip.is_some_and(|ip| in_net(ip, *net, *prefix))
            }
        })
    }
}

fn split_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|a| in_net(IpAddr::V4(a), net, prefix)),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// The resolved proxy configuration of the worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    pub http: Option<Url>,
    pub https: Option<Url>,
    pub no_proxy: NoProxy,
}

/// Parses a proxy address as admins write it: `http://proxy:3128`, or `proxy:3128` (http).
pub fn parse_proxy_url(s: &str) -> Result<Url, String> {
    let s = s.trim();
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("proxy {s:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "proxy {s:?}: scheme {other:?} is not supported (use http:// or https://)"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("proxy {s:?} has no host"));
    }
    Ok(url)
}

impl ProxySettings {
    /// Combines the inventory's settings with the environment. `configured` is `[images] proxy`:
    /// when set it is used for http and https and the environment's proxies are ignored; an
    /// empty string means "no proxy at all". `configured_no_proxy` likewise wins over `no_proxy`.
    pub fn resolve(
        configured: Option<&str>,
        configured_no_proxy: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        // python-requests reads both spellings; the lowercase one wins, as in curl.
        let var = |lower: &str| {
            env(lower)
                .or_else(|| env(&lower.to_ascii_uppercase()))
                .filter(|v| !v.trim().is_empty())
        };
        let (http, https) = match configured {
            Some(p) if p.trim().is_empty() => (None, None),
            Some(p) => {
                let url = parse_proxy_url(p)?;
                (Some(url.clone()), Some(url))
            }
            None => {
                let all = var("all_proxy");
                let http = var("http_proxy").or_else(|| all.clone());
                let https = var("https_proxy").or(all);
                (
                    http.map(|p| parse_proxy_url(&p)).transpose()?,
                    https.map(|p| parse_proxy_url(&p)).transpose()?,
                )
            }
        };
        let no_proxy = match configured_no_proxy {
            Some(list) => NoProxy::parse(list),
            None => NoProxy::parse(&var("no_proxy").unwrap_or_default()),
        };
        Ok(Self {
            http,
            https,
            no_proxy,
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, String> {
        Self::resolve(None, None, |k| std::env::var(k).ok())
    }

    /// The proxy `url` goes through, if any.
    pub fn for_url(&self, url: &Url) -> Option<&Url> {
        let proxy = match url.scheme() {
            "http" => self.http.as_ref(),
            "https" => self.https.as_ref(),
            _ => None,
        }?;
        (!self.no_proxy.matches(url)).then_some(proxy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn no_proxy_rules() {
        let np = NoProxy::parse("localhost, .lab.example, 10.0.0.0/8,192.168.1.5 ,files:8080,::1");
        assert!(np.matches(&u("http://localhost/x")));
        assert!(np.matches(&u("http://lab.example/x")));
        assert!(np.matches(&u("http://images.lab.example/x")));
        assert!(!np.matches(&u("http://notlab.example/x")));
        assert!(np.matches(&u("http://10.1.2.3/x")));
        assert!(!np.matches(&u("http://11.1.2.3/x")));
        assert!(np.matches(&u("https://192.168.1.5/x")));
        assert!(np.matches(&u("http://files:8080/x")));
        assert!(!np.matches(&u("http://files/x")));
        assert!(np.matches(&u("http://[::1]:9/x")));
        assert!(NoProxy::parse("*").matches(&u("https://anything/")));
        assert!(!NoProxy::parse("").matches(&u("https://anything/")));
    }

    #[test]
    fn inventory_wins_over_environment() {
        let env = |k: &str| match k {
            "http_proxy" => Some("http://envproxy:3128".to_string()),
            "HTTPS_PROXY" => Some("envproxy:3129".to_string()),
            "no_proxy" => Some("internal".to_string()),
            _ => None,
        };
        let s = ProxySettings::resolve(None, None, env).unwrap();
        assert_eq!(
            s.for_url(&u("http://a/")).map(Url::as_str),
            Some("http://envproxy:3128/")
        );
        assert_eq!(
            s.for_url(&u("https://a/")).map(Url::as_str),
            Some("http://envproxy:3129/")
        );
        assert_eq!(s.for_url(&u("http://internal/")), None);
        assert_eq!(s.for_url(&u("file:///x")), None);

        let s = ProxySettings::resolve(Some("http://lab:8888"), Some("a.lab"), env).unwrap();
        assert_eq!(
            s.for_url(&u("https://b/")).map(Url::as_str),
            Some("http://lab:8888/")
        );
        assert_eq!(
            s.for_url(&u("http://internal/")).map(Url::as_str),
            Some("http://lab:8888/")
        );
        assert_eq!(s.for_url(&u("http://x.a.lab/")), None);

        let s = ProxySettings::resolve(Some(""), None, env).unwrap();
        assert_eq!(s.for_url(&u("http://a/")), None);
        assert!(ProxySettings::resolve(Some("socks5://p:1"), None, env).is_err());
    }
}
