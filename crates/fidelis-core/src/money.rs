//! Money: ISO 4217 currencies, amounts in minor units, and the rounding rules that turn
//! money into points.
//!
//! Money is never a float. An amount is an integer count of the currency's minor unit
//! (`MinorUnits(7990)` is 79.90 EUR), parsed from and printed as a decimal string.
//! Decimal arithmetic happens only where a rate is applied, and the rounding rule is named
//! at that point.

use std::fmt;

use rust_decimal::Decimal;

/// An ISO 4217 money currency with its number of decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MoneyCurrency {
    code: [u8; 3],
    scale: u8,
}

/// Currencies whose minor unit is not a hundredth. Everything else has two decimals.
const SCALE_EXCEPTIONS: &[(&str, u8)] = &[
    ("BHD", 3),
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("RWF", 0),
    ("TND", 3),
    ("UGX", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
];

impl MoneyCurrency {
    /// Parses a three-letter upper-case ISO 4217 code.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(MoneyError::BadCurrency(code.chars().take(16).collect()));
        }
        let scale = SCALE_EXCEPTIONS
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(2, |(_, s)| *s);
        Ok(Self {
            code: [bytes[0], bytes[1], bytes[2]],
            scale,
        })
    }

    pub fn code(&self) -> &str {
        // The bytes were checked to be ASCII upper-case letters in `parse`.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Number of decimal places of the minor unit (2 for EUR, 0 for JPY).
    pub fn scale(&self) -> u8 {
        self.scale
    }

    /// Parses a non-negative decimal amount such as `"79.90"`.
    ///
    /// Refuses signs, exponents, more decimals than the currency has, and amounts of a
    /// trillion units or more: a loyalty journal is never that large, and the bound keeps
    /// every later multiplication far from overflow.
    pub fn parse_amount(&self, s: &str) -> Result<MinorUnits, MoneyError> {
        let bad = || MoneyError::BadAmount(s.chars().take(32).collect());
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if s.contains('.') && (frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > usize::from(self.scale) {
            return Err(MoneyError::TooPrecise {
                amount: s.chars().take(32).collect(),
                currency: self.code().to_owned(),
                scale: self.scale,
            });
        }
        let int = int.trim_start_matches('0');
        if int.len() > 12 {
            return Err(MoneyError::TooLarge(s.chars().take(32).collect()));
        }
        let mut minor: i64 = 0;
        for b in int.bytes() {
            minor = minor * 10 + i64::from(b - b'0');
        }
        for i in 0..usize::from(self.scale) {
            let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
            minor = minor * 10 + digit;
        }
        Ok(MinorUnits(minor))
    }

    /// Formats an amount with exactly the currency's decimals: `7990` → `"79.90"`.
    pub fn format(&self, amount: MinorUnits) -> String {
        let scale = u32::from(self.scale);
        if scale == 0 {
            return amount.0.to_string();
        }
        let unit = 10i64.pow(scale);
        let sign = if amount.0 < 0 { "-" } else { "" };
        let abs = amount.0.unsigned_abs();
        let unit = unit.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / unit,
            abs % unit,
            width = scale as usize
        )
    }

    /// The amount as a decimal number of major units (for rate arithmetic).
    pub fn to_decimal(&self, amount: MinorUnits) -> Decimal {
        Decimal::new(amount.0, u32::from(self.scale))
    }
}

impl fmt::Display for MoneyCurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money in the minor unit of its currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinorUnits(pub i64);

/// Why an amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not an ISO 4217 currency code (three upper-case letters)")]
    BadCurrency(String),
    #[error("{0:?} is not an amount: write a non-negative decimal such as \"79.90\"")]
    BadAmount(String),
    #[error("{amount:?} has more decimals than {currency} allows ({scale})")]
    TooPrecise {
        amount: String,
        currency: String,
        scale: u8,
    },
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// How a fractional number of points becomes a whole one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Toward zero: 7.9 → 7. The usual rule for earning.
    Down,
    /// Away from zero: 7.1 → 8.
    Up,
    /// To the nearest, halves away from zero: 7.5 → 8.
    HalfUp,
    /// To the nearest, halves to even (banker's rounding): 7.5 → 8, 6.5 → 6.
    HalfEven,
}

impl Rounding {
    pub const NAMES: &'static str = "down, up, half_up, half_even";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "down" => Self::Down,
            "up" => Self::Up,
            "half_up" => Self::HalfUp,
            "half_even" => Self::HalfEven,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
            Self::HalfUp => "half_up",
            Self::HalfEven => "half_even",
        }
    }

    fn strategy(self) -> rust_decimal::RoundingStrategy {
        use rust_decimal::RoundingStrategy as S;
        match self {
            Self::Down => S::ToZero,
            Self::Up => S::AwayFromZero,
            Self::HalfUp => S::MidpointAwayFromZero,
            Self::HalfEven => S::MidpointNearestEven,
        }
    }

    /// Rounds a decimal to whole points. Saturates at the `i64` range: a definition's
    /// limits keep real values many orders of magnitude below it.
    pub fn to_points(self, value: Decimal) -> i64 {
        let rounded = value.round_dp_with_strategy(0, self.strategy());
        i64::try_from(rounded).unwrap_or(if rounded.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        })
    }
}

/// A rate of points per major unit of money, kept as an exact integer fraction so that
/// applying it to an amount is integer arithmetic (no allocation, no float).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointsRate {
    /// The rate's digits: `rate = mantissa / 10^scale`.
    mantissa: i64,
    scale: u32,
    rounding: Rounding,
}

impl PointsRate {
    /// A rate from a decimal (at most 6 decimals, between 0 and 1,000,000).
    pub fn new(rate: Decimal, rounding: Rounding) -> Option<Self> {
        if rate.is_sign_negative() || rate > Decimal::from(1_000_000) || rate.scale() > 6 {
            return None;
        }
        let mantissa = i64::try_from(rate.mantissa()).ok()?;
        Some(Self {
            mantissa,
            scale: rate.scale(),
            rounding,
        })
    }

    pub fn rate(&self) -> Decimal {
        Decimal::new(self.mantissa, self.scale)
    }

    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// Points earned on `amount` of a currency with `money_scale` decimals.
    ///
    /// Exact: `amount (< 10^15) × mantissa (< 10^13)` fits in `i128`, and the rounding is
    /// done on the integer quotient and remainder.
    pub fn apply(&self, amount: MinorUnits, money_scale: u8) -> i64 {
        let numerator = i128::from(amount.0) * i128::from(self.mantissa);
        let denominator = 10i128.pow(self.scale + u32::from(money_scale));
        let quotient = numerator / denominator;
        let remainder = numerator % denominator;
        let rounded = if remainder == 0 {
            quotient
        } else {
            let twice = remainder.abs() * 2;
            let away = match self.rounding {
                Rounding::Down => false,
                Rounding::Up => true,
                Rounding::HalfUp => twice >= denominator,
                Rounding::HalfEven => {
                    twice > denominator || (twice == denominator && quotient % 2 != 0)
                }
            };
            if away {
                quotient + numerator.signum()
            } else {
                quotient
            }
        };
        i64::try_from(rounded).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> MoneyCurrency {
        MoneyCurrency::parse("EUR").expect("an ISO 4217 currency")
    }

    #[test]
    fn amounts_parse_exactly_in_minor_units() {
        let cases = [
            ("79.90", Ok(7990)),
            ("79.9", Ok(7990)),
            ("79", Ok(7900)),
            ("0.01", Ok(1)),
            ("007.50", Ok(750)),
            ("1.230", Ok(123)),
        ];
        for (input, want) in cases {
            assert_eq!(
                eur().parse_amount(input).map(|m| m.0).map_err(|_| ()),
                want,
                "{input}"
            );
        }
        for bad in ["", "-1", "1e3", "1.", ".5", "1,00", " 1", "abc", "1.2.3"] {
            assert!(eur().parse_amount(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(
            eur().parse_amount("1.001"),
            Err(MoneyError::TooPrecise { scale: 2, .. })
        ));
        assert!(matches!(
            eur().parse_amount("9999999999999"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn currency_scales_follow_iso_4217() {
        let jpy = MoneyCurrency::parse("JPY").expect("an ISO 4217 currency");
        assert_eq!(
            jpy.parse_amount("1500").expect("a valid amount"),
            MinorUnits(1500)
        );
        assert!(jpy.parse_amount("1500.5").is_err());
        let kwd = MoneyCurrency::parse("KWD").expect("an ISO 4217 currency");
        assert_eq!(
            kwd.parse_amount("1.250").expect("a valid amount"),
            MinorUnits(1250)
        );
        assert_eq!(kwd.format(MinorUnits(1250)), "1.250");
        assert_eq!(eur().format(MinorUnits(7990)), "79.90");
        assert_eq!(eur().format(MinorUnits(5)), "0.05");
        assert_eq!(jpy.format(MinorUnits(1500)), "1500");
        assert!(MoneyCurrency::parse("eur").is_err());
        assert!(MoneyCurrency::parse("EURO").is_err());
    }

    #[test]
    fn rates_round_by_the_named_rule() {
        let rate = |r: &str, rounding| {
            PointsRate::new(r.parse().expect("a decimal"), rounding).expect("a valid rate")
        };
        let cases = [
            // (rate, rounding, amount in cents, points)
            ("1", Rounding::Down, 7990, 79),
            ("1", Rounding::Up, 7990, 80),
            ("1", Rounding::Up, 7900, 79),
            ("1", Rounding::HalfUp, 7950, 80),
            ("1", Rounding::HalfUp, 7949, 79),
            ("1", Rounding::HalfEven, 7950, 80),
            ("1", Rounding::HalfEven, 7850, 78),
            ("2.5", Rounding::Down, 1001, 25),
            ("0.1", Rounding::Down, 99999, 99),
            ("0.000001", Rounding::Up, 1, 1),
        ];
        for (r, rounding, cents, want) in cases {
            assert_eq!(
                rate(r, rounding).apply(MinorUnits(cents), 2),
                want,
                "{r} {rounding:?} {cents}"
            );
            // The integer path agrees with decimal arithmetic.
            let decimal =
                eur().to_decimal(MinorUnits(cents)) * r.parse::<Decimal>().expect("a decimal");
            assert_eq!(rounding.to_points(decimal), want);
        }
        assert!(PointsRate::new("-1".parse().expect("a decimal"), Rounding::Down).is_none());
        assert!(PointsRate::new("0.0000001".parse().expect("a decimal"), Rounding::Down).is_none());
    }
}
