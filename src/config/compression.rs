//! A route's response compression: which codings it may use (in its order of preference), how
//! small a response stays as it is, and which content types are compressed.

/// A content coding the gateway compresses with (Pingora's encoders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    /// The token of `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The coding named by `token` (case-insensitive; `x-gzip` is gzip).
    pub fn from_token(token: &str) -> Option<Coding> {
        match token.to_ascii_lowercase().as_str() {
            "zstd" => Some(Coding::Zstd),
            "br" => Some(Coding::Brotli),
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            _ => None,
        }
    }

    /// The level used: fast enough for the request path, as nginx's and Caddy's defaults are.
    pub fn level(self) -> u32 {
        match self {
            Coding::Zstd => 3,
            Coding::Brotli => 4,
            Coding::Gzip => 5,
        }
    }
}

/// `routes[].compression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Codings the route may use; between codings a client likes as much, the first wins.
    pub codings: Vec<Coding>,
    /// Responses whose `Content-Length` is below this stay as they are.
    pub min_size: u64,
    /// `type/subtype` or `type/*`, lower case.
    pub content_types: Vec<String>,
}

/// Compressed when `compression.content_types` is not given (streams such as NDJSON are left
/// out: an encoder holds bytes back until it has enough to compress).
pub const DEFAULT_CONTENT_TYPES: [&str; 8] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/problem+json",
    "application/wasm",
    "image/svg+xml",
    "application/graphql-response+json",
];
