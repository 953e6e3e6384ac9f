//! Zone files (RFC 1035 master format) parsed with hickory-proto into [`StaticZone`]s.
//!
//! The origin is the file name without `.zone` (`example.com.zone` → `example.com.`) unless the
//! file sets `$ORIGIN`. Every problem is reported with the file and line it is on.

use std::collections::HashMap;
use std::path::Path;

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::BinEncodable;
use hickory_proto::serialize::txt::Parser;

use crate::model::{DnsName, RData, StaticZone, rtype};

/// A problem in an input file, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

pub fn parse(path: &Path, text: &str) -> Result<StaticZone, Vec<Problem>> {
    let file = path.display().to_string();
    let problem = |line: Option<usize>, message: String| Problem {
        file: file.clone(),
        line,
        message,
    };
    let stem = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .trim_end_matches(".zone")
        .to_string();
    let origin = Name::from_ascii(format!("{stem}.")).map_err(|e| {
        vec![problem(
            None,
            format!("file name {stem:?} is not a zone name: {e}"),
        )]
    })?;

    let parsed = Parser::new(text, Some(path.to_path_buf()), Some(origin)).parse();
    let (origin, sets) = match parsed {
        Ok(v) => v,
        Err(e) => return Err(vec![problem(locate_error(text, path), e.to_string())]),
    };
    let origin = DnsName::from_wire_lowercase(
        &origin
            .to_bytes()
            .map_err(|e| vec![problem(None, e.to_string())])?,
    );

    let mut problems = Vec::new();
    let mut records = Vec::new();
    for set in sets.values() {
        for r in set.records_without_rrsigs() {
            match crate::dns::encode::from_hickory(r) {
                Some(rec) if !rec.name.is_within(&origin) => problems.push(problem(
                    line_of(text, &rec.name, &origin),
                    format!("{} is outside the zone {origin}", rec.name),
                )),
                Some(rec) => records.push(rec),
                None => problems.push(problem(None, format!("cannot read record {r}"))),
            }
        }
    }
    let soas = records
        .iter()
        .filter(|r| matches!(r.data, RData::Soa(_)))
        .count();
    let apex_soa = records
        .iter()
        .any(|r| r.name == origin && matches!(r.data, RData::Soa(_)));
    if !apex_soa || soas != 1 {
        problems.push(problem(
            None,
            format!("zone {origin} must have exactly one SOA, at its apex (found {soas})"),
        ));
    }
    // RFC 1034 §3.6.2: a CNAME owner has no other data (and one CNAME).
    let mut by_name: HashMap<&DnsName, (usize, usize)> = HashMap::new();
    for r in &records {
        let (cnames, others) = by_name.entry(&r.name).or_default();
        if r.data.rtype() == rtype::CNAME {
            *cnames += 1
        } else {
            *others += 1
        }
    }
    let mut bad: Vec<&DnsName> = by_name
        .into_iter()
        .filter(|(_, (c, o))| *c > 0 && (*o > 0 || *c > 1))
        .map(|(n, _)| n)
        .collect();
    bad.sort();
    for n in bad {
        problems.push(problem(
            line_of(text, n, &origin),
            format!("{n} has a CNAME and other data"),
        ));
    }
    if problems.is_empty() {
        Ok(StaticZone {
            origin,
            file,
            records,
        })
    } else {
        Err(problems)
    }
}

/// hickory's parse errors carry no position; find the first line whose inclusion makes the file
/// fail, cutting only where no parenthesised record is open.
fn locate_error(text: &str, path: &Path) -> Option<usize> {
    // (first line of a complete record, byte offset just after it)
    let mut cuts = Vec::new();
    let (mut depth, mut offset, mut first) = (0i32, 0usize, 1usize);
    for (i, l) in text.split_inclusive('\n').enumerate() {
        offset += l.len();
        let mut quoted = false;
        for c in l.chars() {
            match c {
                '"' => quoted = !quoted,
                ';' if !quoted => break,
                '(' if !quoted => depth += 1,
                ')' if !quoted => depth -= 1,
                _ => {}
            }
        }
        if depth <= 0 {
            depth = 0;
            cuts.push((first, offset));
            first = i + 2;
        }
    }
    let origin = Name::from_ascii("invalid.").ok();
    let fails = |end: usize| {
        Parser::new(&text[..end], Some(path.to_path_buf()), origin.clone())
            .parse()
            .is_err()
    };
    if cuts.is_empty() || !fails(cuts[cuts.len() - 1].1) {
        return None;
    }
    // Smallest failing prefix: once a bad record is in, every longer prefix fails too.
    let (mut lo, mut hi) = (0usize, cuts.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(cuts[mid].1) {
            hi = mid
        } else {
            lo = mid + 1
        }
    }
    Some(cuts[lo].0)
}

/// Best-effort line of a record's owner, for messages about valid syntax with bad meaning.
fn line_of(text: &str, name: &DnsName, origin: &DnsName) -> Option<usize> {
    let full = name.to_string();
    let relative = full
        .strip_suffix(&format!(".{origin}"))
        .unwrap_or(&full)
        .to_string();
    text.lines()
        .position(|l| {
            let first = l
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            !l.starts_with(char::is_whitespace)
                && (first == full || first == relative || format!("{first}.") == full)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN CNAME ns1\n";

    #[test]
    fn parses_a_zone_named_after_its_file() {
        let z = parse(Path::new("zones/example.com.zone"), GOOD).unwrap();
        assert_eq!(z.origin.to_string(), "example.com.");
        assert_eq!(z.records.len(), 4);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let bad = format!("{GOOD}mail IN MX notanumber mail\nok IN A 192.0.2.2\n");
        let errs = parse(Path::new("example.com.zone"), &bad).unwrap_err();
        assert_eq!(errs[0].line, Some(6), "{errs:?}");
        assert!(
            errs[0].to_string().starts_with("example.com.zone:6: "),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn cname_with_other_data_is_rejected() {
        let bad = format!("{GOOD}www IN A 192.0.2.9\n");
        let errs = parse(Path::new("example.com.zone"), &bad).unwrap_err();
        assert!(
            errs.iter()
                .any(|p| p.message.contains("CNAME and other data") && p.line == Some(5)),
            "{errs:?}"
        );
    }

    #[test]
    fn missing_soa_is_rejected() {
        let errs = parse(
            Path::new("example.com.zone"),
            "$TTL 30\nns1 IN A 192.0.2.1\n",
        )
        .unwrap_err();
        assert!(errs[0].message.contains("exactly one SOA"), "{errs:?}");
    }
}
