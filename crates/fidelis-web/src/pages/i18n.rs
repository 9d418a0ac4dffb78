//! The portal's languages: English and Japanese message catalogs (Fluent, `i18n/*.ftl`),
//! the language chosen from a `?lang=` switch (kept in a cookie) or `Accept-Language`, and
//! numbers and dates formatted per language in the program's time zone.
//!
//! Templates call `t("key", name=value…)` for a message, and the filters `num` (grouped
//! digits), `date` and `datetime` (an RFC 3339 instant shown in the program's zone); all
//! three read `lang` and `tz` from the page's context.

use std::sync::OnceLock;

use axum::http::{HeaderMap, header};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use minijinja::value::Kwargs;
use minijinja::{Environment, State, Value};

/// The languages the portal speaks, the first the default.
pub(crate) const LANGUAGES: [&str; 2] = ["en", "ja"];

/// The cookie remembering a language switch.
pub(crate) const LANG_COOKIE: &str = "fidelis_lang";

const CATALOGS: [(&str, &str); 2] = [
    ("en", include_str!("../../i18n/en.ftl")),
    ("ja", include_str!("../../i18n/ja.ftl")),
];

fn bundles() -> &'static Vec<(&'static str, FluentBundle<FluentResource>)> {
    static BUNDLES: OnceLock<Vec<(&'static str, FluentBundle<FluentResource>)>> = OnceLock::new();
    BUNDLES.get_or_init(|| {
        CATALOGS
            .iter()
            .filter_map(|(lang, source)| {
                let resource = FluentResource::try_new((*source).to_owned())
                    .map_err(|(_, e)| tracing::error!(lang, errors = ?e, "a message catalog does not parse"))
                    .ok()?;
                let id = lang.parse().ok()?;
                let mut bundle = FluentBundle::new_concurrent(vec![id]);
                // Isolation marks would show as stray characters in attributes and titles.
                bundle.set_use_isolating(false);
                bundle.add_resource(resource).ok()?;
                Some((*lang, bundle))
            })
            .collect()
    })
}

/// The message `key` in `lang` (English when the language lacks it; the key itself when
/// no catalog has it, so a missing message shows, and the catalog test finds it).
pub(crate) fn message(lang: &str, key: &str, args: Option<&FluentArgs>) -> String {
    let bundles = bundles();
    let find = |l: &str| {
        bundles
            .iter()
            .find(|(x, _)| *x == l)
            .and_then(|(_, b)| b.get_message(key).and_then(|m| m.value()).map(|p| (b, p)))
    };
    let Some((bundle, pattern)) = find(lang).or_else(|| find(LANGUAGES[0])) else {
        return key.to_owned();
    };
    let mut errors = Vec::new();
    bundle
        .format_pattern(pattern, args, &mut errors)
        .into_owned()
}

/// Every message key of a catalog (for the test that both catalogs hold the same keys).
#[cfg(test)]
pub(crate) fn keys(lang: &str) -> Vec<String> {
    CATALOGS
        .iter()
        .filter(|(l, _)| *l == lang)
        .flat_map(|(_, source)| source.lines())
        .filter_map(|line| {
            let (key, _) = line.split_once(" =")?;
            (!key.starts_with(['#', ' ', '.']) && !key.is_empty()).then(|| key.trim().to_owned())
        })
        .collect()
}

/// The language of a request: `?lang=` (when the page was asked with it), else the cookie
/// a switch left, else the best of `Accept-Language`, else English.
pub(crate) fn negotiate(asked: Option<&str>, jar: &CookieJar, headers: &HeaderMap) -> &'static str {
    let known = |l: &str| {
        LANGUAGES
            .iter()
            .copied()
            .find(|x| l.eq_ignore_ascii_case(x))
    };
    if let Some(l) = asked.and_then(known) {
        return l;
    }
    if let Some(l) = jar.get(LANG_COOKIE).and_then(|c| known(c.value())) {
        return l;
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut best: Option<(&'static str, f32)> = None;
    for part in accept.split(',') {
        let mut pieces = part.trim().split(';');
        let tag = pieces.next().unwrap_or("").trim();
        let q = pieces
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        if let Some(l) = known(primary)
            && best.is_none_or(|(_, bq)| q > bq)
        {
            best = Some((l, q));
        }
    }
    best.map_or(LANGUAGES[0], |(l, _)| l)
}

/// Digits grouped by thousands (the same in both languages).
pub(crate) fn group_digits(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn context_str(state: &State, name: &str, default: &str) -> String {
    state
        .lookup(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| default.to_owned())
}

/// An instant in the page's zone, as a date (`with_time`: and time) in its language.
pub(crate) fn format_instant(at: DateTime<Utc>, lang: &str, tz: &str, with_time: bool) -> String {
    let zone: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::UTC);
    let local = at.with_timezone(&zone);
    let pattern = match (lang, with_time) {
        ("ja", false) => "%Y年%-m月%-d日",
        ("ja", true) => "%Y年%-m月%-d日 %H:%M",
        (_, false) => "%-d %b %Y",
        (_, true) => "%-d %b %Y, %H:%M",
    };
    local.format(pattern).to_string()
}

/// A month (`YYYY-MM`) as its language writes it: `Jan 2027`, `2027年1月`.
pub(crate) fn month_name(month: &str, lang: &str) -> String {
    let Some(date) = chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()
    else {
        return month.to_owned();
    };
    match lang {
        "ja" => date.format("%Y年%-m月").to_string(),
        _ => date.format("%b %Y").to_string(),
    }
}

fn instant_filter(state: &State, value: &Value, with_time: bool) -> String {
    let Some(raw) = value.as_str() else {
        return String::new();
    };
    match DateTime::parse_from_rfc3339(raw) {
        Ok(at) => format_instant(
            at.with_timezone(&Utc),
            &context_str(state, "lang", "en"),
            &context_str(state, "tz", "UTC"),
            with_time,
        ),
        Err(_) => raw.to_owned(),
    }
}

/// Registers `t`, `num`, `date` and `datetime` with the templates.
pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_function("t", |state: &State, key: &str, kwargs: Kwargs| {
        let lang = context_str(state, "lang", "en");
        let mut args = FluentArgs::new();
        for name in kwargs.args() {
            let value: Value = kwargs.get(name)?;
            let fluent = match value.as_i64() {
                Some(n) => FluentValue::from(group_digits(n)),
                None => FluentValue::from(value.to_string()),
            };
            args.set(name.to_owned(), fluent);
        }
        Ok::<_, minijinja::Error>(message(&lang, key, Some(&args)))
    });
    env.add_filter("num", |value: Value| {
        value
            .as_i64()
            .map_or_else(|| value.to_string(), group_digits)
    });
    env.add_filter("date", |state: &State, value: Value| {
        instant_filter(state, &value, false)
    });
    env.add_filter("datetime", |state: &State, value: Value| {
        instant_filter(state, &value, true)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogs_hold_the_same_messages() {
        let mut en = keys("en");
        let mut ja = keys("ja");
        en.sort();
        ja.sort();
        assert!(!en.is_empty());
        assert_eq!(en, ja, "en.ftl and ja.ftl must define the same keys");
        for key in &en {
            assert_ne!(
                message("ja", key, None),
                *key,
                "{key} does not format in ja"
            );
        }
    }

    #[test]
    fn language_follows_the_switch_then_the_cookie_then_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_LANGUAGE,
            "fr;q=1, ja;q=0.8, en;q=0.5"
                .parse()
                .expect("the test fixture is valid"),
        );
        let jar = CookieJar::new();
        assert_eq!(negotiate(None, &jar, &headers), "ja");
        assert_eq!(negotiate(Some("en"), &jar, &headers), "en");
        let jar = jar.add(axum_extra::extract::cookie::Cookie::new(LANG_COOKIE, "en"));
        assert_eq!(negotiate(None, &jar, &headers), "en");
        assert_eq!(negotiate(None, &CookieJar::new(), &HeaderMap::new()), "en");
    }

    #[test]
    fn numbers_and_dates_per_language() {
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(group_digits(-1000), "-1,000");
        assert_eq!(group_digits(999), "999");
        let at = DateTime::parse_from_rfc3339("2026-12-01T23:30:00Z")
            .expect("the test fixture is valid")
            .with_timezone(&Utc);
        assert_eq!(format_instant(at, "en", "Asia/Tokyo", false), "2 Dec 2026");
        assert_eq!(
            format_instant(at, "ja", "Asia/Tokyo", true),
            "2026年12月2日 08:30"
        );
        assert_eq!(format_instant(at, "en", "UTC", false), "1 Dec 2026");
        assert_eq!(month_name("2027-01", "ja"), "2027年1月");
        assert_eq!(month_name("2027-01", "en"), "Jan 2027");
    }
}
