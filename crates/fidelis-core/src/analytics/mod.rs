//! Knowing the program: models of members' behaviour fitted on the program's own history.
//!
//! - [`bgnbd`]: the BG/NBD model of repeat purchasing — who is still active, how many
//!   purchases to expect.
//! - [`special`]: the special functions the models need, in log space.
//!
//! Pure: the store summarises the history, these functions fit and score.

pub mod bgnbd;
pub mod special;
