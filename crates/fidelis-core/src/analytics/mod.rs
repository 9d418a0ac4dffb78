//! Knowing the program: models of members' behaviour fitted on the program's own history.
//!
//! - [`history`]: a member's purchases summarised for the models (grouped per day, up to
//!   the end of a calibration window).
//! - [`bgnbd`]: the BG/NBD model of repeat purchasing — who is still active, how many
//!   purchases to expect.
//! - [`gamma_gamma`]: the Gamma-Gamma model of spend per purchase, and lifetime value.
//! - [`churn`]: both fitted on a program's members, and every member scored.
//! - [`experiment`]: a promotion measured against its control group: lift, ROI, intervals.
//! - [`rfm`]: recency, frequency and monetary quintile scores and their named segments.
//! - [`synthetic`]: customers drawn from the models, for checks, benchmarks and simulation.
//! - [`optimize`], [`special`]: the numerical tools the fits need.
//!
//! Pure: the store reads the history, these functions fit and score.

pub mod bgnbd;
pub mod churn;
pub mod experiment;
pub mod gamma_gamma;
pub mod history;
pub mod optimize;
pub mod rfm;
pub mod special;
pub mod synthetic;
