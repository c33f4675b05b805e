//! Parsing `key=value` conninfo strings and `postgresql://` URLs, and
//! quoting values back.

use std::collections::BTreeMap;

use super::ConnInfo;
use crate::pg::PgError;

/// Quotes a conninfo value.
pub(crate) fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Parses `key=value` pairs as libpq does (values may be single-quoted,
/// with backslash escapes). One pass over the grammar on purpose: split
/// into helpers it would scatter the quoting rules.
pub(super) fn parse_keywords(s: &str) -> Result<ConnInfo, PgError> {
    let mut params = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(PgError::Conninfo(format!(
                "missing \"=\" after {key:?} in the connection string"
            )));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            let mut closed = false;
            while let Some(c) = it.next() {
                match c {
                    '\\' => {
                        if let Some(n) = it.next() {
                            value.push(n);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(PgError::Conninfo(format!(
                    "unterminated quoted value for {key:?} in the connection string"
                )));
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(n) = it.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err(PgError::Conninfo(
                "empty parameter name in the connection string".into(),
            ));
        }
        params.push((key, value));
    }
    Ok(ConnInfo { params })
}

fn percent_decode(s: &str) -> Result<String, PgError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    PgError::Conninfo("invalid percent-encoding in the connection URL".into())
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| PgError::Conninfo("the connection URL does not decode to UTF-8".into()))
}

/// Parses a `postgresql://` URL as libpq does: user, password, hosts and
/// ports, database, then `?` parameters. One pass over the grammar on
/// purpose, like [`parse_keywords`].
pub(super) fn parse_url(s: &str) -> Result<ConnInfo, PgError> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .expect("caller checked the scheme");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (netloc, path) = match rest.split_once('/') {
        Some((n, p)) => (n, Some(p)),
        None => (rest, None),
    };
    let mut params = Vec::new();
    let hosts = match netloc.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, pw) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.push(("user".to_string(), percent_decode(user)?));
            }
            if let Some(p) = pw {
                params.push(("password".to_string(), percent_decode(p)?));
            }
            hosts
        }
        None => netloc,
    };
    if !hosts.is_empty() {
        let (mut hs, mut ps) = (Vec::new(), Vec::new());
        for h in hosts.split(',') {
            let (host, port) = if let Some(r) = h.strip_prefix('[') {
                let (addr, after) = r.split_once(']').ok_or_else(|| {
                    PgError::Conninfo("unterminated [IPv6 address] in the connection URL".into())
                })?;
                (addr.to_string(), after.strip_prefix(':').unwrap_or(""))
            } else {
                match h.rsplit_once(':') {
                    Some((a, p)) => (percent_decode(a)?, p),
                    None => (percent_decode(h)?, ""),
                }
            };
            hs.push(host);
            ps.push(port.to_string());
        }
        if hs.iter().any(|h| !h.is_empty()) {
            params.push(("host".to_string(), hs.join(",")));
        }
        if ps.iter().any(|p| !p.is_empty()) {
            params.push(("port".to_string(), ps.join(",")));
        }
    }
    if let Some(p) = path {
        if !p.is_empty() {
            params.push(("dbname".to_string(), percent_decode(p)?));
        }
    }
    if let Some(q) = query {
        let mut extra: BTreeMap<String, String> = BTreeMap::new();
        for kv in q.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| PgError::Conninfo("a URL query parameter lacks \"=\"".into()))?;
            let k = percent_decode(k)?;
            let v = percent_decode(v)?;
            // libpq's JDBC-compatible spelling.
            if k == "ssl" && v == "true" {
                extra.insert("sslmode".into(), "require".into());
            } else {
                extra.insert(k, v);
            }
        }
        for (k, v) in extra {
            params.retain(|(pk, _)| *pk != k);
            params.push((k, v));
        }
    }
    Ok(ConnInfo { params })
}
