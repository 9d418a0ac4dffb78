//! A promotion measured against its control group: the members it rewarded (treated) and
//! the members held out (control), both of whom met its conditions in the window; their
//! spend over the window compared.
//!
//! The difference of the groups' mean spend, times the treated members, is the revenue the
//! promotion brought beyond what those members would have spent anyway; against the cost
//! of the points it awarded it gives the return on investment. The difference's 95 %
//! interval is Welch's (unequal variances, normal approximation), so it is reported only
//! from 30 members in each group; when the interval contains zero the report says the
//! promotion's effect cannot be told from chance.

/// The smallest group for which a conclusion is drawn.
pub const MIN_GROUP: usize = 30;

/// The two-sided 95 % normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// What can be concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    /// Fewer than [`MIN_GROUP`] members in a group.
    SampleTooSmall,
    /// The interval of the spend difference contains zero.
    NotSignificant,
    /// Treated members spent more, beyond chance.
    Positive,
    /// Treated members spent less, beyond chance.
    Negative,
}

impl Conclusion {
    pub fn name(self) -> &'static str {
        match self {
            Self::SampleTooSmall => "sample_too_small",
            Self::NotSignificant => "not_significant",
            Self::Positive => "positive",
            Self::Negative => "negative",
        }
    }
}

/// The comparison. Money in minor units (fractions where they are means).
#[derive(Debug, Clone, PartialEq)]
pub struct Performance {
    pub treated: usize,
    pub control: usize,
    pub treated_mean: f64,
    pub control_mean: f64,
    /// Treated minus control mean spend, and its 95 % interval (when groups are large
    /// enough).
    pub lift: f64,
    pub lift_interval: Option<(f64, f64)>,
    /// `lift × treated`, and its interval.
    pub incremental_revenue: f64,
    pub revenue_interval: Option<(f64, f64)>,
    /// The points' cost in money.
    pub cost: i64,
    /// `(incremental revenue − cost) / cost`, and its interval; `None` without cost.
    pub roi: Option<f64>,
    pub roi_interval: Option<(f64, f64)>,
    pub conclusion: Conclusion,
}

fn mean_and_variance(values: &[i64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
    (mean, ss / (n - 1.0))
}

/// Compares the spend of the treated and control members (one value per member: their
/// spend in the window, zero included), given what the awarded points cost.
pub fn compare(treated: &[i64], control: &[i64], cost: i64) -> Performance {
    let (mt, vt) = mean_and_variance(treated);
    let (mc, vc) = mean_and_variance(control);
    let lift = mt - mc;
    let n = treated.len() as f64;
    let revenue = lift * n;
    let roi_of = |revenue: f64| (cost > 0).then(|| (revenue - cost as f64) / cost as f64);
    let large = treated.len() >= MIN_GROUP && control.len() >= MIN_GROUP;
    let lift_interval = large.then(|| {
        let se = (vt / treated.len() as f64 + vc / control.len() as f64).sqrt();
        (lift - Z95 * se, lift + Z95 * se)
    });
    let revenue_interval = lift_interval.map(|(lo, hi)| (lo * n, hi * n));
    let conclusion = match lift_interval {
        None => Conclusion::SampleTooSmall,
        Some((lo, _)) if lo > 0.0 => Conclusion::Positive,
        Some((_, hi)) if hi < 0.0 => Conclusion::Negative,
        Some(_) => Conclusion::NotSignificant,
    };
    Performance {
        treated: treated.len(),
        control: control.len(),
        treated_mean: mt,
        control_mean: mc,
        lift,
        lift_interval,
        incremental_revenue: revenue,
        revenue_interval,
        cost,
        roi: roi_of(revenue),
        roi_interval: revenue_interval.and_then(|(lo, hi)| Some((roi_of(lo)?, roi_of(hi)?))),
        conclusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_computed_comparison() {
        // Treated: 30 members spending 100 or 140 (mean 120, sample variance 413.79…);
        // control: 30 spending 90 or 110 (mean 100, variance 103.45…).
        let treated: Vec<i64> = (0..30)
            .map(|i| if i % 2 == 0 { 100 } else { 140 })
            .collect();
        let control: Vec<i64> = (0..30).map(|i| if i % 2 == 0 { 90 } else { 110 }).collect();
        let p = compare(&treated, &control, 300);
        assert_eq!((p.treated, p.control), (30, 30));
        assert!((p.lift - 20.0).abs() < 1e-12);
        assert!((p.incremental_revenue - 600.0).abs() < 1e-9);
        // se = √(400·30/29/30 + 100·30/29/30) = √(500/29) = 4.1523…
        let se = (500.0f64 / 29.0).sqrt();
        let (lo, hi) = p.lift_interval.expect("the test fixture is valid");
        assert!(
            (lo - (20.0 - 1.959964 * se)).abs() < 1e-5
                && (hi - (20.0 + 1.959964 * se)).abs() < 1e-5
        );
        assert!(
            (p.roi.expect("the test fixture is valid") - 1.0).abs() < 1e-12,
            "(600 − 300) / 300"
        );
        let (rlo, rhi) = p.roi_interval.expect("the test fixture is valid");
        assert!((rlo - (lo * 30.0 - 300.0) / 300.0).abs() < 1e-9 && rhi > rlo);
        assert_eq!(p.conclusion, Conclusion::Positive);
        // Too few: no interval, no conclusion.
        let p = compare(&treated[..10], &control, 300);
        assert_eq!(p.conclusion, Conclusion::SampleTooSmall);
        assert!(p.lift_interval.is_none() && p.roi.is_some());
        // Same spend both sides: not significant.
        let p = compare(&treated, &treated, 300);
        assert_eq!(p.conclusion, Conclusion::NotSignificant);
    }
}
