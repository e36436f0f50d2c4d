//! Several gateways on one PostgreSQL queue (docs/architecture.md §10.2, issue 16): load sent
//! round-robin to three `herald run` processes, some notifications resent to another gateway,
//! one gateway killed with `kill -9` mid-load. Every acknowledged event is delivered; resent
//! ones once; an event delivered twice is one the killed gateway had in flight.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use herald_testkit::postgres::Postgres;
use herald_testkit::wait::until;
use serde_json::Value;

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["event"]["id"].as_str().map(str::to_owned))
        .collect()
}

async fn post(client: &reqwest::Client, listen: std::net::SocketAddr, number: u64) -> bool {
    client
        .post(format!("http://{listen}/webhook/directory"))
        .header("Content-Type", "application/json")
        .header("X-Goog-Channel-ID", "c")
        .header("X-Goog-Channel-Token", TOKEN)
        .header("X-Goog-Resource-ID", "r")
        .header(
            "X-Goog-Resource-URI",
            "https://admin.googleapis.com/admin/directory/v1/users?domain=example.edu&event=add",
        )
        .header("X-Goog-Resource-State", "add")
        .header("X-Goog-Message-Number", number.to_string())
        .body(format!(
            r#"{{"id":"{number}","primaryEmail":"u{number}@example.edu"}}"#
        ))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_the_queue_and_survive_a_kill() {
    const TOTAL: u64 = 600;
    const CLIENTS: u64 = 6;
    let url = Postgres::shared().database("cluster");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let yaml = format!(
        "{}queue:\n  engine: postgres\n  url: '{url}'\n  lease: 1s\nsinks:\n  audit: {{ type: file, path: events.jsonl }}\nroutes:\n  - name: all\n    to: [audit]\n",
        config_head()
    );
    let mut gateways: Vec<Gateway> = dirs
        .iter()
        .map(|d| Gateway::start(d.path(), &yaml))
        .collect();
    let listens: Arc<Vec<_>> = Arc::new(gateways.iter().map(|g| g.listen).collect());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let resent = Arc::new(Mutex::new(HashSet::new()));
    let per_client = TOTAL / CLIENTS;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (client, acked, resent, listens) = (
            client.clone(),
            acked.clone(),
            resent.clone(),
            listens.clone(),
        );
        tasks.spawn(async move {
            for i in 0..per_client {
                let number = c * per_client + i + 1;
                // Round-robin; a gateway that does not answer 2xx (killed) is skipped.
                let mut ok = None;
                for k in 0..3 {
                    let g = ((number + k) % 3) as usize;
                    if post(&client, listens[g], number).await {
                        ok = Some(g);
                        break;
                    }
                }
                let Some(g) = ok else { continue };
                acked.lock().unwrap().insert(format!("c/{number}"));
                // 5%: the same notification again, to another gateway.
                if number.is_multiple_of(20) {
                    let other = (g + 1) % 3;
                    if post(&client, listens[other], number).await {
                        resent.lock().unwrap().insert(format!("c/{number}"));
                    }
                }
            }
        });
    }
    until(
        "half the load acknowledged",
        Duration::from_secs(60),
        || acked.lock().unwrap().len() as u64 >= TOTAL / 2,
    )
    .await;
    gateways[2].kill9();
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let resent = resent.lock().unwrap().clone();
    assert!(
        acked.len() as u64 >= TOTAL - 10,
        "{} acknowledged",
        acked.len()
    );

    let delivered = |g: &Gateway| ids(&g.file_records("events.jsonl"));
    until(
        "every acknowledged event delivered by the cluster",
        Duration::from_secs(60),
        || {
            let all: HashSet<String> = gateways.iter().flat_map(delivered).collect();
            acked.is_subset(&all)
        },
    )
    .await;
    // Let late attempts land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for g in &gateways {
        for id in delivered(g) {
            *seen.entry(id).or_default() += 1;
        }
    }
    let killed: HashSet<String> = delivered(&gateways[2]).into_iter().collect();
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    println!(
        "cluster: {} acknowledged, {} resent to another gateway, {} delivered, {} delivered twice ({:?}), {} by the killed gateway before the kill",
        acked.len(),
        resent.len(),
        seen.len(),
        twice.len(),
        twice,
        killed.len()
    );
    for id in &twice {
        assert!(
            killed.contains(*id),
            "{id} delivered twice, but not by the killed gateway"
        );
    }
    for id in &resent {
        assert!(
            seen.get(id) == Some(&1) || killed.contains(id),
            "resent {id} delivered {:?} times",
            seen.get(id)
        );
    }
    for g in gateways.iter_mut().take(2) {
        assert_eq!(g.terminate().code(), Some(0), "{}", g.log());
    }
}
