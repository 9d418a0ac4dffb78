//! Derivative-free minimisation for the models' maximum-likelihood fits.

/// Minimises `f` from `start` with the Nelder–Mead simplex (standard coefficients), until
/// the values at the simplex's vertices differ by less than `tolerance` or `limit`
/// evaluations. Returns the best vertex and its value.
pub fn nelder_mead<const N: usize>(
    f: &mut impl FnMut(&[f64; N]) -> f64,
    start: [f64; N],
    step: f64,
    tolerance: f64,
    limit: u32,
) -> ([f64; N], f64) {
    let mut simplex: Vec<([f64; N], f64)> = Vec::with_capacity(N + 1);
    simplex.push((start, f(&start)));
    for i in 0..N {
        let mut v = start;
        v[i] += step;
        simplex.push((v, f(&v)));
    }
    let mut used = N as u32 + 1;
    let along = |from: &[f64; N], to: &[f64; N], t: f64| -> [f64; N] {
        std::array::from_fn(|i| from[i] + t * (to[i] - from[i]))
    };
    while used < limit {
        simplex.sort_by(|p, q| p.1.total_cmp(&q.1));
        if (simplex[N].1 - simplex[0].1).abs() <= tolerance * (1.0 + simplex[0].1.abs()) {
            break;
        }
        let centroid: [f64; N] =
            std::array::from_fn(|i| simplex[..N].iter().map(|(v, _)| v[i]).sum::<f64>() / N as f64);
        let worst = simplex[N].0;
        let reflected = along(&centroid, &worst, -1.0);
        let fr = f(&reflected);
        used += 1;
        if fr < simplex[0].1 {
            let expanded = along(&centroid, &worst, -2.0);
            let fe = f(&expanded);
            used += 1;
            simplex[N] = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < simplex[N - 1].1 {
            simplex[N] = (reflected, fr);
        } else {
            let (contracted, fc) = if fr < simplex[N].1 {
                let c = along(&centroid, &worst, -0.5);
                (c, f(&c))
            } else {
                let c = along(&centroid, &worst, 0.5);
                (c, f(&c))
            };
            used += 1;
            if fc < fr.min(simplex[N].1) {
                simplex[N] = (contracted, fc);
            } else {
                // Shrink towards the best vertex.
                let best = simplex[0].0;
                for vertex in simplex.iter_mut().skip(1) {
                    let v = along(&best, &vertex.0, 0.5);
                    *vertex = (v, f(&v));
                    used += 1;
                }
            }
        }
    }
    simplex.sort_by(|p, q| p.1.total_cmp(&q.1));
    simplex[0]
}

/// Nelder–Mead restarted from its own result (a simplex that collapsed early gets a fresh
/// one) until a run improves the value by less than 1e-9, at most eight runs: the point and
/// its value.
pub fn nelder_mead_restarted<const N: usize>(
    objective: &mut impl FnMut(&[f64; N]) -> f64,
    start: [f64; N],
    tolerance: f64,
) -> ([f64; N], f64) {
    let (mut point, mut best) = (start, f64::INFINITY);
    for _ in 0..8 {
        let (next, value) = nelder_mead(objective, point, 0.5, tolerance, 4_000);
        let improved = best - value;
        point = next;
        best = value.min(best);
        if improved.abs() < 1e-9 {
            break;
        }
    }
    (point, best)
}

/// Minimises `f` (which returns the value and the gradient) from `start` by BFGS with a
/// backtracking (Armijo) line search, until the largest gradient component is below
/// `tolerance` or `limit` evaluations. A step is at most 1 in any coordinate (the models
/// optimise logs of parameters: one step at most multiplies a parameter by e). Returns the
/// best point, its value and the evaluations used; `None` when the start is not finite.
pub fn bfgs<const N: usize>(
    f: &mut impl FnMut(&[f64; N]) -> (f64, [f64; N]),
    start: [f64; N],
    tolerance: f64,
    limit: u32,
) -> Option<([f64; N], f64, u32)> {
    let dot = |a: &[f64; N], b: &[f64; N]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let identity = || -> [[f64; N]; N] {
        std::array::from_fn(|i| std::array::from_fn(|j| f64::from(u8::from(i == j))))
    };
    let mut h = identity();
    let mut x = start;
    let (mut fx, mut g) = f(&x);
    let mut used = 1;
    if !fx.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return None;
    }
    while used < limit {
        if g.iter().all(|v| v.abs() < tolerance) {
            break;
        }
        let mut d: [f64; N] = std::array::from_fn(|i| -dot(&h[i], &g));
        if dot(&g, &d) >= 0.0 {
            h = identity();
            d = g.map(|v| -v);
        }
        let longest = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if longest > 1.0 {
            d = d.map(|v| v / longest);
        }
        let slope = dot(&g, &d);
        let mut t = 1.0;
        let (xn, fxn, gn) = loop {
            let xn: [f64; N] = std::array::from_fn(|i| x[i] + t * d[i]);
            let (fxn, gn) = f(&xn);
            used += 1;
            if fxn.is_finite() && gn.iter().all(|v| v.is_finite()) && fxn <= fx + 1e-4 * t * slope {
                break (xn, fxn, gn);
            }
            t *= 0.5;
            if t < 1e-12 || used >= limit {
                // No descent left along this direction: as good as it gets.
                return Some((x, fx, used));
            }
        };
        let s: [f64; N] = std::array::from_fn(|i| xn[i] - x[i]);
        let y: [f64; N] = std::array::from_fn(|i| gn[i] - g[i]);
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            // H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ
            let rho = 1.0 / sy;
            let hy: [f64; N] = std::array::from_fn(|i| dot(&h[i], &y));
            let yhy = dot(&y, &hy);
            h = std::array::from_fn(|i| {
                std::array::from_fn(|j| {
                    h[i][j] - rho * (hy[i] * s[j] + s[i] * hy[j])
                        + (rho * rho * yhy + rho) * s[i] * s[j]
                })
            });
        }
        let converged = (fx - fxn).abs() <= 1e-15 * (1.0 + fx.abs());
        x = xn;
        fx = fxn;
        g = gn;
        if converged && g.iter().all(|v| v.abs() < tolerance.sqrt()) {
            break;
        }
    }
    Some((x, fx, used))
}
