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
