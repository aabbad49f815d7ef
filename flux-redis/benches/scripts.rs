//! What Redis spends running each policy's script, against a minimal script
//! doing the same reads and writes (the floor, `benches/floors/*.lua`), in
//! one redis-server and one run.
//!
//! For every policy, on its allowing path (a limit the run never reaches:
//! the call reads, decides and writes) and its refusing path (a limit of 1
//! per hour already used: the call reads and decides), calls are sent
//! pipelined, 256 at a time over 1,024 keys, as a busy Redis receives them
//! from many clients. Redis's own time per call is `usec_per_call` of
//! `EVALSHA` in `INFO commandstats`, reset before each script's turn; the
//! scripts take turns round by round (the order reversed every other
//! round) and the table gives each one's median.
//!
//! Wall time is noisy on a shared machine, so when valgrind is installed the
//! same calls run once more against a redis-server under callgrind, which
//! counts the instructions Redis executes per call: the same on a loaded
//! machine as on an idle one.
//!
//! A gcra limit of two quotas (`"1000/second;100000/day"` in shape, bursts
//! no run reaches) is measured the same way against its floor
//! (`floors/gcra_two.lua`: two GETs, two SETs), beside what one key holding
//! both quotas' states would cost at the least (`floors/gcra_two_one_key.lua`,
//! not Flux's layout: a key per quota).
//!
//! The floors return two numbers where Flux returns six, and take their
//! limit in ARGV where Flux has it in the script; what they store is what
//! DESIGN.md §2 says the policy keeps (one number for gcra, two for the
//! buckets and the fixed window, three for the sliding window), written as
//! Flux writes it (`string.format('%d')`).
//!
//! `cargo bench -p flux-redis --bench scripts` (also run by `make bench`).
//! `FLUX_BENCH_ROUNDS` (default 9), `FLUX_BENCH_CALLS` (calls per script
//! and round, default 20,000) and `FLUX_BENCH_CALLGRIND_CALLS` (default
//! 2,048; 0 skips callgrind) change the length. redis-server runs on CPU 1
//! and this process on CPU 0 when the machine has two (`taskset`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flux_core::{Op, Policy, QuotaSpec};
use redis::{Connection, Value};
use support::{free_port, RedisServer};

/// Keys each script cycles through.
const KEYS: usize = 1024;
/// Calls per pipeline.
const PIPELINE: usize = 256;

/// A script to measure: its source, the keys of a call, the ARGV after
/// them, and whether its calls are admitted.
struct Script {
    name: String,
    source: String,
    keys: usize,
    args: Vec<String>,
    admits: bool,
}

/// The floor of `policy`, on the path that `admits` or refuses: its source
/// and ARGV.
fn floor(policy: Policy, admits: bool) -> (&'static str, Vec<u64>) {
    match (policy, admits) {
        // 1000 per second, burst 1,000,000; or 1 per hour.
        (Policy::Gcra, true) => (include_str!("floors/gcra.lua"), vec![1_000, 1_000_000]),
        (Policy::Gcra, false) => (include_str!("floors/gcra.lua"), vec![3_600_000_000, 1]),
        (Policy::TokenBucket | Policy::LeakyBucket, true) => {
            (include_str!("floors/bucket.lua"), vec![1_000, 1_000_000])
        }
        (Policy::TokenBucket | Policy::LeakyBucket, false) => {
            (include_str!("floors/bucket.lua"), vec![3_600_000_000, 1])
        }
        // 1,000,000 per minute; or 1 per hour.
        (Policy::FixedWindow, true) => (
            include_str!("floors/fixed_window.lua"),
            vec![1_000_000, 60_000_000],
        ),
        (Policy::FixedWindow, false) => (
            include_str!("floors/fixed_window.lua"),
            vec![1, 3_600_000_000],
        ),
        (Policy::SlidingWindow, true) => (
            include_str!("floors/sliding_window.lua"),
            vec![1_000_000, 60_000_000],
        ),
        (Policy::SlidingWindow, false) => (
            include_str!("floors/sliding_window.lua"),
            vec![1, 3_600_000_000],
        ),
    }
}

/// Flux's script for `policy` with the same limits as its floor.
fn flux(policy: Policy, admits: bool) -> String {
    let spec = match (policy.is_bucket(), admits) {
        (true, true) => QuotaSpec::new(policy, 1_000, 1.0).burst(1_000_000),
        (false, true) => QuotaSpec::new(policy, 1_000_000, 60.0),
        (_, false) => QuotaSpec::new(policy, 1, 3600.0),
    };
    flux_redis::script_source(&[spec.build().unwrap()], Op::Decide)
}

/// The two quotas of the two-quota rows: 1,000 per second and 100,000 per
/// day, with bursts of 1,000,000 and 1,000,000,000: (emission interval µs,
/// burst) each.
const TWO_QUOTAS: [(u64, u64); 2] = [(1_000, 1_000_000), (864_000, 1_000_000_000)];

fn two_quotas() -> Vec<Script> {
    let floor_args: Vec<String> = TWO_QUOTAS
        .iter()
        .flat_map(|&(e, burst)| [e, burst])
        .map(|n| n.to_string())
        .collect();
    let quotas = [
        QuotaSpec::new(Policy::Gcra, 1_000, 1.0).burst(1_000_000),
        QuotaSpec::new(Policy::Gcra, 100_000, 86_400.0).burst(1_000_000_000),
    ]
    .map(|spec| spec.build().unwrap());
    vec![
        Script {
            name: "gcra allow 2 quotas, floor".into(),
            source: include_str!("floors/gcra_two.lua").into(),
            keys: 2,
            args: floor_args.clone(),
            admits: true,
        },
        Script {
            name: "gcra allow 2 quotas, Flux".into(),
            source: flux_redis::script_source(&quotas, Op::Decide),
            keys: 2,
            args: vec![String::new(), "1".to_owned()],
            admits: true,
        },
        Script {
            name: "gcra allow 2 quotas in one key, floor".into(),
            source: include_str!("floors/gcra_two_one_key.lua").into(),
            keys: 1,
            args: floor_args,
            admits: true,
        },
    ]
}

fn scripts() -> Vec<Script> {
    let mut scripts = Vec::new();
    for admits in [true, false] {
        let path = if admits { "allow" } else { "refuse" };
        for policy in Policy::ALL {
            let (source, args) = floor(policy, admits);
            scripts.push(Script {
                name: format!("{policy} {path}, floor"),
                source: source.to_owned(),
                keys: 1,
                args: args.iter().map(u64::to_string).collect(),
                admits,
            });
            scripts.push(Script {
                name: format!("{policy} {path}, Flux"),
                source: flux(policy, admits),
                keys: 1,
                // Redis TIME, cost 1.
                args: vec![String::new(), "1".to_owned()],
                admits,
            });
        }
    }
    scripts.extend(two_quotas());
    scripts
}

/// A script loaded on one server, with its callers' keys.
struct Loaded<'a> {
    script: &'a Script,
    sha: String,
    keys: Vec<Vec<String>>,
    next: usize,
}

impl<'a> Loaded<'a> {
    fn new(conn: &mut Connection, script: &'a Script, index: usize) -> Self {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&script.source)
            .query(conn)
            .unwrap();
        let keys = (0..KEYS)
            .map(|k| {
                (0..script.keys)
                    .map(|q| format!("bench:{index}:{q}:{{{k:032x}}}"))
                    .collect()
            })
            .collect();
        Loaded {
            script,
            sha,
            keys,
            next: 0,
        }
    }

    /// Sends `calls` calls, pipelined; checks the first reply of each
    /// pipeline says what the script is measured for.
    fn run(&mut self, conn: &mut Connection, calls: usize) {
        let mut sent = 0;
        while sent < calls {
            let n = PIPELINE.min(calls - sent);
            let mut pipe = redis::pipe();
            for _ in 0..n {
                let keys = &self.keys[self.next % KEYS];
                self.next += 1;
                pipe.cmd("EVALSHA")
                    .arg(&self.sha)
                    .arg(keys.len())
                    .arg(keys)
                    .arg(&self.script.args);
            }
            let replies: Vec<Value> = pipe.query(conn).unwrap();
            let first: Vec<i64> = redis::from_redis_value(replies[0].clone())
                .unwrap_or_else(|e| panic!("{}: {e}: {:?}", self.script.name, replies[0]));
            assert_eq!(
                first[0] == 1,
                self.script.admits,
                "{}: {first:?}",
                self.script.name
            );
            sent += n;
        }
    }

    /// One call on every key: a refusing script's keys then hold a used-up limit.
    fn warm(&mut self, conn: &mut Connection) {
        let mut pipe = redis::pipe();
        for keys in &self.keys {
            pipe.cmd("EVALSHA")
                .arg(&self.sha)
                .arg(keys.len())
                .arg(keys)
                .arg(&self.script.args);
        }
        let _: Vec<Value> = pipe.query(conn).unwrap();
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `usec_per_call` of EVALSHA since the last `CONFIG RESETSTAT`.
fn usec_per_call(conn: &mut Connection) -> f64 {
    let stats: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        .and_then(|fields| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix("usec_per_call="))
        })
        .and_then(|v| v.parse().ok())
        .expect("commandstats has EVALSHA")
}

/// Median µs of Redis time per call of each script, over interleaved rounds.
fn wall_time(scripts: &[Script], rounds: usize, calls: usize) -> Vec<f64> {
    let server = server_on_another_core();
    interleaved(&server.url(), scripts, rounds, |conn, script| {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(conn)
            .unwrap();
        script.run(conn, calls);
        usec_per_call(conn)
    })
}

/// Loads and warms `scripts` on the redis-server at `url`, then gives each
/// `rounds` turns, in an order that reverses every round; `turn` runs one
/// and measures it. The median of each script's turns.
fn interleaved(
    url: &str,
    scripts: &[Script],
    rounds: usize,
    mut turn: impl FnMut(&mut Connection, &mut Loaded<'_>) -> f64,
) -> Vec<f64> {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut loaded: Vec<Loaded<'_>> = scripts
        .iter()
        .enumerate()
        .map(|(i, s)| Loaded::new(&mut conn, s, i))
        .collect();
    for script in &mut loaded {
        script.warm(&mut conn);
    }
    let mut measured = vec![Vec::new(); scripts.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..scripts.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            measured[i].push(turn(&mut conn, &mut loaded[i]));
        }
    }
    measured.into_iter().map(median).collect()
}

/// A redis-server under callgrind, counting nothing until told.
struct Callgrind {
    child: Child,
    port: u16,
    dir: PathBuf,
    dumps: usize,
}

impl Callgrind {
    fn start() -> Option<Callgrind> {
        let found = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !found("valgrind") || !found("callgrind_control") {
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("flux-bench-callgrind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}/out", dir.display()))
            .args(["redis-server", "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let grind = Callgrind {
            child,
            port,
            dir,
            dumps: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if support::cli(port, &["PING"]) == "PONG" {
                return Some(grind);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    fn control(&self, flag: &str) {
        Command::new("callgrind_control")
            .args([flag, &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
    }

    /// Instructions since the last call, from a dump of the counters.
    fn instructions(&mut self) -> u64 {
        self.control("-d");
        self.dumps += 1;
        let path = self.dir.join(format!("out.{}", self.dumps));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(n) = totals(&path) {
                return n;
            }
            assert!(Instant::now() < deadline, "no dump at {}", path.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Callgrind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The total instructions a callgrind dump counted, once it is whole.
fn totals(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals: ").or(l.strip_prefix("summary: ")))
        .and_then(|n| n.trim().parse().ok())
}

/// Median instructions Redis executes per call of each script, over three
/// interleaved rounds; `None` without valgrind.
fn instructions(scripts: &[Script], calls: usize) -> Option<Vec<f64>> {
    if calls == 0 {
        return None;
    }
    let mut grind = Callgrind::start()?;
    let url = format!("redis://127.0.0.1:{}", grind.port);
    Some(interleaved(&url, scripts, 3, |conn, script| {
        grind.control("-z");
        script.run(conn, calls);
        grind.instructions() as f64 / calls as f64
    }))
}

/// Pins this process to CPU 0 and returns a redis-server on CPU 1; an
/// unpinned server where that cannot be done.
fn server_on_another_core() -> RedisServer {
    let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let pinned = two_cpus
        && Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if pinned {
        RedisServer::start_on_cpu(1)
    } else {
        println!("not pinned: client and server share the CPUs");
        RedisServer::start()
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter means another bench was asked for.
    if std::env::args().skip(1).any(|a| !a.starts_with('-')) {
        return;
    }
    let rounds = env_or("FLUX_BENCH_ROUNDS", 9);
    let calls = env_or("FLUX_BENCH_CALLS", 20_000);
    let grind_calls = env_or("FLUX_BENCH_CALLGRIND_CALLS", 2_048);
    let scripts = scripts();
    let usec = wall_time(&scripts, rounds, calls);
    let instr = instructions(&scripts, grind_calls);

    println!(
        "Redis time per EVALSHA (usec_per_call, median of {rounds} interleaved rounds of \
         {calls} calls){}",
        match instr {
            Some(_) => format!(
                ", and instructions per call under callgrind (median of 3 rounds of {grind_calls})"
            ),
            None => ", no callgrind (valgrind not installed)".to_owned(),
        }
    );
    println!();
    println!("| policy | path | Flux µs | floor µs | Flux ÷ floor | Flux kinstr | floor kinstr | Flux ÷ floor |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    // Floor and Flux in pairs, then the one-key floor alone.
    let one_key = scripts.len() - 1;
    for pair in (0..one_key).step_by(2) {
        let (floor, flux) = (pair, pair + 1);
        let (policy, path) = scripts[flux]
            .name
            .split_once(' ')
            .map(|(p, rest)| (p, rest.split(',').next().unwrap()))
            .unwrap();
        let counted = match &instr {
            Some(n) => format!(
                "{:.1} | {:.1} | {:.2}x",
                n[flux] / 1000.0,
                n[floor] / 1000.0,
                n[flux] / n[floor]
            ),
            None => "- | - | -".to_owned(),
        };
        println!(
            "| {policy} | {path} | {:.2} | {:.2} | {:.2}x | {counted} |",
            usec[flux],
            usec[floor],
            usec[flux] / usec[floor]
        );
    }
    println!();
    let counted = instr.as_ref().map_or(String::new(), |n| {
        format!(", {:.1} kinstr", n[one_key] / 1000.0)
    });
    println!(
        "{}: {:.2} µs{counted}",
        scripts[one_key].name, usec[one_key]
    );
}
