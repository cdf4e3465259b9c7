//! `raftkv`: parse the command line and the config, run the node. Usage and
//! config errors exit with status 2; runtime failures with status 1.

use raftkv::cli::{self, Action};
use raftkv::{config, server};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(arg) => {
                raftkv::errln!("raftkv: argument {:?} is not valid UTF-8", arg);
                return ExitCode::from(2);
            }
        }
    }
    let action = match cli::parse(&args) {
        Ok(action) => action,
        Err(err) => {
            raftkv::errln!("raftkv: {}", err);
            return ExitCode::from(2);
        }
    };
    match action {
        Action::Help(text) => print_or_fail(&text),
        Action::Version => print_or_fail(&format!("raftkv {}\n", env!("CARGO_PKG_VERSION"))),
        Action::LocalCluster { nodes, flags } => server::local_cluster::run(nodes, &flags),
        Action::Run(flags) => {
            let config = match config::load(&flags) {
                Ok(config) => config,
                Err(err) => {
                    raftkv::errln!("raftkv: {}", err);
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log_level, config.id);
            match server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err @ server::ServerError::Usage(_)) => {
                    raftkv::errln!("raftkv: {}", err);
                    ExitCode::from(2)
                }
                Err(err) => {
                    // One line, as for a config error; it names the node's
                    // data dir or file, which tells --local-cluster's nodes apart.
                    raftkv::errln!("raftkv: {}", err);
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Writes what was asked for (help, the version): status 1 if it could not
/// be written (`raftkv --help > /dev/full`), as other tools do; never a panic.
fn print_or_fail(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            raftkv::errln!("raftkv: cannot write to stdout: {}", err);
            ExitCode::from(1)
        }
    }
}

/// One line per event on stderr, tagged with the node id so the interleaved
/// output of `--local-cluster` stays readable. RUST_LOG overrides `log_level`.
fn init_logging(level: &str, id: u64) {
    use std::io::Write;
    // An empty RUST_LOG (`RUST_LOG=` in a unit file or a compose file
    // passing an unset variable on) counts as unset: env_logger took it as
    // a filter, and the node logged nothing at all, not even its role changes.
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.trim().is_empty());
    // One that does not parse falls back to `log_level`: env_logger warned
    // and dropped it, and the node logged nothing but errors.
    let invalid = rust_log.as_deref().and_then(|spec| {
        env_filter::Builder::new()
            .try_parse(spec)
            .err()
            .map(|err| (spec.to_string(), err))
    });
    let filter = match (&rust_log, &invalid) {
        (Some(spec), None) => spec.as_str(),
        _ => level,
    };
    env_logger::Builder::new()
        .parse_filters(filter)
        .format(move |buf, record| {
            writeln!(
                buf,
                "{} {:5} n{} {}",
                buf.timestamp_millis(),
                record.level(),
                id,
                record.args()
            )
        })
        .init();
    if let Some((spec, err)) = invalid {
        log::warn!(
            "RUST_LOG={:?} is ignored ({}); logging at log_level {}",
            spec,
            err,
            level
        );
    }
}
