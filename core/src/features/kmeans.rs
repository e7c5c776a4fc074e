//! k-means (k-means++ seeding, Lloyd iterations, best of several seeded restarts).

use crate::cpu::parallel::map_tasks;
use crate::{Error, Result, rng};
use rand::Rng;

/// A clustering of `[N, d]` rows.
#[derive(Clone, Debug)]
pub struct KMeans {
    pub k: usize,
    /// `[k, d]`
    pub centroids: Vec<f32>,
    pub labels: Vec<usize>,
    /// Sum of squared distances to the assigned centroid.
    pub inertia: f64,
    pub iterations: usize,
}

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Nearest centroid of each row and its squared distance.
fn assign(rows: &[f32], d: usize, centroids: &[f32]) -> Vec<(usize, f32)> {
    let n = rows.len() / d;
    map_tasks(n, |i| {
        let r = &rows[i * d..(i + 1) * d];
        centroids
            .chunks_exact(d)
            .enumerate()
            .map(|(c, m)| (c, dist2(r, m)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("k >= 1")
    })
}

/// Best (lowest inertia) of `restarts` runs of at most `max_iter` Lloyd iterations.
pub fn kmeans(
    rows: &[f32],
    d: usize,
    k: usize,
    restarts: usize,
    max_iter: usize,
    seed: u64,
) -> Result<KMeans> {
    let n = rows.len() / d.max(1);
    if d == 0 || rows.len() != n * d || k == 0 || k > n {
        return Err(Error::Input(format!(
            "k-means needs 1 <= k <= number of items; got k = {k} for {n} items"
        )));
    }
    let mut best: Option<KMeans> = None;
    for r in 0..restarts.max(1) {
        let mut rng = rng::seeded(seed.wrapping_add(r as u64));
        // k-means++: each next seed drawn with probability proportional to D(x)^2
        let mut centroids = Vec::with_capacity(k * d);
        let first = rng.random_range(0..n);
        centroids.extend_from_slice(&rows[first * d..(first + 1) * d]);
        let mut nearest: Vec<f32> = (0..n)
            .map(|i| dist2(&rows[i * d..(i + 1) * d], &centroids[..d]))
            .collect();
        while centroids.len() < k * d {
            let total: f64 = nearest.iter().map(|&v| v as f64).sum();
            let pick = if total <= 0.0 {
                rng.random_range(0..n)
            } else {
                let mut t = rng.random::<f64>() * total;
                let mut pick = n - 1;
                for (i, &v) in nearest.iter().enumerate() {
                    t -= v as f64;
                    if t <= 0.0 {
                        pick = i;
                        break;
                    }
                }
                pick
            };
            let c = rows[pick * d..(pick + 1) * d].to_vec();
            for (i, v) in nearest.iter_mut().enumerate() {
                *v = v.min(dist2(&rows[i * d..(i + 1) * d], &c));
            }
            centroids.extend(c);
        }
        let mut labels = vec![usize::MAX; n];
        let mut iterations = 0;
        let mut inertia = 0.0;
        for it in 0..max_iter.max(1) {
            iterations = it + 1;
            let a = assign(rows, d, &centroids);
            inertia = a.iter().map(|&(_, v)| v as f64).sum();
            let changed = a.iter().zip(&labels).any(|(x, &l)| x.0 != l);
            labels = a.iter().map(|x| x.0).collect();
            if !changed {
                break;
            }
            let mut sums = vec![0f64; k * d];
            let mut counts = vec![0usize; k];
            for (i, &l) in labels.iter().enumerate() {
                counts[l] += 1;
                for j in 0..d {
                    sums[l * d + j] += rows[i * d + j] as f64;
                }
            }
            for c in 0..k {
                if counts[c] == 0 {
                    // an empty cluster takes the point farthest from its centroid
                    let far = (0..n)
                        .max_by(|&x, &y| a[x].1.total_cmp(&a[y].1))
                        .expect("n >= 1");
                    centroids[c * d..(c + 1) * d].copy_from_slice(&rows[far * d..(far + 1) * d]);
                } else {
                    for j in 0..d {
                        centroids[c * d + j] = (sums[c * d + j] / counts[c] as f64) as f32;
                    }
                }
            }
        }
        if best.as_ref().is_none_or(|b| inertia < b.inertia) {
            best = Some(KMeans {
                k,
                centroids,
                labels,
                inertia,
                iterations,
            });
        }
    }
    Ok(best.expect("at least one restart"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_three_blobs() {
        let mut rows = Vec::new();
        let centres = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        let mut rng = rng::seeded(1);
        for i in 0..90 {
            let (x, y) = centres[i % 3];
            rows.push(x + rng.random::<f32>() - 0.5);
            rows.push(y + rng.random::<f32>() - 0.5);
        }
        let km = kmeans(&rows, 2, 3, 3, 50, 0).unwrap();
        for i in 0..90 {
            assert_eq!(km.labels[i], km.labels[i % 3], "item {i}");
        }
        assert_ne!(km.labels[0], km.labels[1]);
        assert_ne!(km.labels[1], km.labels[2]);
        assert!(kmeans(&rows, 2, 91, 1, 5, 0).is_err());
    }
}
