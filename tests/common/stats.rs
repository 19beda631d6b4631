//! Two-sample chi-square test for the statistical losslessness tests.

use std::collections::HashMap;

use tandem::llama::Token;

/// Chi-square statistic and degrees of freedom for two samples of categories.
pub fn chi_square(a: &[Token], b: &[Token]) -> (f64, usize) {
    let mut counts: HashMap<Token, (f64, f64)> = HashMap::new();
    for &t in a {
        counts.entry(t).or_default().0 += 1.0;
    }
    for &t in b {
        counts.entry(t).or_default().1 += 1.0;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    // Pool categories whose expected count would be under 5 in either sample.
    let mut cells: Vec<(f64, f64)> = Vec::new();
    let mut pooled = (0.0, 0.0);
    for (_, (ca, cb)) in counts {
        let tot = ca + cb;
        if tot * na.min(nb) / (na + nb) < 5.0 {
            pooled.0 += ca;
            pooled.1 += cb;
        } else {
            cells.push((ca, cb));
        }
    }
    if pooled.0 + pooled.1 > 0.0 {
        cells.push(pooled);
    }
    let mut chi = 0.0;
    for (ca, cb) in &cells {
        let tot = ca + cb;
        let ea = tot * na / (na + nb);
        let eb = tot * nb / (na + nb);
        chi += (ca - ea).powi(2) / ea + (cb - eb).powi(2) / eb;
    }
    (chi, cells.len().saturating_sub(1))
}

/// Critical value of chi-square at p = 0.001 (Wilson–Hilferty approximation).
pub fn chi_critical_p001(df: usize) -> f64 {
    if df == 0 {
        return f64::INFINITY;
    }
    let d = df as f64;
    let z = 3.0902; // upper 0.001 quantile of N(0,1)
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}
