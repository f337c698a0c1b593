//! `dwcp-hw`: detect a hardware profile for this machine, validate a profile file against the
//! schema and this host, or print the embedded default. It does not tune: tuning needs the
//! bench harness's measurement (see `dwcp_hw_profiles::tune`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dwcp_hw_profiles::{Profile, ProfileError, detect_profile};

#[derive(Debug, Parser)]
#[command(
    name = "dwcp-hw",
    version,
    about = "DWCP hardware profiles: detect, validate, show"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a profile from this machine (and an interface, looked up in the current network
    /// namespace) and print it as TOML or write it to a file.
    Detect {
        /// Interface the dataplane will use.
        #[arg(long)]
        iface: Option<String>,
        /// Write the profile here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a profile: schema rules, then this host (cores, NUMA nodes, SIMD, hugepages,
    /// interface). Exit status 1 and one line per problem when it is not valid.
    Validate {
        /// Profile file.
        file: PathBuf,
        /// Check the schema only, not this host.
        #[arg(long)]
        schema_only: bool,
    },
    /// Print the embedded default profile.
    Show,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dwcp-hw: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Detect { iface, out } => {
            let p = detect_profile(iface.as_deref()).context("detecting this host")?;
            let text = p.to_toml()?;
            // A detected profile must pass its own checks; say so loudly if it does not.
            if let Err(e) = p.validate_for_host() {
                eprintln!("dwcp-hw: warning: the detected profile does not validate: {e}");
            }
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Validate { file, schema_only } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let p = match Profile::parse_unchecked(&text) {
                Ok(p) => p,
                Err(e) => {
                    println!("{}: not a profile: {e}", file.display());
                    return Ok(ExitCode::from(1));
                }
            };
            let res = if schema_only {
                p.validate()
            } else {
                p.validate_for_host()
            };
            match res {
                Ok(()) => {
                    println!(
                        "{}: profile {:?} is valid{}",
                        file.display(),
                        p.name,
                        if schema_only {
                            " (schema)"
                        } else {
                            " for this host"
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(ProfileError::Invalid { problems, .. }) => {
                    println!("{}: {} problem(s):", file.display(), problems.len());
                    for pr in problems {
                        println!("  {pr}");
                    }
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Show => {
            print!("{}", dwcp_hw_profiles::schema::EMBEDDED_DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
    }
}
