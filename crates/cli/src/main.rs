//! `cairn`: parse the command line, run the command on a small runtime,
//! and turn a failure into one sentence on stderr and a documented exit
//! code (see `cairn --help`).

use std::process::ExitCode;

use clap::Parser;
use cli::args::Cli;
use cli::failure::{CommandError, describe};

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2.
    let args = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => ExitCode::from(code),
        // A reader that went away (`cairn node logs | head`) is not a
        // failure of this command.
        Err(CommandError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            let failure = describe(&error);
            eprintln!("cairn: {}", failure.message);
            ExitCode::from(failure.exit.code())
        }
    }
}
