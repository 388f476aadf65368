//! `dpbench <scenario> [flags]` — see the crate docs of `dpbench` (src/lib.rs).

use std::process::ExitCode;

use dpbench::scenarios::BenchMode;
use dpbench::{External, Options, Scenario};

const USAGE: &str = "usage: dpbench <ceiling|throughput|handshakes|idle|ratelimit|me|all> [flags]
  --proxy ADDR --secret HEX [--pid PID]   measure a running proxy (else spawn mtproxyd)
  --sink-port P --echo-port P             fixed TestDc ports (for an external proxy's dc_overrides:
                                          DC 1 -> sink, DC 2 -> echo)
  --users N (10000)  --mib N (128)  --handshakes N (2000)  --concurrency N (16)  --idle N (2000)
  --modes classic,secure,tls               --no-build (do not build a missing mtproxyd)
  --baseline BIN                           also measure BIN's relay throughput and CPU/GB, with ratios
  --baseline-censorship LINES              extra [censorship] lines of the baseline's config
                                          (e.g. \"tls_record_shaping = false\" with BIN = the candidate)";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    let mut scenario = None;
    let (mut addr, mut secret, mut pid) = (None, None, None);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--proxy" => addr = Some(val()?.parse().map_err(|e| format!("--proxy: {e}"))?),
            "--secret" => {
                let v = val()?;
                let raw = hex::decode(&v).map_err(|e| format!("--secret: {e}"))?;
                secret = Some(
                    <[u8; 16]>::try_from(raw.as_slice())
                        .map_err(|_| "--secret must be 32 hex chars".to_string())?,
                );
            }
            "--pid" => pid = Some(num(val()?)? as u32),
            "--sink-port" => o.sink_port = num(val()?)? as u16,
            "--echo-port" => o.echo_port = num(val()?)? as u16,
            "--users" => o.users = num(val()?)? as usize,
            "--mib" => o.mib = num(val()?)?,
            "--handshakes" => o.handshakes = num(val()?)? as usize,
            "--concurrency" => o.concurrency = num(val()?)? as usize,
            "--idle" => o.idle = num(val()?)? as usize,
            "--modes" => {
                o.modes = val()?
                    .split(',')
                    .map(|m| BenchMode::parse(m).ok_or(format!("unknown mode {m}")))
                    .collect::<Result<_, _>>()?;
            }
            "--no-build" => o.build = false,
            "--baseline" => o.baseline = Some(val()?.into()),
            "--baseline-censorship" => o.baseline_censorship = val()?.replace("\\n", "\n"),
            // `cargo bench` passes this to harness=false targets.
            "--bench" => {}
            s if !s.starts_with('-') && scenario.is_none() => {
                scenario = Some(Scenario::parse(s).ok_or(format!("unknown scenario {s}"))?);
            }
            s => return Err(format!("unknown argument {s}")),
        }
    }
    o.scenario = scenario.unwrap_or(Scenario::All);
    match (addr, secret) {
        (Some(addr), Some(secret)) => o.external = Some(External { addr, secret, pid }),
        (None, None) => {}
        _ => return Err("--proxy and --secret go together".into()),
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(dpbench::run(&opts));
    println!("{}", report.summary());
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
