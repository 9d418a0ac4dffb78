//! E-mail to members: templates rendered with minijinja (with a fuel bound: operators
//! write them), sent over SMTP by the worker `fidelis serve` runs beside webhook delivery.
//!
//! Each event type in `fidelis_store::MAIL_EVENTS` has a shipped template in English and
//! Japanese (`templates/messages/{lang}/{event}.txt`: a `Subject:` line, a blank line,
//! the text); a program may write its own per event type and language (with its own HTML
//! part; otherwise the HTML part is the text in a plain layout). A template sees
//! `program` (`code`, `name`), `member` (`id` and the profile's fields), `event` (`id`,
//! `type`, `occurred_at`, `data`: the webhook body's data) and `lang`.
//!
//! Sending a message: the member must still consent to e-mail, be active, not be erased,
//! have an `email` in the profile, and — for a template kept for some segments — be in one
//! of them as of the last refresh; else the message is suppressed, with the reason.
//! A non-urgent message in the program's quiet hours waits for their end (not counted as
//! an attempt). An SMTP refusal (5xx) kills the message; anything else is retried with
//! the webhooks' backoff. At least once: a server that dies after the SMTP server took a
//! message sends it again after the lease, with the same `Message-ID`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_store::{DueMessage, MessageOutcome, MessageTemplate, Store};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::{AutoEscape, Environment};
use serde_json::{Value, json};

use crate::webhooks::DeliveryConfig;

/// The most a template may compute (minijinja fuel): a loop over a huge list, or a
/// template written to hang, stops with an error instead.
const FUEL: u64 = 20_000;
/// A message whose event is older than this is not sent (suppressed).
pub const MAX_AGE_HOURS: i64 = 72;
/// The longest subject and body a message may have once rendered.
const MAX_SUBJECT: usize = 200;
const MAX_BODY: usize = 100_000;

/// The shipped templates: (event type, language, source).
const SHIPPED: &[(&str, &str, &str)] = &[
    (
        "member.enrolled",
        "en",
        include_str!("../templates/messages/en/member.enrolled.txt"),
    ),
    (
        "member.enrolled",
        "ja",
        include_str!("../templates/messages/ja/member.enrolled.txt"),
    ),
    (
        "points.redeemed",
        "en",
        include_str!("../templates/messages/en/points.redeemed.txt"),
    ),
    (
        "points.redeemed",
        "ja",
        include_str!("../templates/messages/ja/points.redeemed.txt"),
    ),
    (
        "points.expiring",
        "en",
        include_str!("../templates/messages/en/points.expiring.txt"),
    ),
    (
        "points.expiring",
        "ja",
        include_str!("../templates/messages/ja/points.expiring.txt"),
    ),
    (
        "tier.changed",
        "en",
        include_str!("../templates/messages/en/tier.changed.txt"),
    ),
    (
        "tier.changed",
        "ja",
        include_str!("../templates/messages/ja/tier.changed.txt"),
    ),
    (
        "voucher.issued",
        "en",
        include_str!("../templates/messages/en/voucher.issued.txt"),
    ),
    (
        "voucher.issued",
        "ja",
        include_str!("../templates/messages/ja/voucher.issued.txt"),
    ),
    (
        "claim.decided",
        "en",
        include_str!("../templates/messages/en/claim.decided.txt"),
    ),
    (
        "claim.decided",
        "ja",
        include_str!("../templates/messages/ja/claim.decided.txt"),
    ),
];

/// Event types whose messages go in quiet hours too (a redemption's receipt: the member
/// should hear at once of points leaving the account).
const URGENT: &[&str] = &["points.redeemed"];

/// The shipped template for an event type and language.
pub fn shipped(event_type: &str, language: &str) -> Option<MessageTemplate> {
    let (_, _, source) = SHIPPED
        .iter()
        .find(|(e, l, _)| *e == event_type && *l == language)?;
    let (first, body) = source.split_once('\n')?;
    Some(MessageTemplate {
        event_type: event_type.to_owned(),
        language: language.to_owned(),
        subject: first.strip_prefix("Subject: ")?.trim().to_owned(),
        text_body: body.trim_start_matches('\n').to_owned(),
        html_body: None,
        urgent: URGENT.contains(&event_type),
        active: true,
        segments: Vec::new(),
    })
}

/// The template that applies: the program's own, else the shipped one.
pub fn template_for(
    own: &[MessageTemplate],
    event_type: &str,
    language: &str,
) -> Option<MessageTemplate> {
    own.iter()
        .find(|t| t.event_type == event_type && t.language == language)
        .cloned()
        .or_else(|| shipped(event_type, language))
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders `template` for `context`: the subject on one line, the text, and the HTML part
/// (the template's own, escaped as HTML, or the text in a plain layout). An error names
/// the part and what minijinja said (with its line).
pub fn render(template: &MessageTemplate, context: &Value) -> Result<Rendered, String> {
    for (name, source) in [
        ("subject", Some(&template.subject)),
        ("text", Some(&template.text_body)),
        ("html", template.html_body.as_ref()),
    ] {
        if let Some(source) = source {
            check_source(source).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    // No builtin filter, test or function but the few below, each of which returns at
    // most what it is given: with fuel bounding the loops, and no `set`, macro or `*`
    // (see `check_source`), what a template renders is bounded by its length times the
    // event's data.
    let mut env = Environment::empty();
    env.set_fuel(Some(FUEL));
    env.add_filter("upper", minijinja::filters::upper);
    env.add_filter("lower", minijinja::filters::lower);
    env.add_filter("title", minijinja::filters::title);
    env.add_filter("capitalize", minijinja::filters::capitalize);
    env.add_filter("trim", minijinja::filters::trim);
    env.add_filter("length", minijinja::filters::length);
    env.add_filter("first", minijinja::filters::first);
    env.add_filter("last", minijinja::filters::last);
    env.add_filter("default", minijinja::filters::default);
    env.add_filter("abs", minijinja::filters::abs);
    env.add_filter("round", minijinja::filters::round);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    let part = |env: &Environment, name: &str, source: &str| {
        env.render_named_str(
            name,
            source,
            minijinja::Value::from(minijinja::value::Serde(context)),
        )
        .map_err(|e| match e.line() {
            Some(line) => format!(
                "{name}, line {line}: {}",
                e.detail().unwrap_or(&e.to_string())
            ),
            None => format!("{name}: {e}"),
        })
    };
    let subject: String = part(&env, "subject.txt", &template.subject)?
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let subject: String = subject.chars().take(MAX_SUBJECT).collect();
    let text = part(&env, "text.txt", &template.text_body)?;
    let html = match &template.html_body {
        Some(html) => part(&env, "body.html", html)?,
        None => {
            let name = context["program"]["name"].as_str().unwrap_or_default();
            let paragraphs: String = text
                .split("\n\n")
                .filter(|p| !p.trim().is_empty())
                .map(|p| format!("<p>{}</p>\n", escape(p.trim()).replace('\n', "<br>\n")))
                .collect();
            format!(
                "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
                 <body style=\"font-family: sans-serif; line-height: 1.5\">\n<h1 style=\"font-size: 1.2em\">{}</h1>\n{paragraphs}</body></html>\n",
                escape(context["lang"].as_str().unwrap_or("en")),
                escape(&subject),
                escape(name),
            )
        }
    };
    if text.len() > MAX_BODY || html.len() > MAX_BODY {
        return Err(format!("the message is longer than {MAX_BODY} bytes"));
    }
    Ok(Rendered {
        subject,
        text,
        html,
    })
}

/// Refuses what would let a template's output grow beyond its length times its data:
/// tags other than `if` and `for` (`set` and macros can double a string again and again)
/// and the `*` operator (a string repeated a billion times).
pub fn check_source(source: &str) -> Result<(), String> {
    const TAGS: [&str; 8] = [
        "if", "elif", "else", "endif", "for", "endfor", "raw", "endraw",
    ];
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let (close, tag) = match after.chars().next() {
            Some('{') => ("}}", false),
            Some('%') => ("%}", true),
            _ => {
                rest = after;
                continue;
            }
        };
        let body_start = open + 2;
        let Some(len) = rest[body_start..].find(close) else {
            return Ok(()); // unclosed: minijinja reports it with its line
        };
        let body = &rest[body_start..body_start + len];
        if body.contains('*') {
            return Err("the `*` operator is not available in message templates".into());
        }
        if tag {
            let word: String = body
                .trim_start_matches(['-', '+'])
                .trim_start()
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            if !TAGS.contains(&word.as_str()) {
                return Err(format!(
                    "`{{% {word} %}}` is not available in message templates: use if and for"
                ));
            }
        }
        rest = &rest[body_start + len + 2..];
    }
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What a template sees.
pub fn context(
    program: (&str, &str),
    member: &str,
    profile: &Value,
    event: (i64, &str, DateTime<Utc>, &Value),
    lang: &str,
) -> Value {
    let mut m = profile.as_object().cloned().unwrap_or_default();
    m.insert("id".into(), Value::String(member.to_owned()));
    json!({
        "program": {"code": program.0, "name": program.1},
        "member": m,
        "event": {"id": crate::webhooks::event_id(event.0), "type": event.1,
                  "occurred_at": event.2, "data": event.3},
        "lang": lang,
    })
}

/// A made-up event of each mail type, for previews and for checking a template on save.
pub fn sample_event(event_type: &str) -> Value {
    match event_type {
        "member.enrolled" => json!({"member": "C-100000", "enrolled_at": "2026-12-01T10:00:00Z",
            "profile": {"name": "Ada Lovelace"}, "referred_by": null}),
        "points.redeemed" => json!({"member": "C-100000", "journal": "R-2026-0042",
            "points": [{"currency": "points", "points": 500}]}),
        "tier.changed" => {
            json!({"member": "C-100000", "group": "status", "from": "silver", "to": "gold",
            "direction": "up", "reason": "qualified", "at": "2026-12-01T10:00:00Z",
            "valid_until": "2027-12-31T23:00:00Z", "journal": "R-2026-0041"})
        }
        "voucher.issued" => json!({"member": "C-100000", "journal": "R-2026-0041",
            "definition": "ten-off", "voucher": "TEN-7XK2M9", "promotion": "welcome"}),
        "claim.decided" => json!({"claim": "CL-7XK2M9Q4AB", "reference": "RCPT-77",
            "status": "approved", "reason": null}),
        _ => json!({}),
    }
}

/// Who sends the mail, and from which address.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

impl Mailer {
    /// An SMTP sender: `smtp://host:port` (no TLS: a relay on loopback),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS) or `smtps://host` (TLS), and
    /// the `From` address (`Name <address>`).
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("--smtp-url: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(15)))
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("--mail-from {from:?}: {e}"))?;
        Ok(Self { transport, from })
    }
}

/// One round of mail: lease due messages, check, render, send, record. Returns how many
/// it leased.
pub async fn run_once(
    store: &Store,
    mailer: &Mailer,
    config: &DeliveryConfig,
) -> fidelis_store::Result<usize> {
    let now = Utc::now();
    let lease = chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(60));
    let due = store.claim_messages(20, now, now + lease).await?;
    let n = due.len();
    let mut outcomes = Vec::with_capacity(n);
    let mut programs: std::collections::HashMap<
        String,
        (Arc<fidelis_store::LoadedProgram>, Vec<MessageTemplate>),
    > = std::collections::HashMap::new();
    for m in due {
        if !programs.contains_key(&m.program) {
            let program = store.require_program(&m.program).await?;
            let own = store.message_templates(program.id).await?;
            programs.insert(m.program.clone(), (program, own));
        }
        let (program, own) = &programs[&m.program];
        let outcome = send_one(mailer, config, program, own, &m, Utc::now()).await;
        outcomes.push((m.id, outcome));
    }
    store.finish_messages(&outcomes, Utc::now()).await?;
    Ok(n)
}

async fn send_one(
    mailer: &Mailer,
    config: &DeliveryConfig,
    program: &fidelis_store::LoadedProgram,
    own: &[MessageTemplate],
    m: &DueMessage,
    now: DateTime<Utc>,
) -> MessageOutcome {
    let suppressed = |reason: &str| MessageOutcome::Suppressed {
        reason: reason.to_owned(),
    };
    if m.erased {
        return suppressed("the member was erased");
    }
    if now - m.occurred_at > chrono::Duration::hours(MAX_AGE_HOURS) {
        // History (an import of old journals), or mail no server sent for days.
        return suppressed("its event is too old to write about");
    }
    if !m.consent {
        return suppressed("no consent to e-mail");
    }
    if m.member_status != "active" {
        return suppressed("the member is not active");
    }
    let Some(address) = m
        .profile
        .get("email")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<lettre::Address>().ok())
    else {
        return suppressed("no e-mail address in the profile");
    };
    let messaging = &program.program.messaging;
    let lang = messaging.language(&m.profile);
    let Some(template) = template_for(own, &m.event_type, lang) else {
        return suppressed("no template for this event and language");
    };
    if !template.active {
        return suppressed("the program's template is off");
    }
    if !template.segments.is_empty() && !template.segments.iter().any(|s| m.segments.contains(s)) {
        return suppressed("the member is in none of the template's segments");
    }
    let tz = program.program.time_zone;
    let at = messaging.send_at(tz, now, template.urgent);
    if at > now {
        return MessageOutcome::Deferred { until: at };
    }
    let data: Value = serde_json::from_str(&m.payload).unwrap_or(Value::Null);
    let ctx = context(
        (program.program.code.as_str(), program.program.name.as_str()),
        &m.member,
        &m.profile,
        (m.event_id, &m.event_type, m.occurred_at, &data),
        lang,
    );
    let rendered = match render(&template, &ctx) {
        Ok(r) => r,
        Err(e) => {
            return MessageOutcome::Failed {
                error: format!("the template does not render: {e}"),
                retry_at: None,
            };
        }
    };
    let name = m
        .profile
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let domain = mailer.from.email.domain().to_owned();
    let email = Message::builder()
        .from(mailer.from.clone())
        .to(Mailbox::new(name, address))
        .subject(rendered.subject)
        .message_id(Some(format!("<msg-{}-{}@{domain}>", m.program, m.id)))
        .multipart(MultiPart::alternative_plain_html(
            rendered.text,
            rendered.html,
        ));
    let email = match email {
        Ok(e) => e,
        Err(e) => {
            return MessageOutcome::Failed {
                error: format!("the message cannot be built: {e}"),
                retry_at: None,
            };
        }
    };
    match mailer.transport.send(email).await {
        Ok(_) => MessageOutcome::Sent {
            language: lang.to_owned(),
        },
        Err(e) => {
            let error = e.to_string();
            MessageOutcome::Failed {
                retry_at: if e.is_permanent() {
                    None
                } else {
                    crate::webhooks::retry_at(config, m.attempts, Utc::now())
                },
                error,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fidelis_store::MAIL_EVENTS;

    #[test]
    fn every_mail_event_has_a_shipped_template_in_both_languages_that_renders() {
        for event in MAIL_EVENTS {
            for lang in fidelis_core::messaging::LANGUAGES {
                let t = shipped(event, lang).unwrap_or_else(|| panic!("{event} {lang}"));
                let ctx = context(
                    ("demo", "Demo <Rewards>"),
                    "C-100000",
                    &json!({"name": "Ada & Co"}),
                    (7, event, Utc::now(), &sample_event(event)),
                    lang,
                );
                let r = render(&t, &ctx).unwrap_or_else(|e| panic!("{event} {lang}: {e}"));
                assert!(!r.subject.is_empty() && !r.subject.contains('\n'), "{r:?}");
                assert!(r.text.contains("Ada & Co"), "{event} {lang}: {}", r.text);
                // The HTML part escapes what the text holds.
                assert!(r.html.contains("Ada &amp; Co"), "{}", r.html);
                assert!(r.html.contains("Demo &lt;Rewards&gt;"), "{}", r.html);
            }
        }
    }

    #[test]
    fn an_operators_template_is_bounded_and_its_errors_have_a_line() {
        let mut t = shipped("member.enrolled", "en").expect("the test fixture is valid");
        // Loops over the data are bounded by fuel; what could grow without bound is refused.
        t.text_body = "{% for a in event.data.points %}{% for b in event.data.points %}{% for c in event.data.points %}{% for d in event.data.points %}{% for e in event.data.points %}x{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}".into();
        let many = json!({"points": (0..100).collect::<Vec<_>>()});
        let big = context(
            ("d", "D"),
            "m",
            &json!({}),
            (1, "member.enrolled", Utc::now(), &many),
            "en",
        );
        let e = render(&t, &big).unwrap_err();
        assert!(e.contains("fuel"), "{e}");
        for refused in [
            "{{ \"x\" * 100000000 }}",
            "{% set s = member.id ~ member.id %}{{ s }}",
            "{% macro d(s) %}{{ s ~ s }}{% endmacro %}{{ d(1) }}",
            "{{ range(10) | join(\",\") }}",
        ] {
            t.text_body = refused.into();
            assert!(render(&t, &big).is_err(), "{refused}");
        }
        let ctx = context(
            ("d", "D"),
            "m",
            &json!({}),
            (1, "member.enrolled", Utc::now(), &json!({})),
            "en",
        );
        t.text_body = "line one\n{{ member.name | nosuchfilter }}".into();
        let e = render(&t, &ctx).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        t.text_body = "ok".into();
        t.html_body = Some("<p>{{ member.id }}</p>".into());
        let ctx = context(
            ("d", "D"),
            "<script>",
            &json!({}),
            (1, "member.enrolled", Utc::now(), &json!({})),
            "en",
        );
        assert_eq!(
            render(&t, &ctx).expect("the test fixture is valid").html,
            "<p>&lt;script&gt;</p>"
        );
    }
}
