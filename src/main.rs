//! The `labd` binary: parse the command line, run it, turn errors into an exit status.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = labd::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("labd: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(labd::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("labd: {e:#}");
            ExitCode::from(1)
        }
    }
}
