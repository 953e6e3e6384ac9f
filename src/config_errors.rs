//! Parse errors as operators read them: every syntax and type error of a YAML or TOML file in
//! one run, each with its line, the field path (`tcp.max_connections`, `clusters[1].name`) and
//! the offending value, in plain words instead of the parser's.
//!
//! serde stops at the first error, so [`parse_all`] blanks the offending line (when it is a
//! single `key: value` line) and parses again, up to [`MAX_ROUNDS`] times; "missing field"
//! errors about a key it blanked itself are not reported.

use crate::dns::zonefile::Problem;

/// At most this many errors are collected from one file.
const MAX_ROUNDS: usize = 50;

/// One parser error: 1-based line and column where known, and the parser's message.
pub struct ParseError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ParseError {
    pub fn from_yaml(e: &serde_saphyr::Error) -> Self {
        let loc = e.location();
        ParseError {
            line: loc.map(|l| l.line() as usize).filter(|l| *l > 0),
            column: loc.map(|l| l.column() as usize).filter(|c| *c > 0),
            message: e.to_string().lines().next().unwrap_or_default().to_string(),
        }
    }

    pub fn from_toml(e: &toml::de::Error, text: &str) -> Self {
        let (line, column) = match e.span() {
            Some(s) => {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let column = before[line_start..].chars().count() + 1;
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ParseError {
            line,
            column,
            message: e.message().to_string(),
        }
    }
}

/// Parses `text` with `parse`, collecting every error it can find (see the module docs): the
/// value parsed once the bad lines are blanked (if it then parses), and every problem.
pub fn parse_all<T>(
    file: &str,
    text: &str,
    toml: bool,
    parse: impl Fn(&str) -> Result<T, ParseError>,
) -> (Option<T>, Vec<Problem>) {
    let mut work: Vec<String> = text.lines().map(str::to_string).collect();
    let mut problems = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let joined = work.join("\n");
        let e = match parse(&joined) {
            Ok(v) => return (Some(v), problems),
            Err(e) => e,
        };
        let plain = plain_message(&e.message);
        if let Some(missing) = plain
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
            && blanked.iter().any(|k| k == missing)
        {
            // Caused by our own blanking: the real error is already reported.
            return (None, problems);
        }
        let located = e.line.and_then(|l| work.get(l - 1).map(|s| (l, s.clone())));
        let (path, value) = match &located {
            Some((l, _)) => (
                field_path(text, *l, e.column, toml),
                value_at(text, *l, e.column, toml),
            ),
            None => (None, None),
        };
        problems.push(Problem {
            file: file.to_string(),
            line: e.line,
            message: describe(&plain, path.as_deref(), value.as_deref()),
        });
        // Go on only past a single-line `key: value`, whose removal leaves the rest intact.
        match located.and_then(|(l, s)| single_key(&s, toml).map(|k| (l, k))) {
            Some((l, key)) => {
                blanked.push(key);
                work[l - 1] = String::new();
            }
            None => return (None, problems),
        }
    }
    (None, problems)
}

/// The parser's message without its own "error: line N column M:" prefix.
fn plain_message(m: &str) -> String {
    let mut m = m.trim();
    m = m.strip_prefix("error: ").unwrap_or(m);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
        && rest
            .split_once(": ")
            .is_some_and(|(loc, _)| loc.contains("column"))
    {
        m = after;
    }
    m.to_string()
}

/// Plain words for the parser's message, with the field and the value.
fn describe(plain: &str, path: Option<&str>, value: Option<&str>) -> String {
    let what = match plain {
        m if m.starts_with("invalid u") || m.starts_with("invalid i") => {
            let ty = &m["invalid ".len()..];
            match ty {
                "u8" => "must be a number in 0..=255".to_string(),
                "u16" => "must be a number in 0..=65535".to_string(),
                "u32" => "must be a number in 0..=4294967295".to_string(),
                t if t.starts_with('u') => "must be a whole number ≥ 0".to_string(),
                _ => "must be a whole number".to_string(),
            }
        }
        m if m.starts_with("invalid f") => "must be a number".to_string(),
        "invalid bool" | "invalid boolean" => "must be true or false".to_string(),
        "invalid socket address syntax" => "must be ADDRESS:PORT, e.g. 127.0.0.1:53".to_string(),
        m if m.starts_with("duplicate mapping key") => {
            "given twice (the key may appear once)".to_string()
        }
        m => m.to_string(),
    };
    let duplicate = plain.starts_with("duplicate mapping key");
    match (path, value) {
        (Some(p), Some(v)) if !duplicate => format!("{p}: {what}, not {v}"),
        (Some(p), _) => format!("{p}: {what}"),
        (None, Some(v)) if !duplicate => format!("{what} (value {v})"),
        _ => what,
    }
}

/// Byte offset of the 1-based character column `column` in `s` (clamped to its end).
fn byte_at(s: &str, column: usize) -> usize {
    s.char_indices()
        .nth(column.saturating_sub(1))
        .map_or(s.len(), |(i, _)| i)
}

fn indent(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// The key of a `key: value` (TOML: `key = value`) line whose value is on the line.
fn single_key(line: &str, toml: bool) -> Option<String> {
    let t = line.trim_start();
    let t = t.strip_prefix("- ").unwrap_or(t);
    let (k, v) = t.split_once(if toml { '=' } else { ':' })?;
    let (k, v) = (k.trim(), v.trim());
    (is_key(k) && !v.is_empty() && !v.starts_with('#')).then(|| k.to_string())
}

/// `a.b[2].c` for the value at line `line`, from the indentation above it (YAML) or the last
/// `[table]` header (TOML). Flow collections on the line (`[a, b]`, `{k: v}`) add the element.
fn field_path(text: &str, line: usize, column: Option<usize>, toml: bool) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = *lines.get(line - 1)?;
    let sep = if toml { '=' } else { ':' };
    let mut t = here.trim_start();
    let mut cur = indent(here);
    let mut item_here = false;
    if !toml && let Some(r) = t.strip_prefix("- ") {
        t = r;
        cur += 2;
        item_here = true;
    }
    let key = if t.starts_with(['{', '[']) {
        None
    } else {
        t.split_once(sep)
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| is_key(k))
    };
    if key.is_none() && !item_here {
        return None;
    }
    // Where a flow collection on this line may start: after the key, or the item's content.
    let flow_from = match &key {
        Some(_) => here.find(sep).map_or(0, |i| i + 1),
        None => here.len() - t.len(),
    };
    let mut segments: Vec<String> = Vec::new();
    // Inside a flow collection on this line: the element the column points at.
    if let Some(col) = column {
        let upto = &here[..byte_at(here, col)];
        if upto.len() > flow_from {
            let inner = &upto[flow_from..];
            if let Some(open) = inner.rfind(['[', '{']) {
                let part = &inner[open + 1..];
                if inner.as_bytes()[open] == b'[' {
                    segments.push(format!("[{}]", part.matches(',').count()));
                } else if let Some(k2) = part
                    .rsplit([',', '{'])
                    .next()
                    .and_then(|s| s.split_once(':'))
                    .map(|(k, _)| k.trim())
                    .filter(|k| is_key(k))
                {
                    segments.push(k2.to_string());
                }
            }
        }
    }
    if let Some(k) = &key {
        segments.push(k.clone());
    }
    if toml {
        // The innermost [table] (or [[array]]) above.
        for l in lines[..line - 1].iter().rev() {
            let l = l.trim();
            if let Some(h) = l.strip_prefix('[') {
                segments.push(h.trim_matches(['[', ']']).trim().to_string());
                break;
            }
        }
    } else {
        // Walk up: a line left of `col` not starting a list item is the parent key; a `- ` line
        // whose content starts at `col` is our list item, and the items above it at its
        // indentation give our index.
        let key_of = |c: &str| {
            c.split_once(':')
                .filter(|(k, rest)| {
                    is_key(k.trim()) && (rest.trim().is_empty() || rest.trim().starts_with('#'))
                })
                .map(|(k, _)| k.trim().to_string())
        };
        let mut col = cur;
        let mut counting: Option<(usize, usize)> = item_here.then(|| (cur - 2, 0));
        for l in lines[..line - 1].iter().rev() {
            let c = l.trim_start();
            if c.is_empty() || c.starts_with('#') {
                continue;
            }
            let i = indent(l);
            if let Some((item_indent, n)) = counting {
                if i > item_indent {
                    continue; // inside an earlier item
                }
                if i == item_indent && c.starts_with("- ") {
                    counting = Some((item_indent, n + 1));
                    continue;
                }
                segments.push(format!("[{n}]"));
                counting = None;
                col = item_indent + 1;
            }
            if i >= col {
                continue;
            }
            if let Some(rest) = c.strip_prefix("- ") {
                if i + 2 < col
                    && let Some(k) = key_of(rest)
                {
                    segments.push(k);
                }
                counting = Some((i, 0));
                col = i + 2;
                continue;
            }
            match key_of(c) {
                Some(k) => {
                    segments.push(k);
                    col = i;
                    if i == 0 {
                        break;
                    }
                }
                None => break,
            }
        }
        if let Some((_, n)) = counting {
            segments.push(format!("[{n}]"));
        }
    }
    segments.reverse();
    let mut out = String::new();
    for s in segments {
        if s.starts_with('[') {
            out.push_str(&s);
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&s);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The line of the value at `path` (`kubernetes.clusters[1].kubeconfig`) in a YAML text: each
/// key is looked for inside its parent's block, each `[n]` is the n-th `- ` item of the block.
/// Falls back to the closest ancestor found (and, for TOML, to the first `key =` line).
pub fn line_of_path(text: &str, path: &str, toml: bool) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut segs: Vec<(bool, &str)> = Vec::new(); // (is_index, key or index)
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            segs.push((false, &rest[..i]));
            rest = &rest[i..];
            while let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').unwrap_or(r.len());
                segs.push((true, &r[..end]));
                rest = r.get(end + 1..).unwrap_or("");
            }
        } else {
            segs.push((false, rest));
        }
    }
    segs.retain(|(_, s)| !s.is_empty());
    if toml {
        let key = segs.iter().rev().find(|(idx, _)| !idx)?.1;
        return lines
            .iter()
            .position(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
            .map(|i| i + 1);
    }
    let content = |l: &str| {
        let c = l.trim_start();
        !c.is_empty() && !c.starts_with('#')
    };
    // The block: lines (start..end) and the column its own keys start at (`None`: any).
    let (mut start, mut end) = (0usize, lines.len());
    let mut found: Option<usize> = None;
    let mut first_key_on: Option<usize> = None; // an item's line, whose content is its first key
    for (is_index, seg) in segs {
        let block_indent = (start..end)
            .filter(|&i| content(lines[i]))
            .map(|i| indent(lines[i]))
            .min();
        let Some(block_indent) = block_indent else {
            break;
        };
        let hit = if is_index {
            let n: usize = seg.parse().ok()?;
            let items: Vec<usize> = (start..end)
                .filter(|&i| {
                    indent(lines[i]) == block_indent && lines[i].trim_start().starts_with("- ")
                })
                .collect();
            let Some(&at) = items.get(n) else {
                break;
            };
            let next = items.get(n + 1).copied().unwrap_or(end);
            first_key_on = Some(at);
            (at, next)
        } else {
            let key_at = |i: usize| {
                let l = lines[i];
                let (col, c) = if Some(i) == first_key_on {
                    let c = l.trim_start().strip_prefix("- ").unwrap_or("");
                    (indent(l) + 2, c)
                } else {
                    (indent(l), l.trim_start())
                };
                let item_col = first_key_on.map(|f| indent(lines[f]) + 2);
                let ok_col = item_col.map_or(col == block_indent, |ic| col == ic);
                ok_col
                    && c.strip_prefix(seg)
                        .is_some_and(|r| r.trim_start().starts_with(':'))
            };
            let Some(at) = (start..end).find(|&i| key_at(i)) else {
                break;
            };
            let col = if Some(at) == first_key_on {
                indent(lines[at]) + 2
            } else {
                indent(lines[at])
            };
            // (A list may sit at its key's own indentation: `key:` then `- item`.)
            let next = (at + 1..end)
                .find(|&i| {
                    let (l, ind) = (lines[i], indent(lines[i]));
                    content(l) && (ind < col || ind == col && !l.trim_start().starts_with("- "))
                })
                .unwrap_or(end);
            first_key_on = None;
            (at, next)
        };
        found = Some(hit.0);
        // A flow value (`key: [a, b]`, `- {k: v}`) ends the walk on its own line.
        let line = lines[hit.0];
        let value = line.split_once(':').map_or("", |(_, v)| v).trim_start();
        if (!is_index && value.starts_with(['[', '{']))
            || (is_index && line.trim_start()[2..].trim_start().starts_with(['{', '[']))
        {
            break;
        }
        if is_index {
            start = hit.0;
        } else {
            start = hit.0 + 1;
        }
        end = hit.1;
    }
    found.map(|i| i + 1)
}

/// The value at `line`/`column` (or after the line's key), as written.
fn value_at(text: &str, line: usize, column: Option<usize>, toml: bool) -> Option<String> {
    let l = text.lines().nth(line - 1)?;
    let sep = if toml { '=' } else { ':' };
    let after_key = l.find(sep).map_or(0, |i| i + 1);
    let start = match column.map(|c| byte_at(l, c)) {
        Some(b) if b >= after_key && b < l.len() => b,
        _ => after_key,
    };
    let rest = l.get(start..)?.trim_start();
    let v = if let Some(q) = rest.strip_prefix('"') {
        format!("\"{}\"", q.split('"').next().unwrap_or_default())
    } else if let Some(q) = rest.strip_prefix('\'') {
        format!("'{}'", q.split('\'').next().unwrap_or_default())
    } else {
        let end = rest.find([',', ']', '}', '#']).unwrap_or(rest.len());
        rest[..end].trim().to_string()
    };
    (!v.is_empty() && !v.starts_with(['[', '{'])).then_some(if v.starts_with(['"', '\'']) {
        v
    } else {
        format!("{v:?}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str, line: usize, col: Option<usize>) -> Option<String> {
        field_path(text, line, col, false)
    }

    #[test]
    fn field_paths_follow_indentation_lists_and_flow_collections() {
        let t = "listen: [\"127.0.0.1:53\", \"x\"]\ntcp:\n  max_connections: -1\nkubernetes:\n  clusters:\n    - name: a\n      kubeconfig: k\n    - name: b\n      context: 7\n  other:\n    - {name: c, zones: 3}\n";
        assert_eq!(path(t, 1, Some(27)).as_deref(), Some("listen[1]"));
        assert_eq!(path(t, 3, Some(20)).as_deref(), Some("tcp.max_connections"));
        assert_eq!(
            path(t, 7, None).as_deref(),
            Some("kubernetes.clusters[0].kubeconfig")
        );
        assert_eq!(
            path(t, 9, None).as_deref(),
            Some("kubernetes.clusters[1].context")
        );
        assert_eq!(
            path(t, 8, None).as_deref(),
            Some("kubernetes.clusters[1].name")
        );
        assert_eq!(
            path(t, 11, Some(26)).as_deref(),
            Some("kubernetes.other[0].zones")
        );
        // Lists at their key's indentation.
        let t = "probes:\n- port: 1\n- port: x\n";
        assert_eq!(path(t, 3, None).as_deref(), Some("probes[1].port"));
        let t = "[etcd]\nlease_ttl_secs = \"x\"\n";
        assert_eq!(
            field_path(t, 2, None, true).as_deref(),
            Some("etcd.lease_ttl_secs")
        );
    }

    #[test]
    fn lines_of_field_paths() {
        let t = "listen: [a]\ntcp:\n  max_connections: 0\nkubernetes:\n  zone: x\n  clusters:\n    - name: a\n      kubeconfig: k\n    - name: b\n      # comment\n      kubeconfig: k\n    - {name: c}\nprobes:\n- port: 1\n- type: x\n  port: 2\n";
        let l = |p: &str| line_of_path(t, p, false);
        assert_eq!(l("listen"), Some(1));
        assert_eq!(l("tcp.max_connections"), Some(3));
        assert_eq!(l("kubernetes.zone"), Some(5));
        assert_eq!(l("kubernetes.clusters[0].kubeconfig"), Some(8));
        assert_eq!(l("kubernetes.clusters[1].name"), Some(9));
        assert_eq!(l("kubernetes.clusters[1].kubeconfig"), Some(11));
        assert_eq!(l("kubernetes.clusters[2].name"), Some(12));
        assert_eq!(
            l("kubernetes.clusters[3]"),
            Some(6),
            "falls back to the list"
        );
        assert_eq!(l("probes[1].port"), Some(16));
        assert_eq!(l("probes[1].type"), Some(15));
        assert_eq!(l("nope"), None);
        assert_eq!(
            line_of_path("[tcp]\nmax_connections = 0\n", "tcp.max_connections", true),
            Some(2)
        );
    }

    #[test]
    fn odd_input_never_panics() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u16,
            b: Option<Vec<u8>>,
        }
        let parse = |t: &str| serde_saphyr::from_str::<T>(t).map_err(|e| ParseError::from_yaml(&e));
        let tparse = |t: &str| toml::from_str::<T>(t).map_err(|e| ParseError::from_toml(&e, t));
        for text in [
            "a: ≥≥≥\nb: [1, é]\n",
            "é: 1\na: 2\n",
            "a: [\n",
            "- - - x\n  - y: 1\n",
            "a: 1\nb:\n  - 300\n  - {x: é}\n",
            "\u{feff}a: 1\n",
            ":\n-\n",
        ] {
            let _ = parse_all("f.yaml", text, false, parse);
            let _ = parse_all("f.toml", text, true, tparse);
        }
        let _ = parse_all("f.toml", "a = \"é\"\n[x]\nb = é\n", true, tparse);
    }

    #[test]
    fn every_type_error_is_reported_with_field_and_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u16,
            #[serde(default)]
            b: Option<u16>,
            inner: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            c: bool,
            d: Vec<std::net::SocketAddr>,
        }
        let text = "a: 70000\nb: abc\ninner:\n  c: maybe\n  d: [\"127.0.0.1:53\", \"nope\"]\n";
        let parse = |t: &str| serde_saphyr::from_str::<T>(t).map_err(|e| ParseError::from_yaml(&e));
        let (parsed, problems) = parse_all("f.yaml", text, false, parse);
        // `a` and `inner.d` are required: once blanked, "missing field" ends the search
        // (and is not reported: it is our doing).
        assert!(parsed.is_none());
        let (parsed, only_b) = parse_all(
            "f.yaml",
            "a: 1\nb: abc\ninner: {c: true, d: []}\n",
            false,
            parse,
        );
        assert!(
            parsed.is_some_and(|t| t.b.is_none()),
            "blanked b takes its default"
        );
        assert_eq!(only_b.len(), 1);
        let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:#?}");
        assert!(
            msgs[0].starts_with("f.yaml:1: a: must be a number in 0..=65535, not \"70000\""),
            "{msgs:#?}"
        );
        assert!(
            msgs[1].starts_with("f.yaml:2: b: must be a number in 0..=65535, not \"abc\""),
            "{msgs:#?}"
        );
        assert!(
            msgs[2].starts_with("f.yaml:4: inner.c: must be true or false, not \"maybe\""),
            "{msgs:#?}"
        );
        assert!(
            msgs[3].starts_with("f.yaml:5: inner.d[1]: must be ADDRESS:PORT"),
            "{msgs:#?}"
        );
        assert!(msgs[3].contains("\"nope\""), "{msgs:#?}");

        // A duplicate key: named, no parser API hint.
        let (_, problems) = parse_all(
            "f.yaml",
            "a: 1\na: 2\ninner: {c: true, d: []}\n",
            false,
            parse,
        );
        let m = problems[0].to_string();
        assert!(
            m.contains("a: given twice") && !m.contains("DuplicateKeyPolicy"),
            "{m}"
        );
    }
}
