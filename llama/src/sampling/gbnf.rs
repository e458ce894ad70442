//! What llama.cpp's GBNF grammar code cannot survive, refused before it sees the grammar: a
//! repetition `x{m,n}` with `n < m` (its parser generates about 2^64 rules as the count wraps),
//! and repetitions nested directly inside repetitions (`x++`, `(("a")+)+`, `a ::= b+` with
//! `b ::= "x"+`): with no terminal between the levels, every way of splitting a run of `x` is a
//! separate parse stack, and their number doubles about every four levels on each accepted
//! token (found by the grammar fuzzer: 36 levels took 7 s, 90 hung). Anything else that does not
//! parse is left for llama.cpp to report.

use std::collections::HashMap;

use super::SamplerBuildError;

/// Most repetitions stacked on one another: real grammars use one or two (`(x+)?`).
const MAX_REPETITION_DEPTH: usize = 4;
/// Deepest group nesting and rule-reference chain followed; deeper is refused (llama.cpp's parser
/// recurses on groups too).
const MAX_NESTING: usize = 256;

pub(crate) fn check(gbnf: &str) -> Result<(), SamplerBuildError> {
    let tokens = lex(gbnf)?;
    let rules = rules(&tokens)?;
    let mut memo = HashMap::new();
    for (name, body) in &rules {
        for element in body.iter().flatten() {
            if element_depth(element, &rules, &mut memo, 0) > MAX_REPETITION_DEPTH {
                return Err(SamplerBuildError::Grammar(format!(
                    "rule {name}: repetitions nested more than {MAX_REPETITION_DEPTH} deep with nothing \
                     between them (like x++ or ((x)+)+) make matching exponentially slow"
                )));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    Name(&'a str),
    Define,
    /// A literal, character class or `.`: matches input by itself.
    Terminal,
    Open,
    Close,
    Alt,
    /// `*`, `+`, `?` or `{m,n}`.
    Repeat,
}

fn lex(gbnf: &str) -> Result<Vec<Token<'_>>, SamplerBuildError> {
    let b = gbnf.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'[') => {
                let close = if quote == b'"' { b'"' } else { b']' };
                i += 1;
                while i < b.len() && b[i] != close {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                out.push(Token::Terminal);
            }
            b'.' => out.push(Token::Terminal),
            b'(' => out.push(Token::Open),
            b')' => out.push(Token::Close),
            b'|' => out.push(Token::Alt),
            b'*' | b'+' | b'?' => out.push(Token::Repeat),
            b':' if b.get(i + 1..i + 3) == Some(b":=") => {
                out.push(Token::Define);
                i += 2;
            }
            b'{' => {
                let number = |i: &mut usize| -> Option<u64> {
                    while b.get(*i).is_some_and(u8::is_ascii_whitespace) {
                        *i += 1;
                    }
                    let start = *i;
                    while b.get(*i).is_some_and(u8::is_ascii_digit) {
                        *i += 1;
                    }
                    let n = gbnf[start..*i].parse().ok();
                    while b.get(*i).is_some_and(u8::is_ascii_whitespace) {
                        *i += 1;
                    }
                    n
                };
                let mut j = i + 1;
                let min = number(&mut j);
                if b.get(j) == Some(&b',') {
                    j += 1;
                    if let (Some(min), Some(max)) = (min, number(&mut j)) {
                        if max < min {
                            return Err(SamplerBuildError::Grammar(format!(
                                "repetition {{{min},{max}}}: the maximum is below the minimum"
                            )));
                        }
                    }
                }
                while j < b.len() && b[j] != b'}' {
                    j += 1;
                }
                i = j;
                out.push(Token::Repeat);
            }
            c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => {
                let start = i;
                while b.get(i + 1).is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                    i += 1;
                }
                out.push(Token::Name(&gbnf[start..=i]));
            }
            _ => {}
        }
        i += 1;
    }
    Ok(out)
}

/// One element of a sequence: what it matches and how many repetition operators follow it.
#[derive(Debug)]
struct Element<'a> {
    base: Base<'a>,
    repeats: usize,
}

#[derive(Debug)]
enum Base<'a> {
    Terminal,
    Ref(&'a str),
    Group(Alternatives<'a>),
}

type Alternatives<'a> = Vec<Vec<Element<'a>>>;

/// Rules by name (a later definition of a name replaces an earlier one, as in llama.cpp).
fn rules<'a>(tokens: &[Token<'a>]) -> Result<HashMap<&'a str, Alternatives<'a>>, SamplerBuildError> {
    let mut rules = HashMap::new();
    let starts: Vec<usize> = (0..tokens.len())
        .filter(|&i| matches!(tokens[i], Token::Name(_)) && tokens.get(i + 1) == Some(&Token::Define))
        .collect();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(tokens.len());
        let Token::Name(name) = tokens[start] else { continue };
        let mut i = start + 2;
        rules.insert(name, alternatives(&tokens[..end], &mut i, 0)?);
    }
    Ok(rules)
}

fn alternatives<'a>(
    tokens: &[Token<'a>],
    i: &mut usize,
    nesting: usize,
) -> Result<Alternatives<'a>, SamplerBuildError> {
    if nesting > MAX_NESTING {
        return Err(SamplerBuildError::Grammar(format!("groups nested more than {MAX_NESTING} deep")));
    }
    let mut alts: Alternatives<'a> = vec![Vec::new()];
    while let Some(&token) = tokens.get(*i) {
        *i += 1;
        let base = match token {
            Token::Close => break,
            Token::Alt => {
                alts.push(Vec::new());
                continue;
            }
            Token::Repeat => {
                if let Some(last) = alts.last_mut().and_then(|seq| seq.last_mut()) {
                    last.repeats += 1;
                }
                continue;
            }
            Token::Define => continue,
            Token::Terminal => Base::Terminal,
            Token::Name(name) => Base::Ref(name),
            Token::Open => Base::Group(alternatives(tokens, i, nesting + 1)?),
        };
        if let Some(seq) = alts.last_mut() {
            seq.push(Element { base, repeats: 0 });
        }
    }
    Ok(alts)
}

/// The element a group or rule consists of, when it is exactly one.
fn only<'b, 'a>(alts: &'b Alternatives<'a>) -> Option<&'b Element<'a>> {
    match alts.as_slice() {
        [seq] => match seq.as_slice() {
            [element] => Some(element),
            _ => None,
        },
        _ => None,
    }
}

/// Repetitions stacked on one another at this element, looking through groups and rules that
/// consist of one element. `memo` holds finished rules, and a rule in progress counts 0 (a
/// cycle passes through a terminal or it is left recursion, which llama.cpp refuses itself).
fn element_depth<'a>(
    element: &Element<'a>,
    rules: &HashMap<&'a str, Alternatives<'a>>,
    memo: &mut HashMap<&'a str, usize>,
    nesting: usize,
) -> usize {
    if nesting > MAX_NESTING {
        return 0;
    }
    let inner = match &element.base {
        Base::Terminal => 0,
        Base::Group(alts) => only(alts).map_or(0, |e| element_depth(e, rules, memo, nesting + 1)),
        Base::Ref(name) => match memo.get(name) {
            Some(&d) => d,
            None => {
                memo.insert(name, 0);
                let d = rules.get(name).and_then(only).map_or(0, |e| element_depth(e, rules, memo, nesting + 1));
                memo.insert(name, d);
                d
            }
        },
    };
    if element.repeats == 0 {
        inner
    } else {
        inner.saturating_add(element.repeats)
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn reversed_repetitions_are_refused_before_llama_cpp_sees_them() {
        assert!(check(r#"root ::= "a"{5,1}"#).is_err());
        assert!(check("root ::= [a-z]{ 3 , 2 }").is_err());
        for ok in
            [r#"root ::= "a"{1,5} "b"{2} "c"{3,}"#, r#"root ::= "{5,1}" [{5,1}] # {5,1}"#, r#"root ::= "\"{5,1}" "x""#]
        {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn repetitions_nested_with_nothing_between_are_refused() {
        let stacked = format!("root ::= [9]{{5}}(\"\x12\"{})", "+".repeat(90));
        let groups = format!("root ::= {}\"x\"{}", "(".repeat(8), ")+".repeat(8));
        let mut chain = String::from("root ::= r0+\n");
        for k in 0..8 {
            chain += &format!("r{k} ::= r{}+\n", k + 1);
        }
        chain += "r8 ::= \"x\"+\n";
        for bad in [stacked.as_str(), "root ::= \"a\"+*?+*", groups.as_str(), chain.as_str()] {
            let err = check(bad).expect_err(bad);
            assert!(err.to_string().contains("nested"), "{bad}: {err}");
        }
        let deep_groups = format!("root ::= {}\"x\"{}", "(".repeat(300), ")".repeat(300));
        assert!(check(&deep_groups).is_err());
        for ok in [
            r#"root ::= ("a"+)? "b"*"#,
            r#"root ::= ("a" | "b"+)+ ("," "c"+)*"#,
            "root ::= item+\nitem ::= \"x\" ws\nws ::= [ \\t\\n]*",
            "root ::= a\na ::= b+\nb ::= \"x\" b | \"y\"",
            // A cycle through a single-element rule must not recurse forever.
            "root ::= a\na ::= b\nb ::= a | \"x\"",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }
}
