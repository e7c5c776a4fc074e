//! Near-duplicate groups: connected components of the "similar enough" graph.

use super::search::Neighbour;

/// A group of two or more near-duplicates.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Group {
    /// Members, ascending.
    pub members: Vec<usize>,
    /// The strongest and weakest similarity of the edges that joined the group.
    pub max_score: f32,
    pub min_score: f32,
}

/// A pair of near-duplicates (`a < b`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub score: f32,
}

/// Every pair `(i, j)` with `i < j` whose similarity reaches `threshold`, from each row's
/// neighbour list (deduplicated: a pair found from both ends counts once), strongest first.
pub fn pairs_above(neighbours: &[Vec<Neighbour>], threshold: f32) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = neighbours
        .iter()
        .enumerate()
        .flat_map(|(i, hits)| {
            hits.iter()
                .filter(move |h| h.score >= threshold && h.index != i)
                .map(move |h| Pair {
                    a: i.min(h.index),
                    b: i.max(h.index),
                    score: h.score,
                })
        })
        .collect();
    pairs.sort_by_key(|p| (p.a, p.b));
    pairs.dedup_by(|x, y| x.a == y.a && x.b == y.b);
    pairs.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
    pairs
}

/// Connected components (size >= 2) of `n` items joined by `pairs`, largest first.
pub fn connected_groups(n: usize, pairs: &[Pair]) -> Vec<Group> {
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for p in pairs {
        let (ra, rb) = (find(&mut parent, p.a), find(&mut parent, p.b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut by_root: std::collections::BTreeMap<usize, Group> = Default::default();
    for p in pairs {
        let r = find(&mut parent, p.a);
        let g = by_root.entry(r).or_insert(Group {
            members: Vec::new(),
            max_score: f32::MIN,
            min_score: f32::MAX,
        });
        g.max_score = g.max_score.max(p.score);
        g.min_score = g.min_score.min(p.score);
    }
    for i in 0..n {
        let r = find(&mut parent, i);
        if let Some(g) = by_root.get_mut(&r) {
            g.members.push(i);
        }
    }
    let mut groups: Vec<Group> = by_root.into_values().collect();
    groups.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then(a.members[0].cmp(&b.members[0]))
    });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_join_transitively() {
        let hit = |index, score| Neighbour { index, score };
        let nb = vec![
            vec![hit(1, 0.95), hit(2, 0.5)],
            vec![hit(0, 0.95), hit(3, 0.91)],
            vec![hit(0, 0.5)],
            vec![hit(1, 0.91)],
            vec![hit(5, 0.99)],
            vec![hit(4, 0.99)],
        ];
        let pairs = pairs_above(&nb, 0.9);
        assert_eq!(pairs.len(), 3);
        assert_eq!((pairs[0].a, pairs[0].b), (4, 5));
        let groups = connected_groups(6, &pairs);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].members, vec![0, 1, 3]);
        assert!((groups[0].min_score - 0.91).abs() < 1e-6);
        assert_eq!(groups[1].members, vec![4, 5]);
    }
}
