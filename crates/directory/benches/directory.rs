//! Directory benchmark (`cargo bench -p portcullis-directory`). Prints:
//!
//! - durable user creates per second at 1, 8 and 32 concurrent writers, and
//!   the ratio to the peer: one raw sled insert + flush per write, serially;
//! - authorization lookup time at 100,000 users, 10,000 groups and
//!   1,000,000 memberships (by id, and by userName);
//! - time to rebuild that cache from sled, and the resident memory of a
//!   fresh process that did only that.
//!
//! Targets (issue "Foundation"): >= 40,000 creates/s at 32 writers, lookup
//! < 200 ns, rebuild < 1.5 s, < 300 MB RSS. Not a test: it prints figures.
//! Sizes can be reduced for a quick run with `PORTCULLIS_BENCH_SCALE=0.1`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_directory::{Directory, Id, IdentityAttr, Lookup, Options, PrincipalKey};
use serde_json::{Map, Value, json};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rebuild-child") {
        let path = args.get(i + 1).expect("path after --rebuild-child");
        rebuild_child(Path::new(path));
        return;
    }
    let scale: f64 = std::env::var("PORTCULLIS_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: usize| ((x as f64 * scale) as usize).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "# portcullis-directory benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let raw = raw_sled_flush(n(2_000));
    println!(
        "peer: raw sled insert+flush, serial: {:.0} writes/s ({:.0} us per flush)",
        raw,
        1e6 / raw
    );
    for writers in [1usize, 8, 32] {
        let total = if writers == 1 { n(5_000) } else { n(40_000) };
        let rate = rt.block_on(durable_creates(writers, total));
        println!(
            "durable creates, {writers:>2} writers: {rate:>8.0} /s  ({:.1}x raw sled flush)",
            rate / raw
        );
    }

    let (users, groups, per_group) = (n(100_000), n(10_000), 100usize.min(n(100_000)));
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ids, names) = rt.block_on(populate(tmp.path(), users, groups, per_group));
    let dir = Directory::open(tmp.path(), Options::default()).expect("reopen");
    let stats = dir.stats();
    println!(
        "directory: {} users, {} groups, {} memberships",
        stats.users, stats.groups, stats.memberships
    );
    lookups(&dir, &ids, &names);
    drop(dir);

    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .arg("--rebuild-child")
        .arg(tmp.path())
        .output()
        .expect("run rebuild child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn user_doc(name: &str) -> Map<String, Value> {
    obj(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Given", "familyName": "Family"},
        "displayName": "Given Family",
        "emails": [{"value": name, "type": "work", "primary": true}],
        "active": true,
    }))
}

fn raw_sled_flush(count: usize) -> f64 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(tmp.path())
        .flush_every_ms(None)
        .open()
        .expect("sled");
    let start = Instant::now();
    for i in 0..count {
        db.insert(format!("k{i}"), &b"a user record of about this size............................................................................................................................................................................"[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

async fn durable_creates(writers: usize, total: usize) -> f64 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = Directory::open(tmp.path(), Options::default()).expect("open");
    let client: Id = Id::from("bench");
    let per = total / writers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (dir, client) = (dir.clone(), client.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    dir.create_user(&client, user_doc(&format!("w{w}-{i}@example.com")))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    (per * writers) as f64 / start.elapsed().as_secs_f64()
}

async fn populate(path: &Path, users: usize, groups: usize, per_group: usize) -> (Vec<Id>, Vec<String>) {
    let start = Instant::now();
    let dir = Directory::open(path, Options::default()).expect("open");
    let client: Id = Id::from("bench");
    let writers = 32;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (dir, client) = (dir.clone(), client.clone());
            tokio::spawn(async move {
                let mut made = Vec::new();
                for i in (w..users).step_by(writers) {
                    let name = format!("user{i}@example.com");
                    let u = dir.create_user(&client, user_doc(&name)).await.expect("create");
                    made.push((u.id.clone(), name));
                }
                made
            })
        })
        .collect();
    let mut all = Vec::with_capacity(users);
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    let ids: Arc<Vec<Id>> = Arc::new(all.iter().map(|(id, _)| id.clone()).collect());
    let names = all.into_iter().map(|(_, n)| n).collect();
    // Each group takes a contiguous window of users, so every user lands in
    // about groups * per_group / users groups (10 at full scale).
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (dir, client, ids) = (dir.clone(), client.clone(), ids.clone());
            tokio::spawn(async move {
                for g in (w..groups).step_by(writers) {
                    let first = g * per_group % ids.len();
                    let members = (0..per_group)
                        .map(|k| ids[(first + k) % ids.len()].to_string())
                        .collect();
                    dir.create_group(&client, obj(json!({"displayName": format!("group-{g}")})), members)
                        .await
                        .expect("group");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("group writer");
    }
    println!("populated in {:.1} s", start.elapsed().as_secs_f64());
    ((*ids).clone(), names)
}

fn lookups(dir: &Directory, ids: &[Id], names: &[String]) {
    // A fixed pseudo-random walk so lookups miss the CPU cache as real
    // traffic would.
    let order: Vec<usize> = (0..ids.len()).map(|i| (i * 7_919 + 13) % ids.len()).collect();
    let keys: Vec<PrincipalKey> = ids.iter().map(|id| dir.principal(id).expect("principal").key).collect();
    let rounds = (2_000_000 / ids.len().max(1)).max(1);
    let count = rounds * ids.len();
    let time = |f: &dyn Fn(usize)| {
        let start = Instant::now();
        for _ in 0..rounds {
            for &i in &order {
                f(i);
            }
        }
        per_op(start.elapsed(), count)
    };
    let with = time(&|i| {
        black_box(dir.with_principal(keys[i], |p| p.active && !p.groups.is_empty()));
    });
    let by_key = time(&|i| {
        black_box(dir.principal_by_key(keys[i]).expect("principal").groups.len());
    });
    let by_id = time(&|i| {
        black_box(dir.principal(&ids[i]).expect("principal").groups.len());
    });
    let by_name = time(&|i| match dir.principal_by(IdentityAttr::UserName, &names[i]) {
        Lookup::Found(p) => {
            black_box(p.active);
        }
        _ => panic!("lookup failed"),
    });
    let groups = dir.principal(&ids[0]).map_or(0, |p| p.groups.len());
    println!("authorization lookup (with_principal, by key): {with:>5.0} ns  (principal with {groups} groups)");
    println!("authorization lookup (principal_by_key, Arc):  {by_key:>5.0} ns");
    println!("lookup by id text (parse + probe):             {by_id:>5.0} ns");
    println!("lookup by userName (index, then principal):    {by_name:>5.0} ns");
}

fn per_op(d: Duration, count: usize) -> f64 {
    d.as_nanos() as f64 / count as f64
}

fn rebuild_child(path: &Path) {
    let start = Instant::now();
    let dir = Directory::open(path, Options::default()).expect("rebuild");
    let took = start.elapsed();
    let stats = dir.stats();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    println!(
        "rebuild from sled: {:.2} s for {} users / {} groups / {} memberships",
        took.as_secs_f64(),
        stats.users,
        stats.groups,
        stats.memberships
    );
    println!(
        "memory of a fresh process after rebuild: RSS {:.0} MB (peak {:.0} MB); store on disk {:.0} MB",
        field("VmRSS:"),
        field("VmHWM:"),
        dir.size_on_disk() as f64 / 1e6
    );
}
