//! `labd udev-rules`: print (or install) the udev rules that give every adapter its stable link.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::InventoryArg;
use crate::udev::rules;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Write the rules to <ROOT>/etc/udev/rules.d/<NAME>, then reload and trigger udev.
    #[arg(long)]
    pub install: bool,
    /// File name under rules.d; must sort after 60-serial.rules.
    #[arg(long, default_value = rules::DEFAULT_RULES_NAME, value_parser = parse_name)]
    pub name: String,
    /// Install below this root instead of / (image building, tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Do not run udevadm after installing.
    #[arg(long)]
    pub no_reload: bool,
}

fn parse_name(s: &str) -> Result<String, String> {
    let ok = s.ends_with(".rules")
        && !s.contains('/')
        && s.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && s.as_bytes().get(1).is_some_and(u8::is_ascii_digit);
    if !ok {
        return Err(format!("{s:?} must look like NN-name.rules"));
    }
    if s[..2] <= *"60" {
        return Err(format!(
            "{s:?} must sort after 60-serial.rules, whose ENV{{ID_*}} keys the rules use"
        ));
    }
    Ok(s.to_string())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inv = args.inventory.load()?;
    let text = rules::render(&inv);
    if !args.install {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = rules::install(&text, &args.root, &args.name)?;
    println!("installed {}", path.display());
    if args.no_reload {
        return Ok(ExitCode::SUCCESS);
    }
    let Some(udevadm) = rules::find_udevadm() else {
        println!(
            "udevadm not found; the rules apply when udev next starts or the adapters are replugged"
        );
        return Ok(ExitCode::SUCCESS);
    };
    // udevadm may block on a busy udev; keep it off the async executor.
    let shown = udevadm.clone();
    tokio::task::spawn_blocking(move || rules::reload(&udevadm))
        .await
        .context("udevadm task")?
        .with_context(|| {
            format!(
                "rules installed at {}, but udev was not reloaded (is systemd-udevd running?)",
                path.display()
            )
        })?;
    println!(
        "reloaded udev rules and re-triggered tty devices ({})",
        shown.display()
    );
    Ok(ExitCode::SUCCESS)
}
