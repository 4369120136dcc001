//! `vswitch-pcap`: generate, dump and compare Ethernet captures. A thin command-line wrapper over the `tools`
//! library; see `tools/README.md`.
//!
//! Exit status: 0 on success (for `diff`: the captures are identical), 1 when `diff` finds a difference, 2 on
//! any error (unreadable file, invalid spec, bad arguments).

use anyhow::Result;
use clap::{Parser, Subcommand};
use dataplane::port::pcap::read_capture;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tools::{diff, dump, generate};

#[derive(Debug, Parser)]
#[command(name = "vswitch-pcap", version, about = "Generate, dump and compare Ethernet captures")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic capture described by a TOML spec (format: tools/README.md).
    Gen {
        /// The spec.
        spec: PathBuf,
        /// The capture to write (replaced if it exists).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print one decoded line per frame: number (from 1), absolute timestamp, decoding.
    Dump {
        /// The capture.
        file: PathBuf,
    },
    /// Compare two captures frame by frame (bytes and timestamps) and show the first difference.
    /// Exit status 0 if identical, 1 if different, 2 on error.
    Diff {
        /// Capture A.
        a: PathBuf,
        /// Capture B.
        b: PathBuf,
    },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Gen { spec, output } => {
            let n = generate::generate_file(&spec, &output)?;
            eprintln!("{}: {n} frames", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump { file } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match dump::dump_file(&file, &mut out).and_then(|_| out.flush().map_err(dump::DumpError::Output)) {
                // The reader went away (`vswitch-pcap dump x.pcap | head`): not an error.
                Err(dump::DumpError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e.into()),
                Ok(()) => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Diff { a, b } => {
            let (ca, cb) = (read_capture(&a)?, read_capture(&b)?);
            match diff::compare(&ca.frames, &cb.frames) {
                None => {
                    println!("identical: {} frames", ca.frames.len());
                    Ok(ExitCode::SUCCESS)
                }
                Some(d) => {
                    println!("A = {}\nB = {}\n{d}", a.display(), b.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Library errors carry their cause in their message; `{:#}` would repeat it.
            eprintln!("vswitch-pcap: {e}");
            ExitCode::from(2)
        }
    }
}
