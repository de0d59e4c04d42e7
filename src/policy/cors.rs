//! CORS per route, compiled: a preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered by the gateway and never reaches the upstream;
//! an allowed origin's other requests get the `Access-Control-*` headers on their answer
//! (the upstream's own are replaced, so one origin's answer is never another's); every answer of
//! the route says `Vary: Origin` when the headers depend on the origin.

use crate::config::{Cors, OriginPattern};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

/// The response headers CORS owns on a route that has rules.
pub const OWNED: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// A route's rules, with their header values made once.
#[derive(Debug)]
pub struct CorsPolicy {
    origins: Vec<OriginPattern>,
    methods: Vec<Method>,
    /// `None`: any request header a preflight asks for.
    headers: Option<Vec<HeaderName>>,
    credentials: bool,
    /// `*` rather than the request's origin: any origin, without credentials.
    wildcard: bool,
    methods_value: HeaderValue,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    max_age_value: Option<HeaderValue>,
}

/// What a preflight gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Preflight {
    /// `204` with these headers.
    Allowed(Vec<(HeaderName, HeaderValue)>),
    /// `403`: the origin, method or a header is not allowed (said in the detail).
    Refused(&'static str),
}

static VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);
static STAR: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");

impl CorsPolicy {
    pub fn new(c: &Cors) -> CorsPolicy {
        let join = |names: &mut dyn Iterator<Item = &str>| {
            HeaderValue::from_str(&names.collect::<Vec<_>>().join(", ")).ok()
        };
        let wildcard = c.allow_origins.contains(&OriginPattern::Any) && !c.allow_credentials;
        CorsPolicy {
            origins: c.allow_origins.clone(),
            methods: c.allow_methods.clone(),
            headers: c.allow_headers.clone(),
            credentials: c.allow_credentials,
            wildcard,
            methods_value: join(&mut c.allow_methods.iter().map(Method::as_str))
                .unwrap_or_else(|| HeaderValue::from_static("GET")),
            headers_value: c
                .allow_headers
                .as_ref()
                .and_then(|h| join(&mut h.iter().map(HeaderName::as_str))),
            expose_value: (!c.expose_headers.is_empty())
                .then(|| join(&mut c.expose_headers.iter().map(HeaderName::as_str)))
                .flatten(),
            max_age_value: c.max_age.map(|d| HeaderValue::from(d.as_secs())),
        }
    }

    /// Whether the request is a CORS preflight: `OPTIONS` with an `Origin` and the method the
    /// browser wants to use (returned).
    pub fn requested_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
        if *method != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
            return None;
        }
        let wanted = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        Method::from_bytes(wanted.as_bytes()).ok()
    }

    /// The request's `Origin`, when it is one (and only one) this route admits.
    fn admitted<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let mut all = headers.get_all(header::ORIGIN).iter();
        let origin = all.next()?;
        if all.next().is_some() {
            return None;
        }
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|p| p.admits(text))
            .then_some(origin)
    }

    /// `Access-Control-Allow-Origin` for an admitted origin.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.wildcard {
            STAR.clone()
        } else {
            origin.clone()
        }
    }

    /// The answer to a preflight asking for `method`.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Preflight {
        let Some(origin) = self.admitted(headers) else {
            return Preflight::Refused("the origin is not allowed by the route's CORS rules");
        };
        // GET and HEAD are allowed whenever GET is, as for routes.
        let method_ok = self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET));
        if !method_ok {
            return Preflight::Refused("the method is not allowed by the route's CORS rules");
        }
        let asked: Vec<&str> = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let allow_headers = match &self.headers {
            Some(list) => {
                if !asked
                    .iter()
                    .all(|h| list.iter().any(|n| n.as_str().eq_ignore_ascii_case(h)))
                {
                    return Preflight::Refused(
                        "a request header is not allowed by the route's CORS rules",
                    );
                }
                self.headers_value.clone()
            }
            // Any header: the ones asked for, when they are header names.
            None if asked.is_empty() => None,
            None => {
                if asked
                    .iter()
                    .any(|h| HeaderName::from_bytes(h.as_bytes()).is_err())
                {
                    return Preflight::Refused("a requested header is not a header name");
                }
                HeaderValue::from_str(&asked.join(", ")).ok()
            }
        };
        let mut out = vec![
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin(origin),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                self.methods_value.clone(),
            ),
            (header::VARY, VARY_PREFLIGHT.clone()),
        ];
        if let Some(h) = allow_headers {
            out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h));
        }
        if self.credentials {
            out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone()));
        }
        if let Some(age) = &self.max_age_value {
            out.push((header::ACCESS_CONTROL_MAX_AGE, age.clone()));
        }
        Preflight::Allowed(out)
    }

    /// The headers for the answer to a request with these headers (any method, any status):
    /// the upstream's own CORS headers are dropped first, then an admitted origin's are set;
    /// `Vary: Origin` is added unless the answer is the same for every origin.
    pub fn apply(&self, request: &HeaderMap, response: &mut pingora_http::ResponseHeader) {
        for name in &OWNED {
            response.remove_header(name);
        }
        if !self.wildcard {
            if let Some(name) = crate::wire::vary_adds(&response.headers, "Origin") {
                let _ = response.append_header(header::VARY, name);
            }
        }
        if self.wildcard {
            // The same for every origin, and for requests without one (a cache may serve that
            // answer to a browser's cross-origin request later).
            let _ = response.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR.clone());
            if let Some(expose) = &self.expose_value {
                let _ =
                    response.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
            return;
        }
        let Some(origin) = self.admitted(request) else {
            return;
        };
        let _ = response.insert_header(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        if self.credentials {
            let _ = response.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(expose) = &self.expose_value {
            let _ = response.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}
