//! HTTP/1.1 framing on top of `httparse`: one request out of a byte buffer, one response
//! into bytes. Only `Content-Length` bodies are accepted.

use httparse::Status;
use std::cell::Cell;

/// The largest body accepted unless `--http-api-max-payload-size` says otherwise (as in
/// Firecracker).
pub const MAX_PAYLOAD_BYTES: usize = 51_200;
/// The largest request line plus headers accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 32;

/// A request the server could not frame; the connection is answered 400 and closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("Invalid HTTP request: {0}.")]
    Malformed(httparse::Error),
    #[error("The request line and headers are larger than {MAX_HEAD_BYTES} bytes.")]
    HeadTooLarge,
    #[error("Invalid Content-Length header: {0:?}.")]
    BadContentLength(String),
    #[error("Content-Length {0} is larger than any request body can be.")]
    ContentLengthOverflow(String),
    #[error("The request has conflicting Content-Length headers: {0} and {1}.")]
    ConflictingContentLength(usize, usize),
    #[error("Request payload with size {0} is larger than the limit of {1} allowed by server.")]
    PayloadTooLarge(usize, usize),
    #[error("Transfer-Encoding is not supported: send the body with a Content-Length.")]
    TransferEncoding,
    #[error("The request path {0:?} is not valid.")]
    BadPath(String),
}

/// One framed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The absolute path without query string, e.g. `/drives/rootfs`.
    pub path: String,
    pub body: Vec<u8>,
    /// False when the client asked to close (`Connection: close`, or HTTP/1.0 by default).
    pub keep_alive: bool,
}

/// What a buffer holds so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed; `expects_continue` once the head asks for `100 Continue`.
    Incomplete { expects_continue: bool },
    /// A whole request, and how many bytes of the buffer it used.
    Complete(Request, usize),
}

thread_local! {
    /// The body limit of the server running on this thread. Kept per thread, not passed by
    /// the connection code, so that code stays as it is: the API thread sets it once, before
    /// it serves, from `--http-api-max-payload-size`.
    static MAX_PAYLOAD: Cell<usize> = const { Cell::new(MAX_PAYLOAD_BYTES) };
}

/// Makes [`parse_request`] on this thread accept bodies of up to `bytes`.
pub fn set_max_payload(bytes: usize) {
    MAX_PAYLOAD.with(|max| max.set(bytes));
}

/// Frames the first request in `buf`, with this thread's body limit.
pub fn parse_request(buf: &[u8]) -> Result<Parsed, HttpError> {
    parse_request_limited(buf, MAX_PAYLOAD.with(Cell::get))
}

/// Frames the first request in `buf`; a body over `max_payload` bytes is refused.
pub fn parse_request_limited(buf: &[u8], max_payload: usize) -> Result<Parsed, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf).map_err(HttpError::Malformed)? {
        // The same limit whether the head arrived in one read or in many.
        Status::Complete(len) if len > MAX_HEAD_BYTES => return Err(HttpError::HeadTooLarge),
        Status::Complete(len) => len,
        Status::Partial if buf.len() > MAX_HEAD_BYTES => return Err(HttpError::HeadTooLarge),
        Status::Partial => {
            return Ok(Parsed::Incomplete {
                expects_continue: false,
            })
        }
    };
    let head = Head::read(&req, max_payload)?;
    let total = head_len + head.content_length;
    if buf.len() < total {
        let expects_continue = head.expects_continue;
        return Ok(Parsed::Incomplete { expects_continue });
    }
    let request = Request {
        method: req.method.unwrap_or_default().to_string(),
        path: absolute_path(req.path.unwrap_or_default())?,
        body: buf[head_len..total].to_vec(),
        keep_alive: head.keep_alive,
    };
    Ok(Parsed::Complete(request, total))
}

/// What the headers say about framing.
struct Head {
    content_length: usize,
    keep_alive: bool,
    expects_continue: bool,
}

impl Head {
    fn read(req: &httparse::Request, max_payload: usize) -> Result<Head, HttpError> {
        let mut head = Head {
            content_length: 0,
            keep_alive: req.version == Some(1),
            expects_continue: false,
        };
        let mut seen_length = None;
        for header in req.headers.iter() {
            let value = String::from_utf8_lossy(header.value);
            let value = value.trim();
            match header.name.to_ascii_lowercase().as_str() {
                "content-length" => {
                    // Two different lengths make the framing ambiguous (RFC 9112 6.3).
                    let len = content_length(value, max_payload)?;
                    match seen_length.replace(len) {
                        Some(prev) if prev != len => {
                            return Err(HttpError::ConflictingContentLength(prev, len))
                        }
                        _ => {}
                    }
                    head.content_length = len;
                }
                "transfer-encoding" => return Err(HttpError::TransferEncoding),
                "connection" if value.eq_ignore_ascii_case("close") => head.keep_alive = false,
                "connection" if value.eq_ignore_ascii_case("keep-alive") => head.keep_alive = true,
                "expect" => head.expects_continue = value.eq_ignore_ascii_case("100-continue"),
                _ => {}
            }
        }
        Ok(head)
    }
}

fn content_length(value: &str, max_payload: usize) -> Result<usize, HttpError> {
    let bad = || HttpError::BadContentLength(value.to_string());
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match value.parse::<usize>() {
        Ok(len) if len <= max_payload => Ok(len),
        Ok(len) => Err(HttpError::PayloadTooLarge(len, max_payload)),
        Err(_) => Err(HttpError::ContentLengthOverflow(value.to_string())),
    }
}

/// The path of an origin-form (`/x`) or absolute-form (`http://host/x`) target, query cut off.
fn absolute_path(target: &str) -> Result<String, HttpError> {
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(HttpError::BadPath(target.to_string()));
    }
    Ok(path.to_string())
}

/// The interim reply to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A response; JSON bodies only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Option<String>,
    /// Ask the client to close, and close after sending.
    pub close: bool,
}

impl Response {
    /// 204 No Content.
    pub fn no_content() -> Self {
        Response {
            status: 204,
            body: None,
            close: false,
        }
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, body: String) -> Self {
        Response {
            status,
            body: Some(body),
            close: false,
        }
    }

    /// `status` with `{"fault_message": message}`.
    pub fn fault(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "fault_message": message }).to_string();
        Response::json(status, body)
    }

    /// The same response, marked to close the connection.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: Ember\r\n",
            self.status,
            reason(self.status)
        );
        if let Some(body) = &self.body {
            head += &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        if self.close {
            head += "Connection: close\r\n";
        }
        head += "\r\n";
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_deref().unwrap_or_default().as_bytes());
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        408 => "Request Timeout",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8]) -> (Request, usize) {
        match parse_request(bytes) {
            Ok(Parsed::Complete(req, used)) => (req, used),
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn parses_a_put_with_body_and_leaves_the_rest() {
        let wire =
            b"PUT /drives/a?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n";
        let (req, used) = complete(wire);
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("PUT", "/drives/a")
        );
        assert_eq!(req.body, b"{}");
        assert!(req.keep_alive);
        assert_eq!(&wire[used..], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn partial_requests_ask_for_more() {
        let partial = Parsed::Incomplete {
            expects_continue: false,
        };
        assert_eq!(parse_request(b"GET / HT"), Ok(partial));
        let head = b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n{";
        let waiting = Parsed::Incomplete {
            expects_continue: true,
        };
        assert_eq!(parse_request(head), Ok(waiting));
    }

    #[test]
    fn framing_errors() {
        let cases: [(&[u8], HttpError); 5] = [
            (
                b"GET / HTTP/1.1\r\nContent-Length: 51201\r\n\r\n",
                HttpError::PayloadTooLarge(51_201, MAX_PAYLOAD_BYTES),
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                HttpError::BadContentLength("-1".into()),
            ),
            (
                b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::TransferEncoding,
            ),
            (b"GET * HTTP/1.1\r\n\r\n", HttpError::BadPath("*".into())),
            (
                b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
                HttpError::Malformed(httparse::Error::HeaderName),
            ),
        ];
        for (wire, err) in cases {
            assert_eq!(parse_request(wire), Err(err));
        }
        let conflicting = b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 0\r\n\r\n{}";
        let err = parse_request(conflicting).unwrap_err();
        assert_eq!(err, HttpError::ConflictingContentLength(2, 0));
        assert_eq!(
            err.to_string(),
            "The request has conflicting Content-Length headers: 2 and 0."
        );
        let past_u64 = b"PUT /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(
            parse_request(past_u64).unwrap_err().to_string(),
            "Content-Length 99999999999999999999999 is larger than any request body can be."
        );
        let repeated = b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n{}";
        assert!(matches!(parse_request(repeated), Ok(Parsed::Complete(..))));
        let huge = [b'a'; MAX_HEAD_BYTES + 1];
        assert_eq!(parse_request(&huge), Err(HttpError::HeadTooLarge));
        let long_header = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(
            parse_request(long_header.as_bytes()),
            Err(HttpError::HeadTooLarge)
        );
    }

    #[test]
    fn the_payload_limit_is_the_servers() {
        let wire = b"PUT /x HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"abc\": 12}";
        assert!(matches!(parse_request(wire), Ok(Parsed::Complete(..))));
        assert_eq!(
            parse_request_limited(wire, 10),
            Err(HttpError::PayloadTooLarge(11, 10))
        );
        // A thread's own limit, as the API thread sets it.
        std::thread::spawn(move || {
            set_max_payload(10);
            assert_eq!(parse_request(wire), Err(HttpError::PayloadTooLarge(11, 10)));
        })
        .join()
        .unwrap();
        let message = HttpError::PayloadTooLarge(11, 10).to_string();
        assert_eq!(
            message,
            "Request payload with size 11 is larger than the limit of 10 allowed by server."
        );
    }

    #[test]
    fn connection_persistence_follows_the_version_and_header() {
        let (req, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!req.keep_alive);
        let (req, _) = complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(req.keep_alive);
        let (req, _) =
            complete(b"GET http://localhost/version HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!req.keep_alive);
        assert_eq!(req.path, "/version");
    }

    #[test]
    fn responses_serialize() {
        let text = String::from_utf8(Response::no_content().to_bytes()).unwrap();
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nServer: Ember\r\n\r\n");
        let text = String::from_utf8(Response::fault(400, "no").closing().to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("Content-Length: 22\r\nConnection: close\r\n\r\n"));
        assert!(text.ends_with(r#"{"fault_message":"no"}"#));
    }
}
