//! `labd ser2net-config`: ser2net configuration for the devices that have a `[device.ser2net]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::InventoryArg;
use crate::ser2net::{Format, render};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// ser2net 4.x YAML (/etc/ser2net/ser2net.yaml).
    Yaml,
    /// ser2net 3.x lines (/etc/ser2net.conf).
    Legacy,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Configuration dialect.
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: FormatArg,
    /// Write to this file (atomically) instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inv = args.inventory.load()?;
    let format = match args.format {
        FormatArg::Yaml => Format::Yaml,
        FormatArg::Legacy => Format::Legacy,
    };
    let text = render(&inv, format);
    match args.output {
        None => print!("{text}"),
        Some(path) => {
            let mut tmp = path.clone().into_os_string();
            tmp.push(".labd-tmp");
            let tmp = PathBuf::from(tmp);
            std::fs::write(&tmp, &text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
