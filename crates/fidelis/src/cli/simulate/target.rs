//! `fidelis simulate --target URL`: the simulated population sent to a running server, as a
//! load generator. The program is created from the simulated definition when the server
//! does not have it; members are enrolled (`POST …/members`, an existing one is fine), then
//! the journals go in NDJSON batches (`POST …/journals/batch`) over several connections,
//! each member's journals in order on one of them (a refund after its purchase).

use std::fmt;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;

/// What the simulation generated, in order.
#[derive(Debug, Default)]
pub struct Load {
    /// Enrolments, as `POST …/members` takes them.
    pub members: Vec<serde_json::Value>,
    /// (member, activity instant, canonical journal JSON), a member's in order (the
    /// simulation may give one member's journals after another's).
    pub journals: Vec<(String, DateTime<Utc>, String)>,
}

/// What the target made of it.
#[derive(Debug, Default)]
pub struct Sent {
    pub created_program: bool,
    pub members: u64,
    pub processed: u64,
    pub replayed: u64,
    pub rejected: u64,
    /// Requests that failed and lines the server refused.
    pub failed: u64,
    pub seconds: f64,
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let journals = self.processed + self.replayed + self.rejected;
        write!(
            f,
            "target: {}{} members enrolled, {journals} journals sent in {:.2} s ({:.0} journals/s): {} processed, {} replayed, {} rejected",
            if self.created_program {
                "program created, "
            } else {
                ""
            },
            self.members,
            self.seconds,
            journals as f64 / self.seconds.max(1e-9),
            self.processed,
            self.replayed,
            self.rejected
        )
    }
}

/// Lines per batch request.
const BATCH: usize = 1_000;

pub async fn send(
    url: &str,
    token: &str,
    program: &str,
    definition: serde_json::Value,
    load: Load,
    connections: usize,
) -> Result<Sent> {
    if !url.starts_with("http://") {
        bail!("--target must be an http:// address (the load generator speaks plain HTTP)");
    }
    let base = format!("{}/api/v1/programs/{program}", url.trim_end_matches('/'));
    let mut definition = definition;
    if let Some(doc) = definition.as_object_mut() {
        doc.insert("code".into(), program.into());
    }
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()?;
    let mut sent = Sent::default();

    let found = http
        .get(&base)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("reaching {url}"))?;
    match found.status().as_u16() {
        200 => {}
        404 => {
            let created = http
                .put(&base)
                .bearer_auth(token)
                .json(&definition)
                .send()
                .await?;
            if !created.status().is_success() {
                bail!(
                    "creating the program {program} on the target: {} {}",
                    created.status(),
                    created.text().await.unwrap_or_default()
                );
            }
            sent.created_program = true;
        }
        status => bail!(
            "reading the program {program} on the target: {status} {}",
            found.text().await.unwrap_or_default()
        ),
    }

    let clock = Instant::now();
    let enrolments = futures::stream::iter(load.members.into_iter().map(|enrolment| {
        let http = http.clone();
        let url = format!("{base}/members");
        async move {
            let answer = http
                .post(url)
                .bearer_auth(token)
                .json(&enrolment)
                .send()
                .await;
            // Already enrolled (a second run) is fine.
            matches!(answer, Ok(r) if r.status().is_success() || r.status().as_u16() == 409)
        }
    }))
    .buffer_unordered(connections.max(1))
    .collect::<Vec<bool>>()
    .await;
    sent.members = enrolments.iter().filter(|ok| **ok).count() as u64;
    sent.failed += enrolments.iter().filter(|ok| !**ok).count() as u64;

    // As traffic comes: all members' journals in the order they happened (a stable sort
    // keeps each member's own order). One lane per connection; a member always in the
    // same lane, in order.
    let mut journals = load.journals;
    journals.sort_by_key(|(_, at, _)| *at);
    let mut lanes: Vec<Vec<String>> = vec![Vec::new(); connections.max(1)];
    for (member, _, line) in journals {
        let lane = fnv(&member) as usize % lanes.len();
        lanes[lane].push(line);
    }
    let results = futures::future::join_all(lanes.into_iter().map(|lines| {
        let http = http.clone();
        let url = format!("{base}/journals/batch");
        async move {
            let mut counts = [0u64; 4];
            for chunk in lines.chunks(BATCH) {
                let mut body = chunk.join("\n");
                body.push('\n');
                let answer = http
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await;
                let text = match answer {
                    Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                    _ => {
                        counts[3] += chunk.len() as u64;
                        continue;
                    }
                };
                for line in text.lines() {
                    let status = serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["status"].as_str().map(str::to_owned));
                    match status.as_deref() {
                        Some("processed") => counts[0] += 1,
                        Some("replayed") => counts[1] += 1,
                        Some("rejected") => counts[2] += 1,
                        _ => counts[3] += 1,
                    }
                }
            }
            counts
        }
    }))
    .await;
    for c in results {
        sent.processed += c[0];
        sent.replayed += c[1];
        sent.rejected += c[2];
        sent.failed += c[3];
    }
    sent.seconds = clock.elapsed().as_secs_f64();
    Ok(sent)
}

/// FNV-1a: a member's lane, the same on every run.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
