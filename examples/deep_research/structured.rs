//! The three structured answers, each a serde type with the JSON Schema that constrains the
//! model to it. Every string and list is bounded, so a constrained answer always closes within
//! its token budget, and the schema requires every field, so every section of the brief exists.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// An answer the model gives as JSON.
pub trait Structured: DeserializeOwned {
    /// Bounds that vary by run (how many questions).
    type Limits: Copy;
    /// What the model must produce.
    fn schema(limits: Self::Limits) -> Value;
    /// Tidies what the schema cannot express (blank or repeated entries); `Err` says why the
    /// answer is unusable.
    fn check(&mut self, limits: Self::Limits) -> Result<(), String>;
}

/// A bounded string that is never empty.
fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 3, "maxLength": max})
}

fn list(items: Value, min: usize, max: usize) -> Value {
    json!({"type": "array", "items": items, "minItems": min, "maxItems": max})
}

/// An object whose every property is required, in this order.
fn object(properties: &[(&str, Value)]) -> Value {
    let names: Vec<&str> = properties.iter().map(|(n, _)| *n).collect();
    let props: serde_json::Map<String, Value> = properties.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    json!({"type": "object", "properties": props, "required": names, "additionalProperties": false})
}

/// Trims, drops blanks and case-insensitive repeats.
fn tidy(items: &mut Vec<String>) {
    let mut seen = Vec::new();
    items.retain_mut(|s| {
        *s = s.trim().to_string();
        let key = s.to_lowercase();
        let keep = !s.is_empty() && !seen.contains(&key);
        seen.push(key);
        keep
    });
}

/// Step 1 (the topic split into sub-questions) and between rounds (what the findings leave
/// open).
#[derive(Debug, Clone, Deserialize)]
pub struct Questions {
    pub questions: Vec<String>,
}

/// Fewest sub-questions a plan may have.
pub const MIN_QUESTIONS: usize = 3;
const QUESTION_CHARS: usize = 160;

impl Structured for Questions {
    /// Fewest and most questions.
    type Limits = (usize, usize);

    fn schema((min, max): (usize, usize)) -> Value {
        object(&[("questions", list(text(QUESTION_CHARS), min, max))])
    }

    fn check(&mut self, (min, max): (usize, usize)) -> Result<(), String> {
        tidy(&mut self.questions);
        self.questions.truncate(max);
        if self.questions.len() < min {
            return Err(format!("{} distinct questions, at least {min} needed", self.questions.len()));
        }
        Ok(())
    }
}

/// Step 3: the brief.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Brief {
    pub title: String,
    pub summary: String,
    pub key_findings: Vec<String>,
    pub statistics: Vec<Statistic>,
    pub chart_suggestions: Vec<Chart>,
    pub faq: Vec<Faq>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statistic {
    pub label: String,
    pub value: String,
    pub context: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chart {
    pub title: String,
    pub kind: String,
    pub data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Faq {
    pub question: String,
    pub answer: String,
}

pub const CHART_KINDS: [&str; 6] = ["bar", "line", "pie", "stacked bar", "scatter", "table"];

impl Structured for Brief {
    type Limits = ();

    fn schema((): ()) -> Value {
        let statistic = object(&[("label", text(80)), ("value", text(40)), ("context", text(120))]);
        let chart = object(&[("title", text(80)), ("kind", json!({"enum": CHART_KINDS})), ("data", text(120))]);
        let faq = object(&[("question", text(120)), ("answer", text(240))]);
        object(&[
            ("title", text(90)),
            ("summary", text(400)),
            ("key_findings", list(text(160), 2, 4)),
            ("statistics", list(statistic, 1, 3)),
            ("chart_suggestions", list(chart, 1, 2)),
            ("faq", list(faq, 2, 3)),
        ])
    }

    fn check(&mut self, (): ()) -> Result<(), String> {
        tidy(&mut self.key_findings);
        let blank = |s: &str| s.trim().is_empty();
        if blank(&self.title) || blank(&self.summary) || self.key_findings.is_empty() {
            return Err("the title, summary or findings are empty".into());
        }
        Ok(())
    }
}
