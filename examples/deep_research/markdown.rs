//! The report as Markdown: the brief's sections, then the research notes as an appendix. A run
//! that stopped early still renders what it gathered, with a note saying why.

use std::fmt::Write;

use crate::pipeline::{Report, Stop};

/// Model text inside a table cell: no row breaks, no column breaks.
fn cell(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

/// Model text on one line (headings, list items).
fn line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Model prose as a block: its own headings would break the report's outline, so they become
/// bold lines.
fn block(s: &str) -> String {
    let lines: Vec<String> = s
        .trim()
        .lines()
        .map(|l| match l.trim_start().strip_prefix('#') {
            Some(h) => format!("**{}**", h.trim_start_matches('#').trim()),
            None => l.to_string(),
        })
        .collect();
    lines.join("\n")
}

pub fn render(report: &Report) -> String {
    let mut md = String::new();
    let title = report.brief.as_ref().map_or(report.topic.as_str(), |b| b.title.as_str());
    let _ = writeln!(md, "# {}\n", line(title));
    let _ = writeln!(md, "*Topic:* {}\n", line(&report.topic));
    match &report.stop {
        Some(Stop::Interrupted) => {
            let _ = writeln!(md, "> **Interrupted** before the end: below is what was gathered until then.\n");
        }
        Some(Stop::Failed(why)) => {
            let _ = writeln!(md, "> **Incomplete**: {}. Below is what was gathered until then.\n", line(why));
        }
        None => {}
    }
    if let Some(b) = &report.brief {
        let _ = writeln!(md, "## Summary\n\n{}\n", block(&b.summary));
        let _ = writeln!(md, "## Key findings\n");
        for f in &b.key_findings {
            let _ = writeln!(md, "- {}", line(f));
        }
        let _ = writeln!(
            md,
            "\n## Statistics\n\n> **Model-generated and unverified.** These figures come from the model, \
             not from sources it checked; verify each before you use it.\n"
        );
        let _ = writeln!(md, "| Statistic | Value | Context |\n|---|---|---|");
        for s in &b.statistics {
            let _ = writeln!(md, "| {} | {} | {} |", cell(&s.label), cell(&s.value), cell(&s.context));
        }
        let _ = writeln!(md, "\n## Chart suggestions\n");
        for c in &b.chart_suggestions {
            let _ = writeln!(md, "- **{}** ({} chart): {}", line(&c.title), line(&c.kind), line(&c.data));
        }
        let _ = writeln!(md, "\n## FAQ (drafts)\n");
        for f in &b.faq {
            let _ = writeln!(md, "**Q: {}**\n\n{}\n", line(&f.question), block(&f.answer));
        }
    }
    let _ = writeln!(md, "## Appendix: sub-questions\n");
    if report.findings.is_empty() {
        let _ = writeln!(md, "None researched.\n");
    }
    for (i, f) in report.findings.iter().enumerate() {
        let kind = if f.round == 1 { "planned".to_string() } else { format!("follow-up, round {}", f.round) };
        let _ = writeln!(md, "### {}. {}\n\n*{kind}*\n", i + 1, line(&f.question));
        if !f.answer.is_empty() {
            let _ = writeln!(md, "{}\n", block(&f.answer));
        }
        if f.interrupted {
            let _ = writeln!(md, "*(interrupted)*\n");
        } else if f.cut {
            let _ = writeln!(md, "*(cut at the token limit)*\n");
        }
    }
    md
}
