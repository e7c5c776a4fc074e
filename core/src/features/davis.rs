//! The DAVIS 2017 scores of a predicted object mask against ground truth: region
//! similarity J (intersection over union) and contour accuracy F (boundary F-measure with a
//! tolerance of 0.8% of the image diagonal), as the official `davis2017-evaluation`.

/// J: intersection over union; 1 when both masks are empty.
pub fn jaccard(pred: &[bool], truth: &[bool]) -> f64 {
    let inter = pred.iter().zip(truth).filter(|(a, b)| **a && **b).count();
    let union = pred.iter().zip(truth).filter(|(a, b)| **a || **b).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Boundary pixels of a mask (`seg2bmap`: a pixel differing from its right, lower or
/// lower-right neighbour).
pub fn boundary(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let at = |x: usize, y: usize| x < w && y < h && mask[y * w + x];
    let mut b = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let v = mask[y * w + x];
            let e = x + 1 < w && at(x + 1, y) != v;
            let s = y + 1 < h && at(x, y + 1) != v;
            let se = x + 1 < w && y + 1 < h && at(x + 1, y + 1) != v;
            b[y * w + x] = e || s || se;
        }
    }
    b
}

fn dilate(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let r2 = (r * r) as isize;
    let ri = r as isize;
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            if !mask[y * w + x] {
                continue;
            }
            for dy in -ri..=ri {
                for dx in -ri..=ri {
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if dx * dx + dy * dy <= r2
                        && nx >= 0
                        && ny >= 0
                        && (nx as usize) < w
                        && (ny as usize) < h
                    {
                        out[ny as usize * w + nx as usize] = true;
                    }
                }
            }
        }
    }
    out
}

/// F: boundary F-measure with tolerance `ceil(0.008 * diagonal)` pixels.
pub fn f_measure(pred: &[bool], truth: &[bool], w: usize, h: usize) -> f64 {
    let tol = (0.008 * ((w * w + h * h) as f64).sqrt()).ceil() as usize;
    let (bp, bt) = (boundary(pred, w, h), boundary(truth, w, h));
    let (np, nt) = (
        bp.iter().filter(|&&v| v).count(),
        bt.iter().filter(|&&v| v).count(),
    );
    match (np, nt) {
        (0, 0) => return 1.0,
        (0, _) | (_, 0) => return 0.0,
        _ => {}
    }
    let (dp, dt) = (dilate(&bp, w, h, tol), dilate(&bt, w, h, tol));
    let matched_p = bp.iter().zip(&dt).filter(|(a, b)| **a && **b).count();
    let matched_t = bt.iter().zip(&dp).filter(|(a, b)| **a && **b).count();
    let precision = matched_p as f64 / np as f64;
    let recall = matched_t as f64 / nt as f64;
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(w: usize, h: usize, x0: usize, y0: usize, s: usize) -> Vec<bool> {
        (0..w * h)
            .map(|i| (x0..x0 + s).contains(&(i % w)) && (y0..y0 + s).contains(&(i / w)))
            .collect()
    }

    #[test]
    fn identical_masks_score_one_and_shifts_lower_it() {
        let a = square(100, 100, 20, 20, 40);
        assert_eq!(jaccard(&a, &a), 1.0);
        assert_eq!(f_measure(&a, &a, 100, 100), 1.0);
        let b = square(100, 100, 21, 20, 40); // within the 1-pixel tolerance
        assert!((jaccard(&a, &b) - 39.0 * 40.0 / (41.0 * 40.0)).abs() < 1e-9);
        assert_eq!(f_measure(&a, &b, 100, 100), 1.0);
        let c = square(100, 100, 60, 60, 30);
        assert_eq!(jaccard(&a, &c), 0.0);
        assert!(f_measure(&a, &c, 100, 100) < 0.1);
        let empty = vec![false; 100 * 100];
        assert_eq!(jaccard(&empty, &empty), 1.0);
        assert_eq!(f_measure(&empty, &a, 100, 100), 0.0);
    }
}
