//! What analytics costs a Redis decision: the same limiter with `[analytics]`
//! off and on (every decision an event at `sample_rate = 1.0`, a tenth at
//! 0.1; the flusher sending to the same redis-server), measured in
//! alternating rounds of one run so that both see the same machine.
//!
//! `cargo bench -p flux-redis --bench analytics`. Target: analytics costs
//! under 10 % of decision throughput; "off" is the floor. Prints a Markdown
//! table (README.md, "Benchmarks"), with what Redis spent per decision
//! (`EVALSHA`) and per event (`XADD`, up to 64 events each) from `INFO
//! commandstats`.
//!
//! Not criterion: criterion measures one function after another, and the
//! point here is to interleave the two configurations round by round.
//! `FLUX_BENCH_ROUNDS` (default 9) and `FLUX_BENCH_ROUND_MS` (default 1000)
//! change the length.
//!
//! Client and server run on different cores when the machine has two:
//! redis-server pinned to CPU 1, this process to CPU 0 (with `taskset`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use flux_core::config::Config;
use flux_core::{apply_batch, BatchRequest, LimitSpec, Limiter, Op};
use flux_redis::analytics::Reporting;
use support::{free_port, RedisServer};

/// Identities a bench cycles through, so Redis works on a realistic keyspace.
const KEYS: usize = 1024;
const BATCH: usize = 64;

/// `sample_rate` None: analytics off.
fn config(url: &str, sample_rate: Option<f64>) -> Config {
    let prefix = match sample_rate {
        None => "off".to_owned(),
        Some(rate) => format!("on-{rate}"),
    };
    Config::from_toml_str(
        &format!(
            "[redis]\nurl = \"{url}\"\npool_size = 8\ntimeout_ms = 1000\n\
             [flux]\nstorage = \"redis\"\nkey_prefix = \"bench-{prefix}:\"\n\
             [analytics]\nenabled = {enabled}\nport = {port}\nstream = \"bench:events\"\n\
             retention = 100000\nsample_rate = {rate:?}\n",
            enabled = sample_rate.is_some(),
            rate = sample_rate.unwrap_or(1.0),
            port = free_port()
        ),
        None,
    )
    .unwrap()
}

/// A limit no bench reaches, so every call runs the whole script and writes.
fn limiter(url: &str, sample_rate: Option<f64>) -> (Arc<Limiter>, Arc<Reporting>) {
    let config = config(url, sample_rate);
    let opened = flux_redis::open(&config).unwrap();
    opened.backend.preload().unwrap();
    let rate = LimitSpec {
        requests: Some(1_000_000_000),
        period: Some(1.0),
        ..LimitSpec::default()
    };
    let limiter = Limiter::new(opened.backend, &config, "bench", None, &rate).unwrap();
    (Arc::new(limiter), opened.reporting)
}

#[derive(Clone, Copy)]
enum Workload {
    /// `decide` in a loop on each of `n` threads.
    Single(usize),
    /// `decide_batch` of `BATCH` calls in a loop on one thread.
    Batch,
}

impl Workload {
    fn name(self) -> String {
        match self {
            Workload::Single(1) => "decide, 1 thread".into(),
            Workload::Single(n) => format!("decide, {n} threads"),
            Workload::Batch => format!("decide_batch of {BATCH}, 1 thread"),
        }
    }
}

/// Decisions per second of `workload` on `limiter` for `length`.
fn round(limiter: &Arc<Limiter>, workload: Workload, length: Duration) -> f64 {
    let identities: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256).into_bytes())
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads = match workload {
        Workload::Single(n) => n,
        Workload::Batch => 1,
    };
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (limiter, identities) = (limiter.clone(), identities.clone());
            let (stop, done) = (stop.clone(), done.clone());
            thread::spawn(move || {
                let mut i = t * 97;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    match workload {
                        Workload::Single(_) => {
                            i = (i + 1) % KEYS;
                            black_box(limiter.decide(&identities[i], 1).unwrap());
                            n += 1;
                        }
                        Workload::Batch => {
                            let batch: Vec<BatchRequest<'_>> = (0..BATCH)
                                .map(|j| BatchRequest {
                                    limiter: &limiter,
                                    endpoint: None,
                                    identity: &identities[(i + j) % KEYS],
                                    cost: 1,
                                    op: Op::Decide,
                                })
                                .collect();
                            i = (i + BATCH) % KEYS;
                            for d in apply_batch(&batch) {
                                black_box(d.unwrap());
                            }
                            n += BATCH as u64;
                        }
                    }
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
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

/// CPU time (user + system) of a process so far, in clock ticks (1/100 s on
/// Linux), dead threads included; 0 where /proc cannot tell.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: utime and stime are
    // the 12th and 13th.
    let fields: Vec<u64> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

/// Decisions made and CPU spent on them, over the rounds of one mode.
#[derive(Default)]
struct Spent {
    decisions: f64,
    client_ticks: u64,
    redis_ticks: u64,
}

impl Spent {
    /// Microseconds of CPU per decision: (this process, redis-server).
    fn per_decision(&self) -> (f64, f64) {
        let us = |ticks: u64| ticks as f64 * 10_000.0 / self.decisions;
        (us(self.client_ticks), us(self.redis_ticks))
    }
}

fn percent(x: f64) -> String {
    format!("{:+.1} %", x * 100.0)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins this process to CPU 0 and returns a redis-server on CPU 1; an
/// unpinned server where that cannot be done.
fn server_on_another_core() -> (RedisServer, bool) {
    let server = RedisServer::start();
    let two_cpus = thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let taskset = |args: &[&str]| {
        Command::new("taskset")
            .args(args)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let pinned = two_cpus
        && taskset(&["-a", "-p", "-c", "1", &server.pid().to_string()])
        && taskset(&["-a", "-p", "-c", "0", &std::process::id().to_string()]);
    (server, pinned)
}

fn main() {
    let (server, pinned) = server_on_another_core();
    let rounds = env_or("FLUX_BENCH_ROUNDS", 9) as usize;
    let length = Duration::from_millis(env_or("FLUX_BENCH_ROUND_MS", 1000));
    let (off, _off_reporting) = limiter(&server.url(), None);
    let every = limiter(&server.url(), Some(1.0));
    let tenth = limiter(&server.url(), Some(0.1));
    let redis_pid = server.pid().to_string();

    println!(
        "analytics off vs on, {rounds} rounds of {} ms each, off and on alternating; \
         redis-server {}",
        length.as_millis(),
        if pinned {
            "on CPU 1, client on CPU 0"
        } else {
            "unpinned"
        }
    );
    println!();
    println!(
        "| workload | sample_rate | off (the floor), decisions/s | on, decisions/s | cost (median of pairs) \
         | pairs from .. to | client CPU µs/decision, off / on | Redis CPU µs/decision, off / on \
         | Redis µs per decision (EVALSHA) / per event (XADD) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (workload, (on, reporting), rate) in [
        (Workload::Single(1), &every, 1.0),
        (Workload::Single(4), &every, 1.0),
        (Workload::Batch, &every, 1.0),
        (Workload::Batch, &tenth, 0.1),
    ] {
        // Warm both (connections, scripts, the flusher's connection).
        round(&off, workload, length / 4);
        round(on, workload, length / 4);
        reporting.flush().unwrap();
        server.cli(&["CONFIG", "RESETSTAT"]);
        let (mut offs, mut ons, mut costs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut spent_off, mut spent_on) = (Spent::default(), Spent::default());
        let measured = |limiter: &Arc<Limiter>, spent: &mut Spent| {
            let (client, redis) = (cpu_ticks("self"), cpu_ticks(&redis_pid));
            let rate = round(limiter, workload, length);
            spent.client_ticks += cpu_ticks("self") - client;
            spent.redis_ticks += cpu_ticks(&redis_pid) - redis;
            spent.decisions += rate * length.as_secs_f64();
            rate
        };
        for r in 0..rounds {
            // Alternate which goes first, so a drift favours neither; each
            // pair ran back to back, so its ratio is the fairest comparison.
            let (off_rate, on_rate) = if r % 2 == 0 {
                let off_rate = measured(&off, &mut spent_off);
                (off_rate, measured(on, &mut spent_on))
            } else {
                let on_rate = measured(on, &mut spent_on);
                (measured(&off, &mut spent_off), on_rate)
            };
            offs.push(off_rate);
            ons.push(on_rate);
            costs.push(1.0 - on_rate / off_rate);
        }
        let (least, most) = costs
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        let ((client_off, redis_off), (client_on, redis_on)) =
            (spent_off.per_decision(), spent_on.per_decision());
        reporting.flush().unwrap();
        // Every decision of `on` an event at 1.0; at 0.1, a tenth of them
        // give or take a fraction of a percent.
        let events = spent_on.decisions * rate;
        let commands = server.cli(&["INFO", "commandstats"]);
        let per_decision =
            redis_usec(&commands, "evalsha") / (spent_off.decisions + spent_on.decisions);
        let per_event = redis_usec(&commands, "xadd") / events;
        println!(
            "| {} | {rate:.1} | {:.0} | {:.0} | {} | {} .. {} | {client_off:.1} / {client_on:.1} \
             | {redis_off:.1} / {redis_on:.1} | {per_decision:.2} / {per_event:.3} |",
            workload.name(),
            median(offs),
            median(ons),
            percent(median(costs)),
            percent(least),
            percent(most),
        );
    }
    let dropped = every.0.backend().analytics().snapshot().events_dropped
        + tenth.0.backend().analytics().snapshot().events_dropped;
    let (entries, events) = stream_length(&server, "bench:events");
    println!();
    println!(
        "stream bench:events: {events} events in {entries} entries (retention 100000); \
         events dropped: {dropped}"
    );
}

/// Microseconds Redis spent in `command` since the last `CONFIG RESETSTAT`,
/// from `INFO commandstats`.
fn redis_usec(info: &str, command: &str) -> f64 {
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').find_map(|f| f.strip_prefix("usec=")))
        .and_then(|usec| usec.parse().ok())
        .unwrap_or(0.0)
}

/// The entries of `stream`, and the events they hold (their `n`).
fn stream_length(server: &RedisServer, stream: &str) -> (usize, u64) {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    let events = reply
        .ids
        .iter()
        .map(|entry| entry.get::<u64>("n").unwrap_or(0))
        .sum();
    (reply.ids.len(), events)
}
