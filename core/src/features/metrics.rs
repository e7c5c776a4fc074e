//! Agreement of a clustering with known classes: NMI (arithmetic normalisation, as
//! scikit-learn's default), purity and the adjusted Rand index.

use std::collections::HashMap;

fn contingency(a: &[usize], b: &[usize]) -> HashMap<(usize, usize), usize> {
    let mut t = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *t.entry((x, y)).or_insert(0) += 1;
    }
    t
}

fn counts(a: &[usize]) -> HashMap<usize, usize> {
    let mut c = HashMap::new();
    for &x in a {
        *c.entry(x).or_insert(0) += 1;
    }
    c
}

fn entropy(c: &HashMap<usize, usize>, n: f64) -> f64 {
    c.values()
        .map(|&v| {
            let p = v as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Normalised mutual information, `I(A; B) / ((H(A) + H(B)) / 2)`, in [0, 1].
pub fn nmi(classes: &[usize], clusters: &[usize]) -> f64 {
    let n = classes.len() as f64;
    if classes.is_empty() {
        return 0.0;
    }
    let (ca, cb) = (counts(classes), counts(clusters));
    let mut mi = 0.0;
    for (&(x, y), &v) in &contingency(classes, clusters) {
        let pxy = v as f64 / n;
        mi += pxy * (pxy / (ca[&x] as f64 / n * cb[&y] as f64 / n)).ln();
    }
    let (ha, hb) = (entropy(&ca, n), entropy(&cb, n));
    if ha == 0.0 && hb == 0.0 {
        return 1.0;
    }
    (mi / ((ha + hb) / 2.0)).clamp(0.0, 1.0)
}

/// Share of items whose cluster's majority class is their own class.
pub fn purity(classes: &[usize], clusters: &[usize]) -> f64 {
    if classes.is_empty() {
        return 0.0;
    }
    let mut best: HashMap<usize, usize> = HashMap::new();
    for (&(_, y), &v) in &contingency(classes, clusters) {
        let e = best.entry(y).or_insert(0);
        *e = (*e).max(v);
    }
    best.values().sum::<usize>() as f64 / classes.len() as f64
}

/// Adjusted Rand index (1: identical partitions, ~0: chance).
pub fn adjusted_rand(classes: &[usize], clusters: &[usize]) -> f64 {
    let c2 = |v: usize| (v * v.saturating_sub(1)) as f64 / 2.0;
    let n = classes.len();
    let index: f64 = contingency(classes, clusters)
        .values()
        .map(|&v| c2(v))
        .sum();
    let a: f64 = counts(classes).values().map(|&v| c2(v)).sum();
    let b: f64 = counts(clusters).values().map(|&v| c2(v)).sum();
    let expected = a * b / c2(n).max(1.0);
    let max = (a + b) / 2.0;
    if (max - expected).abs() < 1e-12 {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_known_values() {
        let truth = [0, 0, 0, 1, 1, 1];
        let same = [5, 5, 5, 2, 2, 2];
        assert!((nmi(&truth, &same) - 1.0).abs() < 1e-12);
        assert!((purity(&truth, &same) - 1.0).abs() < 1e-12);
        assert!((adjusted_rand(&truth, &same) - 1.0).abs() < 1e-12);
        // scikit-learn: normalized_mutual_info_score([0,0,0,1,1,1],[0,0,1,1,2,2]) = 0.5158037429793889
        let other = [0, 0, 1, 1, 2, 2];
        assert!((nmi(&truth, &other) - 0.515_803_742_979_388_9).abs() < 1e-9);
        assert!((purity(&truth, &other) - 5.0 / 6.0).abs() < 1e-12);
        // adjusted_rand_score([0,0,0,1,1,1],[0,0,1,1,2,2]) = 0.24242424242424246
        assert!((adjusted_rand(&truth, &other) - 0.242_424_242_424_242_46).abs() < 1e-9);
    }
}
