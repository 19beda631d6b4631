//! The bench chart: speedup per category per configuration as grouped bars, the baseline
//! at 1.0 and the oracle ceiling (the best oracle configuration, e.g. `oracle` or
//! `oracle+lazy`) drawn as a dashed line over each category. Plain SVG
//! written by hand: a few dozen elements do not justify a plotting dependency.

use std::fmt::Write;

use super::report::Report;

const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Render the report's per-category speedups as an SVG document.
pub fn speedup_chart_svg(r: &Report) -> String {
    let baseline = r.configs.first().cloned().unwrap_or_default();
    let bars: Vec<&String> = r
        .configs
        .iter()
        .filter(|c| **c != baseline && !c.starts_with("oracle"))
        .collect();
    let has_oracle = r.configs.iter().any(|c| c.starts_with("oracle"));
    let cats: Vec<&String> = r.categories.keys().collect();

    let max = r
        .categories
        .values()
        .flat_map(|m| m.values().map(|c| c.speedup))
        .fold(1.0f64, f64::max);
    let top = ((max * 1.15) * 2.0).ceil() / 2.0; // next half step above the tallest
    let (w, h) = (
        120.0 + cats.len().max(1) as f64 * (30.0 + 22.0 * bars.len().max(1) as f64),
        420.0,
    );
    let (x0, y0, plot_h) = (60.0, 40.0, 300.0);
    let y = |v: f64| y0 + plot_h * (1.0 - v / top);
    let group_w = 22.0 * bars.len().max(1) as f64;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="18" font-size="13">{}</text>"#,
        esc(&format!("Speedup over plain decoding — {}", r.model))
    );
    // Grid every 0.5x.
    let mut v = 0.0;
    while v <= top + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" x2="{}" y1="{yv:.1}" y2="{yv:.1}" stroke="{}" stroke-width="{}"/><text x="{}" y="{:.1}" text-anchor="end">{v:.1}x</text>"##,
            w - 20.0,
            if (v - 1.0).abs() < 1e-9 {
                "#333"
            } else {
                "#ddd"
            },
            if (v - 1.0).abs() < 1e-9 { 1.5 } else { 1.0 },
            x0 - 4.0,
            y(v) + 4.0,
            yv = y(v),
        );
        v += 0.5;
    }
    for (ci, cat) in cats.iter().enumerate() {
        let gx = x0 + 15.0 + ci as f64 * (group_w + 30.0);
        let m = &r.categories[*cat];
        for (bi, b) in bars.iter().enumerate() {
            if let Some(cs) = m.get(*b) {
                let bx = gx + bi as f64 * 22.0;
                let _ = writeln!(
                    s,
                    r#"<rect x="{bx:.1}" y="{:.1}" width="18" height="{:.1}" fill="{}"><title>{} {}: {:.2}x</title></rect>"#,
                    y(cs.speedup),
                    (y(0.0) - y(cs.speedup)).max(0.0),
                    PALETTE[bi % PALETTE.len()],
                    esc(cat),
                    esc(b),
                    cs.speedup
                );
            }
        }
        let ceiling = m
            .iter()
            .filter(|(c, _)| c.starts_with("oracle"))
            .map(|(_, cs)| cs.speedup)
            .reduce(f64::max);
        if let Some(o) = ceiling {
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{yo:.1}" y2="{yo:.1}" stroke="#000" stroke-width="2" stroke-dasharray="5,3"><title>{} oracle: {:.2}x</title></line>"##,
                gx - 4.0,
                gx + group_w,
                esc(cat),
                o,
                yo = y(o),
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + group_w / 2.0 - 2.0,
            y(0.0) + 16.0,
            esc(cat)
        );
    }
    // Legend.
    let ly = y(0.0) + 40.0;
    let mut lx = x0;
    for (bi, b) in bars.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{:.1}">{}</text>"#,
            ly - 10.0,
            PALETTE[bi % PALETTE.len()],
            lx + 16.0,
            ly,
            esc(b)
        );
        lx += 30.0 + 7.0 * b.len() as f64;
    }
    if has_oracle {
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#000" stroke-width="2" stroke-dasharray="5,3"/><text x="{}" y="{ly:.1}">oracle ceiling</text>"##,
            lx + 20.0,
            ly - 4.0,
            ly - 4.0,
            lx + 24.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{PromptResult, Report};
    use crate::bench::stats::{Summary, set_oracle_fractions};

    fn sum(config: &str, speedup: f64) -> Summary {
        Summary {
            config: config.into(),
            median_tok_per_s: 10.0 * speedup,
            speedup,
            oracle_fraction: None,
            tokens_per_step: 1.0,
            acceptance: 0.5,
            acceptance_at: vec![],
            draft_share: 0.0,
            verify_share: 1.0,
            overhead_share: 0.0,
            mean_k: 0.0,
            k_hist: vec![],
            identical: true,
            divergence: None,
        }
    }

    #[test]
    fn chart_has_a_bar_per_drafter_and_category_and_an_oracle_line() {
        let mut a = vec![
            sum("none", 1.0),
            sum("ngram", 1.3),
            sum("oracle", 1.8),
            sum("oracle+lazy", 2.0),
        ];
        set_oracle_fractions(&mut a);
        let b = vec![
            sum("none", 1.0),
            sum("ngram", 0.9),
            sum("oracle", 1.5),
            sum("oracle+lazy", 1.4),
        ];
        let prompts = vec![
            PromptResult {
                id: "a".into(),
                category: "code".into(),
                summaries: a,
                runs: vec![],
            },
            PromptResult {
                id: "b".into(),
                category: "chat & <misc>".into(),
                summaries: b,
                runs: vec![],
            },
        ];
        let r = Report::new(
            "m".into(),
            8,
            2,
            4,
            1,
            vec![
                "none".into(),
                "ngram".into(),
                "oracle".into(),
                "oracle+lazy".into(),
            ],
            prompts,
        );
        let svg = speedup_chart_svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>code ngram: 1.30x</title>").count(), 1);
        assert_eq!(svg.matches("oracle: ").count(), 2);
        assert!(svg.contains("<title>code oracle: 2.00x</title>"));
        assert!(
            !svg.contains("oracle+lazy:"),
            "oracles are the line, not bars"
        );
        assert!(svg.contains("chat &amp; &lt;misc&gt;"));
        assert_eq!(r.categories["code"]["ngram"].oracle_fraction, Some(0.65));
    }
}
