//! JSON Schema → GBNF grammar, for structured output (feature `json-schema`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Why a schema could not be converted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaError {
    /// A keyword this converter does not support.
    #[error("unsupported JSON Schema feature: {0}")]
    Unsupported(String),
    /// The schema is malformed (e.g. a dangling `$ref`).
    #[error("invalid JSON Schema: {0}")]
    Invalid(String),
}

/// Largest magnitude generated for unbounded integers (15 digits keeps values exact in f64).
const INT_LIMIT: i64 = 999_999_999_999_999;

const PRIMITIVES: &[(&str, &str)] = &[
    ("space", r#"( " " | "\n" [ \t]{0,12} )?"#),
    ("char", r#"[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )"#),
    ("string", r#""\"" char* "\"" space"#),
    ("integral-part", r#"[0] | [1-9] [0-9]{0,15}"#),
    ("number", r#""-"? integral-part ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )? space"#),
    ("integer", r#""-"? integral-part space"#),
    ("boolean", r#"( "true" | "false" ) space"#),
    ("null", r#""null" space"#),
    ("value", "object | array | string | number | boolean | null"),
    ("object", r#""{" space ( string ":" space value ( "," space string ":" space value )* )? "}" space"#),
    ("array", r#""[" space ( value ( "," space value )* )? "]" space"#),
];

/// The GBNF grammar of any JSON value (objects and arrays at the root).
pub fn json_grammar() -> String {
    let mut out = String::from("root ::= object | array\n");
    for (name, body) in PRIMITIVES {
        out.push_str(&format!("{name} ::= {body}\n"));
    }
    out
}

/// Converts a JSON Schema into a GBNF grammar whose root rule is `root`.
///
/// Written in Rust rather than as a shim over llama.cpp's C++ converter: that converter lives
/// in llama.cpp's `common` library, which drags in much of `common` and nlohmann-json and has
/// no stable C API, while the subset of JSON Schema that output constraints need is small and
/// is tested here against a real validator. Supported: `type` (and type lists), `properties`,
/// `required`, `additionalProperties`, `items`, `prefixItems`, `minItems`/`maxItems`, `enum`,
/// `const`, `anyOf`/`oneOf`, `allOf` (object merge), `$ref` to `#/$defs/…` or
/// `#/definitions/…` (recursion allowed), string `minLength`/`maxLength` and the formats
/// `date`, `time`, `date-time`, `uuid`, integer and number `minimum`/`maximum` (also
/// exclusive). Unsupported keywords that would change what is valid (`pattern`,
/// `patternProperties`, `not`, …) are errors rather than silently ignored.
///
/// Objects are written with their required properties in the order `required` lists them,
/// then the optional ones by name: a parsed schema's `properties` lose their order, and the
/// order of fields is the order a model thinks in.
///
/// ```
/// let schema = serde_json::json!({
///     "type": "object",
///     "properties": { "name": { "type": "string" }, "age": { "type": "integer", "minimum": 0 } },
///     "required": ["name"]
/// });
/// let gbnf = llama::json_schema_to_grammar(&schema)?;
/// assert!(gbnf.starts_with("root ::= "));
/// # Ok::<(), llama::SchemaError>(())
/// ```
pub fn json_schema_to_grammar(schema: &Value) -> Result<String, SchemaError> {
    let mut c = Converter { root: schema, rules: BTreeMap::new(), refs: BTreeMap::new(), used: Vec::new(), depth: 0 };
    let root = c.visit(schema, "root")?;
    if root != "root" {
        c.rules.insert("root".into(), root);
    }
    let mut out = format!("root ::= {}\n", c.rules.remove("root").unwrap_or_default());
    for (name, body) in &c.rules {
        out.push_str(&format!("{name} ::= {body}\n"));
    }
    for (name, body) in PRIMITIVES {
        out.push_str(&format!("{name} ::= {body}\n"));
    }
    Ok(out)
}

struct Converter<'a> {
    root: &'a Value,
    rules: BTreeMap<String, String>,
    /// `$ref` target → rule name (so recursive schemas terminate).
    refs: BTreeMap<String, String>,
    used: Vec<String>,
    /// Nesting of `visit` calls, bounded so a schema built in code cannot exhaust the stack.
    depth: usize,
}

/// Largest repetition count llama.cpp's grammar parser accepts (`x{n,m}`).
const MAX_REPETITION: u64 = 2000;

fn check_repetition(what: &str, min: u64, max: Option<u64>, hint: &str) -> Result<(), SchemaError> {
    if min > MAX_REPETITION || max.is_some_and(|m| m > MAX_REPETITION) {
        return Err(SchemaError::Unsupported(format!("{what} above {MAX_REPETITION} at {hint}")));
    }
    Ok(())
}

/// Deepest nesting of sub-schemas accepted (serde_json's own parser stops at 128 levels of
/// JSON, and each schema level is at least two).
const MAX_DEPTH: usize = 128;

/// A GBNF string literal for `s`.
fn literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The grammar for one JSON value exactly.
fn json_literal(v: &Value) -> String {
    format!("{} space", literal(&v.to_string()))
}

fn get_f64(o: &Map<String, Value>, key: &str) -> Option<f64> {
    o.get(key).and_then(Value::as_f64)
}

impl Converter<'_> {
    /// Adds a rule with a fresh name based on `hint`; returns the name.
    fn add(&mut self, hint: &str, body: String) -> String {
        let base: String =
            hint.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let base =
            if base.is_empty() || PRIMITIVES.iter().any(|(p, _)| *p == base) { format!("{base}-r") } else { base };
        let mut name = base.clone();
        let mut n = 1;
        while self.rules.contains_key(&name) || self.used.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        self.used.push(name.clone());
        self.rules.insert(name.clone(), body);
        name
    }

    /// Returns an expression (a rule name or an inline alternative) for `schema`.
    fn visit(&mut self, schema: &Value, hint: &str) -> Result<String, SchemaError> {
        if self.depth >= MAX_DEPTH {
            return Err(SchemaError::Unsupported(format!("schemas nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let result = self.visit_inner(schema, hint);
        self.depth -= 1;
        result
    }

    fn visit_inner(&mut self, schema: &Value, hint: &str) -> Result<String, SchemaError> {
        let o = match schema {
            Value::Bool(true) => return Ok("value".into()),
            Value::Bool(false) => return Err(SchemaError::Unsupported("the `false` schema".into())),
            Value::Object(o) => o,
            _ => return Err(SchemaError::Invalid(format!("schema at {hint} is not an object"))),
        };
        for unsupported in ["pattern", "patternProperties", "not", "if", "dependentSchemas", "propertyNames"] {
            if o.contains_key(unsupported) {
                return Err(SchemaError::Unsupported(unsupported.into()));
            }
        }
        if let Some(r) = o.get("$ref").and_then(Value::as_str) {
            return self.visit_ref(r);
        }
        if let Some(v) = o.get("const") {
            return Ok(self.add(hint, json_literal(v)));
        }
        if let Some(values) = o.get("enum").and_then(Value::as_array) {
            if values.is_empty() {
                return Err(SchemaError::Invalid("empty enum".into()));
            }
            let alts: Vec<String> = values.iter().map(json_literal).collect();
            return Ok(self.add(hint, alts.join(" | ")));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = o.get(key).and_then(Value::as_array) {
                if alts.is_empty() {
                    return Err(SchemaError::Invalid(format!("empty {key} at {hint}")));
                }
                let names = alts
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.visit(s, &format!("{hint}-{i}")))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(self.add(hint, names.join(" | ")));
            }
        }
        if let Some(parts) = o.get("allOf").and_then(Value::as_array) {
            return self.visit(&self.merge_all_of(parts)?, hint);
        }
        match o.get("type") {
            Some(Value::Array(types)) if types.is_empty() => {
                Err(SchemaError::Invalid(format!("empty type list at {hint}")))
            }
            Some(Value::Array(types)) => {
                let names = types
                    .iter()
                    .map(|t| {
                        let mut sub = o.clone();
                        sub.insert("type".into(), t.clone());
                        self.visit(&Value::Object(sub), &format!("{hint}-{}", t.as_str().unwrap_or("t")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(self.add(hint, names.join(" | ")))
            }
            Some(Value::String(t)) => self.visit_type(t, o, hint),
            Some(_) => Err(SchemaError::Invalid("`type` must be a string or an array".into())),
            None if o.contains_key("properties") => self.visit_type("object", o, hint),
            None if o.contains_key("items") || o.contains_key("prefixItems") => self.visit_type("array", o, hint),
            None => Ok("value".into()),
        }
    }

    fn visit_ref(&mut self, r: &str) -> Result<String, SchemaError> {
        if let Some(name) = self.refs.get(r) {
            return Ok(name.clone());
        }
        let path = r.strip_prefix("#/").ok_or_else(|| SchemaError::Unsupported(format!("non-local $ref {r}")))?;
        let mut target = self.root;
        for part in path.split('/') {
            let part = part.replace("~1", "/").replace("~0", "~");
            target = target.get(&part).ok_or_else(|| SchemaError::Invalid(format!("dangling $ref {r}")))?;
        }
        let hint = path.rsplit('/').next().unwrap_or("ref").to_string();
        // Reserve the name first so a recursive reference finds it.
        let name = self.add(&hint, String::new());
        self.refs.insert(r.to_string(), name.clone());
        let body = self.visit(target, &format!("{hint}-body"))?;
        // A rule that is only another rule still being defined (itself, or a cycle of bare
        // `$ref`s) matches nothing and is left recursion to llama.cpp.
        if self.rules.get(&body).is_some_and(String::is_empty) {
            return Err(SchemaError::Unsupported(format!("$ref {r} refers to itself without content")));
        }
        self.rules.insert(name.clone(), body);
        Ok(name)
    }

    fn merge_all_of(&self, parts: &[Value]) -> Result<Value, SchemaError> {
        let mut props = Map::new();
        let mut required = Vec::new();
        for p in parts {
            let p = match p.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let path =
                        r.strip_prefix("#/").ok_or_else(|| SchemaError::Unsupported(format!("non-local $ref {r}")))?;
                    path.split('/')
                        .try_fold(self.root, |v, k| v.get(k))
                        .ok_or_else(|| SchemaError::Invalid(format!("dangling $ref {r}")))?
                }
                None => p,
            };
            if let Some(ps) = p.get("properties").and_then(Value::as_object) {
                props.extend(ps.clone());
            }
            if let Some(rs) = p.get("required").and_then(Value::as_array) {
                required.extend(rs.iter().cloned());
            }
        }
        Ok(serde_json::json!({ "type": "object", "properties": props, "required": required }))
    }

    fn visit_type(&mut self, t: &str, o: &Map<String, Value>, hint: &str) -> Result<String, SchemaError> {
        match t {
            "string" => self.visit_string(o, hint),
            "integer" => {
                let (lo, hi) = integer_bounds(o);
                if lo.is_none() && hi.is_none() {
                    return Ok("integer".into());
                }
                let (lo, hi) = (clamp_int(lo, -INT_LIMIT), clamp_int(hi, INT_LIMIT));
                if lo > hi {
                    return Err(SchemaError::Invalid(format!("empty integer range at {hint}")));
                }
                Ok(self.add(hint, format!("( {} ) space", int_range(lo, hi))))
            }
            "number" => {
                let (lo, hi) = integer_bounds(o);
                if lo.is_none() && hi.is_none() {
                    return Ok("number".into());
                }
                let (lo, hi) = (clamp_int(lo, -INT_LIMIT), clamp_int(hi, INT_LIMIT));
                if lo > hi {
                    return Err(SchemaError::Unsupported(format!("number range without an integer in it at {hint}")));
                }
                // Integers in range; fractions only where every value stays in range
                // (non-negative integer parts strictly below the maximum).
                let mut alts = vec![int_range(lo, hi)];
                let (flo, fhi) = (lo.max(0), hi - 1);
                if flo <= fhi {
                    alts.push(format!("( {} ) \".\" [0-9]{{1,6}}", int_range(flo, fhi)));
                }
                Ok(self.add(hint, format!("( {} ) space", alts.join(" | "))))
            }
            "boolean" => Ok("boolean".into()),
            "null" => Ok("null".into()),
            "array" => self.visit_array(o, hint),
            "object" => self.visit_object(o, hint),
            other => Err(SchemaError::Invalid(format!("unknown type {other}"))),
        }
    }

    fn visit_string(&mut self, o: &Map<String, Value>, hint: &str) -> Result<String, SchemaError> {
        const DATE: &str = r#"[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )"#;
        const TIME: &str = r#"( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )"#;
        const UUID: &str = r#"[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}"#;
        if let Some(format) = o.get("format").and_then(Value::as_str) {
            let body = match format {
                "date" => DATE.to_string(),
                "time" => TIME.to_string(),
                "date-time" => format!("{DATE} \"T\" {TIME}"),
                "uuid" => UUID.to_string(),
                other => return Err(SchemaError::Unsupported(format!("string format {other}"))),
            };
            return Ok(self.add(hint, format!("\"\\\"\" {body} \"\\\"\" space")));
        }
        let min = o.get("minLength").and_then(Value::as_u64);
        let max = o.get("maxLength").and_then(Value::as_u64);
        if min.is_none() && max.is_none() {
            return Ok("string".into());
        }
        let min = min.unwrap_or(0);
        check_repetition("minLength/maxLength", min, max, hint)?;
        let reps = match max {
            Some(max) if max < min => return Err(SchemaError::Invalid(format!("maxLength < minLength at {hint}"))),
            Some(max) => format!("{{{min},{max}}}"),
            None => format!("{{{min},}}"),
        };
        Ok(self.add(hint, format!("\"\\\"\" char{reps} \"\\\"\" space")))
    }

    fn visit_array(&mut self, o: &Map<String, Value>, hint: &str) -> Result<String, SchemaError> {
        if let Some(prefix) = o.get("prefixItems").and_then(Value::as_array) {
            let items = prefix
                .iter()
                .enumerate()
                .map(|(i, s)| self.visit(s, &format!("{hint}-{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            let body = items.join(" \",\" space ");
            return Ok(self.add(hint, format!("\"[\" space {body} \"]\" space")));
        }
        let item = match o.get("items") {
            Some(s) => self.visit(s, &format!("{hint}-item"))?,
            None => "value".into(),
        };
        let min = o.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let max = o.get("maxItems").and_then(Value::as_u64);
        if max.is_some_and(|m| m < min) {
            return Err(SchemaError::Invalid(format!("maxItems < minItems at {hint}")));
        }
        check_repetition("minItems/maxItems", min, max, hint)?;
        let body = match (min, max) {
            (_, Some(0)) => String::new(),
            (0, None) => format!("( {item} ( \",\" space {item} )* )?"),
            (0, Some(m)) => format!("( {item} ( \",\" space {item} ){{0,{}}} )?", m - 1),
            (n, None) => format!("{item} ( \",\" space {item} ){{{},}}", n - 1),
            (n, Some(m)) => format!("{item} ( \",\" space {item} ){{{},{}}}", n - 1, m - 1),
        };
        Ok(self.add(hint, format!("\"[\" space {body} \"]\" space")))
    }

    fn visit_object(&mut self, o: &Map<String, Value>, hint: &str) -> Result<String, SchemaError> {
        let props = o.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let required: Vec<&str> = o
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for r in &required {
            if !props.contains_key(*r) {
                return Err(SchemaError::Unsupported(format!("required property {r} without a schema")));
            }
        }
        let mut kvs = BTreeMap::new();
        for (name, sub) in &props {
            let value = self.visit(sub, &format!("{hint}-{name}"))?;
            let kv = self.add(
                &format!("{hint}-{name}-kv"),
                format!("{} \":\" space {value}", literal(&Value::String(name.clone()).to_string())),
            );
            kvs.insert(name.as_str(), kv);
        }
        // Required properties come in the order `required` lists them: a parsed schema's
        // `properties` are sorted by name, and the order fields are written in matters to a
        // model (a title before the summary, reasons before a verdict).
        let mut req = Vec::new();
        for name in &required {
            if let Some(kv) = kvs.remove(*name) {
                req.push(kv);
            }
        }
        let mut opt: Vec<String> = kvs.into_values().collect();
        // Extra properties are only generated when explicitly allowed.
        match o.get("additionalProperties") {
            Some(Value::Bool(true)) => {
                opt.push(self.add(&format!("{hint}-additional-kv"), "string \":\" space value".into()));
            }
            Some(Value::Object(s)) => {
                let value = self.visit(&Value::Object(s.clone()), &format!("{hint}-additional"))?;
                opt.push(self.add(&format!("{hint}-additional-kv"), format!("string \":\" space {value}")));
            }
            _ => {}
        }
        let tail: Vec<String> = (0..opt.len())
            .map(|i| opt[i..].iter().map(|kv| format!("( \",\" space {kv} )?")).collect::<Vec<_>>().join(" "))
            .collect();
        let body = if !req.is_empty() {
            let first = req.join(" \",\" space ");
            let rest = tail.first().cloned().unwrap_or_default();
            format!("{first} {rest}")
        } else if !opt.is_empty() {
            // Any optional property may come first; later ones follow in order.
            let alts: Vec<String> = (0..opt.len())
                .map(|i| format!("{} {}", opt[i], tail.get(i + 1).cloned().unwrap_or_default()))
                .collect();
            format!("( {} )?", alts.join(" | "))
        } else {
            String::new()
        };
        Ok(self.add(hint, format!("\"{{\" space {body} \"}}\" space")))
    }
}

/// The integers allowed by `minimum`/`maximum` (or their exclusive forms), if bounded.
fn integer_bounds(o: &Map<String, Value>) -> (Option<f64>, Option<f64>) {
    let lo = get_f64(o, "minimum").map(f64::ceil).or(get_f64(o, "exclusiveMinimum").map(|m| m.floor() + 1.0));
    let hi = get_f64(o, "maximum").map(f64::floor).or(get_f64(o, "exclusiveMaximum").map(|m| m.ceil() - 1.0));
    (lo, hi)
}

fn clamp_int(v: Option<f64>, default: i64) -> i64 {
    v.map_or(default, |v| v.clamp(-INT_LIMIT as f64, INT_LIMIT as f64) as i64)
}

/// GBNF for the decimal integers in `lo..=hi` (no leading zeros, `-` for negatives).
fn int_range(lo: i64, hi: i64) -> String {
    let mut alts = Vec::new();
    if lo < 0 {
        // -x for x in max(1, -hi)..=-lo
        let (nlo, nhi) = ((-hi).max(1) as u64, lo.unsigned_abs());
        if nlo <= nhi {
            alts.push(format!("\"-\" ( {} )", uint_range(nlo, nhi)));
        }
    }
    if hi >= 0 {
        alts.push(uint_range(lo.max(0) as u64, hi as u64));
    }
    alts.join(" | ")
}

fn uint_range(lo: u64, hi: u64) -> String {
    let digits = |n: u64| n.to_string().len() as u32;
    let mut alts = Vec::new();
    for d in digits(lo)..=digits(hi) {
        let first = if d == 1 { 0 } else { 10u64.pow(d - 1) };
        let last = 10u64.pow(d) - 1;
        let (a, b) = (lo.max(first), hi.min(last));
        if a <= b {
            alts.push(same_len(&a.to_string(), &b.to_string()));
        }
    }
    alts.join(" | ")
}

/// Equal-length digit strings `a..=b`.
fn same_len(a: &str, b: &str) -> String {
    if a.is_empty() {
        return String::new();
    }
    let (a0, b0) = (a.as_bytes()[0] - b'0', b.as_bytes()[0] - b'0');
    let (ar, br) = (&a[1..], &b[1..]);
    let n = ar.len();
    let any = |n: usize| if n == 0 { String::new() } else { format!(" [0-9]{{{n}}}") };
    if a0 == b0 {
        let rest = same_len(ar, br);
        return if rest.is_empty() { format!("\"{a0}\"") } else { format!("\"{a0}\" ( {rest} )") };
    }
    let mut alts = Vec::new();
    let (nines, zeros) = ("9".repeat(n), "0".repeat(n));
    // Rows whose whole suffix range is allowed become one digit class.
    let from = if ar == zeros { a0 } else { a0 + 1 };
    let to = if br == nines { b0 } else { b0 - 1 };
    if ar != zeros {
        alts.push(format!("\"{a0}\" ( {} )", same_len(ar, &nines)));
    }
    if from <= to {
        alts.push(format!("[{from}-{to}]{}", any(n)));
    }
    if br != nines {
        alts.push(format!("\"{b0}\" ( {} )", same_len(&zeros, br)));
    }
    alts.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Matches `s` against the tiny regular subset `int_range` emits, by brute force: every
    /// integer in a window must be accepted exactly when it is in range.
    fn accepts(grammar: &str, n: i64) -> bool {
        // Build a regex-like matcher by converting the GBNF to a Rust-side recursive check is
        // overkill; instead expand the alternatives into all strings they match (small ranges).
        expand(grammar).contains(&n.to_string())
    }

    fn expand(g: &str) -> Vec<String> {
        // Parses the restricted forms produced above: alternatives of sequences of
        // "lit", [a-b], [0-9]{n}, ( group ).
        fn parse_alts(s: &str, i: &mut usize) -> Vec<String> {
            let mut out = Vec::new();
            loop {
                out.extend(parse_seq(s, i));
                skip_ws(s, i);
                if s[*i..].starts_with('|') {
                    *i += 1;
                    continue;
                }
                return out;
            }
        }
        fn skip_ws(s: &str, i: &mut usize) {
            while s[*i..].starts_with(' ') {
                *i += 1;
            }
        }
        fn parse_seq(s: &str, i: &mut usize) -> Vec<String> {
            let mut acc = vec![String::new()];
            loop {
                skip_ws(s, i);
                let rest = &s[*i..];
                let parts: Vec<String> = if let Some(lit) = rest.strip_prefix('"') {
                    let end = lit.find('"').unwrap();
                    *i += end + 2;
                    vec![lit[..end].to_string()]
                } else if rest.starts_with('[') {
                    let (lo, hi) = (rest.as_bytes()[1], rest.as_bytes()[3]);
                    *i += 5;
                    let mut reps = 1;
                    if s[*i..].starts_with('{') {
                        let end = s[*i..].find('}').unwrap();
                        reps = s[*i + 1..*i + end].parse().unwrap();
                        *i += end + 1;
                    }
                    let mut v = vec![String::new()];
                    for _ in 0..reps {
                        v = v.iter().flat_map(|p| (lo..=hi).map(move |c| format!("{p}{}", c as char))).collect();
                    }
                    v
                } else if rest.starts_with('(') {
                    *i += 1;
                    let v = parse_alts(s, i);
                    skip_ws(s, i);
                    assert!(s[*i..].starts_with(')'));
                    *i += 1;
                    v
                } else {
                    return acc;
                };
                acc = acc.iter().flat_map(|a| parts.iter().map(move |p| format!("{a}{p}"))).collect();
            }
        }
        let mut i = 0;
        parse_alts(g, &mut i)
    }

    #[test]
    fn integer_ranges_are_exact() {
        // Miri interprets ~1000× slower: there, the ranges that take each branch once.
        let ranges: &[(i64, i64)] = if cfg!(miri) {
            &[(0, 9), (7, 123), (-15, 15)]
        } else {
            &[(0, 9), (0, 100), (7, 123), (-15, 15), (-250, -3), (42, 42), (99, 1000), (-1, 0)]
        };
        for &(lo, hi) in ranges {
            let g = int_range(lo, hi);
            for n in lo - 30..=hi + 30 {
                assert_eq!(accepts(&g, n), (lo..=hi).contains(&n), "{n} in {lo}..={hi}: {g}");
            }
            // No leading zeros or duplicates.
            let all = expand(&g);
            assert_eq!(all.len(), (hi - lo + 1) as usize, "{lo}..={hi}");
        }
    }

    #[test]
    fn required_properties_keep_their_listed_order() {
        let s = serde_json::json!({"type": "object", "properties": {
            "title": {"type": "string"}, "summary": {"type": "string"}, "note": {"type": "string"},
            "faq": {"type": "string"}}, "required": ["title", "summary", "faq", "title"]});
        let g = json_schema_to_grammar(&s).unwrap();
        let root = g.lines().next().unwrap();
        let at = |name: &str| root.find(&format!("root-{name}-kv")).unwrap();
        assert!(at("title") < at("summary") && at("summary") < at("faq") && at("faq") < at("note"), "{root}");
        assert_eq!(root.matches("root-title-kv").count(), 1, "a repeated name is written once: {root}");
    }

    #[test]
    fn unsupported_keywords_are_errors() {
        let s = serde_json::json!({"type": "string", "pattern": "^a+$"});
        assert_eq!(json_schema_to_grammar(&s), Err(SchemaError::Unsupported("pattern".into())));
        let s = serde_json::json!({"$ref": "#/$defs/missing"});
        assert!(matches!(json_schema_to_grammar(&s), Err(SchemaError::Invalid(_))));
    }
}
