//! The command line: a getopts table with one flag per config key. No IO.
//!
//! The per-key flags come from [`crate::config::KEYS`], so a key and its flag
//! are declared once. Values are not checked here but by `config::resolve`,
//! which names the flag in its errors (`--heartbeat-ms: bad value 'x' ...`).

use crate::config::{self, Presence, KEYS};
use std::fmt;
use std::path::PathBuf;

/// Settings given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub config: Option<PathBuf>,
    /// Config keys given as flags (`--data-dir X` is `("data_dir", "X")`), in order.
    /// (The order of [`config::KEYS`]: each flag may be given only once.)
    pub overrides: Vec<(String, String)>,
    /// `--force-new-cluster`: start as the only member (not a config key).
    pub force_new_cluster: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Run(Flags),
    /// `--local-cluster N`; `flags` are passed on to every child.
    LocalCluster {
        nodes: u32,
        flags: Flags,
    },
    Help(String),
    Version,
}

/// A bad command line; `Display` is the one line for stderr (after `raftkv: `).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::config::printable(&self.0))
    }
}

impl std::error::Error for UsageError {}

/// The most nodes `--local-cluster` starts (their default ports stay apart:
/// raft 7001..7099, client 6381..6479).
pub const MAX_LOCAL_NODES: u32 = 99;

/// Keys that differ per node, so `--local-cluster` chooses them itself.
pub const PER_NODE_KEYS: &[&str] = &["id", "raft_addr", "client_addr", "cluster", "join"];

/// What `--version` prints.
pub fn version() -> String {
    format!("raftkv {}", env!("CARGO_PKG_VERSION"))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Action, UsageError> {
    let opts = options();
    let matches = opts
        .parse(join_values(args))
        .map_err(|fail| UsageError(describe(&fail)))?;
    if let Some(arg) = matches.free.first() {
        // `--join` takes `yes` or `no` after it, so another word there was
        // meant as its value.
        if args
            .windows(2)
            .any(|pair| pair[0] == "--join" && pair[1] == *arg)
        {
            return Err(UsageError(format!(
                "--join: bad value '{arg}' for 'join': expected yes or no"
            )));
        }
        return Err(UsageError(format!(
            "unexpected argument '{arg}' (see --help)"
        )));
    }
    if matches.opt_present("help") {
        return Ok(Action::Help(help()));
    }
    if matches.opt_present("version") {
        return Ok(Action::Version);
    }
    let mut flags = Flags {
        config: matches.opt_str("config").map(PathBuf::from),
        overrides: Vec::new(),
        force_new_cluster: matches.opt_present("force-new-cluster"),
    };
    for def in KEYS {
        let long = long_name(def.name);
        if !matches.opt_present(&long) {
            continue;
        }
        // A bare `--join` (the only flag whose value may be left out) means yes.
        let value = matches.opt_str(&long).unwrap_or_else(|| "yes".to_string());
        flags.overrides.push((def.name.to_string(), value));
    }
    let Some(count) = matches.opt_str("local-cluster") else {
        return Ok(Action::Run(flags));
    };
    let nodes = match count.parse::<u32>() {
        Ok(n) if (1..=MAX_LOCAL_NODES).contains(&n) => n,
        _ => {
            return Err(UsageError(format!(
                "--local-cluster: bad value '{count}': expected a node count from 1 to {MAX_LOCAL_NODES}"
            )))
        }
    };
    if flags.force_new_cluster {
        return Err(UsageError(
            "--force-new-cluster cannot be used with --local-cluster (it recovers one node)"
                .to_string(),
        ));
    }
    if let Some((key, _)) = flags
        .overrides
        .iter()
        .find(|(key, _)| PER_NODE_KEYS.contains(&key.as_str()))
    {
        return Err(UsageError(format!(
            "{} cannot be used with --local-cluster (it sets each node's own)",
            config::flag_name(key)
        )));
    }
    Ok(Action::LocalCluster { nodes, flags })
}

fn long_name(key: &str) -> String {
    key.replace('_', "-")
}

fn options() -> getopts::Options {
    let mut opts = getopts::Options::new();
    opts.optopt("", "config", "read settings from this file", "FILE");
    opts.optopt(
        "",
        "local-cluster",
        "run N nodes on loopback as children of this process (node i: raft port 7000+i, client port 6380+i, data under data/nodei)",
        "N",
    );
    for def in KEYS {
        let help = match def.presence {
            Presence::Required => format!("{} (required)", def.help),
            Presence::RequiredUnlessJoin => format!("{} (required unless --join)", def.help),
            Presence::Optional => format!("{} (default: none)", def.help),
            Presence::Default(value) => format!("{} (default: {})", def.help, value),
        };
        let long = long_name(def.name);
        if def.name == "join" {
            opts.optflagopt("", &long, &help, def.hint);
        } else {
            opts.optopt("", &long, &help, def.hint);
        }
    }
    opts.optflag(
        "",
        "force-new-cluster",
        "once, after a majority of the voters is lost for good: start as the only member of a new one-member cluster holding this node's data (recorded in the data dir; the other members are dropped and ignored)",
    );
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("V", "version", "print the version and exit");
    opts
}

/// getopts reads an optional value only when attached (`--join=no`), so a
/// separate `yes`/`no` right after `--join` is attached here; `--join` followed by
/// anything else stays bare.
fn join_values(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let next_is_value = iter.peek().is_some_and(|next| {
            next.eq_ignore_ascii_case("yes") || next.eq_ignore_ascii_case("no")
        });
        match iter.next_if(|_| arg == "--join" && next_is_value) {
            Some(value) => out.push(format!("--join={value}")),
            None => out.push(arg.clone()),
        }
    }
    out
}

/// A getopts failure as one line naming the flag as the user wrote it.
fn describe(fail: &getopts::Fail) -> String {
    let dashed = |name: &str| {
        if name.chars().count() == 1 {
            format!("-{name}")
        } else {
            format!("--{name}")
        }
    };
    match fail {
        getopts::Fail::UnrecognizedOption(name) => {
            format!("unknown flag '{}' (see --help)", dashed(name))
        }
        getopts::Fail::ArgumentMissing(name) => format!("{} needs a value", dashed(name)),
        getopts::Fail::OptionDuplicated(name) => {
            format!("{} given more than once", dashed(name))
        }
        getopts::Fail::UnexpectedArgument(name) => {
            format!("{} does not take a value", dashed(name))
        }
        getopts::Fail::OptionMissing(name) => format!("{} is required", dashed(name)),
    }
}

/// The `--help` text: usage lines, then every flag with its default.
pub fn help() -> String {
    let brief = format!(
        "{}: a Raft-replicated key-value store that speaks the Redis protocol\n\n\
         Usage:\n    \
         raftkv --config FILE [FLAGS]      run one node; flags override the file's keys\n    \
         raftkv --id N --raft-addr HOST:PORT --client-addr HOST:PORT \\\n           \
         --cluster ID=HOST:PORT,... --data-dir DIR [FLAGS]\n    \
         raftkv --local-cluster N [FLAGS]  run N nodes on loopback\n    \
         raftkv --help | --version\n\n\
         Every config file key has a flag of the same name with '_' written as '-'.",
        version()
    );
    // getopts pads the name column even when a long name pushes the
    // description to the next line, leaving blanks at the end of that line.
    let mut text: String = options()
        .usage(&brief)
        .lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect();
    text.pop();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn run(line: &str) -> Flags {
        match parse(&args(line)) {
            Ok(Action::Run(flags)) => flags,
            other => panic!("{line}: expected Run, got {other:?}"),
        }
    }

    fn usage_err(line: &str) -> String {
        match parse(&args(line)) {
            Err(e) => e.to_string(),
            Ok(action) => panic!("{line}: expected an error, got {action:?}"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn config_and_overrides() {
        let flags = run("--data-dir /tmp/n1 --config conf/node1.conf --heartbeat-ms=20");
        assert_eq!(flags.config, Some(PathBuf::from("conf/node1.conf")));
        assert_eq!(
            flags.overrides,
            pairs(&[("data_dir", "/tmp/n1"), ("heartbeat_ms", "20")])
        );
        assert_eq!(run(""), Flags::default());
    }

    #[test]
    fn every_key_has_a_flag() {
        for def in KEYS {
            let line = format!("--{}=v", def.name.replace('_', "-"));
            assert_eq!(run(&line).overrides, pairs(&[(def.name, "v")]), "{line}");
        }
    }

    #[test]
    fn join_may_be_bare_or_have_a_value() {
        assert_eq!(run("--join").overrides, pairs(&[("join", "yes")]));
        assert_eq!(run("--join no").overrides, pairs(&[("join", "no")]));
        assert_eq!(
            run("--join yes --id 4").overrides,
            pairs(&[("id", "4"), ("join", "yes")])
        );
        assert_eq!(run("--join=no").overrides, pairs(&[("join", "no")]));
        assert_eq!(
            run("--join --id 4").overrides,
            pairs(&[("id", "4"), ("join", "yes")])
        );
        // Any other value is config's to reject, naming the flag.
        assert_eq!(run("--join=maybe").overrides, pairs(&[("join", "maybe")]));
        assert_eq!(
            usage_err("--join maybe"),
            "--join: bad value 'maybe' for 'join': expected yes or no"
        );
        assert_eq!(
            usage_err("--join --id 4 maybe"),
            "unexpected argument 'maybe' (see --help)"
        );
    }

    #[test]
    fn force_new_cluster_is_a_flag_of_its_own() {
        let flags = run("--force-new-cluster --id 1");
        assert!(flags.force_new_cluster);
        assert_eq!(flags.overrides, pairs(&[("id", "1")]));
        assert!(!run("--id 1").force_new_cluster);
        assert_eq!(
            usage_err("--force-new-cluster=yes"),
            "--force-new-cluster does not take a value"
        );
        assert_eq!(
            usage_err("--local-cluster 3 --force-new-cluster"),
            "--force-new-cluster cannot be used with --local-cluster (it recovers one node)"
        );
        assert!(help().contains("--force-new-cluster"));
    }

    #[test]
    fn help_lines_end_without_blanks() {
        let text = help();
        assert!(text.contains("--force-new-cluster\n"));
        for line in text.lines() {
            assert_eq!(line, line.trim_end(), "blanks at the end of a --help line");
        }
    }

    #[test]
    fn help_and_version() {
        let Ok(Action::Help(text)) = parse(&args("--id 1 -h")) else {
            panic!("-h is not help");
        };
        for def in KEYS {
            assert!(
                text.contains(&format!("--{}", def.name.replace('_', "-"))),
                "{}",
                def.name
            );
        }
        assert!(text.contains("--local-cluster"));
        assert!(text.contains("(default: 500)"), "{text}");
        assert!(text.contains("(default: always)"), "{text}");
        assert_eq!(parse(&args("--help")), Ok(Action::Help(help())));
        assert_eq!(parse(&args("--version")), Ok(Action::Version));
        assert_eq!(parse(&args("-V")), Ok(Action::Version));
        assert_eq!(version(), format!("raftkv {}", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn bad_command_lines_name_the_flag() {
        assert_eq!(
            usage_err("--colour red"),
            "unknown flag '--colour' (see --help)"
        );
        assert_eq!(usage_err("-x"), "unknown flag '-x' (see --help)");
        assert_eq!(usage_err("--id"), "--id needs a value");
        assert_eq!(usage_err("--config"), "--config needs a value");
        assert_eq!(usage_err("--id 1 --id 2"), "--id given more than once");
        assert_eq!(usage_err("--help=yes"), "--help does not take a value");
        assert_eq!(
            usage_err("conf/node1.conf"),
            "unexpected argument 'conf/node1.conf' (see --help)"
        );
        assert_eq!(
            usage_err("--id 1 -- extra"),
            "unexpected argument 'extra' (see --help)"
        );
    }

    #[test]
    fn local_cluster() {
        assert_eq!(
            parse(&args("--local-cluster 3 --heartbeat-ms 20")),
            Ok(Action::LocalCluster {
                nodes: 3,
                flags: Flags {
                    config: None,
                    force_new_cluster: false,
                    overrides: pairs(&[("heartbeat_ms", "20")]),
                },
            })
        );
        for bad in ["0", "100", "x", "-1"] {
            assert_eq!(
                usage_err(&format!("--local-cluster={bad}")),
                format!("--local-cluster: bad value '{bad}': expected a node count from 1 to 99")
            );
        }
        assert_eq!(
            usage_err("--local-cluster 3 --raft-addr h:1"),
            "--raft-addr cannot be used with --local-cluster (it sets each node's own)"
        );
        assert_eq!(
            usage_err("--local-cluster 3 --join"),
            "--join cannot be used with --local-cluster (it sets each node's own)"
        );
    }
}
