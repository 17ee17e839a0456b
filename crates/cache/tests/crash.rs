//! Crash safety and concurrency: child processes publish into one store (and prune it) and are
//! killed with SIGKILL at random instants, or publish and prune at the same time; the store opened afterwards
//! must be consistent (every named image's blobs exist and verify, every record's snapshot chain
//! resolves, no leftovers in tmp/) and usable.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use forge_cache::{PruneOptions, Store};

const STRESS: &str = env!("CARGO_BIN_EXE_forge-cache-stress");

fn spawn(args: &[&str]) -> Child {
    Command::new(STRESS)
        .args(args)
        .spawn()
        .expect("spawn forge-cache-stress")
}

/// A small PRNG seeded from the clock, so each run kills at different instants; the seed is
/// printed so a failure can be replayed.
fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed: {s}");
    s | 1
}

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn publishers_and_pruners_killed_at_random_instants_leave_a_consistent_store() {
    let root = tempfile::tempdir().unwrap();
    let root_s = root.path().to_str().unwrap();
    let mut rng = seed();
    for round in 0..25 {
        // Two publishers at once, killed at different instants.
        let mut a = spawn(&["publish", root_s, &(round * 2).to_string(), "0"]);
        let mut b = spawn(&["publish", root_s, &(round * 2 + 1).to_string(), "0"]);
        // And a pruner, killed mid-prune as well.
        let mut p = spawn(&["prune", root_s, "1000"]);
        std::thread::sleep(Duration::from_millis(20 + next(&mut rng) % 150));
        a.kill().unwrap();
        std::thread::sleep(Duration::from_millis(next(&mut rng) % 30));
        b.kill().unwrap();
        std::thread::sleep(Duration::from_millis(next(&mut rng) % 30));
        p.kill().unwrap();
        a.wait().unwrap();
        b.wait().unwrap();
        p.wait().unwrap();
        if round % 5 == 4 {
            let store = Store::open(root.path()).unwrap();
            let problems = common::problems(&store);
            assert!(problems.is_empty(), "after round {round}: {problems:#?}");
        }
    }
    let store = Store::open(root.path()).unwrap();
    let problems = common::problems(&store);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        !store.list_images().unwrap().is_empty(),
        "the children published something before dying"
    );
    // Dead leases are removed on open; only this handle's own session lease may be there.
    let own = store.session_lease_id().unwrap_or_default();
    let foreign: Vec<String> = std::fs::read_dir(store.dir().join("leases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| own.is_empty() || !n.starts_with(&own))
        .collect();
    assert!(foreign.is_empty(), "dead leases left: {foreign:?}");

    // Still usable: publish, prune, and check again.
    let desc = common::put_image(&store, b"after the crashes");
    store.tag_image("after:1", &desc).unwrap();
    store
        .prune(&PruneOptions {
            all: true,
            ..Default::default()
        })
        .unwrap();
    let problems = common::problems(&store);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(store.resolve_image("after:1").unwrap().is_some());
}

#[test]
fn concurrent_publishers_and_pruners_corrupt_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root_s = root.path().to_str().unwrap();
    let mut children: Vec<(String, Child)> = Vec::new();
    for seed in 0..3 {
        children.push((
            format!("publisher {seed}"),
            spawn(&["publish", root_s, &seed.to_string(), "40"]),
        ));
    }
    for p in 0..2 {
        children.push((format!("pruner {p}"), spawn(&["prune", root_s, "60"])));
    }
    for (name, mut c) in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "{name} failed: {status}");
    }
    let store = Store::open(root.path()).unwrap();
    let problems = common::problems(&store);
    assert!(problems.is_empty(), "{problems:#?}");
    // Every publisher's last tags are there: images survive every prune.
    for seed in 0..3 {
        for t in 0..3 {
            let name = format!("stress/s{seed}:t{t}");
            assert!(
                store.resolve_image(&name).unwrap().is_some(),
                "{name} is missing"
            );
        }
    }
}
