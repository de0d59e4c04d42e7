//! Validation: the file's serde image ([`super::raw`]) checked into the model, one module per
//! domain. Every validator reports problems the same way ([`Validator::error`] and
//! [`Validator::warn`], each with its place in the file) and never stops at the first one;
//! whatever it needs from the machine (files, names, the environment) it asks the
//! [`Loader`](super::loader::Loader).

mod admin;
mod cache;
mod consumers;
mod jwt;
mod limits;
mod listeners;
mod plans;
mod process;
mod routes;
mod substitute;
mod tracing;
mod upstreams;

use super::error::ConfigError;
use super::loader::Loader;
use super::process::Process;
use super::routing::Routing;
use pingora_core::server::configuration::ServerConf;
use routes::RouteContext;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

/// Keys the gateway owns at the top level; everything else belongs to Pingora's `ServerConf`.
const GATEWAY_KEYS: &[&str] = &[
    "listeners",
    "upstreams",
    "routes",
    "max_request_header_size",
    "client_keepalive_timeout",
    "client_header_timeout",
    "client_body_timeout",
    "client_body_min_rate",
    "client_send_timeout",
    "path_normalization",
    "consumers",
    "api_key_header",
    "jwt",
    "redis",
    "cache",
    "admin",
    "access_log",
    "rate_limit_headers",
    "rate_limit_max_keys",
    "cache_status_headers",
    "dns",
    "tracing",
    "plans",
    "time_zone",
];

/// Collects the problems of one file while its domains are checked.
pub(super) struct Validator<'a> {
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigError>,
    /// Files, names and the environment.
    loader: &'a dyn Loader,
    /// The name servers peer names are resolved with (`dns.servers`; empty: the system's).
    dns_servers: Vec<std::net::SocketAddr>,
    /// The file's text (to tell a quoted `"${NAME}"` from a bare one).
    pub(super) source: &'a str,
    /// Values put in by references, with the reference, kept out of messages.
    substituted: Vec<(String, String)>,
    /// Places whose reference could not be read while only checking the file.
    unresolved: Vec<String>,
    /// OpenAPI documents read so far, by path as written (`None`: it could not be).
    specs: std::collections::HashMap<String, Option<std::rc::Rc<routes::LoadedSpec>>>,
}

fn index_path(section: &str, i: usize) -> String {
    format!("{section}[{i}]")
}

fn join(base: &str, rest: &str) -> String {
    if base.is_empty() {
        if rest == "." {
            String::new()
        } else {
            rest.to_string()
        }
    } else if rest.is_empty() || rest == "." {
        base.to_string()
    } else if rest.starts_with('[') {
        format!("{base}{rest}")
    } else {
        format!("{base}.{rest}")
    }
}

fn server_conf_keys() -> Vec<String> {
    match serde_yaml::to_value(ServerConf::default()) {
        Ok(Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" as the top level says it: "unknown key
/// (did you mean \"a\"?)", or with the keys there are when none is close; an unknown enum value
/// gets the same suggestion after serde's message.
fn with_suggestion(message: String) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let Some((word, known)) = quoted.split_first() else {
        return message;
    };
    let hint = did_you_mean(word, known.iter().copied());
    if message.starts_with("unknown field") {
        if hint.is_empty() && !known.is_empty() {
            format!("unknown key (known: {})", known.join(", "))
        } else {
            format!("unknown key{hint}")
        }
    } else if message.starts_with("unknown variant") {
        format!("{message}{hint}")
    } else {
        message
    }
}

/// Names of pools, consumers and groups: letters, digits, `_`, `-` and `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl<'a> Validator<'a> {
    /// A secret the environment should hold, missing: an error, or when the file is only being
    /// checked, a warning (the check may run where the secrets are not).
    fn missing_secret(&mut self, path: String, message: String) {
        if self.loader.secrets_optional() {
            self.warn(
                path,
                format!("{message}: it must be set where the gateway runs"),
            );
        } else {
            self.error(path, message);
        }
    }

    /// A validator that reads what it needs through `loader`.
    pub(super) fn new(loader: &'a dyn Loader) -> Validator<'a> {
        Validator {
            errors: Vec::new(),
            warnings: Vec::new(),
            loader,
            dns_servers: Vec::new(),
            source: "",
            substituted: Vec::new(),
            unresolved: Vec::new(),
            specs: Default::default(),
        }
    }

    /// The certificates (DER) of a PEM CA bundle named at `place`; `None` (and an error) when
    /// it cannot be read or holds none.
    fn ca_bundle(&mut self, place: &str, path: &str) -> Option<Vec<Vec<u8>>> {
        use rustls_pki_types::pem::PemObject;
        let path = self.loader.path(path);
        match self.loader.read(&path) {
            Ok(bytes) => {
                let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
                    .filter_map(|c| c.ok())
                    .map(|c| c.as_ref().to_vec())
                    .collect();
                if certs.is_empty() {
                    self.error(
                        place,
                        format!("{} holds no PEM certificate", path.display()),
                    );
                    return None;
                }
                // Every certificate is parsed where it is used (trust stores, Pingora's peers).
                if let Some(i) = certs
                    .iter()
                    .position(|c| x509_parser::parse_x509_certificate(c).is_err())
                {
                    self.error(
                        place,
                        format!(
                            "certificate {} of {} is not a valid X.509 certificate",
                            i + 1,
                            path.display()
                        ),
                    );
                    return None;
                }
                Some(certs)
            }
            Err(e) => {
                self.error(place, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserialize one item, reporting a failure at `base` plus the path inside the item. serde
    /// stops at the first problem, so the offending entry is removed and the item tried again,
    /// until it passes: every problem of the file's format in the item is reported. A bad map
    /// entry is removed by itself; a list element that cannot do without it (a required field)
    /// is removed whole, and the places of the elements after it are still reported as they are
    /// in the file. An item that had any such problem is not checked further (`None`): what is
    /// left of it is not what the file says, and would only produce misleading follow-ups.
    fn item<T: DeserializeOwned>(&mut self, base: &str, mut value: Value) -> Option<T> {
        let mut failed = false;
        let mut removed = Removed::default();
        // A key just removed: the "missing field" that may follow is its consequence.
        let mut dropped: Option<(String, String)> = None;
        for _ in 0..50 {
            let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(t) => return (!failed).then_some(t),
                Err(e) => e,
            };
            failed = true;
            let segments: Vec<Segment> = e.path().iter().cloned().collect();
            let place = removed.original(&segments);
            let message = with_suggestion(e.inner().to_string());
            let consequence = dropped.take().is_some_and(|(parent, key)| {
                parent == place.text && message == format!("missing field `{key}`")
            });
            if !consequence {
                self.error(join(base, &place.text), message);
            }
            match segments.last() {
                Some(Segment::Map { key }) if !consequence => {
                    if !remove_key(&mut value, &segments) {
                        return None;
                    }
                    dropped = Some((place.parent_text, key.clone()));
                }
                _ => {
                    // The innermost list element holding the problem goes.
                    let i = segments
                        .iter()
                        .rposition(|s| matches!(s, Segment::Seq { .. }))?;
                    if !remove_element(&mut value, &segments[..=i]) {
                        return None;
                    }
                    removed.note(&place.prefixes[i], place.indices[i]);
                }
            }
        }
        None
    }

    fn sequence(&mut self, section: &str, value: Option<Value>, required: bool) -> Vec<Value> {
        match value {
            Some(Value::Sequence(items)) => items,
            Some(Value::Null) | None => {
                if required {
                    self.error(section, "is required and must list at least one entry");
                }
                Vec::new()
            }
            Some(_) => {
                self.error(section, "must be a list");
                Vec::new()
            }
        }
    }

    /// Addresses or CIDR ranges, each reported at its place in the list.
    fn cidrs(&mut self, base: &str, list: Vec<String>) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for (j, text) in list.into_iter().enumerate() {
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.error(
                    format!("{base}[{j}]"),
                    format!(
                        "\"{text}\" is not an address or CIDR range such as 10.0.0.0/8 or ::1/128"
                    ),
                ),
            }
        }
        out
    }

    pub(super) fn document(&mut self, doc: Value) -> Option<(Process, Routing)> {
        let doc = self.substitute(doc);
        let map = match doc {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ => {
                self.error(
                    "",
                    "the configuration must be a YAML mapping of keys to values",
                );
                return None;
            }
        };
        let server_keys = server_conf_keys();
        let mut server_map = Mapping::new();
        let mut listeners = None;
        let mut upstreams = None;
        let mut routes = None;
        let mut max_header = None;
        let mut keepalive = None;
        let mut header_timeout = None;
        let mut body_timeout = None;
        let mut body_min_rate = None;
        let mut send_timeout = None;
        let mut path_normalization = None;
        let mut consumers = None;
        let mut plans = None;
        let mut time_zone = None;
        let mut api_key_header = None;
        let mut jwt = None;
        let mut redis = None;
        let mut rate_limit_headers = None;
        let mut rate_limit_max_keys = None;
        let mut dns = None;
        let mut cache_status_headers = None;
        let mut tracing = None;
        let mut cache = None;
        let mut admin = None;
        let mut access_log = None;
        for (k, v) in map {
            let Some(key) = k.as_str().map(str::to_string) else {
                self.error("", format!("top-level key {k:?} is not a string"));
                continue;
            };
            match key.as_str() {
                "listeners" => listeners = Some(v),
                "upstreams" => upstreams = Some(v),
                "routes" => routes = Some(v),
                "max_request_header_size" => max_header = Some(v),
                "client_keepalive_timeout" => keepalive = Some(v),
                "client_header_timeout" => header_timeout = Some(v),
                "client_body_timeout" => body_timeout = Some(v),
                "client_body_min_rate" => body_min_rate = Some(v),
                "client_send_timeout" => send_timeout = Some(v),
                "path_normalization" => path_normalization = Some(v),
                "consumers" => consumers = Some(v),
                "plans" => plans = Some(v),
                "time_zone" => time_zone = Some(v),
                "api_key_header" => api_key_header = Some(v),
                "jwt" => jwt = Some(v),
                "redis" => redis = Some(v),
                "rate_limit_headers" => rate_limit_headers = Some(v),
                "rate_limit_max_keys" => rate_limit_max_keys = Some(v),
                "tracing" => tracing = Some(v),
                "dns" => dns = Some(v),
                "cache_status_headers" => cache_status_headers = Some(v),
                "cache" => cache = Some(v),
                "admin" => admin = Some(v),
                "access_log" => access_log = Some(v),
                _ if server_keys.iter().any(|s| s == &key) => {
                    server_map.insert(Value::String(key), v);
                }
                _ => {
                    let hint = did_you_mean(
                        &key,
                        GATEWAY_KEYS
                            .iter()
                            .copied()
                            .chain(server_keys.iter().map(String::as_str)),
                    );
                    self.error(key.clone(), format!("unknown key{hint}"));
                }
            }
        }

        let server = self.server_conf(server_map);
        let listeners = self.listeners(listeners);
        self.dns_servers = dns.map(|v| self.dns(v)).unwrap_or_default();
        let (upstreams, broken_upstreams) = self.upstreams(upstreams);
        let max_request_header_size = self.max_header(max_header);
        let client_keepalive_timeout = self.client_keepalive(keepalive);
        let client_timeouts =
            self.client_timeouts(header_timeout, body_timeout, body_min_rate, send_timeout);
        let path_normalization = self.path_normalization(path_normalization);
        let plans = self.plans(plans);
        let time_zone = self.time_zone(time_zone);
        let redis_given = matches!(&redis, Some(v) if !v.is_null());
        let consumers = self.consumers(consumers, &plans, redis_given);
        let api_key_header = self.api_key_header(api_key_header);
        let jwt_declared = matches!(&jwt, Some(Value::Sequence(s)) if !s.is_empty());
        let jwt = self.jwt(jwt);
        let redis_declared = matches!(&redis, Some(v) if !v.is_null());
        let redis = redis.and_then(|v| self.redis(v));
        let rate_limit_headers = self.header_style("rate_limit_headers", rate_limit_headers);
        let rate_limit_max_keys = self.max_keys(rate_limit_max_keys);
        let cache_status_headers = self.header_style("cache_status_headers", cache_status_headers);
        let (tracing, otlp) = match tracing {
            Some(v) => self.tracing(v),
            None => (None, None),
        };
        let cache = self.cache(cache);
        let admin = admin.and_then(|v| self.admin(v, &listeners));
        let access_log = access_log.and_then(|v| self.access_log(v));
        let ctx = RouteContext {
            upstreams: &upstreams,
            broken_upstreams: &broken_upstreams,
            consumers: &consumers,
            // Issuers and Redis given, even with problems of their own (reported there).
            have_jwt: jwt_declared || !jwt.is_empty(),
            have_redis: redis_declared || redis.is_some(),
            have_client_auth: listeners.iter().any(|l| l.client_auth.is_some()),
            paths: path_normalization,
            api_key_header: api_key_header.as_str(),
        };
        let routes = self.routes(routes, &ctx);

        let process = Process {
            server: server?,
            listeners,
            admin,
            cache,
            access_log,
            client_keepalive_timeout,
            client_timeouts,
            otlp,
        };
        let routing = Routing {
            upstreams,
            routes,
            max_request_header_size,
            path_normalization,
            consumers,
            plans,
            time_zone,
            api_key_header,
            jwt,
            redis,
            rate_limit_headers,
            rate_limit_max_keys,
            cache_status_headers,
            tracing,
        };
        Some((process, routing))
    }
}

/// List elements removed while checking an item, by the list's place in the file, so that
/// later problems are reported at their places in the file.
#[derive(Default)]
struct Removed(Vec<(String, usize)>);

/// A place inside an item, as in the file.
struct Place {
    /// `rate_limit[3].key`
    text: String,
    /// The text of the place's parent (`rate_limit[3]`).
    parent_text: String,
    /// Per segment: the text of the place before it, and for a list index its index in the
    /// file.
    prefixes: Vec<String>,
    indices: Vec<usize>,
}

impl Removed {
    fn note(&mut self, list: &str, index: usize) {
        self.0.push((list.to_string(), index));
    }

    /// The place of `segments` (in the item as it is now) in the file.
    fn original(&self, segments: &[Segment]) -> Place {
        let mut text = String::new();
        let mut parent_text = String::new();
        let mut prefixes = Vec::new();
        let mut indices = Vec::new();
        for seg in segments {
            parent_text = text.clone();
            prefixes.push(text.clone());
            match seg {
                Segment::Seq { index } => {
                    let mut gone: Vec<usize> = self
                        .0
                        .iter()
                        .filter(|(list, _)| *list == text)
                        .map(|(_, i)| *i)
                        .collect();
                    gone.sort_unstable();
                    let mut i = *index;
                    for g in gone {
                        if g <= i {
                            i += 1;
                        }
                    }
                    indices.push(i);
                    text.push_str(&format!("[{i}]"));
                }
                other => {
                    indices.push(0);
                    if !text.is_empty() {
                        text.push('.');
                    }
                    text.push_str(&match other {
                        Segment::Map { key } => key.clone(),
                        Segment::Enum { variant } => variant.clone(),
                        _ => "?".to_string(),
                    });
                }
            }
        }
        Place {
            text,
            parent_text,
            prefixes,
            indices,
        }
    }
}

/// The value at `segments` inside `value`.
fn walk<'v>(value: &'v mut Value, segments: &[Segment]) -> Option<&'v mut Value> {
    let mut cur = value;
    for seg in segments {
        cur = match (seg, cur) {
            (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str())?,
            (Segment::Seq { index }, Value::Sequence(s)) => s.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Remove the map entry at `segments`; false when there is none.
fn remove_key(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    match walk(value, parents) {
        Some(Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Remove the list element at `segments` (which end in its index); false when there is none.
fn remove_element(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((Segment::Seq { index }, parents)) = segments.split_last() else {
        return false;
    };
    match walk(value, parents) {
        Some(Value::Sequence(s)) if *index < s.len() => {
            s.remove(*index);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
pub(super) mod testing;

#[cfg(test)]
mod tests;
