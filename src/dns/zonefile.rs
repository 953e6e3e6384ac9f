//! Zone files (RFC 1035 master format) parsed with hickory-proto into [`StaticZone`]s.
//!
//! The origin is the file name without `.zone` (`example.com.zone` → `example.com.`) unless the
//! file sets `$ORIGIN`. Every problem is reported with the file and line it is on.

use std::collections::HashMap;
use std::path::Path;

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::BinEncodable;
use hickory_proto::serialize::txt::Parser;

use crate::model::{DnsName, RData, Record, StaticZone, rtype};

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

    let parsed = Parser::new(text, Some(path.to_path_buf()), Some(origin.clone())).parse();
    let (origin, sets) = match parsed {
        Ok(v) => v,
        Err(e) => {
            return Err(every_syntax_error(
                text,
                path,
                &origin,
                e.to_string(),
                &problem,
            ));
        }
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
    problems.extend(
        unservable(&records, &origin)
            .into_iter()
            .map(|(name, message)| problem(line_of(text, &name, &origin), message)),
    );
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

/// Records fedns would not serve as the zone file means them, each with its owner: DNAME
/// (no synthesis), NS at a wildcard (RFC 4592 §4.2), and data below a zone cut other than the
/// glue addresses of name servers and further cuts (occluded: a delegation hides it).
fn unservable(records: &[Record], origin: &DnsName) -> Vec<(DnsName, String)> {
    let cuts: Vec<&DnsName> = records
        .iter()
        .filter(|r| r.data.rtype() == rtype::NS && r.name != *origin)
        .map(|r| &r.name)
        .collect();
    let mut out = Vec::new();
    for r in records {
        let t = r.data.rtype();
        if t == rtype::DNAME {
            out.push((
                r.name.clone(),
                format!("{}: DNAME is not supported (fedns does not synthesize DNAME answers); use CNAMEs", r.name),
            ));
        }
        if t == rtype::NS && r.name.wire().starts_with(b"\x01*") {
            out.push((
                r.name.clone(),
                format!(
                    "{}: NS at a wildcard is not allowed (RFC 4592 §4.2)",
                    r.name
                ),
            ));
        }
        let cut = cuts
            .iter()
            .filter(|c| r.name.is_within(c))
            .min_by_key(|c| c.wire().len());
        if let Some(cut) = cut {
            let served = match t {
                rtype::A | rtype::AAAA | rtype::NS => true,
                rtype::DS => r.name == **cut,
                _ => false,
            };
            if !served {
                out.push((
                    r.name.clone(),
                    format!(
                        "{} {}: below the delegation at {cut} only NS, DS and glue addresses are served (the referral hides this record)",
                        r.name,
                        type_name(t)
                    ),
                ));
            }
        }
    }
    out.dedup();
    out
}

fn type_name(t: u16) -> String {
    hickory_proto::rr::RecordType::from(t).to_string()
}

/// hickory's parse errors carry no position; find the first line whose inclusion makes the file
/// fail, cutting only where no parenthesised record is open.
/// Every bad record, as nsd-checkzone reports them: the parser stops at the first, so each one
/// found is blanked out (its lines, so later line numbers stay) and the file parsed again. Only
/// syntax errors are reported then: meaning checks on a file with holes would mislead.
fn every_syntax_error(
    text: &str,
    path: &Path,
    origin: &Name,
    first: String,
    problem: &impl Fn(Option<usize>, String) -> Problem,
) -> Vec<Problem> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut out = Vec::new();
    let mut message = first;
    // Each round costs a few parses (locate_error bisects); 20 bad records are plenty to fix.
    for _ in 0..20 {
        let work = lines.join("\n") + "\n";
        let Some(line) = locate_error(&work, path) else {
            out.push(problem(None, message));
            break;
        };
        let record = record_lines(&lines, line - 1);
        let shown: String = record
            .clone()
            .map(|i| lines[i].split(';').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        out.push(problem(Some(line), format!("{message}, in {shown:?}")));
        for i in record {
            lines[i].clear();
        }
        let work = lines.join("\n") + "\n";
        match Parser::new(&work, Some(path.to_path_buf()), Some(origin.clone())).parse() {
            Ok(_) => break,
            Err(e) => message = e.to_string(),
        }
    }
    out
}

/// The lines (0-based) of the record that starts at `start`: up to its closing parenthesis.
fn record_lines(lines: &[String], start: usize) -> std::ops::Range<usize> {
    let mut depth = 0i32;
    for (i, l) in lines.iter().enumerate().skip(start) {
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
            return start..i + 1;
        }
    }
    start..lines.len()
}

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
    fn every_bad_record_is_reported_with_its_text() {
        let bad = format!(
            "{GOOD}mail IN MX notanumber mail\nok IN A 192.0.2.2\nx IN A 300.1.2.3\nmulti IN SOA ( ns1 hm\n  notaserial 1 2 3 4 )\ny IN AAAA nope\nfine IN A 192.0.2.3\n"
        );
        let errs = parse(Path::new("example.com.zone"), &bad).unwrap_err();
        let lines: Vec<Option<usize>> = errs.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(6), Some(8), Some(9), Some(11)], "{errs:#?}");
        assert!(
            errs[0].message.contains("\"mail IN MX notanumber mail\""),
            "{}",
            errs[0]
        );
        assert!(errs[1].message.contains("300.1.2.3"), "{}", errs[1]);
        assert!(errs[2].message.contains("notaserial"), "{}", errs[2]);
        assert!(errs[3].message.contains("AAAA nope"), "{}", errs[3]);
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
