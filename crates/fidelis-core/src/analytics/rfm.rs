//! RFM: each member scored 1–5 on recency (days since the last purchase), frequency
//! (purchase days) and monetary value (spend), by the population's quintiles, and named by
//! the usual segments.
//!
//! Scores come from the quintile boundaries of each measure's values, not from ranks: equal
//! values get equal scores (most members of a young program bought once; ranks would split
//! them arbitrarily). A measure whose values are mostly equal therefore uses fewer than
//! five scores.

/// One member's measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measures {
    /// Days since the last purchase (smaller is better).
    pub recency_days: i64,
    /// Purchase days.
    pub frequency: u32,
    /// Spend, in minor units.
    pub monetary: i64,
}

/// Scores 1 (worst) to 5 (best).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
}

impl Score {
    /// The named segment of the recency and frequency scores.
    pub fn segment(&self) -> &'static str {
        let (r, f) = (self.recency, self.frequency);
        match (r, f) {
            (4..=5, 4..=5) => "champions",
            (3, 4..=5) => "loyal",
            (5, 1) => "new",
            (4..=5, 1..=3) => "potential_loyalists",
            (1..=2, 4..=5) => "cant_lose",
            (1..=2, 3) => "at_risk",
            (1..=2, 1..=2) => "hibernating",
            _ => "needs_attention",
        }
    }
}

/// The four cut points of `values`: the largest value of each of the first four fifths.
fn cuts(mut values: Vec<i64>) -> [i64; 4] {
    values.sort_unstable();
    let n = values.len();
    std::array::from_fn(|i| {
        if n == 0 {
            0
        } else {
            values[((i + 1) * n / 5).saturating_sub(1).min(n - 1)]
        }
    })
}

/// 1 + the cut points strictly below `v` (higher is better).
fn score(v: i64, cuts: &[i64; 4]) -> u8 {
    1 + cuts.iter().filter(|c| **c < v).count() as u8
}

/// Scores every member against the population's quintiles.
pub fn score_all(members: &[Measures]) -> Vec<Score> {
    // Recency: fewer days is better, so score the negated days.
    let r = cuts(members.iter().map(|m| -m.recency_days).collect());
    let f = cuts(members.iter().map(|m| i64::from(m.frequency)).collect());
    let m = cuts(members.iter().map(|m| m.monetary).collect());
    members
        .iter()
        .map(|x| Score {
            recency: score(-x.recency_days, &r),
            frequency: score(i64::from(x.frequency), &f),
            monetary: score(x.monetary, &m),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quintiles_score_and_name_members() {
        // 100 members: recency 0..99 days, frequency 1..100, spend 100..10,000.
        let members: Vec<Measures> = (0..100)
            .map(|i| Measures {
                recency_days: i,
                frequency: (i + 1) as u32,
                monetary: (i + 1) * 100,
            })
            .collect();
        let s = score_all(&members);
        // The most recent fifth scores 5 on recency; the most frequent fifth 5 on frequency.
        assert_eq!(s[0].recency, 5);
        assert_eq!(s[99].recency, 1);
        assert_eq!(s[99].frequency, 5);
        assert_eq!(s[0].frequency, 1);
        for q in 1..=5u8 {
            assert_eq!(
                s.iter().filter(|x| x.monetary == q).count(),
                20,
                "score {q}"
            );
        }
        // Recent and frequent: champions; long gone after one purchase: hibernating.
        let champion = Score {
            recency: 5,
            frequency: 5,
            monetary: 3,
        };
        assert_eq!(champion.segment(), "champions");
        assert_eq!(
            Score {
                recency: 1,
                frequency: 1,
                monetary: 1
            }
            .segment(),
            "hibernating"
        );
        assert_eq!(
            Score {
                recency: 5,
                frequency: 1,
                monetary: 1
            }
            .segment(),
            "new"
        );
        assert_eq!(
            Score {
                recency: 1,
                frequency: 5,
                monetary: 5
            }
            .segment(),
            "cant_lose"
        );
        // Equal values, equal scores: everyone bought once.
        let once: Vec<Measures> = (0..50)
            .map(|i| Measures {
                recency_days: i,
                frequency: 1,
                monetary: 500,
            })
            .collect();
        let s = score_all(&once);
        assert!(
            s.iter()
                .all(|x| x.frequency == s[0].frequency && x.monetary == s[0].monetary)
        );
    }
}
