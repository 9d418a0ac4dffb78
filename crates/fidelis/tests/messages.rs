//! E-mail to members, end to end on SQLite and PostgreSQL: a real `fidelis serve` sends
//! through a real SMTP server on loopback (aiosmtpd, started by the test; `cargo xtask
//! test` installs it), whose messages Python's e-mail package decodes. Members get mail
//! in their language, only with consent (withdrawing it stops a message already waiting),
//! and quiet hours hold back all but urgent mail until they end.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use common::Server;

#[macro_use]
mod common;

both_dialects!(
    members_get_mail_in_their_language_only_with_consent_and_not_in_quiet_hours,
    a_template_kept_for_a_segment_mails_only_its_members,
);

/// aiosmtpd writing each message it takes into a directory; stopped when dropped.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    fn start() -> Self {
        let python = std::env::var("FIDELIS_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "FIDELIS_TEST_PYTHON is not set: run `cargo xtask test`, which installs aiosmtpd"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/assets/smtp_sink.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the SMTP server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the SMTP server's port");
        Self { child, port, dir }
    }

    /// The messages taken so far, in order.
    fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until `n` messages arrived (at most `secs` seconds).
    async fn wait_for(&self, n: usize, secs: u64) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn program(quiet: Option<(String, String)>) -> Value {
    let mut p = json!({"name": "Shop", "time_zone": "UTC", "money_currency": "EUR",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}]},
        "messaging": {"default_language": "en"}});
    if let Some((from, to)) = quiet {
        p["messaging"]["quiet_hours"] = json!({"from": from, "to": to});
    }
    p
}

async fn messages(s: &Server, status: &str) -> Vec<Value> {
    s.get(&format!("/programs/shop/messages?status={status}"))
        .await["messages"]
        .as_array()
        .unwrap()
        .clone()
}

async fn members_get_mail_in_their_language_only_with_consent_and_not_in_quiet_hours(url: &str) {
    let smtp = SmtpSink::start();
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let s = Server::start_with(
        url,
        &[
            "--smtp-url",
            &smtp_url,
            "--mail-from",
            "Shop <shop@example.com>",
            "--webhook-backoff-ms",
            "50",
        ],
    )
    .await;
    let (status, _, body) = s
        .call(Method::PUT, "/programs/shop", Some(program(None)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (member, profile, consents) in [
        (
            "ann",
            json!({"name": "Ann Smith", "email": "ann@example.com"}),
            json!({"email": true}),
        ),
        (
            "yuki",
            json!({"name": "山田 由紀", "email": "yuki@example.jp", "language": "ja"}),
            json!({"email": true, "sms": false}),
        ),
        (
            "bo",
            json!({"name": "Bo", "email": "bo@example.com"}),
            json!({"email": true}),
        ),
        (
            "nora",
            json!({"name": "Nora", "email": "nora@example.com"}),
            json!({"email": false}),
        ),
        (
            "max",
            json!({"name": "Max", "email": "max@example.com"}),
            json!(null),
        ),
    ] {
        let (status, body) = s
            .post(
                "/programs/shop/members",
                json!({"member": member, "profile": profile, "consents": consents}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Welcome mail for the three who consented, each in their language; none for the others.
    let got = smtp.wait_for(3, 30).await;
    let to = |m: &Value| m["rcpt_tos"][0].as_str().unwrap().to_owned();
    let ann = got
        .iter()
        .find(|m| to(m) == "ann@example.com")
        .expect("ann's welcome");
    assert_eq!(ann["subject"], "Welcome to Shop");
    assert_eq!(ann["from"], "Shop <shop@example.com>");
    assert_eq!(ann["content_type"], "multipart/alternative");
    assert!(
        ann["parts"]["text/plain"]
            .as_str()
            .unwrap()
            .contains("Hello Ann Smith"),
        "{ann}"
    );
    assert!(
        ann["parts"]["text/html"]
            .as_str()
            .unwrap()
            .contains("<p>Hello Ann Smith,"),
        "{ann}"
    );
    let yuki = got
        .iter()
        .find(|m| to(m) == "yuki@example.jp")
        .expect("yuki's welcome");
    assert_eq!(yuki["subject"], "Shopへようこそ");
    assert!(yuki["to"].as_str().unwrap().contains("山田 由紀"), "{yuki}");
    assert!(
        yuki["parts"]["text/plain"]
            .as_str()
            .unwrap()
            .contains("山田 由紀 様"),
        "{yuki}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 3, "only the members who consented: {got:#?}");
    assert!(
        !got.iter()
            .any(|m| ["nora@example.com", "max@example.com"].contains(&to(m).as_str()))
    );
    let sent = messages(&s, "sent").await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent.iter()
            .any(|m| m["member"] == "yuki" && m["language"] == "ja")
    );

    // Consents as recorded, and changed by the member itself.
    let consents = s.get("/programs/shop/members/yuki/consents").await;
    let channels: Vec<(&str, bool, &str)> = consents["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap(),
                c["granted"].as_bool().unwrap(),
                c["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        channels,
        [("email", true, "enrollment"), ("sms", false, "enrollment")]
    );
    let yuki_token = s
        .token(json!({"name": "yuki-app", "role": "member", "program": "shop", "member": "yuki"}))
        .await;
    let (status, body) = s
        .call_as(
            &yuki_token,
            Method::PUT,
            "/programs/shop/members/yuki/consents",
            Some(json!({"email": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["consents"][0]["granted"], false);
    assert_eq!(body["consents"][0]["source"], "member");
    let (status, _) = s
        .call_as(
            &yuki_token,
            Method::PUT,
            "/programs/shop/members/ann/consents",
            Some(json!({"email": false})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only their own");

    // Quiet hours from an hour ago until the next minute but one (UTC).
    let now = Utc::now();
    let hhmm = |t: chrono::DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let end = now + chrono::Duration::minutes(2);
    let quiet = (hhmm(now - chrono::Duration::hours(1)), hhmm(end));
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/shop",
            Some(program(Some(quiet.clone()))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (id, member, amount) in [("p-ann", "ann", "100"), ("p-bo", "bo", "50")] {
        let (status, body) = s
            .post(
                "/programs/shop/journals",
                json!({"external_id": id, "member": member, "type": "purchase",
                "occurred_at": Utc::now().to_rfc3339(), "amount": amount, "currency": "EUR"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // A redemption's receipt is urgent: it goes at once, quiet hours or not.
    let (status, body) = s
        .post(
            "/programs/shop/members/ann/redemptions",
            json!({"external_id": "r-1", "currency": "points", "points": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let got = smtp.wait_for(4, 30).await;
    assert_eq!(got[3]["subject"], "You redeemed 10 points", "{:#?}", got[3]);
    // Claims decided for ann, bo and yuki: not urgent, so ann's and bo's wait; yuki
    // withdrew her consent, so hers is never made.
    let yesterday = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    for member in ["ann", "bo", "yuki"] {
        let (status, claim) = s
            .post(
                "/programs/shop/claims",
                json!({"member": member, "reference": format!("RCPT-{member}"),
                "occurred_at": yesterday, "amount": "5.00"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{claim}");
        let id = claim["claim_id"].as_str().unwrap();
        let (status, body) = s
            .post(
                &format!("/programs/shop/claims/{id}/reject"),
                json!({"reason": "no such receipt"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = messages(&s, "pending").await;
        if waiting.len() == 2 && waiting.iter().all(|m| m["deferred"] == true) {
            for m in &waiting {
                let at =
                    chrono::DateTime::parse_from_rfc3339(m["next_attempt_at"].as_str().unwrap())
                        .unwrap();
                assert_eq!(
                    hhmm(at.with_timezone(&Utc)),
                    quiet.1,
                    "waits for the end of quiet hours: {m}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "two messages deferred: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        smtp.messages().len(),
        4,
        "nothing else is sent in quiet hours"
    );
    // Bo withdraws his consent while his message waits: it is never sent.
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/shop/members/bo/consents",
            Some(json!({"email": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // After quiet hours: ann's claim mail goes, bo's is suppressed.
    let got = smtp.wait_for(5, 200).await;
    let last = &got[4];
    assert_eq!(to(last), "ann@example.com");
    assert_eq!(
        last["subject"],
        "Your missing-points claim RCPT-ann: declined"
    );
    assert!(
        Utc::now() >= end.with_second(0).unwrap().with_nanosecond(0).unwrap(),
        "sent after quiet hours"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let suppressed = messages(&s, "suppressed").await;
        if let Some(m) = suppressed.iter().find(|m| m["member"] == "bo") {
            assert_eq!(m["last_error"], "no consent to e-mail");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bo's message suppressed: {suppressed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(smtp.messages().len(), 5, "{:#?}", smtp.messages());
    assert!(
        !smtp
            .messages()
            .iter()
            .any(|m| to(m) == "bo@example.com" && m["subject"].as_str().unwrap().contains("claim"))
    );
}

async fn a_template_kept_for_a_segment_mails_only_its_members(url: &str) {
    let smtp = SmtpSink::start();
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let s = Server::start_with(
        url,
        &["--smtp-url", &smtp_url, "--webhook-backoff-ms", "50"],
    )
    .await;
    let mut definition = program(None);
    definition["segments"] = json!([{"code": "lyon", "name": "Lyon",
        "condition": "has(member.profile.city) && member.profile.city == 'Lyon'"}]);
    let (status, _, body) = s
        .call(Method::PUT, "/programs/shop", Some(definition))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (member, city) in [("lea", "Lyon"), ("tom", "Paris")] {
        let (status, body) = s
            .post(
                "/programs/shop/members",
                json!({"member": member, "consents": {"email": true},
                       "profile": {"name": member, "email": format!("{member}@example.com"), "city": city}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // The shipped welcome is for everyone.
    smtp.wait_for(2, 30).await;
    let (status, body) = s.post("/programs/shop/jobs/run", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["segments"]["lyon"], 1, "{body}");

    // A receipt kept for Lyon; a segment the program does not have is refused.
    let path = "/programs/shop/message-templates/points.redeemed/en";
    let template = json!({"subject": "Merci, {{ member.name }}", "text": "You redeemed points in Lyon.",
                          "segments": ["lyon"]});
    let (status, _, body) = s.call(Method::PUT, path, Some(template.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["segments"], json!(["lyon"]));
    let mut unknown = template.clone();
    unknown["segments"] = json!(["paris"]);
    let (status, _, body) = s.call(Method::PUT, path, Some(unknown)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "unknown_segment");

    for member in ["lea", "tom"] {
        let (status, body) = s
            .post(
                "/programs/shop/journals",
                json!({"external_id": format!("p-{member}"), "member": member, "type": "purchase",
                       "occurred_at": Utc::now().to_rfc3339(), "amount": "50", "currency": "EUR"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = s
            .post(
                &format!("/programs/shop/members/{member}/redemptions"),
                json!({"external_id": format!("r-{member}"), "currency": "points", "points": 10}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let got = smtp.wait_for(3, 30).await;
    assert_eq!(got[2]["rcpt_tos"][0], "lea@example.com", "{:#?}", got[2]);
    assert_eq!(got[2]["subject"], "Merci, lea");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let suppressed = messages(&s, "suppressed").await;
        if let Some(m) = suppressed.iter().find(|m| m["member"] == "tom") {
            assert_eq!(
                m["last_error"],
                "the member is in none of the template's segments"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tom's receipt suppressed: {suppressed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(smtp.messages().len(), 3, "{:#?}", smtp.messages());
}
