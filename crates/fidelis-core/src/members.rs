//! Members as people: what a member is found by (search terms) and what a profile's
//! well-known fields must look like.
//!
//! A profile is the operator's JSON object; four of its keys have a meaning the program
//! relies on: `name` (also `first_name` and `last_name`), `email`, `phone` and `birthday`
//! (`YYYY-MM-DD`, read by birthday promotions and rewards). [`profile_problem`] refuses a
//! profile whose well-known fields would be stored and then silently never match.
//!
//! Search is by prefix of a term, case-insensitively: [`search_terms`] derives the terms of
//! a member (the external id, each word of the name, the email, the phone's digits) and
//! [`SearchQuery::parse`] the prefixes a query must all match. The store indexes the
//! terms, so a search on a million members reads a few index pages.

/// The longest term kept (longer names and emails are cut; a prefix search still finds
/// them by their first 64 characters).
pub const MAX_TERM_CHARS: usize = 64;

/// The most words a search query may have.
pub const MAX_QUERY_WORDS: usize = 5;

/// The profile keys whose words are name terms.
const NAME_KEYS: [&str; 3] = ["name", "first_name", "last_name"];

fn cut(term: &str) -> String {
    term.chars().take(MAX_TERM_CHARS).collect()
}

/// The digits of a phone number, when it has at least three (`+44 20 7946-0018` →
/// `442079460018`).
fn phone_digits(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 3).then_some(digits)
}

/// Whether `raw` reads as a phone number rather than words: digits, spaces and the
/// punctuation phone numbers are written with, at least three digits.
fn looks_like_phone(raw: &str) -> bool {
    raw.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.' | '/'))
        && raw.chars().filter(char::is_ascii_digit).count() >= 3
}

/// The words of a name: split at white space and hyphens, lower-cased.
fn name_words(raw: &str) -> impl Iterator<Item = String> + '_ {
    raw.split(|c: char| c.is_whitespace() || c == '-' || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| cut(&w.to_lowercase()))
}

/// The terms a member is found by, sorted and without repeats: the external id, each word
/// of `name`, `first_name` and `last_name`, the email, and the digits of the phone — all
/// lower-cased and cut at [`MAX_TERM_CHARS`] characters.
pub fn search_terms(external_id: &str, profile: &serde_json::Value) -> Vec<String> {
    let mut terms = vec![cut(&external_id.to_lowercase())];
    let text = |key: &str| profile.get(key).and_then(serde_json::Value::as_str);
    for key in NAME_KEYS {
        if let Some(name) = text(key) {
            terms.extend(name_words(name));
        }
    }
    if let Some(email) = text("email") {
        let email = email.trim();
        if !email.is_empty() {
            terms.push(cut(&email.to_lowercase()));
        }
    }
    if let Some(phone) = text("phone").and_then(phone_digits) {
        terms.push(cut(&phone));
    }
    terms.sort();
    terms.dedup();
    terms
}

/// A parsed search: prefixes a member's terms must all match (one term each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub prefixes: Vec<String>,
}

impl SearchQuery {
    /// Parses what an operator typed: a phone number (`+44 20 7946`) becomes its digits,
    /// anything else its words (`ann smi` finds Ann Smith). Refuses an empty query and more
    /// than [`MAX_QUERY_WORDS`] words.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("q must hold something to search for".into());
        }
        let words = raw.split_whitespace().count();
        if words > MAX_QUERY_WORDS {
            return Err(format!(
                "q may hold at most {MAX_QUERY_WORDS} words, it holds {words}"
            ));
        }
        if looks_like_phone(raw)
            && raw.contains(|c: char| !c.is_ascii_digit())
            && let Some(digits) = phone_digits(raw)
        {
            return Ok(Self {
                prefixes: vec![cut(&digits)],
            });
        }
        let prefixes = raw
            .split_whitespace()
            .map(|w| cut(&w.to_lowercase()))
            .collect();
        Ok(Self { prefixes })
    }
}

/// The first string greater than every string starting with `prefix`: with it a prefix
/// search is the index range `prefix <= term < upper_bound(prefix)` (byte order, which is
/// the order of both databases' binary collation). `None` when no such string exists.
pub fn upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        // Skip the surrogate gap, which no char holds.
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Why a profile's well-known fields would be stored and never used, if so: a `birthday`
/// that is not a `YYYY-MM-DD` date, an `email` without `@`, a name or phone that is not
/// text.
pub fn profile_problem(profile: &serde_json::Value) -> Option<String> {
    let fields = profile.as_object()?;
    if let Some(birthday) = fields.get("birthday") {
        let valid = birthday.as_str().is_some_and(|b| {
            b.len() == 10 && chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").is_ok()
        });
        if !valid {
            return Some(format!(
                "birthday {birthday} is not a date as YYYY-MM-DD (e.g. 1990-12-01)"
            ));
        }
    }
    for key in NAME_KEYS.iter().chain(&["email", "phone"]) {
        if let Some(value) = fields.get(*key)
            && !value.is_string()
            && !value.is_null()
        {
            return Some(format!("{key} must be text, not {value}"));
        }
    }
    if let Some(email) = fields.get("email").and_then(serde_json::Value::as_str)
        && !email.trim().is_empty()
        && !email.contains('@')
    {
        return Some(format!("email {email:?} has no @"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terms_cover_id_name_words_email_and_phone_digits() {
        let terms = search_terms(
            "C-100",
            &json!({"name": "Ann-Marie  Smith", "email": " Ann@Example.COM", "phone": "+44 (20) 7946-0018"}),
        );
        assert_eq!(
            terms,
            [
                "442079460018",
                "ann",
                "ann@example.com",
                "c-100",
                "marie",
                "smith"
            ]
        );
    }

    #[test]
    fn terms_lower_case_beyond_ascii_and_ignore_non_text() {
        let terms = search_terms(
            "X",
            &json!({"first_name": "ÉMILE", "last_name": 7, "phone": "12"}),
        );
        assert_eq!(terms, ["x", "émile"]);
    }

    #[test]
    fn queries_split_words_or_read_a_phone_number() {
        assert_eq!(
            SearchQuery::parse("Ann SMI").map(|q| q.prefixes),
            Ok(vec!["ann".into(), "smi".into()])
        );
        assert_eq!(
            SearchQuery::parse("+44 20 79").map(|q| q.prefixes),
            Ok(vec!["442079".into()])
        );
        // Bare digits stay one word: an external id or a phone prefix.
        assert_eq!(
            SearchQuery::parse("10042").map(|q| q.prefixes),
            Ok(vec!["10042".into()])
        );
        assert!(SearchQuery::parse("  ").is_err());
        assert!(SearchQuery::parse("a b c d e f").is_err());
    }

    #[test]
    fn upper_bounds_close_prefix_ranges() {
        assert_eq!(upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(upper_bound("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(upper_bound("\u{10FFFF}"), None);
        for (p, t) in [("smi", "smith"), ("é", "émile")] {
            let u = upper_bound(p).expect("a bound");
            assert!(p <= t && t < u.as_str());
        }
        assert!("sml" >= upper_bound("smi").expect("a bound").as_str());
    }

    #[test]
    fn profiles_with_unusable_well_known_fields_are_refused() {
        assert_eq!(
            profile_problem(&json!({"birthday": "1990-12-01", "email": "a@b"})),
            None
        );
        let bad = profile_problem(&json!({"birthday": "12/01/1990"})).expect("refused");
        assert!(bad.contains("YYYY-MM-DD"), "{bad}");
        assert!(profile_problem(&json!({"birthday": "1990-02-30"})).is_some());
        assert!(profile_problem(&json!({"birthday": 19901201})).is_some());
        assert!(profile_problem(&json!({"email": "nobody"})).is_some());
        assert!(profile_problem(&json!({"name": ["a"]})).is_some());
        assert_eq!(profile_problem(&json!({"custom": {"any": 1}})), None);
    }
}
